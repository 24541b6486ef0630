"""DAMON's per-sample access checks on virtual addresses: damon_va_mkold / damon_va_young.

Owns the translation of one sample's addresses into the leaf locations the two checks
touch (the page's AF slot: the block head for a PMD leaf, the page for a PTE; the 16 PTEs
of a contpte block; the folio head for PG_idle/PG_young; the folio size) as a `SamplePlan`.
DAMON checks the same addresses in mkold and, one sampling interval later, in young; the
machine keeps the last plan and reuses it while nothing changed what those addresses
translate to (process VMAs, block bindings, PRESENT/PMD bits, folio orders: `key`), so each
sample translates once. The leaf rules are pagetable.py's (mkold/young/leaf_young), applied
through 256-entry tables over the flags byte; the results are identical.
"""
from __future__ import annotations

import numpy as np

from damond.mm import phys as P
from damond.mm import pagebytes
from damond.mm.pagebytes import PageBytes
from damond.mm.phys import BLOCK_PAGES, PAGE_SIZE

HEAD_MASK = np.array([~((1 << min(o, 40)) - 1) for o in range(256)], np.int64)   # per folio order
FOLIO_SZ = np.array([PAGE_SIZE << min(o, 40) for o in range(256)], np.uint64)
PMD_SZ = np.uint64(2 << 20)
PMD_BYTES = 2 << 20
NOT_AF = np.uint8(~P.AF & 0xFF)
GROUP = np.arange(16, dtype=np.int64)
_F = np.arange(256)
AF_SET = (_F & P.AF) != 0                                             # flags byte -> leaf young
NOT_IDLE = (_F & P.IDLE) == 0                                         # head byte -> !PG_idle
YOUNG_OF = AF_SET | NOT_IDLE                                          # leaf == head: young()
# leaf == head: mkold() in one step: PG_young if AF, PG_idle, AF cleared
MKOLD_OF = ((_F & ~P.AF) | P.IDLE | np.where(AF_SET, P.YOUNG, 0)).astype(np.uint8)


class SamplePlan:
    """Where the access checks of one address array act (present pages only)."""

    __slots__ = ("pid", "addrs", "key", "n", "sel", "af", "heads", "same", "cpos", "groups", "sz", "loc",
                 "pmd")
    loc: tuple[int, np.ndarray, bool] | None      # fl.locate(af) (mkold -> young)

    def __init__(self, pid: int, addrs: np.ndarray, key: tuple, ok: np.ndarray | None, pidx: np.ndarray,
                 phys: P.PhysMem):
        """`ok` None: every address translated (pidx valid for all)."""
        self.pid, self.addrs, self.key, self.n = pid, addrs, key, len(addrs)
        self.cpos = self.groups = self.loc = None
        self.pmd = False
        f = phys.flags[pidx]
        common = int(np.bitwise_and.reduce(f)) if len(f) else 0     # bits every page has
        if ok is None and common & P.PRESENT:
            self.sel = None
            if common & P.PMD:
                # every page PMD-mapped: leaf = folio = the 2 MB block
                self.af = self.heads = pidx & ~np.int64(BLOCK_PAGES - 1)
                self.same = self.pmd = True
                self.sz = np.full(self.n, PMD_SZ, np.uint64)
                return
        else:
            pres = (f & P.PRESENT) != 0
            if ok is not None:
                pres &= ok
            if pres.all():
                self.sel = None
            else:
                self.sel = np.flatnonzero(pres)
                pidx, f = pidx[self.sel], f[self.sel]
        o = phys.order[pidx] if phys.any_large else None
        if o is None or not len(o) or not np.bitwise_or.reduce(o):
            # plain 4 KB pages: leaf = folio = the page
            self.af = self.heads = pidx
            self.same = True
            sz = np.full(len(pidx), PAGE_SIZE, np.uint64)
        else:
            pmd = (f & P.PMD) != 0
            self.heads = pidx & HEAD_MASK.take(o)
            self.af = np.where(pmd, pidx & ~np.int64(BLOCK_PAGES - 1), pidx)
            self.same = False
            cont = o >= 4
            cont &= ~pmd
            if cont.any():
                self.cpos = np.flatnonzero(cont)
                self.groups = ((pidx[self.cpos] & ~np.int64(15))[:, None] + GROUP).ravel()
            sz = FOLIO_SZ.take(o)
            sz[pmd] = PMD_SZ
            if self.cpos is None and np.array_equal(self.af, self.heads):
                # every leaf is its folio's head (PMD THPs, order-0 pages): one byte per check
                self.same, self.pmd = True, bool(pmd.all())
        if self.sel is None:
            self.sz = sz
        else:
            self.sz = np.full(self.n, PAGE_SIZE, np.uint64)
            self.sz[self.sel] = sz

    @classmethod
    def uniform(cls, pid: int, addrs: np.ndarray, key: tuple, leaf: np.ndarray, folio_sz: np.uint64) -> "SamplePlan":
        """Every address present in a folio that is its own leaf (a PMD THP: `leaf` is the
        block head; a 4 KB page: `leaf` is the page), as the constructor finds for such pages."""
        self = cls.__new__(cls)
        self.pid, self.addrs, self.key, self.n = pid, addrs, key, len(addrs)
        self.sel = self.cpos = self.groups = self.loc = None
        self.af = self.heads = leaf
        self.same = True
        nbytes = int(folio_sz)
        self.pmd = nbytes == PMD_BYTES
        self.sz = _uniform_sz(self.n, nbytes)
        return self

    def matches(self, pid: int, addrs: np.ndarray, key: tuple) -> bool:
        if pid != self.pid or key != self.key:
            return False
        if addrs is self.addrs and not addrs.flags.writeable:     # a prefetched row (read-only)
            return True
        return len(addrs) == self.n and not np.count_nonzero(addrs != self.addrs)

    def _leaf_young(self, fl: PageBytes) -> np.ndarray:
        y = AF_SET.take(fl[self.af])
        if self.cpos is not None:
            y[self.cpos] = AF_SET.take(fl[self.groups]).reshape(-1, 16).any(axis=1)
        return y

    def _located(self, fl: PageBytes) -> tuple[int, np.ndarray, bool]:
        """fl.locate(self.af), kept while no block of `fl` moves to another row (young reads
        where mkold wrote, one gather)."""
        loc = self.loc
        if loc is None or loc[0] != fl.gen:
            loc = self.loc = fl.locate(self.af)
        return loc

    def mkold(self, fl: PageBytes) -> None:
        """pagetable.mkold without TLB flush: PG_young if the leaf was young, PG_idle, clear AF."""
        if self.pmd:                                     # block heads: PageBytes repoints shared ones
            fl.update(self.af, MKOLD_OF)
            return
        if self.same:
            if pagebytes.FAST is None:
                _, pos, private = self._located(fl)
                if private:                              # every leaf on a private row: in place
                    fl.wrote(self.af)
                    fl.flat[pos] = MKOLD_OF.take(fl.flat[pos])
                    return
            fl.update(self.af, MKOLD_OF)
            return
        was = self._leaf_young(fl)
        fl.set_bits(self.heads[was], P.YOUNG)
        fl.set_bits(self.heads, P.IDLE)
        fl.clear_bits(self.af, P.AF)
        if self.groups is not None:
            fl.clear_bits(self.groups, P.AF)

    def young(self, fl: PageBytes) -> tuple[np.ndarray, np.ndarray]:
        """(young, folio_sz) per address: AF || !PG_idle; False / PAGE_SIZE where not present."""
        if self.same:
            if pagebytes.FAST is not None:
                y = fl.gather(self.af, YOUNG_OF)
            else:
                y = YOUNG_OF.take(fl[self.af] if self.pmd else fl.flat[self._located(fl)[1]])
        else:
            y = self._leaf_young(fl)
            y |= NOT_IDLE.take(fl[self.heads])
        if self.sel is not None:
            full = np.zeros(self.n, bool)
            full[self.sel] = y
            y = full
        return y, self.sz.copy()


_UNIFORM_SZ: dict[tuple[int, int], np.ndarray] = {}


def _uniform_sz(n: int, folio_sz: int) -> np.ndarray:
    """A read-only array of n times folio_sz, shared by the plans of equal-sized samples
    (`young` hands out copies)."""
    a = _UNIFORM_SZ.get((n, folio_sz))
    if a is None:
        if len(_UNIFORM_SZ) >= 16:
            _UNIFORM_SZ.clear()
        a = _UNIFORM_SZ[(n, folio_sz)] = np.full(n, folio_sz, np.uint64)
        a.setflags(write=False)
    return a
