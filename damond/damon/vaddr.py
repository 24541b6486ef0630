"""The `vaddr` and `fvaddr` operations sets: virtual address spaces of emulated processes.

Mirrors the monitoring half of `mm/damon/vaddr.c`: the initial "three regions" (all
mappings minus the two largest gaps, evenly split to honour min_nr_regions), their
re-evaluation every ops update interval (`damon_va_update` -> `damon_set_regions`), one
random sampling address per region per sample with mkold/young through the machine's
page tables, and the kernel's reuse of a young result for regions whose sampling
addresses share a folio. `fvaddr` is the same class with init/update turned off.
DAMOS actions on vaddr live in `actions.py`.
"""
from __future__ import annotations

import numpy as np

from damond.damon import core
from damond.damon.params import OpsId
from damond.damon.regions import Regions
from damond.errors import DamonError

PAGE_SIZE = core.PAGE_SIZE


def three_regions(vmas: list[tuple[int, int]], min_sz: int = PAGE_SIZE) -> list[tuple[int, int]] | None:
    """__damon_va_three_regions(): the mapped span cut by its two largest gaps, aligned.

    Args:
        vmas: (start, end) of every mapping, sorted by address.
        min_sz: the minimum region size used for alignment.
    Returns:
        Three (start, end) ranges, or None when the space has fewer than two gaps.
    """
    first_gap = (0, 0)
    second_gap = (0, 0)
    prev_end = None
    start = None
    for s, e in vmas:
        if prev_end is None:
            start = s
        else:
            gap = s - prev_end
            if gap > first_gap[1] - first_gap[0]:
                second_gap = first_gap
                first_gap = (prev_end, s)
            elif gap > second_gap[1] - second_gap[0]:
                second_gap = (prev_end, s)
        prev_end = e
    if second_gap[1] - second_gap[0] == 0 or first_gap[1] - first_gap[0] == 0:
        return None
    if first_gap[0] > second_gap[0]:
        first_gap, second_gap = second_gap, first_gap
    a = core.align_up
    return [(a(start, min_sz), a(first_gap[0], min_sz)),
            (a(first_gap[1], min_sz), a(second_gap[0], min_sz)),
            (a(second_gap[1], min_sz), a(prev_end, min_sz))]


def init_regions(regions: Regions, ranges: list[tuple[int, int]], min_nr_regions: int,
                 min_sz: int = PAGE_SIZE) -> None:
    """__damon_va_init_regions(): the three regions, each evenly split into
    size / (total / min_nr_regions) pieces."""
    sz = sum(e - s for s, e in ranges)
    if min_nr_regions:
        sz //= min_nr_regions
    sz = max(sz, min_sz)
    parts = []
    for s, e in ranges:
        r = Regions.from_ranges([(s, e)])
        try:
            core.evenly_split_region(r, 0, (e - s) // sz, min_sz)
        except DamonError:
            pass                      # the kernel ignores the error: one region stays
        parts.append(r)
    regions.assign(Regions.concat(parts))


def resolve_reuse(young: np.ndarray, folio_sz: np.ndarray, addrs: np.ndarray,
                  first_is_fresh: bool = True, last_key: int | None = None,
                  last_young: bool = False) -> tuple[np.ndarray, int, bool]:
    """Apply the kernel's folio-result reuse to per-region young results.

    A region whose sampling address lies in the folio (ALIGN_DOWN by the folio size) of
    the last freshly checked address reuses that check's result instead of its own.
    Addresses increase along a target, so the last fresh check is always the start of the
    current run of equal folio keys.

    Returns:
        (accessed per region, key of the last fresh check, its result) for callers that
        carry the state across calls (paddr).
    """
    n = len(addrs)
    if not n:
        return np.zeros(0, dtype=bool), last_key, last_young
    f0 = int(folio_sz[0])
    if f0 > 0 and not f0 & (f0 - 1) and not np.count_nonzero(folio_sz != f0):
        shift = f0.bit_length() - 1          # one power-of-two folio size (the usual case)
        keys = addrs >> np.uint64(shift)     # folio numbers; the key is keys << shift
    else:
        shift = 0
        fsz = np.maximum(folio_sz.astype(np.uint64), np.uint64(1))
        keys = addrs - addrs % fsz
    same = keys[1:] == keys[:-1]             # shares the folio of the address before
    first_reused = not first_is_fresh and last_key is not None and int(keys[0]) << shift == last_key
    if not first_reused:
        nr_dup = np.count_nonzero(same)
        if not nr_dup:                       # no two addresses share a folio: nothing reused
            return young.copy(), int(keys[-1]) << shift, bool(young[-1])
        if nr_dup <= 64:                     # a few addresses share the folio of the one before
            acc = young.copy()
            dup = np.flatnonzero(same).tolist()
            for i in dup:
                acc[i + 1] = acc[i]
            k = n - 1
            while k and same[k - 1]:
                k -= 1
            return acc, int(keys[k]) << shift, bool(young[k])
    fresh = np.empty(n, dtype=bool)
    fresh[0] = not first_reused
    np.logical_not(same, out=fresh[1:])
    fresh_idx = np.flatnonzero(fresh)
    if not len(fresh_idx):
        return np.full(n, last_young, dtype=bool), last_key, last_young
    run = np.cumsum(fresh) - 1               # which fresh check each address falls under; -1: lead
    acc = young[fresh_idx[np.maximum(run, 0)]]
    if not fresh[0]:
        acc[run < 0] = last_young
    k = int(fresh_idx[-1])
    return acc, int(keys[k]) << shift, bool(young[k])


try:
    from damond.damon import _rand      # compiled (setup.py); optional
except ImportError:                     # pragma: no cover - without a C compiler
    _rand = None


def _rand_agrees() -> bool:
    """The compiled draw gives numpy's numbers and leaves numpy's generator state, on
    narrow, wide and one-byte ranges, from a state with a buffered 32-bit half."""
    if _rand is None:
        return False
    lo = np.array([0, 4096, 1 << 40, (1 << 63) + 5, 7], np.uint64)
    hi = np.array([3 << 20, 4096 + 12345 * 4096, (1 << 40) + (5 << 33), (1 << 64) - 1, 8], np.uint64)
    a, b = np.random.default_rng([7, 11]), np.random.default_rng([7, 11])
    a.integers(0, 5, dtype=np.uint32), b.integers(0, 5, dtype=np.uint32)   # leave half a draw buffered
    want = a.integers(lo, hi, size=(9, len(lo)), dtype=np.uint64)
    got = np.empty_like(want)
    try:
        _rand.bounded_rows(b.bit_generator.capsule, lo, hi, got)
    except Exception:
        return False
    return bool((want == got).all()) and a.bit_generator.state == b.bit_generator.state


_RAND = _rand if _rand_agrees() else None


def draw_rows(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, k: int) -> np.ndarray:
    """rng.integers(lo, hi, size=(k, len(lo)), dtype=np.uint64): the same numbers and the
    same generator state after, by the compiled helper when it is there."""
    if _RAND is None or not len(lo):
        return rng.integers(lo, hi, size=(k, len(lo)), dtype=np.uint64)
    out = np.empty((k, len(lo)), np.uint64)
    bg = rng.bit_generator
    with bg.lock:
        _RAND.bounded_rows(bg.capsule, np.ascontiguousarray(lo, np.uint64), np.ascontiguousarray(hi, np.uint64), out)
    return out


MAX_BATCH_ADDRS = 1 << 16      # sampling addresses drawn ahead at most (all targets, all rows)
BATCH_AGGRS_MAX = 16           # aggregation intervals a batch covers at most (while regions hold)


class SampleBatch:
    """Sampling addresses of the coming samples (up to the next aggregation, or a few while
    the regions stay the same over whole batches), drawn at once.

    damon_rand draws one address per region per sample, target after target. One draw of
    shape (k, N) over the concatenated region bounds of the sampled targets gives the same
    numbers in the same order (numpy fills it row by row from the same bit generator), so
    row j is what sample j would draw. The batch is used while the same targets are sampled
    over the same region arrays (identity: every region change makes new arrays) and rows
    remain. Otherwise, or when anyone else asks for the generator (`Ctx.rng`), `settle`
    puts the generator where drawing only the rows used so far would have left it. Rows
    are read-only arrays; the machine translates them ahead (Machine.va_prefetch).
    """

    __slots__ = ("bounds", "lo", "hi", "rows", "used", "k", "state", "full", "spans", "index", "_same")

    def __init__(self, rng: np.random.Generator, parts: list, k: int):
        self.bounds = [(st, en) for _, st, en in parts]
        if len(parts) == 1:
            self.lo, self.hi = parts[0][1].copy(), parts[0][2].copy()
        else:
            self.lo = np.concatenate([st for _, st, _ in parts])
            self.hi = np.concatenate([en for _, _, en in parts])
        self.state = rng.bit_generator.state
        full = draw_rows(rng, self.lo, self.hi, k)
        full.setflags(write=False)
        self.full, self.rows, self.spans, o = full, [], [], 0
        for _, st, _ in parts:
            n = len(st)
            self.rows.append(list(full) if n == full.shape[1] else list(full[:, o:o + n]))   # row views
            self.spans.append((o, n))
            o += n
        self.index = {id(t): i for i, (t, _, _) in enumerate(parts)}
        self._same: dict[tuple[int, int], list] = {}
        self.k, self.used = k, 0

    def reuse_src(self, t, addrs: np.ndarray, shift: int):
        """resolve_reuse for target t's current row, worked out for every row at once:
        False when `addrs` is not that row; None when no two neighbouring addresses share
        a folio of 1 << shift bytes (every region keeps its own result); else the index
        array of the region whose check each region reuses (`young.take(src)`)."""
        i = self.index.get(id(t))
        j = self.used - 1
        if i is None or j < 0 or self.rows[i][j] is not addrs:
            return False
        c: list | None = self._same.get((i, shift))
        if c is None:
            o, n = self.spans[i]
            keys = self.full[:, o:o + n] >> np.uint64(shift)
            fresh = np.ones(keys.shape, dtype=bool)
            np.not_equal(keys[:, 1:], keys[:, :-1], out=fresh[:, 1:])
            c = [None] * self.k
            dup = np.flatnonzero(~fresh.all(axis=1)).tolist()
            if dup:
                # each region reads the last fresh check at or before it: the run's first
                src = np.where(fresh[dup], np.arange(n), 0)
                np.maximum.accumulate(src, axis=1, out=src)
                for r, row in zip(dup, src):
                    c[r] = row
            self._same[(i, shift)] = c
        return c[j]

    def matches(self, parts: list) -> bool:
        if self.used >= self.k or len(parts) != len(self.bounds):
            return False
        for (_, st, en), (bs, be) in zip(parts, self.bounds):
            if st is not bs or en is not be:
                return False
        return True

    def settle(self, rng: np.random.Generator) -> None:
        """Rewind `rng` to the state after the rows used so far (nothing to do when all were)."""
        if self.used < self.k:
            rng.bit_generator.state = self.state
            if self.used:
                draw_rows(rng, self.lo, self.hi, self.used)
        self.used = self.k


class VaddrOps:
    """vaddr: three regions from the VMAs, re-evaluated every update interval."""

    id = OpsId.VADDR
    _aggrs = 1                  # aggregation intervals the next sample batch covers

    def init(self, ctx) -> None:
        """damon_va_init(): targets without user regions get the three regions."""
        for t in ctx.targets:
            if len(t.regions):
                continue
            proc = ctx.machine.process(t.pid)
            if proc is None:
                continue
            ranges = three_regions(_vmas(proc), PAGE_SIZE)
            if ranges is not None:
                init_regions(t.regions, ranges, ctx.attrs.min_nr_regions, PAGE_SIZE)

    def update(self, ctx) -> None:
        """damon_va_update(): fit regions to the current three regions."""
        for t in ctx.targets:
            proc = ctx.machine.process(t.pid)
            if proc is None:
                continue
            ranges = three_regions(_vmas(proc), PAGE_SIZE)
            if ranges is None:
                continue
            core.set_regions(t.regions, ranges, PAGE_SIZE)

    def prepare_access_checks(self, ctx) -> None:
        """One uniformly random sampling address per region, then mkold its page/PMD.
        The addresses come from a SampleBatch (the same numbers as one draw per sample)."""
        m = ctx.machine
        parts = [(t, t.regions.start, t.regions.end) for t in ctx.targets
                 if len(t.regions) and m.process(t.pid) is not None]
        if not parts:
            return
        b = ctx.sample_batch
        if b is None or not b.matches(parts):
            # a batch used to its end saw the regions hold: draw the next over twice as many
            # aggregation intervals (up to BATCH_AGGRS_MAX); one left early: back to one
            self._aggrs = min(self._aggrs * 2, BATCH_AGGRS_MAX) if b is not None and b.used >= b.k else 1
            rng = ctx.rng                                   # gives back what a stale batch drew
            n = sum(len(st) for _, st, _ in parts)
            k = ctx.next_aggregation_sis - ctx.passed_sample_intervals + (self._aggrs - 1) * ctx.aggr_samples()
            b = ctx.sample_batch = SampleBatch(rng, parts, max(min(k, MAX_BATCH_ADDRS // n), 1))
            prefetch = getattr(m, "va_prefetch", None)         # an optional hint (test fakes lack it)
            for i, (t, _, _) in enumerate(parts):
                if prefetch is not None:
                    o, n = b.spans[i]
                    prefetch(t.pid, b.rows[i], b.full[:, o:o + n])
        j = b.used
        b.used = j + 1
        for (t, _, _), rows in zip(parts, b.rows):
            t.regions.sampling_addr = rows[j]
            m.va_mkold(t.pid, rows[j])

    def check_accesses(self, ctx) -> None:
        """Young check of every sampling address, with the same-folio reuse (worked out
        ahead by the sample batch when every checked folio has one power-of-two size)."""
        m = ctx.machine
        b = ctx.sample_batch
        for t in ctx.targets:
            r = t.regions
            if not len(r):
                continue
            if m.process(t.pid) is None:
                acc = np.zeros(len(r), dtype=bool)
            else:
                a = r.sampling_addr
                young, fsz = m.va_young(t.pid, a)      # bool, uint64 arrays
                acc = None
                if b is not None:
                    shift = _uniform_shift(fsz)
                    if shift is not None:
                        src = b.reuse_src(t, a, shift)
                        if src is not False:
                            acc = young if src is None else young.take(src)
                if acc is None:
                    acc, _, _ = resolve_reuse(young, fsz, a)
            core.update_access_rate(r, acc, ctx.attrs)

    def target_valid(self, ctx, t) -> bool:
        return ctx.machine.process(t.pid) is not None


class FvaddrOps(VaddrOps):
    """fvaddr: vaddr with the user's fixed regions (no init, no update)."""

    id = OpsId.FVADDR
    init = None
    update = None


_sz_template: tuple[bytes, int] = (b"", 0)    # the last uniform folio size array (bytes) and its log2


def _uniform_shift(fsz: np.ndarray) -> int | None:
    """log2 of the folio size when every entry of `fsz` is the same power of two, else None."""
    global _sz_template
    raw = fsz.tobytes()
    tpl = _sz_template                           # one tuple: kdamond threads may share it
    if raw == tpl[0] and raw:
        return tpl[1]
    f0 = int(fsz[0]) if len(fsz) else 0
    if f0 <= 0 or f0 & (f0 - 1) or np.count_nonzero(fsz != f0):
        return None
    shift = f0.bit_length() - 1
    _sz_template = (raw, shift)
    return shift


def _vmas(proc) -> list[tuple[int, int]]:
    return sorted((int(v.start), int(v.end)) for v in proc.vmas())


core.register_ops(VaddrOps)
core.register_ops(FvaddrOps)
