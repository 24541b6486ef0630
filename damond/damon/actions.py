"""DAMOS actions on the emulated machine, as the `apply_scheme` ops of `mm/damon/vaddr.c`
and `mm/damon/paddr.c`, plus the RFC's `damos_va_collapse()` and `damos_va_mthp_split()`
(rfc-damon-spe.md section 2) with the hot/cold decision's sign bug fixed.

`apply_action(ctx, target, start, end, state)` returns `(applied_bytes, sz_filter_passed)`
and touches memory only through the Machine contract (madvise, pageout_range,
migrate_range, lru_prio, split_folio_to_order, collapse_range, folio_walk, pa_folios).
Region bookkeeping, quotas and stats stay in damos.py.

damond's improvement over the RFC: `collapse` with a target_order consults the SPE tree
and collapses a 2 MiB range only when its hot fraction reaches the scheme's
`hot_threshold` (the mirror of split), unless `[daemon] collapse = "rfc"`.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from damond.damon import filter as dfilter
from damond.damon.params import Action, OpsId
from damond.errors import ErrnoError
from damond.log import get_logger
from damond.spe import heatmap as spe_heatmap

PAGE_SIZE = 4096
PMD_ORDER = 9
PMD_SIZE = PAGE_SIZE << PMD_ORDER
DEFAULT_HOT_THRESHOLD = 30
COLLAPSE_GUARD_ORDER = 2   # sub-chunk order whose hot fraction guards a collapse (16 KiB, as split)
MADVISE_ACTIONS = {Action.WILLNEED: "willneed", Action.COLD: "cold", Action.PAGEOUT: "pageout",
                   Action.HUGEPAGE: "hugepage", Action.NOHUGEPAGE: "nohugepage"}

log = get_logger("damond.damon.actions")


def _align_down(x: int, a: int) -> int:
    return x - x % a


def _align_up(x: int, a: int) -> int:
    return -(-x // a) * a


def folio_size(folio) -> int:
    return PAGE_SIZE << int(folio.order)


def apply_action(ctx, target, start: int, end: int, state) -> tuple[int, int]:
    """Apply the scheme's action to [start, end) of a target: (applied bytes, sz_filter_passed)."""
    if ctx.ops_id == OpsId.PADDR:
        return pa_apply(ctx, start, end, state)
    return va_apply(ctx, target.pid, start, end, state)


# --- vaddr / fvaddr -----------------------------------------------------------------

def va_apply(ctx, pid: int, start: int, end: int, state) -> tuple[int, int]:
    """damon_va_apply_scheme()."""
    s = state.params
    a = s.action
    machine = ctx.machine
    if pid is None or machine.process(pid) is None:
        return 0, 0     # damon_get_mm() failed
    if a in MADVISE_ACTIONS:
        return madvise(machine, pid, start, end, MADVISE_ACTIONS[a]), 0
    if a == Action.COLLAPSE:
        if s.target_order:
            return va_collapse(ctx, pid, start, end, state)
        return madvise(machine, pid, start, end, "collapse"), 0
    if a.is_split:
        return va_split(ctx, pid, start, end, state)
    if a in (Action.MIGRATE_HOT, Action.MIGRATE_COLD):
        return va_migrate(ctx, pid, start, end, state)
    if a == Action.STAT:
        return 0, va_stat(ctx, pid, start, end, state)
    return 0, 0     # not supported by vaddr (lru_prio, lru_deprio)


def madvise(machine, pid: int, start: int, end: int, advice: str) -> int:
    """damos_madvise(): the whole (page aligned) region on success, 0 on error."""
    start = _align_up(start, PAGE_SIZE)
    length = _align_up(end - start, PAGE_SIZE)
    if length <= 0:
        return 0
    return length if machine.madvise(pid, start, start + length, advice) == 0 else 0


def _vma_at(vmas, addr: int):
    for v in vmas:
        if v.start <= addr < v.end:
            return v
    return None


def iter_folios(machine, pid: int, start: int, end: int):
    """Every folio mapped in [start, end) of pid, in address order, by folio_walk: (addr, FolioInfo, vma).
    The per-folio path for machines without `va_folios`."""
    proc = machine.process(pid)
    if proc is None:
        return
    vmas = sorted(proc.vmas(), key=lambda v: v.start)
    for v in vmas:
        addr, vend = max(start, v.start), min(end, v.end)
        while addr < vend:
            fi = machine.folio_walk(pid, addr)
            if fi is None:
                addr += PAGE_SIZE
                continue
            yield addr, fi, v
            nxt = int(fi.va) + folio_size(fi)
            addr = nxt if nxt > addr else addr + PAGE_SIZE


def va_folios(machine, pid: int, start: int, end: int):
    """The folios mapped in [start, end) of pid as a FolioArray with `va` and `addr`:
    `machine.va_folios`, or built from `iter_folios` on a machine without it."""
    if hasattr(machine, "va_folios"):
        return machine.va_folios(pid, start, end)
    got = list(iter_folios(machine, pid, start, end))

    def col(fn, dt):
        return np.array([fn(a, fi) for a, fi, _ in got], dtype=dt)
    return SimpleNamespace(
        pfn=col(lambda a, fi: fi.pfn, np.int64), order=col(lambda a, fi: fi.order, np.int64),
        mapped=np.ones(len(got), bool), anon=col(lambda a, fi: fi.anon, bool),
        young=col(lambda a, fi: fi.young, bool), active=col(lambda a, fi: getattr(fi, "active", False), bool),
        nid=col(lambda a, fi: fi.nid, np.int64),
        memcg_id=col(lambda a, fi: dfilter.memcg_id_of(machine, fi.memcg) or 0, np.int64),
        va=col(lambda a, fi: fi.va, np.int64), addr=col(lambda a, fi: a, np.int64))


def va_stat(ctx, pid: int, start: int, end: int, state) -> int:
    """damos_va_stat(): bytes of folios passing the ops filters (0 without ops filters)."""
    if not state.params.ops_filters:
        return 0
    fa = va_folios(ctx.machine, pid, start, end)
    n = len(fa.pfn)
    if not n:
        return 0
    pfns = np.asarray(fa.pfn, dtype=np.int64)
    keep = np.ones(n, dtype=bool)
    if state.last_applied == (pid, int(pfns[0])):
        keep[0] = False                 # the folio the last region ended with
    state.last_applied = (pid, int(pfns[-1]))
    if not keep.all():
        fa = _take(fa, keep)
    out = dfilter.ops_filter_out_array(ctx.machine, state.params.ops_filters, state.ops_default_reject,
                                       state.core_filters_allowed, fa, pid)
    orders = np.asarray(fa.order, dtype=np.int64)[~out]
    return int((np.int64(PAGE_SIZE) << orders).sum())


def _take(fa, sel: np.ndarray):
    """The folios of a FolioArray selected by a mask or index array."""
    return SimpleNamespace(**{k: (None if v is None else np.asarray(v)[sel]) for k, v in vars(fa).items()})


def weighted_dest(dests, ilx: int) -> int | None:
    """The weighted-interleave destination index for interleave index ilx (None: all weights 0)."""
    total = sum(d.weight for d in dests)
    if not total:
        return None
    target = ilx % total
    for i, d in enumerate(dests):
        if target < d.weight:
            return i
        target -= d.weight
    return len(dests) - 1


def va_migrate(ctx, pid: int, start: int, end: int, state) -> tuple[int, int]:
    """damos_va_migrate(): to target_nid, or spread over the weighted dests.

    The machine places memory on nodes per 2 MiB physical block, so the weighted-interleave
    choice is made per PMD-sized chunk, with the interleave index of an order-9 folio at the
    chunk (the kernel's choice exactly for PMD THPs). With ops filters, a chunk moves when
    one of its folios passes them."""
    s, machine = state.params, ctx.machine
    if not s.dests and not s.ops_filters:
        if s.target_nid < 0:
            return 0, 0
        return int(machine.migrate_range(pid, start, end, s.target_nid)), 0
    proc = machine.process(pid)
    if proc is None:
        return 0, 0
    applied = 0
    for v in sorted(proc.vmas(), key=lambda v: v.start):
        lo, hi = max(start, v.start), min(end, v.end)
        if lo >= hi:
            continue
        fa = va_folios(machine, pid, lo, hi)
        first = _first_passing_per_chunk(ctx, state, pid, fa)
        chunk = _align_down(lo, PMD_SIZE)
        while chunk < hi:
            a, b = max(chunk, lo), min(chunk + PMD_SIZE, hi)
            j = first.get(chunk)
            chunk += PMD_SIZE
            if j is None:
                continue
            if not s.dests:
                nid = s.target_nid
            else:
                ilx = ((v.start >> 12) >> PMD_ORDER) + ((a - v.start) >> (12 + PMD_ORDER))
                i = weighted_dest(s.dests, ilx)
                if i is None:
                    continue
                nid = s.dests[i].id
            if nid < 0 or int(fa.nid[j]) == nid:
                continue
            applied += int(machine.migrate_range(pid, a, b, nid))
    return applied, 0


def _first_passing_per_chunk(ctx, state, pid: int, fa) -> dict[int, int]:
    """PMD chunk address -> index in `fa` of the chunk's first folio the scheme's ops filters
    let through. Folios after a chunk's first passing one are not examined: only the
    folios before it (and it) get the `young` filter's mkold, as a per-folio walk would."""
    n = len(fa.pfn)
    if not n:
        return {}
    chunks = np.asarray(fa.addr, dtype=np.int64) & ~np.int64(PMD_SIZE - 1)
    if state.params.ops_filters:
        out, touched = dfilter.ops_filter_eval(ctx.machine, state.params.ops_filters, state.ops_default_reject,
                                               state.core_filters_allowed, fa)
    else:
        out, touched = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    passing = np.flatnonzero(~out)
    keys, pos = np.unique(chunks[passing], return_index=True)
    first = dict(zip(keys.tolist(), passing[pos].tolist()))
    if touched.any():
        # examined: every folio of a chunk up to its first passing one (all if none passes)
        idx = np.arange(n)
        limit = np.array([first.get(c, n) for c in chunks.tolist()], dtype=np.int64)
        dfilter.mkold_touched(ctx.machine, fa, touched & (idx <= limit), pid)
    return first


def _hot_threshold(s) -> int:
    return s.hot_threshold or DEFAULT_HOT_THRESHOLD


def chunk_phys_pfn(machine, pid: int, addr: int) -> int | None:
    """PMD-aligned PFN of the physical 2 MiB range backing the chunk at addr (None: unmapped)."""
    fi = machine.folio_walk(pid, addr)
    if fi is None:
        return None
    paddr = (int(fi.pfn) << 12) + (addr - int(fi.va))
    return (paddr >> 12) & ~((1 << PMD_ORDER) - 1)


def va_collapse(ctx, pid: int, start: int, end: int, state) -> tuple[int, int]:
    """damos_va_collapse() (RFC 0003) with damond's SPE guard."""
    s, machine = state.params, ctx.machine
    order = s.target_order
    if order < 2 or order > PMD_ORDER:
        return 0, 0
    chunk = PAGE_SIZE << order
    addr, end = _align_down(start, chunk), _align_up(end, chunk)
    guarded = ctx.system.settings.collapse != "rfc"
    applied = passed = 0
    while addr < end:
        allow = True
        if guarded:
            pfn = chunk_phys_pfn(machine, pid, addr)
            hot = None if pfn is None else ctx.spe.hot_fraction(pfn, PMD_ORDER, COLLAPSE_GUARD_ORDER)
            if hot is not None and hot < _hot_threshold(s):
                allow = False
                state.collapse_guarded += 1
        if allow and machine.collapse_range(pid, addr, order) == 0:
            applied += chunk
        passed += chunk
        addr += chunk
    return applied, passed


def va_split(ctx, pid: int, start: int, end: int, state) -> tuple[int, int]:
    """damos_va_mthp_split() (RFC v3 (b), 79804f2): split a chunk's first folio below hot_threshold."""
    s, machine = state.params, ctx.machine
    target_order = s.target_order
    proc = machine.process(pid)
    if proc is None:
        return 0, 0
    vmas = proc.vmas()
    addr, end = _align_down(start, PMD_SIZE), _align_up(end, PMD_SIZE)
    applied = passed = 0
    # one translation for the chunks' orders; only a folio above target_order is walked
    orders = machine.va_orders(pid, np.arange(addr, end, PMD_SIZE, dtype=np.uint64)).tolist()
    for order in orders:
        big = order > target_order and _vma_at(vmas, addr) is not None
        fi = machine.folio_walk(pid, addr) if big else None
        if fi is not None and int(fi.order) > target_order:
            try:    # SPE data, else the PTE-walk fallback (RFC Phase 2a)
                hot = spe_heatmap.hot_fraction(ctx.spe, machine, pid, fi, addr, target_order)
            except ErrnoError as e:
                hot = -e.errno      # no heatmap: split unconditionally (the fixed sign bug)
            if hot < 0 or hot < _hot_threshold(s):
                if machine.split_folio_to_order(pid, addr, target_order) == 0:
                    applied += PMD_SIZE
            else:
                state.split_kept += 1
        passed += PMD_SIZE
        addr += PMD_SIZE
    return applied, passed


# --- paddr --------------------------------------------------------------------------

def _runs(pfns: np.ndarray, orders: np.ndarray) -> list[tuple[int, int]]:
    """Coalesce folios into contiguous physical byte ranges."""
    if len(pfns) == 0:
        return []
    starts = pfns.astype(np.int64) << 12
    ends = starts + (np.int64(PAGE_SIZE) << orders.astype(np.int64))
    idx = np.argsort(starts, kind="stable")
    starts, ends = starts[idx], ends[idx]
    brk = np.flatnonzero(starts[1:] != ends[:-1]) + 1
    rs = np.concatenate(([0], brk))
    re_ = np.concatenate((brk, [len(starts)])) - 1
    return [(int(starts[a]), int(ends[b])) for a, b in zip(rs, re_)]


def pa_apply(ctx, start: int, end: int, state) -> tuple[int, int]:
    """damon_pa_apply_scheme()."""
    s, machine, au = state.params, ctx.machine, ctx.addr_unit
    a = s.action
    if a not in (Action.PAGEOUT, Action.LRU_PRIO, Action.LRU_DEPRIO, Action.MIGRATE_HOT,
                 Action.MIGRATE_COLD, Action.STAT):
        return 0, 0
    if a == Action.STAT and not s.ops_filters:
        return 0, 0
    filters = list(s.ops_filters)
    if a == Action.PAGEOUT and not any(f.type.value == "young" for f in filters):
        # damon_pa_pageout(): check access at page level again by default
        from damond.damon.params import Filter, FilterType
        filters.append(Filter(type=FilterType.YOUNG, matching=True, allow=False))
    fa = machine.pa_folios(start * au, end * au)
    pfns = np.asarray(fa.pfn, dtype=np.int64)
    if len(pfns) and state.last_applied is not None:
        keep = pfns != state.last_applied
        pfns_all_keep = keep
    else:
        pfns_all_keep = np.ones(len(pfns), dtype=bool)
    out = dfilter.ops_filter_out_array(machine, filters, state.ops_default_reject,
                                       state.core_filters_allowed, fa)
    ok = pfns_all_keep & ~out
    orders = np.asarray(fa.order, dtype=np.int64)
    passed = int((np.int64(PAGE_SIZE) << orders[ok]).sum()) // au if ok.any() else 0
    if len(pfns):
        state.last_applied = int(pfns[-1])
    if a == Action.STAT:
        return 0, passed
    applied = 0
    if a == Action.PAGEOUT:
        for ps, pe in _runs(pfns[ok], orders[ok]):
            applied += int(machine.pageout_range(None, ps, pe))
    elif a in (Action.LRU_PRIO, Action.LRU_DEPRIO):
        for ps, pe in _runs(pfns[ok], orders[ok]):
            applied += int(machine.lru_prio(ps, pe, a == Action.LRU_PRIO))
    else:
        nids = np.asarray(fa.nid, dtype=np.int64)
        if not s.dests:
            if s.target_nid >= 0:
                sel = ok & (nids != s.target_nid)
                for ps, pe in _runs(pfns[sel], orders[sel]):
                    applied += int(machine.migrate_range(None, ps, pe, s.target_nid))
        else:
            for j in np.flatnonzero(ok):
                i = weighted_dest(s.dests, int(pfns[j]) >> int(orders[j]))
                if i is None or int(nids[j]) == s.dests[i].id:
                    continue
                ps = int(pfns[j]) << 12
                applied += int(machine.migrate_range(None, ps, ps + (PAGE_SIZE << int(orders[j])),
                                                     s.dests[i].id))
    return applied // au, passed
