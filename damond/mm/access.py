"""The access path: run every workload's streams over one time step through the TLB model.

Owns "which pages were touched in [t0, t1)" (sweep cursors for cyclic streams, Poisson
sampling for random ones), fault-in of untouched pages, and the walk decision: a walk
sets the leaf's AF and refills the TLB (clears COLD); a TLB hit sets nothing. Fast model:
Che's characteristic time per CPU over the active streams' leaf counts and rates
(tlb.characteristic_time); exact model: the per-CPU ExactTlb fed with the step's access
trace (cyclic streams: the last min(touches, 2 sweeps) in order). Builds StepAccesses
for observers (the SPE sampler) only when one is registered. Timed streams (with a
`work`) get their rate from the timing model over their current leaf structure every
step (timing.py). While counted truth is recorded (truth.py) every touched page is
marked and the shortcuts that skip a stream are off. A warm cyclic stream that walks
every leaf each step re-sets only the AFs written since its last full pass (the flags'
write log: DAMON's mkold of a few sampled leaves). The analytic ground truth
(`truth_pages`, the expected value from the same stream arithmetic) is kept as a
cross-check for the tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from damond.mm import phys as P
from damond.mm.pagebytes import members, run_rows, set_lut
from damond.mm.phys import uniq, PAGE_SHIFT
from damond.mm.timing import on_nodes, touch_rate
from damond.mm.tlb import characteristic_time, miss_probability
from damond.mm.workload import Stream

LEAF_COUNT_BATCH = 1 << 22
PIDX_CACHE_PAGES = 1 << 18      # streams up to this many pages keep their translation for counted truth
MAX_RUNS = 16
AF_ON = set_lut(P.AF, True)         # the table set_bits(key, AF) applies


@dataclass
class ProcessAccesses:
    pid: int
    comm: str
    vaddrs: np.ndarray
    paddrs: np.ndarray
    counts: np.ndarray
    miss_frac: np.ndarray


@dataclass
class StepAccesses:
    """Everything the workloads touched in [t0_us, t1_us), per process."""
    t0_us: int
    t1_us: int
    processes: list[ProcessAccesses] = field(default_factory=list)


def touched_indices(s: Stream, phase_start: int, a: int, b: int, rng: np.random.Generator | None,
                    exact_trace: bool = False) -> tuple[np.ndarray, float]:
    """Stream indices touched in [a, b) and the touches per touched page. Cyclic streams are
    deterministic; random streams draw from `rng` (None: expected set not needed)."""
    k = s.rate * (b - a) / 1e6
    if k <= 0 or s.n <= 0:
        return np.zeros(0, np.int64), 0.0
    if s.cyclic:
        c0 = s.cursor(phase_start, a)
        c1 = c0 + k
        i0, i1 = math.ceil(c0), math.ceil(c1)
        if s.once:
            i0, i1 = min(i0, s.n), min(i1, s.n)
            idx = np.arange(i0, i1, dtype=np.int64)
            return idx, 1.0
        if exact_trace:
            length = min(i1 - i0, 2 * s.n)
            idx = np.arange(i1 - length, i1, dtype=np.int64) % s.n
            return idx, max(k / max(len(idx), 1), 1.0)
        if i1 - i0 >= s.n:
            return np.arange(s.n, dtype=np.int64), k / s.n
        return np.arange(i0, i1, dtype=np.int64) % s.n, 1.0
    if exact_trace:
        m = int(min(k, 4 * s.n))
        return rng.integers(0, s.n, max(m, 0)), max(k / max(m, 1), 1.0)
    if k >= 8 * s.n:
        return np.arange(s.n, dtype=np.int64), k / s.n
    if k > s.n / 4:
        idx = np.flatnonzero(rng.random(s.n) < -math.expm1(-k / s.n))
    else:
        idx = uniq(rng.integers(0, s.n, rng.poisson(k)))
    return idx.astype(np.int64), (k / len(idx) if len(idx) else 0.0)


def strided_runs(idx: np.ndarray, max_runs: int = MAX_RUNS) -> list[slice] | None:
    """Sorted unique indices as at most `max_runs` strided slices (a stream's AF slots are
    usually one stride over contiguous blocks), or None when they need more."""
    n = len(idx)
    if n < 2:
        return [slice(int(idx[0]), int(idx[0]) + 1)] if n else []
    d = np.diff(idx)
    change = (np.flatnonzero(d[1:] != d[:-1]) + 1).tolist()
    if len(change) > 2 * max_runs:
        return None
    runs, i, c = [], 0, 0
    while i < n:
        if len(runs) == max_runs:
            return None
        if i == n - 1:
            runs.append(slice(int(idx[i]), int(idx[i]) + 1))
            break
        while c < len(change) and change[c] <= i:
            c += 1
        k = change[c] if c < len(change) else n - 1       # the run is idx[i..k]
        st = int(d[i])
        runs.append(slice(int(idx[i]), int(idx[k]) + 1, st))
        i = k + 1
    return runs


class Stepper:
    """Advances the workloads of a Machine; holds no state of its own besides scratch.
    `block_paths`: use the block-by-block paths for THP-only contiguous streams (False: page
    by page everywhere; tests compare the two)."""

    block_paths = True

    def __init__(self, machine):
        self.m = machine
        self._che: dict[tuple, float] = {}
        self._memo: tuple | None = None       # step(): (active, map_epoch, gens, procs, per-stream args)

    def _t_char(self, groups: tuple) -> float:
        t = self._che.get(groups)
        if t is None:
            if len(self._che) > 4096:
                self._che.clear()
            t = self._che[groups] = characteristic_time(list(groups), self.m.tlb_cfg.l2_entries)
        return t

    # --- leaf structure (fast model input) -------------------------------------------------
    def nr_leaves(self, proc, s: Stream) -> int:
        key = (proc.gen, self.m.map_epoch)
        if s.cache_gen == key:
            return s.nr_leaves
        if self.m.truth is not None:
            self.m.truth.flush(id(s))          # deferred marks use the translation about to change
        if self._thp_leaves(proc, s, key):
            return s.nr_leaves
        pt = self.m.pt
        nodes = np.zeros(pt.phys.numa_nodes, np.int64)
        total, all_present, cold, afs, pix = 0, True, False, [], []
        for lo in range(0, s.n, LEAF_COUNT_BATCH):
            idx = np.arange(lo, min(lo + LEAF_COUNT_BATCH, s.n), dtype=np.int64)
            va = (s.vpns(idx) << PAGE_SHIFT).astype(np.uint64)
            ok, _, pidx = proc.translate(va)
            pres = np.zeros(len(va), bool)
            pres[ok] = (pt.phys.flags[pidx[ok]] & P.PRESENT) != 0
            tl = pt.tlb_loc(pidx[pres])
            total += int((~pres).sum()) + len(uniq(tl))
            all_present &= bool(pres.all())
            cold |= bool((pt.phys.flags[tl] & P.COLD).any())
            if s.n <= LEAF_COUNT_BATCH:
                afs.append(uniq(pt.af_loc(pidx[pres])))
            if s.n <= PIDX_CACHE_PAGES:
                pix.append(pidx)
            if self.m.tiered:
                nodes += np.bincount(pt.phys.blk_node[pidx[pres] >> 9], minlength=len(nodes))
        s.node_frac = tuple((nodes / max(nodes.sum(), 1)).round(3).tolist()) if self.m.tiered else None
        s.heads_va = None
        s.cache_gen, s.nr_leaves = key, max(total, 1)
        s.all_present, s.has_cold = all_present, cold
        s.af_all = afs[0] if afs and all_present else None
        s.af_runs = strided_runs(s.af_all) if s.af_all is not None else None
        s.pidx_all = pix[0] if pix and all_present else None
        return s.nr_leaves

    def _thp_leaves(self, proc, s: Stream, key) -> bool:
        """nr_leaves block by block for a contiguous stream over PMD-mapped THPs only (one
        leaf, AF slot and TLB entry per block: what the page-by-page count finds for them);
        False (count page by page) for any other stream."""
        if (not self.block_paths or (s.n_in and s.n_in < s.n) or s.s_in != 1 or s.n <= 4 * P.BLOCK_PAGES
                or self.m.truth is not None):
            return False
        owner = self.m.pt.vma_by_uid.get(s.vma_uid)
        if owner is None or owner[0] is not proc:
            return False
        v = owner[1]
        c0, c1 = (s.start << PAGE_SHIFT) >> P.BLOCK_SHIFT, (((s.start + s.n - 1) << PAGE_SHIFT) >> P.BLOCK_SHIFT) + 1
        if c0 < v.chunk0 or c1 - v.chunk0 > v.nr_chunks:
            return False
        blocks = proc.chunk_tbl[v.tbl_off + c0 - v.chunk0:v.tbl_off + c1 - v.chunk0]
        if (blocks < 0).any():
            return False
        phys = self.m.phys
        fl = phys.flags
        if not fl.bsh[blocks].all():
            return False
        base = fl.base[blocks]
        want = np.uint8(P.PRESENT | P.PMD)
        if not (((fl.flat[base] & want) == want).all() and ((fl.flat[base + 1] & want) == want).all()):
            return False
        heads = blocks << 9
        s.heads_va = heads
        if s.n <= LEAF_COUNT_BATCH:
            s.af_all = np.sort(heads)
            s.af_runs = strided_runs(s.af_all)
        else:
            s.af_all = s.af_runs = None
        s.pidx_all = None
        if s.n <= PIDX_CACHE_PAGES:
            va = ((s.start + np.arange(s.n, dtype=np.int64)) << PAGE_SHIFT).astype(np.uint64)
            s.pidx_all = proc.translate(va)[2]
        s.all_present = True
        s.has_cold = bool((fl.flat[base] & P.COLD).any())
        if self.m.tiered:
            # pages per block inside the stream: whole blocks but the two ends
            per = np.full(len(blocks), P.BLOCK_PAGES, np.int64)
            per[0] -= s.start & (P.BLOCK_PAGES - 1)
            per[-1] -= (P.BLOCK_PAGES - 1) - ((s.start + s.n - 1) & (P.BLOCK_PAGES - 1))
            nodes = np.bincount(phys.blk_node[blocks], weights=per, minlength=phys.numa_nodes)
            s.node_frac = tuple((nodes / max(nodes.sum(), 1)).round(3).tolist())
        else:
            s.node_frac = None
        s.cache_gen, s.nr_leaves = key, len(blocks)
        return True

    def model_rate(self, proc, s: Stream) -> float:
        """Page touches per second of a timed stream over its current leaves (timing.py), on
        the nodes its pages are on."""
        nl = self.nr_leaves(proc, s)
        frac = getattr(s, "node_frac", None)
        key = (nl, s.n, s.cyclic, frac)
        if getattr(s, "_rate_key", None) != key:
            cfg = self.m.tlb_cfg
            s._rate_key = key
            t = on_nodes(self.m.timing, self.m.node_memory, frac) if frac else self.m.timing
            s._model_rate = touch_rate(t, cfg.l1_entries, cfg.l2_entries, s.n, nl, s.work, s.cyclic)
        return s._model_rate

    # --- one step ----------------------------------------------------------------------------
    def step(self, a: int, b: int, active: list) -> StepAccesses | None:
        """Run [a, b). `active`: (proc, phase_start_us, streams) for every running process."""
        m = self.m
        if not m.observers and m.pt.exact is None:
            # the rates and TLB characteristic times follow from the streams' leaf caches,
            # keyed by (proc.gen, map_epoch): while those hold they are what they were
            memo = self._memo
            if memo is None or memo[0] is not active or memo[1] != m.map_epoch or memo[2] != [p.gen for p in memo[3]]:
                memo = self._memo = self._prologue(a, active)
            fl = m.pt.phys.flags
            for proc, phase_start, s, t_char, pm in memo[4]:
                # _stream's fast path with pm known, while the stream's leaf cache is current
                if pm is not None and m.truth is None and s.all_present and s.cache_gen == (proc.gen, m.map_epoch):
                    if pm == 0.0 and not s.has_cold:
                        continue
                    if (pm >= 1.0 and s.cyclic and not s.has_cold and s.af_all is not None
                            and s.rate * (b - a) / 1e6 >= s.n + 1 and self._af_again(s, fl)):
                        continue
                self._stream(proc, s, phase_start, a, b, t_char, False, False)
            return None
        self._memo = None
        t_char = self._rates(a, active, m.pt.exact is not None)
        obs = StepAccesses(a, b) if m.observers else None
        exact = m.pt.exact is not None
        for proc, phase_start, streams in active:
            parts = []
            for s in streams:
                res = self._stream(proc, s, phase_start, a, b, t_char.get(proc.cpu, math.inf), exact, obs is not None)
                if res is not None:
                    parts.append(res)
            if obs is not None and parts:
                va = np.concatenate([p[0] for p in parts])
                obs.processes.append(ProcessAccesses(
                    proc.pid, proc.comm, va, np.concatenate([p[1] for p in parts]),
                    np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts])))
        return obs

    def _prologue(self, a: int, active: list) -> tuple:
        """The memo of `step` (fast model, no observer): the rates set at `a`, then per
        stream (proc, phase start, stream, t_char of its CPU, miss probability or None)."""
        t_char = self._rates(a, active, False)
        streams = []
        for proc, ps, ss in active:
            tc = t_char.get(proc.cpu, math.inf)
            for s in ss:
                pm = None if s.once else miss_probability(s.rate / self.nr_leaves(proc, s), tc, s.cyclic)
                streams.append((proc, ps, s, tc, pm))
        procs = [p for p, _, _ in active]
        return active, self.m.map_epoch, [p.gen for p in procs], procs, streams

    def _rates(self, a: int, active: list, exact: bool) -> dict[int, float]:
        """Set every timed stream's rate at `a`; the fast model's characteristic time per CPU."""
        for proc, phase_start, streams in active:
            for s in streams:
                if s.work is not None and not s.once:
                    s.set_rate(phase_start, a, self.model_rate(proc, s))
        t_char: dict[int, float] = {}
        if not exact:
            by_cpu: dict[int, list] = {}
            for proc, _, streams in active:
                for s in streams:
                    if s.once:
                        continue
                    nl = self.nr_leaves(proc, s)
                    by_cpu.setdefault(proc.cpu, []).append((nl, s.rate / nl, s.cyclic))
            t_char = {cpu: self._t_char(tuple(g)) for cpu, g in by_cpu.items()}
        return t_char

    def _stream(self, proc, s: Stream, phase_start: int, a: int, b: int, t_char: float, exact: bool, want: bool):
        m, pt = self.m, self.m.pt
        fl = pt.phys.flags
        rec = m.truth
        if not exact and not want and not s.once:
            # fast path: a warm, fully present stream either walks nothing (fits the TLB,
            # no invalidated leaf) or, when it misses and covers itself this step, every leaf.
            # Counted truth keeps it only when the step touches every page of a small stream.
            nl = self.nr_leaves(proc, s)
            if rec is not None:
                if s.all_present and s.cyclic and s.pidx_all is not None and s.rate * (b - a) / 1e6 >= s.n + 1:
                    rec.defer(id(s), s.pidx_all, b - 1)
                else:
                    nl = None
            if s.all_present and nl is not None:
                pm = miss_probability(s.rate / nl, t_char, s.cyclic)
                if pm == 0.0 and not s.has_cold:
                    return None
                if pm >= 1.0 and s.cyclic and s.af_all is not None and s.rate * (b - a) / 1e6 >= s.n + 1:
                    if not s.has_cold and self._af_again(s, fl):
                        return None
                    if s.af_runs is not None:
                        for run in s.af_runs:
                            fl.set_bits(run, P.AF)
                    else:
                        fl.set_bits(s.af_all, P.AF)
                    if s.has_cold:
                        fl.clear_bits(s.af_all, P.COLD)
                        fl.clear_bits(pt.tlb_loc(s.af_all), P.COLD)
                        s.has_cold = False        # every leaf walked and was refilled
                    s.af_mark = (fl.ver, s.cache_gen)
                    return None
                if s.cyclic and s.heads_va is not None and (pm >= 1.0 or pm == 0.0):
                    self._thp_sweep(s, phase_start, a, b, pm >= 1.0)
                    return None
        idx, per_page = touched_indices(s, phase_start, a, b, m.rng, exact_trace=exact)
        if (s.once and not want and rec is None and not exact and s.s_in == 1 and not s.n_in
                and len(idx) >= 4 * P.BLOCK_PAGES and self.block_paths):
            idx = self._populate_pmd(proc, s, idx)
        if not len(idx):
            return None
        va = (s.vpns(idx) << PAGE_SHIFT).astype(np.uint64)
        ok, _, pidx = proc.translate(va)
        present = np.zeros(len(va), bool)
        present[ok] = (fl[pidx[ok]] & P.PRESENT) != 0
        faulted = np.zeros(len(va), bool)
        if not present.all():
            vma = m.pt.vma_by_uid.get(s.vma_uid, (None, None))[1]
            if vma is None:
                return None
            miss = va[~present]
            pt.fault(proc, vma, miss)
            m.map_epoch += 0 if s.once else 1
            ok, _, pidx = proc.translate(va)
            faulted = ~present
            present = ok.copy()
            present[ok] = (fl[pidx[ok]] & P.PRESENT) != 0
        va, pidx, faulted = va[present], pidx[present], faulted[present]
        if rec is not None:
            rec.mark(pidx, b - 1)
        if exact:
            walked = self._exact_walks(proc, va, pidx, faulted)
        else:
            nl = self.nr_leaves(proc, s) if not s.once else len(idx)
            pm = 1.0 if s.once else miss_probability(s.rate / nl, t_char, s.cyclic)
            if pm >= 1.0:
                walked = np.ones(len(pidx), bool)
            else:
                walked = (fl[pt.tlb_loc(pidx)] & P.COLD) != 0
                if pm > 0.0:           # random stream: each touch misses with probability pm
                    walked |= m.rng.random(len(pidx)) < -math.expm1(max(per_page, 1.0) * math.log1p(-min(pm, 1 - 1e-12)))
        if walked.any():
            w = pidx[walked]
            fl.set_bits(pt.af_loc(w), P.AF)
            fl.clear_bits(pt.tlb_loc(w), P.COLD)
        if len(idx) >= s.n and not s.once:
            s.has_cold = False                # every leaf of the stream was touched and refilled
        if not want:
            return None
        order = np.argsort(va, kind="stable")
        vs = va[order]
        first_mask = np.concatenate(([True], vs[1:] != vs[:-1])) if len(vs) else np.zeros(0, bool)
        u = vs[first_mask]
        slot = np.cumsum(first_mask) - 1
        hits = np.bincount(slot, minlength=len(u)).astype(np.float64)
        wsum = np.bincount(slot, weights=walked[order].astype(np.float64), minlength=len(u))
        cnt = hits * per_page
        mf = np.minimum(wsum / np.maximum(hits, 1e-12), 1.0)
        pa = ((pidx[order][first_mask] + pt.phys.base_pfn) << PAGE_SHIFT).astype(np.uint64)
        return u, pa, cnt, mf

    def _af_again(self, s: Stream, fl) -> bool:
        """Set the AF of every leaf of `s` (af_all) again, writing only the leaves written
        since they all had it (flags' write log); False when that is not known (then the
        caller sets them all)."""
        mark = s.af_mark
        if mark is None or mark[1] != s.cache_gen:
            return False
        since = fl.written_since(mark[0])
        if since is None:
            return False
        if since and len(cast(np.ndarray, s.af_all)):
            j = since[0] if len(since) == 1 else np.concatenate(since)
            if s.af_runs is not None and len(s.af_runs) <= 4:
                tri = s.af_tri
                if tri is None or tri[0] != s.cache_gen:
                    tri = s.af_tri = (s.cache_gen, run_rows(s.af_runs))
                fl.update_runs(j, AF_ON, s.af_runs, tri[1])
            else:
                j = members(cast(np.ndarray, s.af_all), j)
                if len(j):
                    j.flags.writeable = False     # ours: the write log may keep it as it is
                    fl.update(j, AF_ON)
        s.af_mark = (fl.ver, s.cache_gen)
        return True

    def _thp_sweep(self, s: Stream, phase_start: int, a: int, b: int, every: bool) -> None:
        """A cyclic sweep over PMD-mapped THPs only (Stream.heads_va), leaf by leaf: the
        leaves of the pages touched in [a, b) walk when every touch misses (`every`), or
        else only those invalidated (COLD); what the page-by-page path does for them."""
        k = s.rate * (b - a) / 1e6
        if k <= 0 or s.n <= 0:
            return
        c0 = s.cursor(phase_start, a)
        i0, i1 = math.ceil(c0), math.ceil(c0 + k)
        off = s.start & (P.BLOCK_PAGES - 1)
        heads_va = cast(np.ndarray, s.heads_va)
        if i1 - i0 >= s.n:
            heads = heads_va
        else:
            i0, i1 = i0 % s.n, i0 % s.n + (i1 - i0)
            parts = [(i0, min(i1, s.n))] + ([(0, i1 - s.n)] if i1 > s.n else [])
            heads = np.concatenate([heads_va[(off + p) >> 9:((off + q - 1) >> 9) + 1] for p, q in parts])
        fl = self.m.pt.phys.flags
        if not every:
            heads = heads[(fl[heads] & P.COLD) != 0]
        fl.set_bits(heads, P.AF)
        fl.clear_bits(heads, P.COLD)
        if i1 - i0 >= s.n:
            s.has_cold = False                # every leaf of the stream was touched and refilled

    def _populate_pmd(self, proc, s: Stream, idx: np.ndarray) -> np.ndarray:
        """A populate sweep (`idx` consecutive) chunk by chunk: the 2 MB chunks that fault
        in, or already are, PMD-mapped THPs take one walk each (AF set, TLB refilled on the
        leaf, as the page-by-page path does for them); returns the pages of the other
        chunks, for the page-by-page path."""
        pt = self.m.pt
        vma = pt.vma_by_uid.get(s.vma_uid, (None, None))[1]
        if vma is None:
            return idx
        c0 = (s.start + int(idx[0])) >> 9
        chunks = np.arange(c0, ((s.start + int(idx[-1])) >> 9) + 1, dtype=np.int64)
        done = pt.fault_pmd_chunks(proc, vma, chunks)
        if not done.any():
            return idx
        heads = proc.chunk_tbl[vma.tbl_off + chunks[done] - vma.chunk0] << 9
        fl = pt.phys.flags
        fl.set_bits(heads, P.AF)
        fl.clear_bits(heads, P.COLD)
        if done.all():
            return idx[:0]
        return idx[~done[((s.start + idx) >> 9) - c0]]

    def _exact_walks(self, proc, va: np.ndarray, pidx: np.ndarray, faulted: np.ndarray) -> np.ndarray:
        pt = self.m.pt
        tlb = pt.exact[proc.cpu % len(pt.exact)]
        shift = pt.tlb_shift(pidx)
        base = (va.astype(np.int64) >> shift) << shift
        out = faulted.copy()
        # consecutive accesses to the same leaf after the first are L1 hits: skip them
        keep = np.ones(len(va), bool)
        keep[1:] = (base[1:] != base[:-1]) | (shift[1:] != shift[:-1])
        sel = np.flatnonzero(keep)
        acc = tlb.access
        pid = proc.pid
        for i, bb, sh in zip(sel.tolist(), base[sel].tolist(), shift[sel].tolist()):
            if acc(pid, bb, sh):
                out[i] = True
        return out

    # --- ground truth ----------------------------------------------------------------------------
    def truth_pages(self, s: Stream, phase_start: int, a: int, b: int, lo_vpn: int, hi_vpn: int) -> float:
        """Pages of the stream inside [lo_vpn, hi_vpn) touched in [a, b) (expected, for random)."""
        if b <= a:
            return 0.0
        k = s.rate * (b - a) / 1e6
        if s.n_in == 0 or s.n_in >= s.n:
            st = max(s.s_in, 1)
            i_lo = max(0, -(-(lo_vpn - s.start) // st))
            i_hi = min(s.n, max(0, -(-(hi_vpn - s.start) // st)))
            inside = max(0, i_hi - i_lo)
            if not inside:
                return 0.0
            if not s.cyclic:
                return inside * -math.expm1(-k / s.n)
            idx, _ = touched_indices(s, phase_start, a, b, None)
            if len(idx) >= s.n:
                return float(inside)
            return float(((idx >= i_lo) & (idx < i_hi)).sum())
        if s.cyclic:
            idx, _ = touched_indices(s, phase_start, a, b, None)
        else:
            idx = np.arange(s.n, dtype=np.int64)
        v = s.vpns(idx)
        inside = float(((v >= lo_vpn) & (v < hi_vpn)).sum())
        return inside if s.cyclic else inside * -math.expm1(-k / s.n)
