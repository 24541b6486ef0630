"""Folio queries: `folio_walk` (one folio at a vaddr), `va_folios` (every folio mapped in a
virtual range, batched) and `pa_folios` (every folio in a physical range).

Owns `FolioInfo` and `FolioArray` and the folio view of the page state in `phys.PhysMem`:
a folio is the naturally aligned run of pages `head .. head + (1 << order)`, its AF is
the leaf's (pagetable.leaf_young), its memcg is its mapper's (`memcg_id`: index in
`Machine.memcgs` + 1, 0 for none). Mirrors folio_walk_start() (mm/pagewalk.c) and the
folio fields DAMOS ops filters read (mm/damon/ops-common.c). Callers hold the machine
mutex; `Machine` exposes these through its contract methods.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from damond.mm import phys as P
from damond.mm import pa_sample
from damond.mm.phys import uniq, BLOCK_PAGES, BLOCK_SHIFT, PAGE_SHIFT, PAGE_SIZE

PAGE_OFFS = np.arange(BLOCK_PAGES, dtype=np.int64)


@dataclass
class FolioInfo:
    pfn: int
    order: int
    level: str          # "pmd" | "pte"
    young: bool
    anon: bool
    shmem: bool
    nid: int
    va: int
    pid: int
    active: bool
    memcg: str


@dataclass
class FolioArray:
    """One entry per folio. `va` and `addr` are set by `va_folios` only (None from pa_folios):
    `va` is the folio's first vaddr (FolioInfo.va; below the queried start when the folio
    straddles it), `addr` the address the walk found it at, i.e. `va` clipped up to the
    queried start and the VMA start; `young` is the leaf's AF at `addr` (for a contpte
    block the OR of the 16 PTEs around `addr`), as folio_walk at `addr` reports it."""
    pfn: np.ndarray
    order: np.ndarray
    mapped: np.ndarray
    anon: np.ndarray
    young: np.ndarray
    active: np.ndarray
    nid: np.ndarray
    memcg_id: np.ndarray
    va: np.ndarray | None = None
    addr: np.ndarray | None = None


def memcg_norm(path: str) -> str:
    """A memcg path in the form Machine.memcgs keeps ("/" or "/a/b", no trailing slash)."""
    return path.rstrip("/") or "/"


def folio_walk(m, pid: int, addr: int) -> FolioInfo | None:
    a, ok, pidx = m._present(pid, np.array([addr], np.uint64))
    if not ok[0]:
        return None
    p = int(pidx[0])
    proc = m.pt.procs[pid]
    vma = proc.find_vma(addr)
    head = int(m.pt.folio_heads(np.array([p]))[0])
    f = int(m.phys.flags[p])
    return FolioInfo(pfn=m.phys.base_pfn + head, order=int(m.phys.order[p]),
                     level="pmd" if f & P.PMD else "pte",
                     young=bool(m.pt.leaf_young(np.array([p]))[0]), anon=vma.anon, shmem=vma.shmem,
                     nid=int(m.phys.blk_node[p // BLOCK_PAGES]),
                     va=int(m.pt.vaddr_of(np.array([head]))[0]), pid=pid,
                     active=bool(m.phys.flags[head] & P.ACTIVE), memcg=proc.memcg)


def pa_folios(m, start: int, end: int) -> FolioArray:
    base = m.phys.base_pfn
    s = max((start >> PAGE_SHIFT) - base, 0)
    e = min(((end + PAGE_SIZE - 1) >> PAGE_SHIFT) - base, m.phys.nr_pages)
    idx = np.arange(s, max(e, s), dtype=np.int64)
    fl = m.phys.flags
    pres = idx[(fl[idx] & P.PRESENT) != 0]
    heads = uniq(m.pt.folio_heads(pres))
    owners = m.pt.owner_of(heads)
    by_uid = m.pt.vma_by_uid
    anon = np.array([by_uid[o][1].anon if o in by_uid else False for o in owners.tolist()], bool)
    memcg = np.array([m.memcg_id(by_uid[o][0].memcg) or 0 if o in by_uid else 0 for o in owners.tolist()], np.int64)
    return FolioArray(pfn=heads + base, order=m.phys.order[heads].astype(np.int64),
                      mapped=np.ones(len(heads), bool), anon=anon, young=pa_sample.folio_af(m.phys.flags, m.phys.order, heads),
                      active=(fl[heads] & P.ACTIVE) != 0,
                      nid=m.phys.blk_node[heads // BLOCK_PAGES].astype(np.int64), memcg_id=memcg)


def _vma_walk(m, proc, v, s: int, e: int):
    """(walk page index, walk address) of every folio mapped in [s, e) of VMA v, in order.

    The same folios, at the same addresses, as folio_walk stepping from s: a page starts
    a folio when it is present and its folio head differs from the previous present
    page's (folios are naturally aligned runs of present pages)."""
    c0, c1 = s >> BLOCK_SHIFT, ((e - 1) >> BLOCK_SHIFT) + 1
    chunks = np.arange(c0, c1, dtype=np.int64)
    blks = proc.chunk_tbl[v.tbl_off + chunks - v.chunk0]
    bound = blks >= 0
    chunks, blks = chunks[bound], blks[bound]
    if not len(blks):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    fl = m.phys.flags
    va0 = chunks << BLOCK_SHIFT
    first = np.maximum(va0, s & ~(PAGE_SIZE - 1))             # first page of the range in each chunk
    pmd = (fl[blks * BLOCK_PAGES] & P.PMD) != 0
    pidx_parts, va_parts = [], []
    if pmd.any():                                             # one folio per PMD block
        p = blks[pmd] * BLOCK_PAGES + ((first[pmd] - va0[pmd]) >> PAGE_SHIFT)
        pidx_parts.append(p)
        va_parts.append(first[pmd])
    if not pmd.all():
        b, c = blks[~pmd], va0[~pmd]
        p = (b[:, None] * BLOCK_PAGES + PAGE_OFFS).ravel()
        a = (c[:, None] + (PAGE_OFFS << PAGE_SHIFT)).ravel()
        keep = (a >= (s & ~(PAGE_SIZE - 1))) & (a < e)
        pidx_parts.append(p[keep])
        va_parts.append(a[keep])
    pidx, va = np.concatenate(pidx_parts), np.concatenate(va_parts)
    if len(pidx_parts) > 1:
        o = np.argsort(va, kind="stable")
        pidx, va = pidx[o], va[o]
    pres = (fl[pidx] & P.PRESENT) != 0
    pidx, va = pidx[pres], va[pres]
    if not len(pidx):
        return pidx, va
    heads = m.pt.folio_heads(pidx)
    new = np.empty(len(heads), bool)
    new[0] = True
    np.not_equal(heads[1:], heads[:-1], out=new[1:])
    return pidx[new], np.maximum(va[new], s)


def va_folios(m, proc, start: int, end: int) -> FolioArray:
    """Every folio mapped in [start, end) of proc (None: no process, no folios), in address
    order (see FolioArray)."""
    pidx_parts, addr_parts, anon_parts = [], [], []
    for v in (proc.vmas() if proc is not None else ()):
        s, e = max(start, v.start), min(end, v.end)
        if s >= e:
            continue
        p, a = _vma_walk(m, proc, v, s, e)
        pidx_parts.append(p)
        addr_parts.append(a)
        anon_parts.append(np.full(len(p), v.anon, bool))
    if pidx_parts:
        p, addr, anon = np.concatenate(pidx_parts), np.concatenate(addr_parts), np.concatenate(anon_parts)
    else:
        p, addr, anon = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)
    fl = m.phys.flags
    heads = m.pt.folio_heads(p)
    n = len(p)
    return FolioArray(pfn=heads + m.phys.base_pfn, order=m.phys.order[p].astype(np.int64),
                      mapped=np.ones(n, bool), anon=anon,
                      young=m.pt.leaf_young(p) if n else np.zeros(0, bool),
                      active=(fl[heads] & P.ACTIVE) != 0,
                      nid=m.phys.blk_node[p // BLOCK_PAGES].astype(np.int64),
                      memcg_id=np.full(n, (m.memcg_id(proc.memcg) or 0) if n else 0, np.int64),
                      va=m.pt.vaddr_of(heads).astype(np.int64) if n else np.zeros(0, np.int64),
                      addr=addr.astype(np.int64))
