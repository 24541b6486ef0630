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
    if f0 > 0 and not f0 & (f0 - 1) and not np.count_nonzero(folio_sz != folio_sz[0]):
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


class VaddrOps:
    """vaddr: three regions from the VMAs, re-evaluated every update interval."""

    id = OpsId.VADDR

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
        """One uniformly random sampling address per region, then mkold its page/PMD."""
        m = ctx.machine
        for t in ctx.targets:
            r = t.regions
            if not len(r) or m.process(t.pid) is None:
                continue
            r.sampling_addr = ctx.rng.integers(r.start, r.end, dtype=np.uint64)
            m.va_mkold(t.pid, r.sampling_addr)

    def check_accesses(self, ctx) -> int:
        """Young check of every sampling address, with the same-folio reuse; returns the
        largest nr_accesses of any region."""
        m = ctx.machine
        max_nr = 0
        for t in ctx.targets:
            r = t.regions
            if not len(r):
                continue
            if m.process(t.pid) is None:
                acc = np.zeros(len(r), dtype=bool)
            else:
                young, fsz = m.va_young(t.pid, r.sampling_addr)
                acc, _, _ = resolve_reuse(np.asarray(young, dtype=bool), np.asarray(fsz), r.sampling_addr)
            core.update_access_rate(r, acc, ctx.attrs)
            max_nr = max(max_nr, int(np.maximum.reduce(r.nr_accesses)))
        return max_nr

    def target_valid(self, ctx, t) -> bool:
        return ctx.machine.process(t.pid) is not None


class FvaddrOps(VaddrOps):
    """fvaddr: vaddr with the user's fixed regions (no init, no update)."""

    id = OpsId.FVADDR
    init = None
    update = None


def _vmas(proc) -> list[tuple[int, int]]:
    return sorted((int(v.start), int(v.end)) for v in proc.vmas())


core.register_ops(VaddrOps)
core.register_ops(FvaddrOps)
