"""vaddr draws the sampling addresses of a whole aggregation interval ahead (SampleBatch) and
the machine translates them ahead (va_prefetch): the monitoring results must be exactly those
of one draw and one translation per sample, through splits, merges, ops updates, a commit
mid-interval that changes the regions, and two targets."""
from __future__ import annotations

import numpy as np
import pytest

from damond.clock import VirtualClock
from damond.config import Config
from damond.damon import core, params, vaddr
from damond.damon.kdamond import Kdamond
from damond.system import System

CFG = """
seed = 11
[machine]
memory = "2G"
[thp]
enabled = "{thp}"
[khugepaged]
enabled = false
[[workload]]
kind = "uniform"
size = "256M"
hot_size = "32M"
[[workload]]
kind = "thp-hot"
nr_thps = 32
"""


def run(thp: str, batched: bool, monkeypatch) -> list:
    """Every sample's sampling addresses and, at the end, every region counter."""
    monkeypatch.setattr(vaddr, "MAX_BATCH_ADDRS", vaddr.MAX_BATCH_ADDRS if batched else 1)
    s = System.from_config(Config.from_text(CFG.format(thp=thp), "<test>"), VirtualClock())
    pids = [p.pid for p in s.machine.processes()]
    k = Kdamond(s, 0)
    attrs = params.Attrs(sample_interval=5000, aggr_interval=100_000, ops_update_interval=300_000,
                         min_nr_regions=10, max_nr_regions=200)
    k.start(params.Ctx(ops=params.OpsId.VADDR, attrs=attrs, targets=[params.Target(pid=p) for p in pids]))
    seen = []
    for i in range(120):
        k.run_for(5000)
        seen.append([t.regions.sampling_addr.tolist() for t in k.ctx.targets])
        if i == 57:                  # mid-interval: new regions for the first target
            t = k.ctx.targets[0]
            core.set_regions(t.regions, [(int(t.regions.start[0]), int(t.regions.end[-1]) // 2 * 2)], 4096)
    k.run_for(400_000)
    seen.append([{f: getattr(t.regions, f).tolist() for f in ("start", "end", "nr_accesses", "age",
                                                              "last_nr_accesses", "nr_accesses_bp")}
                 for t in k.ctx.targets])
    seen.append(int(k.ctx.rng.integers(0, 1 << 62)))
    return seen


@pytest.mark.parametrize("thp", ["never", "always"])
def test_batched_sampling_gives_the_per_sample_results(thp, monkeypatch):
    assert run(thp, True, monkeypatch) == run(thp, False, monkeypatch)


def test_settle_rewinds_the_generator_to_the_rows_used():
    lo = np.arange(5, dtype=np.uint64) * np.uint64(1 << 24)
    hi = lo + np.uint64(1 << 23)
    a, b = np.random.default_rng(4), np.random.default_rng(4)
    seq = [a.integers(lo, hi, dtype=np.uint64) for _ in range(3)]
    t = type("T", (), {})()
    batch = vaddr.SampleBatch(b, [(t, lo, hi)], 8)
    assert all((batch.rows[0][j] == seq[j]).all() for j in range(3))
    assert not batch.rows[0][0].flags.writeable
    batch.used = 3
    batch.settle(b)
    assert a.integers(0, 1 << 62) == b.integers(0, 1 << 62)


def test_compiled_draw_gives_numpys_numbers_and_state():
    """damond.damon._rand (when built) draws the batch rows numpy would, leaving the same
    generator state, across narrow (Lemire 32-bit, with rejections), page-multiple and wide
    (64-bit) ranges and from a state with a buffered 32-bit half."""
    if vaddr._rand is None:
        pytest.skip("damond.damon._rand not built (no C compiler): vaddr uses numpy itself")
    assert vaddr._RAND is not None, "the compiled draw disagrees with this numpy"
    for seed in range(200):
        g = np.random.default_rng(seed)
        n, k = int(g.integers(1, 60)), int(g.integers(1, 40))
        lo = np.sort(g.integers(0, 1 << 50, n)).astype(np.uint64)
        spans = g.integers(1, 1 << 34, n) if seed % 4 else g.integers(1, 1 << 12, n) * 4096
        hi = lo + spans.astype(np.uint64)
        a, b = np.random.default_rng([seed, 3]), np.random.default_rng([seed, 3])
        if seed % 2:
            a.integers(0, 3, size=int(g.integers(1, 4)), dtype=np.uint32)
            b.bit_generator.state = a.bit_generator.state
        want = a.integers(lo, hi, size=(k, n), dtype=np.uint64)
        assert (vaddr.draw_rows(b, lo, hi, k) == want).all(), seed
        assert a.bit_generator.state == b.bit_generator.state, seed
