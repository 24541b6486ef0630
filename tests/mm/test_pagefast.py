"""The per-sample shortcuts of the access checks give what the plain paths give: the C loops
of damond.mm._pagefast against pagebytes.py's numpy code (and a flat uint8 array), the
write log against every write, and the step that re-sets only the leaves written since
(Stepper._af_again) against the step that sets them all, on the T2 machine under DAMON."""
from __future__ import annotations

import numpy as np
import pytest

from damond.clock import VirtualClock
from damond.config import Config
from damond.damon import params
from damond.damon.kdamond import Kdamond
from damond.mm import pagebytes
from damond.mm.access import Stepper
from damond.mm.pagebytes import PageBytes, members, members_runs, run_rows, set_lut
from damond.mm.sample import MKOLD_OF, YOUNG_OF
from damond.system import System

NB = 16
N = NB * 512
C = pagebytes.FAST


def _ops(seed: int, fast) -> list:
    """A random mix of the sample paths' writes and reads on a PageBytes (pagebytes.FAST set
    to `fast` meanwhile); returns every read and the final bytes, checked on the way against
    a flat array."""
    saved, pagebytes.FAST = pagebytes.FAST, fast
    try:
        rng = np.random.default_rng(seed)
        ref, pb, out = np.zeros(N, np.uint8), PageBytes(NB, private_mask=1 | 2, private_value=1), []
        heads = np.arange(NB, dtype=np.int64) << 9
        luts = [MKOLD_OF, set_lut(1, True), set_lut(8, False), set_lut(4, True)]
        for _ in range(300):
            k = int(rng.integers(0, 7))
            if k == 6:                                   # only the pages of idx inside strided runs
                idx = rng.integers(0, N, int(rng.integers(1, 40))).astype(np.int64)
                idx[::3] = rng.choice(heads, len(idx[::3]))
                runs = [slice(int(rng.integers(0, 512)), N, 512), slice(0, N, int(rng.choice([1, 3, 512])))][
                    :int(rng.integers(1, 3))]
                lut = MKOLD_OF if rng.integers(0, 2) else set_lut(1, True)
                inside = np.zeros(len(idx), bool)
                for r in runs:
                    inside |= np.isin(idx, np.arange(r.start, r.stop, r.step))
                ref[idx[inside]] = lut[ref[idx[inside]]]
                pb.update_runs(idx, lut, runs, run_rows(runs))
                assert (pb.copy() == ref).all()
                continue
            if k == 0:                                   # block heads (THP leaves), repeats allowed
                idx = rng.choice(heads, int(rng.integers(1, 12)))
            elif k == 1:                                 # any pages, repeats allowed
                idx = rng.integers(0, N, int(rng.integers(1, 40))).astype(np.int64)
            elif k == 2:                                 # whole blocks to one value (shared rows)
                bl = np.unique(rng.integers(0, NB, 3))
                v = int(rng.choice([0, 1, 3, 0x21]))
                ref.reshape(-1, 512)[bl] = v
                pb.set_rows(bl, v)
                continue
            elif k == 3:                                 # reads
                idx = rng.integers(0, N, int(rng.integers(0, 30))).astype(np.int64)
                y = pb.gather(idx, YOUNG_OF)
                assert y.dtype == bool and (y == YOUNG_OF[ref[idx]]).all()
                out.append(y)
                out.append(pb.gather(idx, luts[1]))
                continue
            else:                                        # a stream's run
                r = slice(int(rng.integers(0, 512)), N, 512)
                ref[r] |= 1
                pb.set_bits(r, 1)
                continue
            lut = luts[int(rng.integers(0, len(luts)))]
            ref[idx] = lut[ref[idx]]
            pb.update(idx, lut)
            assert (pb.copy() == ref).all()
        out.append(pb.copy())
        return out
    finally:
        pagebytes.FAST = saved


@pytest.mark.skipif(C is None, reason="damond.mm._pagefast not built")
def test_c_loops_match_numpy():
    for seed in range(8):
        a, b = _ops(seed, C), _ops(seed, None)
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert x.dtype == y.dtype and (x == y).all()


@pytest.mark.skipif(C is None, reason="damond.mm._pagefast not built")
def test_c_loops_refuse_what_they_do_not_handle():
    pb = PageBytes(2)
    flat_before = pb.flat.copy()
    bad = np.array([0, 2 * 512], np.int64)                # out of range: numpy raises, C declines
    assert C.update(pb.flat, pb.base, pb.bsh, None, bad, MKOLD_OF) == -1
    assert C.gather(pb.flat, pb.base, bad, YOUNG_OF, np.empty(2, bool)) == -1
    tail = np.array([5], np.int64)                       # a tail write to a shared block needs a row
    assert C.update(pb.flat, pb.base, pb.bsh, None, tail, set_lut(1, True)) == -1
    assert (pb.flat == flat_before).all()
    with pytest.raises(IndexError):
        pb.update(bad, MKOLD_OF)


def test_members():
    rng = np.random.default_rng(3)
    for _ in range(50):
        s = np.unique(rng.integers(0, 5000, int(rng.integers(0, 300)))).astype(np.int64)
        j = rng.integers(-5, 5005, int(rng.integers(0, 200))).astype(np.int64)
        if rng.integers(0, 2):
            j.sort()
        want = j[np.isin(j, s)]
        for fast in (C, None):
            saved, pagebytes.FAST = pagebytes.FAST, fast
            try:
                assert (members(s, j) == want).all()
                runs = [slice(int(rng.integers(0, 100)), int(rng.integers(100, 5000)), int(rng.choice([1, 3, 512])))
                        for _ in range(int(rng.integers(1, 4)))]
                inside = np.zeros(len(j), bool)
                for r in runs:
                    inside |= np.isin(j, np.arange(r.start, r.stop, r.step))
                assert (members_runs(runs, j) == j[inside]).all()
            finally:
                pagebytes.FAST = saved


def test_write_log_names_every_write_or_gives_up():
    pb = PageBytes(4)
    v0 = pb.ver
    assert pb.written_since(v0) == []
    pb.update(np.array([3, 512], np.int64), set_lut(1, True))
    pb.set_bits(np.array([7], np.int64), 2)
    got = pb.written_since(v0)
    assert [x.tolist() for x in got] == [[3, 512], [7]]
    v1 = pb.ver
    assert pb.written_since(v1) == []
    pb[10:20] = 5                                         # a slice names its pages
    assert [x.tolist() for x in pb.written_since(v1)] == [list(range(10, 20))]
    pb.apply_rows([0], set_lut(8, True))                  # whole blocks: the log restarts
    assert pb.written_since(v1) is None
    v2 = pb.ver
    n = 2 * pagebytes.LOG_ENTRIES + 5
    for i in range(n):                                    # the oldest writes are forgotten
        pb.update(np.array([i], np.int64), set_lut(4, True))
    assert pb.written_since(v2) is None
    assert [x.tolist() for x in pb.written_since(pb.ver - 3)] == [[n - 3], [n - 2], [n - 1]]
    assert len(pb.written_since(pb.ver - pagebytes.LOG_ENTRIES)) == pagebytes.LOG_ENTRIES
    key = np.array([9], np.int64)                         # a caller's array: logged as it was
    pb.update(key, set_lut(4, True))
    key[0] = 11
    assert pb.written_since(pb.ver - 1)[0].tolist() == [9]
    pb.set_rows([1], 0)
    assert pb.written_since(pb.ver - 1) is None


T2 = """
seed = 2
[machine]
memory = "2G"
[machine.tlb]
l1_entries = 8
l2_entries = 16
l2_assoc = 0
[thp]
enabled = "{thp}"
[khugepaged]
enabled = false
[[workload]]
kind = "sparse-hotspot"
size = "1G"
"""


def _t2_run(thp: str, af_again: bool, fast) -> tuple:
    saved_fast, pagebytes.FAST = pagebytes.FAST, fast
    saved_again = Stepper._af_again
    if not af_again:
        Stepper._af_again = lambda self, s, fl: False     # type: ignore[method-assign]
    try:
        s = System.from_config(Config.from_text(T2.format(thp=thp), "<t>"), VirtualClock())
        m = s.machine
        m.advance_to(1_000_000)
        s.clock.advance_to(1_000_000)
        pid = m.processes()[0].pid
        v = max(m.process(pid).vmas(), key=lambda v: v.end - v.start)
        n = 40
        step = ((v.end - v.start) // n) & ~4095
        ctx = params.Ctx(ops=params.OpsId.FVADDR,
                         attrs=params.Attrs(sample_interval=5000, aggr_interval=100000, min_nr_regions=n,
                                            max_nr_regions=n),
                         targets=[params.Target(pid=pid, regions=[params.AddrRange(v.start + i * step,
                                                                                    v.start + (i + 1) * step)
                                                                  for i in range(n)])],
                         schemes=[params.Scheme(pattern=params.AccessPattern(0, 1 << 40, 0, 0, 3, 1 << 30),
                                                action=params.Action.PAGEOUT,
                                                quota=params.Quota(sz=32 << 20, reset_interval=100))])
        k = Kdamond(s, 0)
        seen = []
        k.start(ctx)
        for _ in range(15):
            k.run_for(100_000)
            r = k.ctx.targets[0].regions
            seen.append((r.nr_accesses.tolist(), r.last_nr_accesses.tolist(), r.age.tolist()))
        k.stop()
        return seen, m.phys.flags.copy(), m.phys.order.copy()
    finally:
        pagebytes.FAST = saved_fast
        Stepper._af_again = saved_again           # type: ignore[method-assign]


@pytest.mark.parametrize("thp", ["never", "always"])
def test_t2_sampling_same_with_and_without_the_shortcuts(thp):
    ref = _t2_run(thp, af_again=False, fast=None)
    for again, fast in ((True, None), (True, C), (False, C)):
        got = _t2_run(thp, again, fast)
        assert got[0] == ref[0]
        assert (got[1] == ref[1]).all() and (got[2] == ref[2]).all()
