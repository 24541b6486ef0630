"""Page tables, leaves and the Access Flag: faults, young/mkold, TLB invalidation, unmap.

Owns the leaf rules of emulator-facts.md §1 and §9: a page with the PMD bit is mapped by
one 2 MB block descriptor whose AF lives on the block's first page; a PTE-mapped page of
an order >= 4 folio is part of a 64 KB contpte block (AF read as the OR of 16, cleared
together); orders 0-3 map as plain PTEs with their own AF. `young` is
damon_young_pmd_entry()/damon_young_pte_entry() (AF || !PG_idle); `mkold` is
damon_pmdp_mkold()/damon_ptep_mkold() (clear AF in memory only, set PG_idle, set PG_young
if it was young; no TLB invalidation unless flush_on_mkold). Faults allocate folios per
the THP policy (do_anonymous_page / do_huge_pmd_anonymous_page / alloc_anon_folio).
Folio-level actions (split, collapse, pageout, migrate) are in `folio_ops.py`.
"""
from __future__ import annotations

import numpy as np

from damond.mm import phys as P
from damond.mm.phys import uniq, BLOCK_PAGES, BLOCK_SHIFT, PAGE_SHIFT, PhysMem
from damond.mm.process import Process, Vma
from damond.mm.thp import PMD_ORDER, ThpSettings
from damond.mm.tlb import ExactTlb, TlbConfig

RESIDENT = P.PRESENT | P.SWAP

SWAPIN_STALL_NS = 20000     # emulated stall of one 4 KiB swap-in (a fast SSD / zram-ish read)


class PageTables:
    """All mapping state: physical memory, processes, THP policy, and exact TLBs if used."""

    def __init__(self, phys: PhysMem, thp: ThpSettings, tlb: TlbConfig, nr_cpus: int):
        self.phys, self.thp, self.tlb_cfg = phys, thp, tlb
        self.procs: dict[int, Process] = {}
        self.vma_by_uid: dict[int, tuple[Process, Vma]] = {}
        self.next_uid = 1
        self.exact = [ExactTlb(tlb) for _ in range(nr_cpus)] if tlb.model == "exact" else None
        # memory stall time (ns) of all tasks, the machine's PSI "some memory" source: swap-in
        # refaults here, reclaim/migration/compaction work via Machine.charge_memstall
        self.memstall_ns = 0
        # PMD ranges DAMOS split from a PMD THP, (pid, addr) -> scans khugepaged still skips
        # them (khugepaged.split_backoff_scans); khugepaged.recollapses counts the ping-pong
        self.damos_split: dict[tuple[int, int], int] = {}

    # --- leaves ------------------------------------------------------------------------------
    def af_loc(self, pidx: np.ndarray) -> np.ndarray:
        """Where a page's leaf keeps the AF a walk sets (PMD: the block head)."""
        f = self.phys.flags[pidx]
        return np.where(f & P.PMD, pidx & ~np.int64(BLOCK_PAGES - 1), pidx)

    def tlb_loc(self, pidx: np.ndarray) -> np.ndarray:
        """Index standing for the TLB entry of the page's leaf (for COLD bookkeeping)."""
        f = self.phys.flags[pidx]
        o = self.phys.order[pidx]
        cont = (o >= 4) & (self.tlb_cfg.contpte_entries == 1)
        return np.where(f & P.PMD, pidx & ~np.int64(BLOCK_PAGES - 1), np.where(cont, pidx & ~np.int64(15), pidx))

    def tlb_shift(self, pidx: np.ndarray) -> np.ndarray:
        f = self.phys.flags[pidx]
        o = self.phys.order[pidx]
        cont = (o >= 4) & (self.tlb_cfg.contpte_entries == 1)
        return np.where(f & P.PMD, 21, np.where(cont, 16, 12)).astype(np.int64)

    def leaf_young(self, pidx: np.ndarray) -> np.ndarray:
        """AF of the leaf mapping each (present) page; contpte ORs its 16 PTEs."""
        fl = self.phys.flags
        f = fl[pidx]
        o = self.phys.order[pidx]
        out = (fl[np.where(f & P.PMD, pidx & ~np.int64(BLOCK_PAGES - 1), pidx)] & P.AF) != 0
        cont = ((f & P.PMD) == 0) & (o >= 4)
        if cont.any():
            g = (pidx[cont] & ~np.int64(15))[:, None] + np.arange(16)
            out[cont] = (fl[g] & P.AF).any(axis=1)
        return out

    def folio_heads(self, pidx: np.ndarray) -> np.ndarray:
        return P.folio_head(self.phys.order[pidx], pidx)

    def young(self, pidx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(young, folio_sz) for present pages: AF || !PG_idle; PMD -> 2 MB, else folio size."""
        fl = self.phys.flags
        f = fl[pidx]
        heads = self.folio_heads(pidx)
        y = self.leaf_young(pidx) | ((fl[heads] & P.IDLE) == 0)
        sz = np.where(f & P.PMD, 2 << 20, np.int64(P.PAGE_SIZE) << self.phys.order[pidx].astype(np.int64))
        return y, sz.astype(np.uint64)

    def mkold(self, pidx: np.ndarray, procs: np.ndarray | None = None) -> None:
        """Clear the AF of each page's leaf in memory, set PG_idle (and PG_young if it was young)."""
        if not len(pidx):
            return
        fl = self.phys.flags
        f = fl[pidx]
        heads = self.folio_heads(pidx)
        was = self.leaf_young(pidx)
        fl.set_bits(heads[was], P.YOUNG)
        fl.set_bits(heads, P.IDLE)
        pmd = (f & P.PMD) != 0
        fl.clear_bits(pidx[pmd] & ~np.int64(BLOCK_PAGES - 1), P.AF)
        cont = ~pmd & (self.phys.order[pidx] >= 4)
        if cont.any():
            g = ((pidx[cont] & ~np.int64(15))[:, None] + np.arange(16)).ravel()
            fl.clear_bits(g, P.AF)
        plain = ~pmd & ~cont
        fl.clear_bits(pidx[plain], P.AF)
        if self.tlb_cfg.flush_on_mkold:
            fl.set_bits(self.tlb_loc(pidx), P.COLD)
            if self.exact is not None and procs is not None:
                self._exact_invalidate_pages(pidx, procs)

    def _exact_invalidate_pages(self, pidx: np.ndarray, pids: np.ndarray) -> None:
        shift = self.tlb_shift(pidx)
        va = self.vaddr_of(pidx)
        for p, a, s in zip(pids.tolist(), va.tolist(), shift.tolist()):
            base = a & ~((1 << s) - 1)
            for t in self.exact:
                t.invalidate(p, base, base + (1 << s))

    # --- rmap --------------------------------------------------------------------------------
    def vaddr_of(self, pidx: np.ndarray) -> np.ndarray:
        b = pidx // BLOCK_PAGES
        return ((self.phys.blk_vchunk[b] << BLOCK_SHIFT) + ((pidx % BLOCK_PAGES) << PAGE_SHIFT)).astype(np.uint64)

    def owner_of(self, pidx: np.ndarray) -> np.ndarray:
        return self.phys.blk_owner[pidx // BLOCK_PAGES]

    # --- invalidation ------------------------------------------------------------------------
    def invalidate(self, proc: Process, start: int, end: int) -> None:
        """TLBI by VA range: every leaf in [start, end) of `proc` must be walked again."""
        for s, e in self._block_slices(proc, start, end):
            self.phys.flags.set_bits(slice(s, e), P.COLD)
        if self.exact is not None:
            for t in self.exact:
                t.invalidate(proc.pid, start, end)

    def _block_slices(self, proc: Process, start: int, end: int):
        """Physical [s, e) page slices backing [start, end) of proc (bound blocks only)."""
        a = start & ~(P.PAGE_SIZE - 1)
        while a < end:
            nxt = min(((a >> BLOCK_SHIFT) + 1) << BLOCK_SHIFT, end)
            v = proc.find_vma(a)
            if v is None:
                a = nxt
                continue
            nxt = min(nxt, v.end)
            b = int(proc.chunk_tbl[v.tbl_off + (a >> BLOCK_SHIFT) - v.chunk0])
            if b >= 0:
                base = b * BLOCK_PAGES
                yield base + ((a >> PAGE_SHIFT) & 511), base + (((nxt - 1) >> PAGE_SHIFT) & 511) + 1
            a = nxt

    # --- faults ------------------------------------------------------------------------------
    def fault(self, proc: Process, vma: Vma, vaddrs: np.ndarray) -> int:
        """Fault in the not-present pages at `vaddrs` (page-aligned, inside `vma`). Returns
        pages newly made resident. New leaves are young and in the TLB (the faulting access)."""
        a = uniq(np.asarray(vaddrs, np.uint64) & ~np.uint64(P.PAGE_SIZE - 1))
        if not len(a):
            return 0
        phys, fl = self.phys, self.phys.flags
        chunks = uniq((a >> np.uint64(BLOCK_SHIFT)).astype(np.int64))
        tbl = proc.chunk_tbl
        ci = vma.tbl_off + chunks - vma.chunk0
        unbound = tbl[ci] < 0
        if unbound.any():
            tbl[ci[unbound]] = phys.alloc_blocks(proc.nid, vma.uid, chunks[unbound])
        ok, _, pidx = proc.translate(a)
        pidx = pidx[ok]
        pidx = pidx[(fl[pidx] & P.PRESENT) == 0]
        if not len(pidx):
            return 0
        # a refault of a paged-out page waits for swap-in (swap_read_folio: memstall)
        self.memstall_ns += int(np.count_nonzero(fl[pidx] & P.SWAP)) * SWAPIN_STALL_NS
        if vma.anon:
            orders = self.thp.anon_orders(vma.hugepage_hint)
        elif vma.shmem:
            orders = [PMD_ORDER] if self.thp.shmem_pmd(vma.hugepage_hint, vma.huge) else []
        else:
            orders = []
        before = len(pidx)
        blocks = uniq(pidx // BLOCK_PAGES)
        if PMD_ORDER in orders:
            pidx, blocks = self._fault_pmd(vma, pidx, blocks)
        small = [o for o in orders if o < PMD_ORDER]
        if small and len(pidx):
            pidx = self._fault_mthp(vma, pidx, small)
        if len(pidx):
            self._install(pidx, 0, vma.anon)
        return before

    def fault_pmd_chunks(self, proc: Process, vma: Vma, chunks: np.ndarray) -> np.ndarray:
        """The PMD part of fault() for every page of the VMA's `chunks` (sorted virtual 2 MB
        chunk numbers inside it) at once, without listing the pages: bind the chunks, map each
        empty one that may hold a PMD THP. Returns, per chunk, whether it is now one
        PMD-mapped THP; the caller faults the other chunks' pages with fault(), which then
        finds them bound, as one fault() call over all the pages would."""
        phys, fl = self.phys, self.phys.flags
        tbl = proc.chunk_tbl
        ci = vma.tbl_off + chunks - vma.chunk0
        unbound = tbl[ci] < 0
        if unbound.any():
            tbl[ci[unbound]] = phys.alloc_blocks(proc.nid, vma.uid, chunks[unbound])
        blocks = tbl[ci]
        if vma.anon:
            pmd_ok = PMD_ORDER in self.thp.anon_orders(vma.hugepage_hint)
        elif vma.shmem:
            pmd_ok = self.thp.shmem_pmd(vma.hugepage_hint, vma.huge)
        else:
            pmd_ok = False
        if pmd_ok:
            elig = ~fl.any_rows(blocks, RESIDENT) & self._chunk_inside(vma, blocks)
            if elig.any():
                self._fault_pmd(vma, blocks[elig] * BLOCK_PAGES, blocks[elig])
        base = fl.base[blocks]
        want = np.uint8(P.PRESENT | P.PMD)
        return fl.bsh[blocks] & ((fl.flat[base] & want) == want) & ((fl.flat[base + 1] & want) == want)

    def _chunk_inside(self, vma: Vma, blocks: np.ndarray) -> np.ndarray:
        vstart = self.phys.blk_vchunk[blocks] << BLOCK_SHIFT
        return (vstart >= vma.start) & (vstart + (2 << 20) <= vma.end)

    def _fault_pmd(self, vma: Vma, pidx: np.ndarray, blocks: np.ndarray):
        fl = self.phys.flags
        empty = ~fl.any_rows(blocks, RESIDENT) & self._chunk_inside(vma, blocks)
        good = blocks[empty]
        if len(good):
            self.phys.layout_gen += 1
            fl.set_rows(good, P.PRESENT | P.AF | P.PMD)
            self.phys.order.set_rows(good, PMD_ORDER)
            self.phys.any_large = True
            self.phys.account(good, BLOCK_PAGES)
            n = len(good)
            if vma.anon:
                self.thp.count(PMD_ORDER, "anon_fault_alloc", n)
                self.thp.count(PMD_ORDER, "nr_anon", n)
                self.thp.vmstat["thp_fault_alloc"] += n
            else:
                self.thp.count(PMD_ORDER, "shmem_alloc", n)
                self.thp.vmstat["thp_file_alloc"] += n
            pidx = pidx[~np.isin(pidx // BLOCK_PAGES, good)]
        fallback = len(blocks) - len(good)
        if fallback and vma.anon:
            self.thp.count(PMD_ORDER, "anon_fault_fallback", fallback)
            self.thp.vmstat["thp_fault_fallback"] += fallback
        return pidx, blocks[~empty]

    def _fault_mthp(self, vma: Vma, pidx: np.ndarray, orders: list[int]) -> np.ndarray:
        fl = self.phys.flags
        left = []
        for b in uniq(pidx // BLOCK_PAGES).tolist():
            base = b * BLOCK_PAGES
            need = pidx[(pidx >= base) & (pidx < base + BLOCK_PAGES)] - base
            va0 = int(self.phys.blk_vchunk[b]) << BLOCK_SHIFT
            offs = va0 + (np.arange(BLOCK_PAGES, dtype=np.int64) << PAGE_SHIFT)
            blocked = ((fl[base:base + BLOCK_PAGES] & RESIDENT) != 0) | (offs < vma.start) | (offs >= vma.end)
            for o in orders:
                size = 1 << o
                free_groups = ~blocked.reshape(-1, size).any(axis=1)
                g = uniq(need >> o)
                g = g[free_groups[g]]
                if len(g):
                    idx = (base + (g[:, None] << o) + np.arange(size)).ravel()
                    self._install(idx, o, vma.anon, heads=base + (g << o))
                    blocked[(g[:, None] << o) + np.arange(size)] = True
                    need = need[~np.isin(need >> o, g)]
                if not len(need):
                    break
            left.append(base + need)
        return np.concatenate(left) if left else pidx[:0]

    def _install(self, idx: np.ndarray, order: int, anon: bool, heads: np.ndarray | None = None) -> None:
        fl = self.phys.flags
        self.phys.layout_gen += 1
        fl[idx] = P.PRESENT | P.AF
        self.phys.order[idx] = order
        if order:
            self.phys.any_large = True
        self.phys.account(idx // BLOCK_PAGES, 1)
        if order >= 2:
            n = len(heads) if heads is not None else len(idx) >> order
            if anon:
                self.thp.count(order, "anon_fault_alloc", n)
                self.thp.count(order, "nr_anon", n)
            else:
                self.thp.count(order, "shmem_alloc", n)

    # --- teardown ----------------------------------------------------------------------------
    def drop_pages(self, idx: np.ndarray, anon: bool, to_swap: bool) -> int:
        """Free resident pages (unmap or pageout); folio counters follow. Returns pages freed."""
        fl = self.phys.flags
        idx = idx[(fl[idx] & P.PRESENT) != 0]
        if not len(idx):
            return 0
        self.phys.layout_gen += 1
        o = self.phys.order[idx]
        heads = idx[(o >= 2) & ((idx & ((np.int64(1) << o.astype(np.int64)) - 1)) == 0)]
        if anon and len(heads):
            ho = self.phys.order[heads]
            for order in uniq(ho).tolist():
                n = int((ho == order).sum())
                self.thp.count(order, "nr_anon", -n)
                if to_swap:
                    self.thp.count(order, "swpout", n)
        self.phys.account(idx // BLOCK_PAGES, -1)
        fl[idx] = P.SWAP | P.COLD if to_swap else P.COLD
        self.phys.order[idx] = 0
        return len(idx)

    def unmap_vma(self, proc: Process, vma: Vma) -> None:
        blocks = proc.vma_blocks(vma)
        blocks = blocks[blocks >= 0]
        for b in blocks.tolist():
            s = b * BLOCK_PAGES
            self.drop_pages(np.arange(s, s + BLOCK_PAGES, dtype=np.int64), vma.anon, False)
        self.phys.release_blocks(blocks)
        proc.chunk_tbl[vma.tbl_off:vma.tbl_off + vma.nr_chunks] = -1
        if self.exact is not None:
            for t in self.exact:
                t.invalidate(proc.pid, vma.start, vma.end)
        proc.remove_vma(vma)
        self.vma_by_uid.pop(vma.uid, None)

    def new_vma(self, proc: Process, start: int, length: int, *, anon=True, shmem=False, name="",
                hint=None, perms="rw-p", huge=None) -> Vma:
        v = Vma(start, start + length, anon, shmem, name, hint, perms, self.next_uid, huge)
        self.next_uid += 1
        proc.add_vma(v)
        self.vma_by_uid[v.uid] = (proc, v)
        return v
