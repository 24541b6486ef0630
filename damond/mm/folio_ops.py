"""Folio actions: split, collapse, pageout, migrate, LRU (de)prioritisation and khugepaged's scan.

Mirrors split_folio_to_order() and __split_huge_pmd_locked() (mm/huge_memory.c),
damon_collapse_folio_range()/collapse_huge_page()/madvise_collapse() and the khugepaged
scan (mm/khugepaged.c), madvise_cold_or_pageout (mm/madvise.c), migrate_pages and
folio_activate/deactivate. Each returns what the kernel returns (0 or -errno, or bytes)
and performs exactly the TLB invalidations of emulator-facts.md §1.6; counters follow
rfc-damon-spe.md §2.5 (nr_anon per size, split, thp_split_pmd, thp_collapse_alloc, ...).
"""
from __future__ import annotations

import errno

import numpy as np

from damond.mm import phys as P
from damond.mm.phys import uniq, BLOCK_PAGES, BLOCK_SHIFT, PAGE_SHIFT, PAGE_SIZE
from damond.mm.thp import PMD_ORDER

PMD_SIZE = 2 << 20


def split_folio(pt, proc, addr: int, new_order: int) -> int:
    """split_folio_to_order() on the folio mapped at addr: 0 or -errno."""
    ok, vi, pidx = proc.translate(np.array([addr], np.uint64))
    fl = pt.phys.flags
    if not ok[0] or not fl[pidx[0]] & P.PRESENT:
        return -errno.ENOENT
    p = int(pidx[0])
    vma = proc.vmas()[int(vi[0])]
    order = int(pt.phys.order[p])
    if new_order < 0 or new_order >= order:
        return -errno.EINVAL
    if vma.anon and new_order == 1:
        return -errno.EINVAL
    pt.phys.layout_gen += 1
    head = p & ~((1 << order) - 1)
    sl = slice(head, head + (1 << order))
    va_head = int(pt.vaddr_of(np.array([head]))[0])
    was_pmd = bool(fl[head] & P.PMD)
    if was_pmd:                              # __split_huge_pmd_locked: PTEs inherit young
        young = fl[head] & P.AF
        fl[sl] &= ~np.uint8(P.PMD | P.AF)
        fl[sl] |= young
        pt.thp.vmstat["thp_split_pmd"] += 1
    idle, yg = fl[head] & P.IDLE, fl[head] & P.YOUNG
    pt.phys.order[sl] = new_order
    pt.phys.any_large = True
    heads = np.arange(head, head + (1 << order), 1 << new_order)
    fl[heads] |= np.uint8(idle | yg)
    stat = "nr_anon"
    if vma.anon:
        pt.thp.count(order, stat, -1)
        pt.thp.count(new_order, stat, len(heads))
    pt.thp.count(order, "split", 1)
    if order == PMD_ORDER:
        pt.thp.vmstat["thp_split_page"] += 1
    pt.invalidate(proc, va_head, va_head + (PAGE_SIZE << order))
    return 0


def collapse(pt, proc, addr: int, order: int = PMD_ORDER, khugepaged: bool = False) -> int:
    """damon_collapse_folio_range(): collapse the 2 MB at addr into one PMD-mapped THP."""
    if order != PMD_ORDER:
        return -errno.EINVAL
    if addr % PMD_SIZE:
        return -errno.EINVAL
    vma = proc.find_vma(addr)
    if vma is None or not vma.anon or addr + PMD_SIZE > vma.end or vma.hugepage_hint == "nohugepage":
        return -errno.EINVAL
    ci = vma.tbl_off + (addr >> BLOCK_SHIFT) - vma.chunk0
    old = int(proc.chunk_tbl[ci])
    fl = pt.phys.flags
    if old < 0:
        return -errno.EINVAL                 # SCAN_PMD_NULL: no page table
    s = old * BLOCK_PAGES
    f = fl[s:s + BLOCK_PAGES]
    if f[0] & P.PMD:
        return -errno.EINVAL                 # SCAN_PMD_MAPPED
    if not (f & (P.PRESENT | P.SWAP)).any():
        return -errno.EINVAL                 # SCAN_PMD_NONE
    try:
        new = pt.phys.alloc_block(int(pt.phys.blk_node[old]), vma.uid, addr >> BLOCK_SHIFT)
    except P.OutOfMemory:
        pt.thp.vmstat["thp_collapse_alloc_failed"] += 1
        return -errno.ENOMEM
    orders = pt.phys.order[s:s + BLOCK_PAGES]
    idx = np.arange(BLOCK_PAGES)
    pres = (f & P.PRESENT) != 0
    heads = pres & ((idx & ((1 << orders.astype(np.int64)) - 1)) == 0) & (orders >= 2)
    for o in uniq(orders[heads]).tolist():
        pt.thp.count(o, "nr_anon", -int((orders[heads] == o).sum()))
    present_before = int(pres.sum())
    n = new * BLOCK_PAGES
    fl[n:n + BLOCK_PAGES] = P.PRESENT | P.AF | P.PMD | P.COLD
    fl[n:n + BLOCK_PAGES] |= f & P.ACTIVE
    pt.phys.order[n:n + BLOCK_PAGES] = PMD_ORDER
    pt.phys.any_large = True
    pt.phys.account(np.array([new]), BLOCK_PAGES)
    pt.phys.account(np.array([old]), -present_before)
    fl[s:s + BLOCK_PAGES] = 0
    pt.phys.release_blocks(np.array([old]))
    proc.chunk_tbl[ci] = new
    pt.thp.count(PMD_ORDER, "nr_anon", 1)
    pt.thp.vmstat["thp_collapse_alloc"] += 1
    if khugepaged:
        pt.thp.khugepaged.pages_collapsed += 1
    pt.invalidate(proc, addr, addr + PMD_SIZE)
    return 0


def khugepaged_candidate(pt, proc, vma, addr: int) -> bool:
    """hpage_collapse_scan_pmd(): max_ptes_none/max_ptes_swap and a referenced (young) PTE."""
    k = pt.thp.khugepaged
    ci = vma.tbl_off + (addr >> BLOCK_SHIFT) - vma.chunk0
    b = int(proc.chunk_tbl[ci])
    if b < 0:
        return False
    f = pt.phys.flags[b * BLOCK_PAGES:(b + 1) * BLOCK_PAGES]
    if f[0] & P.PMD:
        return False
    pres = (f & P.PRESENT) != 0
    swap = (f & P.SWAP) != 0
    none = int((~pres & ~swap).sum())
    if none > k.max_ptes_none or int(swap.sum()) > k.max_ptes_swap or not pres.any():
        return False
    pidx = b * BLOCK_PAGES + np.flatnonzero(pres)
    heads = pt.folio_heads(pidx)
    referenced = int((pt.leaf_young(pidx) | ((pt.phys.flags[heads] & P.YOUNG) != 0)).sum())
    return referenced >= (1 if not swap.any() else BLOCK_PAGES // 2)


def note_damos_split(pt, pid: int, addr: int) -> None:
    """DAMOS split the PMD THP at addr: khugepaged skips the range for split_backoff_scans
    of its visits (damond's back-off; 0, the default, skips nothing)."""
    pt.damos_split[(pid, addr & ~(PMD_SIZE - 1))] = pt.thp.khugepaged.split_backoff_scans


def khugepaged_scan(pt, procs: list) -> int:
    """One khugepaged wake-up: scan pages_to_scan PTEs' worth of PMD ranges, round robin.
    State (cursor) lives on pt. Returns THPs collapsed. A range DAMOS split is skipped
    while its back-off lasts (one visit of khugepaged's scan uses one); collapsing it
    later counts as a re-collapse."""
    k = pt.thp.khugepaged
    # khugepaged/defrag only decides whether its allocations may compact; this machine's
    # memory does not fragment, so, as on a kernel with free memory, it changes nothing here
    if not k.enabled:
        return 0
    ranges = []
    for proc in procs:
        for v in proc.vmas():
            if not v.anon or not pt.thp.pmd_allowed(v.hugepage_hint):
                continue
            a = (v.start + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
            while a + PMD_SIZE <= v.end:
                ranges.append((proc, v, a))
                a += PMD_SIZE
    if not ranges:
        return 0
    budget = max(k.pages_to_scan // BLOCK_PAGES, 1)
    cur = getattr(pt, "khugepaged_cursor", 0) % len(ranges)
    done = 0
    for j in range(min(budget, len(ranges))):
        proc, v, a = ranges[(cur + j) % len(ranges)]
        key = (proc.pid, a)
        left = pt.damos_split.get(key)
        if left:
            pt.damos_split[key] = left - 1
            continue
        if khugepaged_candidate(pt, proc, v, a) and collapse(pt, proc, a, khugepaged=True) == 0:
            done += 1
            if left is not None:
                del pt.damos_split[key]
                k.recollapses += 1
    nxt = cur + min(budget, len(ranges))
    if nxt >= len(ranges):
        k.full_scans += 1
    pt.khugepaged_cursor = nxt % len(ranges)
    return done


def pageout_pages(pt, proc, vma, start: int, end: int) -> int:
    """Reclaim resident pages of [start, end) in one VMA; partially covered large folios are
    split to order 0 first. Returns bytes paged out."""
    out = 0
    fl = pt.phys.flags
    for s, e in list(pt._block_slices(proc, start, end)):
        idx = np.arange(s, e, dtype=np.int64)
        pres = idx[(fl[idx] & P.PRESENT) != 0]
        if not len(pres):
            continue
        heads = uniq(pt.folio_heads(pres))
        for h in heads.tolist():
            o = int(pt.phys.order[h])
            if o and (h < s or h + (1 << o) > e):
                va = int(pt.vaddr_of(np.array([h]))[0])
                split_folio(pt, proc, va, 0)
        out += pt.drop_pages(pres, vma.anon, True)
    pt.invalidate(proc, start, end)
    return out * PAGE_SIZE


def pageout_phys(pt, start: int, end: int) -> int:
    fl = pt.phys.flags
    ok, lo = pt.phys.pidx_of_paddr(np.array([start], np.uint64))
    s = max(int(lo[0]) if ok[0] else (0 if start < P.RAM_BASE else pt.phys.nr_pages), 0)
    e = min((end >> PAGE_SHIFT) - pt.phys.base_pfn, pt.phys.nr_pages)
    if e <= s:
        return 0
    idx = np.arange(s, e, dtype=np.int64)
    pres = idx[(fl[idx] & P.PRESENT) != 0]
    heads = uniq(pt.folio_heads(pres))
    heads = heads[(heads >= s)]
    total = 0
    for h in heads.tolist():
        owner = int(pt.phys.blk_owner[h // BLOCK_PAGES])
        if owner not in pt.vma_by_uid:
            continue
        proc, vma = pt.vma_by_uid[owner]
        va = int(pt.vaddr_of(np.array([h]))[0])
        sz = PAGE_SIZE << int(pt.phys.order[h])
        total += pageout_pages(pt, proc, vma, va, va + sz)
    return total


_BYTES = np.arange(256, dtype=np.uint8)
_SET_COLD = _BYTES | np.uint8(P.COLD)


def migrate_blocks(pt, proc, blocks: list[tuple[int, int]], nid: int) -> int:
    """Move whole 2 MB blocks (chunk table index, block) of proc to node nid, in order, while
    nid has free blocks; blocks already there stay. Returns bytes of resident pages moved."""
    phys = pt.phys
    if not blocks:
        return 0
    ci = np.array([c for c, _ in blocks], np.int64)
    b = np.array([x for _, x in blocks], np.int64)
    away = phys.blk_node[b] != nid
    ci, b = ci[away], b[away]
    k = min(len(b), phys.free_blocks(nid))
    if not k:
        return 0
    ci, b = ci[:k], b[:k]
    owners = phys.blk_owner[b].copy()
    new = phys.alloc_blocks(nid, -1, phys.blk_vchunk[b].copy())
    phys.blk_owner[new] = owners
    pres = phys.flags.count_rows(b, P.PRESENT, P.PRESENT)
    phys.flags.copy_rows(new, b, _SET_COLD)              # the moved leaves are not in any TLB
    phys.order.copy_rows(new, b, _BYTES)
    phys.any_large = True
    phys.account(new, pres)
    phys.account(b, -pres)
    phys.release_blocks(b)
    proc.chunk_tbl[ci] = new
    if pt.exact is not None:
        for va in (phys.blk_vchunk[new] << BLOCK_SHIFT).tolist():
            pt.invalidate(proc, va, va + PMD_SIZE)
    return int(pres.sum()) * PAGE_SIZE
