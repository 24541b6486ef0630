"""Emulated processes: pids, VMAs and the per-process chunk table that maps VA -> physical block.

Owns `Vma` and `Process` (the contract's `.pid`, `.comm`, `.alive`, `.vmas()`), the
address-space layout of a typical arm64 PIE process (text, heap, a top-down mmap area,
libc, stack, so DAMON's three-regions heuristic sees the two big gaps), and vectorised
VA translation: VMA lookup by searchsorted, then one int64 per virtual 2 MB chunk naming
the backing physical block (-1: nothing there yet). Page state itself lives in
`phys.PhysMem`. Mirrors the parts of mm/mmap.c / mm/vma.c damond needs.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

import numpy as np

from damond.mm.phys import BLOCK_PAGES, BLOCK_SHIFT, PAGE_SHIFT, PAGE_SIZE

TEXT_BASE = 0xAAAAC0000000
MMAP_TOP = 0xFFFF80000000
STACK_TOP = 0xFFFFFFFFF000
STACK_SIZE = 132 << 10
HEAP_SIZE = 132 << 10


@dataclass
class Vma:
    """One mapping. `anon` and `shmem` are exclusive; file text VMAs have both False."""
    start: int
    end: int
    anon: bool
    shmem: bool
    name: str
    hugepage_hint: str | None = None        # "hugepage" | "nohugepage" | None
    perms: str = "rw-p"
    uid: int = 0
    huge: str | None = None                 # tmpfs huge= mount option for shmem VMAs
    tbl_off: int = field(default=0, repr=False)

    @property
    def chunk0(self) -> int:
        return self.start >> BLOCK_SHIFT

    @property
    def nr_chunks(self) -> int:
        return ((self.end - 1) >> BLOCK_SHIFT) - self.chunk0 + 1


class Process:
    """An emulated process; memory state lives in the Machine's PhysMem."""

    def __init__(self, pid: int, comm: str, cpu: int, nid: int, memcg: str):
        self.pid, self.comm, self.cpu, self.nid, self.memcg = pid, comm, cpu, nid, memcg
        self.alive = True
        self._vmas: list[Vma] = []
        self.chunk_tbl = np.zeros(0, np.int64)
        self._starts = np.zeros(0, np.uint64)
        self._ends = np.zeros(0, np.uint64)
        self._offs = np.zeros(0, np.int64)
        self._chunk0 = np.zeros(0, np.int64)
        self._base_ci = np.zeros(0, np.int64)   # chunk table index = (addr >> 21) + _base_ci[vma]
        self._starts_i = self._ends_i = np.zeros(0, np.int64)
        self._start_list: list[int] = []
        self.gen = 0                        # bumped on every mapping change (stream caches key on it)
        self.workload = None
        self.twin = None                    # damond/host/twin.Twin when this mirrors a real program
        self.mmap_next = MMAP_TOP

    def vmas(self) -> list[Vma]:
        return list(self._vmas)

    def add_vma(self, vma: Vma) -> Vma:
        """Insert a VMA (must not overlap) and extend the chunk table."""
        for v in self._vmas:
            if v.start < vma.end and vma.start < v.end:
                raise ValueError(f"VMA {vma.start:#x}-{vma.end:#x} overlaps {v.start:#x}-{v.end:#x}")
        vma.tbl_off = len(self.chunk_tbl)
        self.chunk_tbl = np.concatenate([self.chunk_tbl, np.full(vma.nr_chunks, -1, np.int64)])
        self._vmas.append(vma)
        self._vmas.sort(key=lambda v: v.start)
        self._reindex()
        return vma

    def remove_vma(self, vma: Vma) -> None:
        self._vmas.remove(vma)
        self._reindex()

    def _reindex(self) -> None:
        self._starts = np.array([v.start for v in self._vmas], np.uint64)
        self._ends = np.array([v.end for v in self._vmas], np.uint64)
        self._offs = np.array([v.tbl_off for v in self._vmas], np.int64)
        self._chunk0 = np.array([v.chunk0 for v in self._vmas], np.int64)
        self._base_ci = self._offs - self._chunk0
        self._starts_i = self._starts.astype(np.int64)
        self._ends_i = self._ends.astype(np.int64)
        self._start_list = [v.start for v in self._vmas]
        self.gen += 1

    def mmap_area(self, length: int, align: int = 2 << 20) -> int:
        """Pick the next top-down mmap address for `length` bytes (THP-aligned, like
        thp_get_unmapped_area for large anonymous mappings), leaving a one-page gap."""
        start = (self.mmap_next - length) & ~(align - 1)
        self.mmap_next = start - PAGE_SIZE
        return start

    def find_vma(self, addr: int) -> Vma | None:
        i = int(np.searchsorted(self._starts, np.uint64(addr), "right")) - 1
        if i >= 0 and addr < self._vmas[i].end:
            return self._vmas[i]
        return None

    def translate(self, addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised VA -> (ok, vma index, pidx). ok is False outside VMAs or where no
        physical block backs the chunk; pidx is then 0."""
        a = np.asarray(addrs, np.uint64)
        if not len(self._vmas) or not len(a):
            z = np.zeros(len(a), np.int64)
            return np.zeros(len(a), bool), z, z
        # user addresses are < 2**63: int64 arithmetic (addresses >= 2**63 turn negative
        # and fall before the first VMA, which is the right answer for them too)
        ai = a.view(np.int64)
        vi = np.searchsorted(self._starts_i, ai, "right") - 1
        ok = ai < self._ends_i[vi]          # vi == -1 reads the last VMA's end: fixed below
        ok &= vi >= 0
        blk = self.chunk_tbl[np.where(ok, (ai >> BLOCK_SHIFT) + self._base_ci[vi], 0)]
        ok &= blk >= 0
        pidx = blk * BLOCK_PAGES + ((ai >> PAGE_SHIFT) & (BLOCK_PAGES - 1))
        pidx[~ok] = 0
        return ok, vi.astype(np.int64), pidx

    def one_vma_blocks(self, addrs: np.ndarray) -> np.ndarray | None:
        """The physical block of each of `addrs` (uint64) when they all lie in one VMA on
        bound blocks (the common case of DAMON's sampling addresses); None otherwise."""
        if not len(addrs) or not self._vmas:
            return None
        ai = addrs.view(np.int64)
        if len(ai) <= 32:                   # a few addresses: cheaper as Python ints
            lst = ai.tolist()
            lo, hi = min(lst), max(lst)
        else:
            lo, hi = int(np.minimum.reduce(ai)), int(np.maximum.reduce(ai))
        i = bisect_right(self._start_list, lo) - 1
        if i < 0 or lo < 0 or hi >= self._vmas[i].end:
            return None
        v = self._vmas[i]
        ci = ai >> _BLOCK_SHIFT
        ci += np.int64(v.tbl_off - v.chunk0)
        blk = self.chunk_tbl.take(ci)
        if np.minimum.reduce(blk) < 0:
            return None
        return blk

    def translate_one_vma(self, addrs: np.ndarray) -> np.ndarray | None:
        """pidx of `addrs` (uint64) when they all lie in one VMA on bound blocks; None
        otherwise (use `translate`)."""
        blk = self.one_vma_blocks(addrs)
        if blk is None:
            return None
        return page_index(blk, addrs)

    def vma_blocks(self, vma: Vma) -> np.ndarray:
        return self.chunk_tbl[vma.tbl_off:vma.tbl_off + vma.nr_chunks]


def page_index(blk: np.ndarray, addrs: np.ndarray) -> np.ndarray:
    """pidx of each of `addrs` (uint64) given its physical block (overwrites `blk`)."""
    blk <<= _NINE
    sub = addrs.view(np.int64) >> _PAGE_SHIFT
    sub &= _SUB_MASK
    blk |= sub
    return blk


# numpy scalars for the per-sample paths: a Python int operand costs a conversion per call
_BLOCK_SHIFT, _PAGE_SHIFT = np.int64(BLOCK_SHIFT), np.int64(PAGE_SHIFT)
_NINE, _SUB_MASK = np.int64(9), np.int64(BLOCK_PAGES - 1)
