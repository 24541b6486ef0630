"""The T1 rule from first principles and the agreement of the fast and exact TLB models.

Tolerance: over 20 samples of 5 ms, the mean fraction of young sampled pages of the two
models differs by at most 0.1 (absolute; the fast model's Che approximation of a random
sweep is the loosest case); the T1 blind case is exactly 0 in both and the T2 hot pages
exactly 1 in both."""
from __future__ import annotations

import numpy as np
import pytest

from tests.mm.conftest import big_vma, machine

TOL = 0.1


def young_fraction(model: str, wl: str, thp: str = "always", memory: str = "20G", rate: float = 2e6,
                   warm_us: int = 2_500_000, samples: int = 20, seed: int = 3, hot: bool = False) -> float:
    m = machine(f"""
seed = {seed}
[machine]
memory = "{memory}"
access_rate = {rate}
[machine.tlb]
model = "{model}"
[thp]
enabled = "{thp}"
[khugepaged]
enabled = false
[[workload]]
{wl}
""")
    pid = m.processes()[0].pid
    m.advance_to(warm_us)
    v = big_vma(m, pid)
    rng = np.random.default_rng(seed)
    a = (rng.integers(v.start, v.end, 64) & ~4095).astype(np.uint64)
    if hot:                                   # sparse-hotspot: the hot page of each 2 MB
        a = np.sort(a & ~np.uint64((2 << 20) - 1))
    got = []
    for _ in range(samples):
        m.va_mkold(pid, a)
        m.advance_to(m.now_us + 5000)
        got.append(m.va_young(pid, a)[0].mean())
    return float(np.mean(got))


T1 = [
    ("16M THP", 'kind = "uniform"\nsize = "16M"', "always", "64M"),
    ("512M 4K", 'kind = "uniform"\nsize = "512M"', "never", "1G"),
    ("16G THP", 'kind = "uniform"\nsize = "16G"\npattern = "random"', "always", "20G"),
]


@pytest.mark.parametrize("name,wl,thp,mem", T1, ids=[t[0] for t in T1])
def test_t1_rule_fast(name, wl, thp, mem):
    f = young_fraction("fast", wl, thp, mem)
    if name == "16M THP":
        assert f == 0.0                       # 8 PMDs fit the 2048-entry L2 TLB: never walked
    else:
        assert f > 0.05                       # the working set exceeds the TLB reach: AFs set


def test_t1_blind_spot_vanishes_with_flush_on_mkold():
    m = machine("""
[machine]
memory = "64M"
[machine.tlb]
flush_on_mkold = true
[khugepaged]
enabled = false
[[workload]]
kind = "uniform"
size = "16M"
""")
    pid = m.processes()[0].pid
    m.advance_to(1_000_000)
    v = big_vma(m, pid)
    a = np.arange(v.start, v.end, 2 << 20, dtype=np.uint64)
    m.va_mkold(pid, a)
    m.advance_to(m.now_us + 5000)
    assert m.va_young(pid, a)[0].all()


AGREE = T1 + [
    ("T2 8G THP sparse", 'kind = "sparse-hotspot"\nsize = "8G"', "always", "10G"),
    ("T2 8G 4K sparse", 'kind = "sparse-hotspot"\nsize = "8G"', "never", "10G"),
]


@pytest.mark.parametrize("name,wl,thp,mem", AGREE, ids=[t[0] for t in AGREE])
def test_fast_and_exact_models_agree(name, wl, thp, mem):
    hot = name.startswith("T2")
    fast = young_fraction("fast", wl, thp, mem, hot=hot)
    exact = young_fraction("exact", wl, thp, mem, hot=hot)
    assert abs(fast - exact) <= TOL, (fast, exact)
    if name == "16M THP":
        assert fast == exact == 0.0
    if name.startswith("T2"):
        assert fast == 1.0 and exact == 1.0
