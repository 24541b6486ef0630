"""Counted ground truth (truth.py) against the analytic value of the workload's definition
(Machine.truth_accessed), and the timing model (timing.py) on the RFC's cases."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings, strategies as st

from damond.mm.timing import PRESETS, Work, touch_ns
from tests.mm.conftest import MB, big_vma, machine


def uniform(size_mb: int, hot_mb: int, pattern: str, thp: str, rate: str = "") -> tuple:
    m = machine(f"""
seed = 5
[machine]
memory = "{size_mb + 64}M"
{rate}
[thp]
enabled = "{thp}"
[khugepaged]
enabled = false
[[workload]]
kind = "uniform"
size = "{size_mb}M"
hot_size = "{hot_mb}M"
pattern = "{pattern}"
""")
    pid = m.processes()[0].pid
    return m, pid


@settings(max_examples=12, deadline=None)
@given(size_mb=st.sampled_from([8, 32, 64]), frac=st.sampled_from([1, 2, 4]), pattern=st.sampled_from(["seq", "random"]),
       thp=st.sampled_from(["always", "never"]), fixed=st.booleans(),
       t_ms=st.integers(1, 40), steps=st.integers(1, 5))
def test_counted_truth_matches_the_analytic_value(size_mb, frac, pattern, thp, fixed, t_ms, steps):
    m, pid = uniform(size_mb, size_mb // frac, pattern, thp, "access_rate = 3e5" if fixed else "")
    m.advance_to(500_000)                      # populated, running
    v = big_vma(m, pid)
    m.truth_start()
    t0 = m.now_us + 1000
    m.advance_to(t0)
    t1 = t0 + t_ms * 1000
    for k in range(1, steps + 1):              # the window in several machine steps
        m.advance_to(t0 + (t1 - t0) * k // steps)
    counted = m.truth_counted(pid, v.start, v.end, t0)
    expected = m.truth_accessed(pid, v.start, v.end, t0, t1)
    n = (size_mb // frac) * MB // 4096
    if pattern == "seq":
        assert abs(counted - expected) <= 2 * 4096 * steps      # the cursor's ceil at each step boundary
    else:
        p = expected / 4096 / n
        assert abs(counted - expected) / 4096 <= 6 * math.sqrt(n * p * (1 - p)) + 2


def test_truth_refuses_windows_it_did_not_record():
    m, pid = uniform(8, 8, "seq", "never")
    m.advance_to(200_000)
    v = big_vma(m, pid)
    assert m.truth_counted(pid, v.start, v.end, 100_000) is None          # not recording
    since = m.truth_start()
    assert since == 200_000 and m.truth_counted(pid, v.start, v.end, 100_000) is None
    m.advance_to(300_000)
    assert m.truth_counted(pid, v.start, v.end, 200_000) == 8 * MB
    touched = m.truth_touched(pid, v.start, v.end, 200_000)
    assert touched.dtype == bool and touched.all() and len(touched) == 2048


def test_counted_truth_counts_only_what_the_sparse_loop_touches():
    m = machine("""
[machine]
memory = "2G"
[khugepaged]
enabled = false
[[workload]]
kind = "sparse-hotspot"
size = "1G"
""")
    pid = m.processes()[0].pid
    m.advance_to(1_000_000)
    m.truth_start()
    m.advance_to(1_100_000)
    v = big_vma(m, pid)
    t = m.truth_touched(pid, v.start, v.end, 1_000_000)
    assert t.sum() == 512 and (np.flatnonzero(t) % 512 == 0).all()      # one 4 KB page per 2 MB


def test_timing_model_on_the_rfc_cases():
    """timing-and-designs-facts.md §1.5: 16 MB THP sweeps in microseconds, 512 MB of 4 KB pages
    in 1-5 ms, 16 GB of THPs in 20-50 ms (under one 100 ms aggregation, over one 5 ms sample)."""
    k = PRESETS["kunpeng920"]
    sweep_ms = lambda n, leaves: touch_ns(k, 48, 2048, n, leaves, Work()) * n / 1e6   # noqa: E731
    assert sweep_ms(4096, 8) < 0.02
    assert 1 <= sweep_ms(131072, 131072) <= 5
    assert 20 <= sweep_ms(4 << 20, 8192) <= 50
    assert sweep_ms(65536, 128) < 1                      # T4's 256 MB THP: TLB hits
    assert sweep_ms(65536, 65536) > 5 * sweep_ms(65536, 128)     # after the split: walks
    hot = Work(ops=10, iter_touches=16, iter_ns=20, sleep_every=16384, sleep_ns=150_000)
    iters_per_s = 1e9 / touch_ns(k, 48, 2048, 2048, 16, hot) / 16
    assert 3e6 <= iters_per_s <= 6e6                     # §1.5: ~3-5 M iterations/s


def test_rate_follows_the_mapping_and_the_fixed_rate_overrides():
    m, pid = uniform(256, 256, "seq", "always")
    m.advance_to(500_000)
    s = m.process(pid).workload.phases[-1].streams[0]
    thp_rate = s.rate
    assert m.split_folio_to_order(pid, big_vma(m, pid).start, 0) == 0     # one PMD less
    for a in range(big_vma(m, pid).start, big_vma(m, pid).end, 2 << 20):
        m.split_folio_to_order(pid, a, 0)
    m.advance_to(600_000)
    assert s.rate < thp_rate / 5                          # 65536 PTE walks per sweep instead of TLB hits
    m2, pid2 = uniform(256, 256, "seq", "always", "access_rate = 2e7")
    m2.advance_to(500_000)
    assert m2.process(pid2).workload.phases[-1].streams[0].rate == 2e7


def test_timing_figures_for_preset_variants():
    from damond.mm.timing import for_preset
    import pytest
    assert for_preset("x86-zen2")[0] == "x86-zen2"
    assert for_preset("kunpeng920-rfc")[0] == "kunpeng920"          # a TLB-profile variant: its base's costs
    assert for_preset("x86-vm", "x86_64")[0] == "x86-skylake"       # else the architecture's reference machine
    with pytest.raises(ValueError, match="no timing figures"):
        for_preset("m1", "riscv")
