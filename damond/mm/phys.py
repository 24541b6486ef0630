"""Physical memory: per-page state in two bytes stored per block, a 2 MB block allocator, the rmap.

Owns the PFN space ("System RAM" from `base_pfn`), per-NUMA-node free lists of 2 MB
blocks, and the per-page bytes: `flags` (the bits below) and `order` (order of the folio
the page belongs to; the folio head is `idx & ~((1 << order) - 1)`). A virtual 2 MB chunk
of a VMA is backed by one physical 2 MB block, so every folio (order <= 9) is naturally
aligned in both spaces and VA->PA needs only one int64 per 2 MB. The reverse map is per
block: owner VMA uid and virtual chunk number. `flags` and `order` are PageBytes
(pagebytes.py): a block that is one folio (a PMD-mapped THP, free, paged out) shares a
row, only blocks whose pages differ (split, 4 KB pages) hold 512 bytes each. Resident
cost: ~40 bytes per 2 MB block plus 1 KB per block that is not one folio. Mirrors the
parts of mm/page_alloc.c and mm/rmap.c damond needs.
"""
from __future__ import annotations

import numpy as np

from damond.mm.pagebytes import PageBytes

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
BLOCK_SHIFT = 21
BLOCK_PAGES = 512
RAM_BASE = 0x40000000          # where "System RAM" starts (QEMU virt / many arm64 boards)

# flags bits
PRESENT = 0x01   # mapped and resident
AF = 0x02        # Access Flag of the leaf (PMD: on the block head; contpte: OR over 16; PTE: own)
ACTIVE = 0x04    # on the active LRU
PMD = 0x08       # mapped by a PMD block descriptor (set on all 512 pages)
IDLE = 0x10      # PG_idle of the folio (meaningful on the folio head)
SWAP = 0x20      # paged out: not resident, a later access faults it back in
COLD = 0x40      # the leaf is not in any TLB (invalidated): the next access walks
YOUNG = 0x80     # PG_young of the folio (head): mkold found the leaf young (page_idle semantics)

KIND_PMD = 1     # block_kinds(): one PMD-mapped THP
KIND_SMALL = 2   # block_kinds(): 512 present 4 KB pages


class OutOfMemory(Exception):
    """No free 2 MB block on any allowed node."""


class PhysMem:
    """The emulated RAM. Indexes are page indexes from `base_pfn` (pidx); pfn = base_pfn + pidx."""

    def __init__(self, memory: int, numa_nodes: int):
        nr_blocks = memory >> BLOCK_SHIFT
        if nr_blocks < numa_nodes or nr_blocks < 1:
            raise ValueError("memory too small for the number of NUMA nodes")
        self.nr_blocks = nr_blocks
        self.nr_pages = nr_blocks * BLOCK_PAGES
        self.base_pfn = RAM_BASE >> PAGE_SHIFT
        self.flags = PageBytes(nr_blocks, private_mask=PRESENT | PMD, private_value=PRESENT)   # 4 KB-mapped: per page
        self.order = PageBytes(nr_blocks)
        self.numa_nodes = numa_nodes
        per = nr_blocks // numa_nodes
        self.blk_node = np.minimum(np.arange(nr_blocks) // max(per, 1), numa_nodes - 1).astype(np.int8)
        self.blk_owner = np.full(nr_blocks, -1, np.int32)      # owner VMA uid, -1 free
        self.blk_vchunk = np.zeros(nr_blocks, np.int64)        # virtual address >> 21
        self.node_blocks = np.bincount(self.blk_node, minlength=numa_nodes).astype(np.int64)
        # free stacks, lowest block first out
        self._free = [np.flatnonzero(self.blk_node == n)[::-1].astype(np.int64).copy() for n in range(numa_nodes)]
        self._nfree = [len(f) for f in self._free]
        self.node_present = np.zeros(numa_nodes, np.int64)     # resident pages per node
        # bumped on every change to what a VA translates to (block binding, PRESENT/PMD bits,
        # folio orders): the machine's per-sample translation cache keys on it
        self.layout_gen = 0
        self.any_large = False     # some page was ever given folio order > 0 (else: every order is 0)
        self._kinds: np.ndarray | None = None       # block_kinds() cache, valid for layout _kinds_gen
        self._kinds_gen = self._kinds_seen = -1

    # --- blocks ----------------------------------------------------------------------------
    def free_blocks(self, nid: int | None = None) -> int:
        return sum(self._nfree) if nid is None else self._nfree[nid]

    def alloc_block(self, nid: int, owner: int, vchunk: int) -> int:
        """One free 2 MB block, preferring `nid`, falling back to the other nodes."""
        self.layout_gen += 1
        for n in [nid] + [x for x in range(self.numa_nodes) if x != nid]:
            if self._nfree[n]:
                self._nfree[n] -= 1
                b = int(self._free[n][self._nfree[n]])
                self.blk_owner[b] = owner
                self.blk_vchunk[b] = vchunk
                return b
        raise OutOfMemory()

    def alloc_blocks(self, nid: int, owner: int, vchunks: np.ndarray) -> np.ndarray:
        """Vectorised alloc_block for many chunks of one VMA."""
        self.layout_gen += 1
        out = np.empty(len(vchunks), np.int64)
        done = 0
        for n in [nid] + [x for x in range(self.numa_nodes) if x != nid]:
            take = min(self._nfree[n], len(vchunks) - done)
            if take:
                top = self._nfree[n]
                out[done:done + take] = self._free[n][top - take:top][::-1]
                self._nfree[n] -= take
                done += take
            if done == len(vchunks):
                break
        if done < len(vchunks):
            self.release_blocks(out[:done])
            raise OutOfMemory()
        self.blk_owner[out] = owner
        self.blk_vchunk[out] = vchunks
        return out

    def release_blocks(self, blocks: np.ndarray) -> None:
        """Return blocks to their nodes' free lists; their pages must hold nothing resident."""
        self.layout_gen += 1
        blocks = np.asarray(blocks, np.int64)
        for b in blocks:
            n = int(self.blk_node[b])
            self._free[n][self._nfree[n]] = b
            self._nfree[n] += 1
        self.blk_owner[blocks] = -1
        self.flags.set_rows(blocks, 0)
        self.order.set_rows(blocks, 0)

    def account(self, blocks: np.ndarray, delta_pages: np.ndarray | int) -> None:
        """Adjust per-node resident counts by pages gained (+) or lost (-) in `blocks`."""
        np.add.at(self.node_present, self.blk_node[np.asarray(blocks, np.int64)], delta_pages)

    # --- metrics ---------------------------------------------------------------------------
    def present_pages(self) -> int:
        return int(self.node_present.sum())

    def ram_ranges(self) -> list[tuple[int, int]]:
        return [(RAM_BASE, RAM_BASE + self.nr_pages * PAGE_SIZE)]

    def block_kinds(self) -> np.ndarray | None:
        """Per 2 MB block (uint8): KIND_PMD when all its pages are PRESENT and PMD-mapped (one
        order-9 folio), KIND_SMALL when all are PRESENT 4 KB folios (order 0, no PMD), 0
        otherwise. Lets a translation classify many pages from one small array. Cached for
        the current `layout_gen`; None while the layout keeps changing (built once two
        queries in a row see the same layout, so a churning machine pays nothing)."""
        gen = self.layout_gen
        if self._kinds_gen == gen:
            return self._kinds
        if self._kinds_seen != gen:
            self._kinds_seen = gen
            return None
        self.flags.compact()
        self.order.compact()
        fl = self.flags
        rows = fl.pool[:fl.nrows] & np.uint8(PRESENT | PMD)       # per stored row, then per block
        rix = fl.base >> 9
        every = np.bitwise_and.reduce(rows, axis=1)[rix]
        some = np.bitwise_or.reduce(rows, axis=1)[rix]
        kinds = np.zeros(self.nr_blocks, np.uint8)
        kinds[every == PRESENT | PMD] = KIND_PMD
        small = (every == PRESENT) & (some == PRESENT)
        if self.any_large:
            od = self.order
            small &= (np.maximum.reduce(od.pool[:od.nrows], axis=1) == 0)[od.base >> 9]
        kinds[small] = KIND_SMALL
        self._kinds, self._kinds_gen = kinds, gen
        return kinds

    def pidx_of_paddr(self, paddrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(valid mask, pidx) for physical addresses."""
        p = (np.asarray(paddrs, np.uint64) >> np.uint64(PAGE_SHIFT)).astype(np.int64) - self.base_pfn
        ok = (p >= 0) & (p < self.nr_pages)
        return ok, np.where(ok, p, 0)


def folio_head(order: np.ndarray, pidx: np.ndarray) -> np.ndarray:
    """Head page index of the folio holding each pidx."""
    mask = (np.int64(1) << order.astype(np.int64)) - 1
    return pidx & ~mask


def uniq(x: np.ndarray) -> np.ndarray:
    """Sorted unique values; fast for the already-sorted arrays the hot paths produce
    (numpy's hash-based unique is slow on large int arrays)."""
    x = np.asarray(x)
    if len(x) > 1 and not (x[1:] >= x[:-1]).all():
        x = np.sort(x)
    if len(x) < 2:
        return x.copy()
    return x[np.concatenate(([True], x[1:] != x[:-1]))]
