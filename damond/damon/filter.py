"""DAMOS filters: core filters on regions and ops filters on folios, as `mm/damon/core.c`
(`damos_filter_match`, `damos_filter_out`, `damos_set_filters_default_reject`) and
`ops-common.c` / `vaddr.c` / `paddr.c` (`damos_folio_filter_match`, `damos_va_filter_out`,
`damos_pa_filter_out`).

Core filters (`addr`, `target`) decide per region and may split it at an `addr` range
edge. Ops filters (`anon`, `active`, `memcg`, `young`, `hugepage_size`, `unmapped`)
decide per folio, over a whole `FolioArray` at once (`machine.va_folios` for vaddr,
`machine.pa_folios` for paddr); a folio's memcg is compared by `machine.memcg_id`. The
first matching filter decides; unmatched memory gets the default computed from the last
installed filter.
"""
from __future__ import annotations

import numpy as np

from damond.damon.params import Filter, FilterType, Scheme
from damond.damon.regions import Regions


def default_reject(filters: list[Filter]) -> bool:
    """damos_filters_default_reject(): opposite of the last filter's allow; no filter -> allow."""
    return bool(filters) and filters[-1].allow


def set_default_rejects(scheme: Scheme) -> tuple[bool, bool]:
    """(core_filters_default_reject, ops_filters_default_reject) for the installed filters.

    With any ops filter installed, memory no core filter matched goes on to the ops
    filters, so the core stage allows by default."""
    core = False if scheme.ops_filters else default_reject(scheme.core_filters)
    return core, default_reject(scheme.ops_filters)


def _align_down(x: int, a: int) -> int:
    return x - x % a if a > 1 else x


def core_filter_match(f: Filter, target_idx: int, regions: Regions, i: int, min_region_sz: int) -> bool:
    """damos_filter_match() for a core filter; an `addr` filter may split region i."""
    if f.type == FilterType.TARGET:
        matched = target_idx == f.target_idx
    elif f.type == FilterType.ADDR:
        start = _align_down(f.addr_start, min_region_sz)
        end = _align_down(f.addr_end, min_region_sz)
        rs, re_ = int(regions.start[i]), int(regions.end[i])
        if start <= rs and re_ <= end:
            matched = True
        elif re_ <= start or end <= rs:
            matched = False
        elif rs < start:
            regions.split_at(i, start)      # the part before start: not matching
            matched = False
        else:
            regions.split_at(i, end)        # starts inside: the part up to end matches
            matched = True
    else:
        return False
    return matched == f.matching


# id(core_filters list) -> (the list, min_region_sz, its length, aligned (starts, ends) or None):
# ranges for lists of matching `addr` filters only: a commit installs a new list, so the entry is checked by identity
_ADDR_RANGES: dict[int, tuple] = {}


def _addr_ranges(filters: list[Filter], min_region_sz: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Aligned (starts, ends) when every filter is a matching `addr` filter, else None."""
    e = _ADDR_RANGES.get(id(filters))
    if e is not None and e[0] is filters and e[1] == min_region_sz and e[2] == len(filters):
        return e[3]
    r = None
    if all(f.type == FilterType.ADDR and f.matching for f in filters):
        r = (np.array([_align_down(f.addr_start, min_region_sz) for f in filters], dtype=np.uint64),
             np.array([_align_down(f.addr_end, min_region_sz) for f in filters], dtype=np.uint64))
    if len(_ADDR_RANGES) > 64:
        _ADDR_RANGES.clear()
    _ADDR_RANGES[id(filters)] = (filters, min_region_sz, len(filters), r)
    return r


def core_filter_out(scheme: Scheme, default_rej: bool, target_idx: int, regions: Regions, i: int,
                    min_region_sz: int) -> tuple[bool, bool]:
    """damos_filter_out(): returns (filtered_out, core_filters_allowed).

    With only matching `addr` filters (what an address-filter control plane installs), a
    filter that does not overlap region i neither matches nor splits it, so only the
    overlapping ones are evaluated, in their order: the same result and the same splits."""
    filters = scheme.core_filters
    if len(filters) > 8:
        r = _addr_ranges(filters, min_region_sz)
        if r is not None:
            rs, re_ = np.uint64(regions.start[i]), np.uint64(regions.end[i])
            for k in np.flatnonzero((r[0] < re_) & (r[1] > rs)).tolist():
                f = filters[k]
                if core_filter_match(f, target_idx, regions, i, min_region_sz):
                    return (not f.allow), f.allow
            return default_rej, False
    for f in filters:
        if core_filter_match(f, target_idx, regions, i, min_region_sz):
            return (not f.allow), f.allow
    return default_rej, False


def memcg_id_of(machine, path: str) -> int | None:
    """The machine's id for memcg `path` (Machine.memcg_id); None: no such memcg, or a
    machine without memcgs."""
    id_of = getattr(machine, "memcg_id", None)
    return id_of(path) if id_of is not None else None


def ops_filter_eval(machine, filters: list[Filter], default_rej: bool, core_allowed: bool,
                    folios) -> tuple[np.ndarray, np.ndarray]:
    """damos_folio_filter_match() over a FolioArray, without side effects.

    Filters are evaluated in order; each folio is decided by its first matching filter.
    Returns (filtered_out, young_touched): young_touched marks the folios the `young`
    filter found young while still undecided, which the kernel mkolds on the way
    (damon_folio_mkold / damos_va_filter_young_match); callers apply that."""
    n = len(folios.pfn)
    undecided = np.ones(n, dtype=bool)
    out = np.zeros(n, dtype=bool)
    touched = np.zeros(n, dtype=bool)
    if core_allowed or n == 0:
        return out, touched
    for f in filters:
        if not undecided.any():
            break
        t = f.type
        if t == FilterType.ANON:
            m = np.asarray(folios.anon, dtype=bool)
        elif t == FilterType.ACTIVE:
            m = np.asarray(folios.active, dtype=bool)
        elif t == FilterType.MEMCG:
            want = memcg_id_of(machine, f.memcg_path)
            m = np.asarray(folios.memcg_id) == want if want is not None else np.zeros(n, dtype=bool)
        elif t == FilterType.YOUNG:
            m = np.asarray(folios.young, dtype=bool)
            touched |= m & undecided
        elif t == FilterType.HUGEPAGE_SIZE:
            sz = np.left_shift(np.int64(4096), np.asarray(folios.order, dtype=np.int64))
            m = (sz >= f.sz_min) & (sz <= f.sz_max)
        elif t == FilterType.UNMAPPED:
            m = ~np.asarray(folios.mapped, dtype=bool)
        else:
            m = np.zeros(n, dtype=bool)
        hit = undecided & (m == f.matching)
        out[hit] = not f.allow
        undecided &= ~hit
    out[undecided] = default_rej
    return out, touched


def mkold_touched(machine, folios, touched: np.ndarray, pid: int | None) -> None:
    """Clear the accessed bits the `young` filter found: per walk address (vaddr) or per
    folio (paddr)."""
    if not touched.any():
        return
    if pid is not None:
        machine.va_mkold(pid, np.asarray(folios.addr)[touched].astype(np.uint64))
    else:
        machine.pa_mkold(np.asarray(folios.pfn)[touched].astype(np.uint64) << np.uint64(12))


def ops_filter_out_array(machine, filters: list[Filter], default_rej: bool, core_allowed: bool,
                         folios, pid: int | None = None) -> np.ndarray:
    """damos_pa_filter_out() / damos_va_filter_out() over a FolioArray: bool mask of folios
    filtered out; the `young` filter mkolds the young folios it examines."""
    out, touched = ops_filter_eval(machine, filters, default_rej, core_allowed, folios)
    mkold_touched(machine, folios, touched, pid)
    return out
