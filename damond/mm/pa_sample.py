"""DAMON's per-sample access checks on physical addresses: damon_pa_mkold / damon_pa_young.

Owns the translation of one sample's physical addresses into the folios the two checks
act on (rmap view: a folio is young when any of its pages has the AF, or its head lacks
PG_idle; mkold sets PG_young where some AF was set, PG_idle, and clears every page's AF;
order-9 folios block-wise) as a `PaPlan`. DAMON checks the same addresses in mkold and,
one sampling interval later, in young; the machine keeps the last plan and reuses it
while nothing changed what those addresses translate to (`key`: phys.layout_gen and the
machine's map_epoch, which every change to PRESENT/PMD bits, folio orders or block
bindings bumps). The translation is one C loop (pagefast.pa_translate; `_translate` is
its numpy twin for when the module is missing). The common folios go through pagebytes'
C gather/update in one call each: order-0 pages, and order-9 blocks on a shared row whose tail pages hold no AF (the
whole folio's AF is then its head's). Any other folio takes the general per-order code
(`folio_af`, `mkold_general`); the results are identical.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from damond.mm import phys as P
from damond.mm import pagebytes
from damond.mm.pagebytes import PageBytes
from damond.mm.phys import BLOCK_SHIFT, PAGE_SHIFT, PAGE_SIZE, uniq
from damond.mm.sample import AF_SET, FOLIO_SZ, HEAD_MASK, MKOLD_OF, YOUNG_OF

PMD_ORDER = BLOCK_SHIFT - PAGE_SHIFT
_F = np.arange(256)
PRESENT_OF = (_F & P.PRESENT) != 0
IDENT = _F.astype(np.uint8)
_BYTES = np.arange(256, dtype=np.uint8)
NOT_AF_LUT = _BYTES & ~np.uint8(P.AF)


def folio_af(fl: PageBytes, order: PageBytes, heads: np.ndarray) -> np.ndarray:
    """Any AF set in each folio's pages (the rmap view of paddr); order-9 folios block-wise."""
    young = np.zeros(len(heads), bool)
    od = order[heads]
    for o in uniq(od).tolist():
        sel = np.flatnonzero(od == o)
        if o == PMD_ORDER:
            young[sel] = fl.any_rows(heads[sel] >> 9, P.AF)
        else:
            young[sel] = (fl[heads[sel][:, None] + np.arange(1 << o)] & P.AF).any(axis=1)
    return young


def mkold_general(fl: PageBytes, order: PageBytes, heads: np.ndarray) -> None:
    """damon_pa_mkold on the folios `heads` (sorted, unique), whatever their order."""
    fl.set_bits(heads[folio_af(fl, order, heads)], P.YOUNG)
    od = order[heads]
    thp = od == PMD_ORDER
    fl.apply_rows(heads[thp] >> 9, NOT_AF_LUT)
    for o in uniq(od[~thp]).tolist():
        h = heads[~thp][od[~thp] == o]
        fl.clear_bits(h[:, None] + np.arange(1 << o), P.AF)
    fl.set_bits(heads, P.IDLE)


def _translate_c():
    """FAST.pa_translate, None without it (no C module, or one built before it existed)."""
    return getattr(pagebytes.FAST, "pa_translate", None)


class PaPlan:
    """Where the paddr access checks of one address array act (present pages only)."""

    __slots__ = ("addrs", "key", "n", "sel", "heads", "order0", "uh", "sz", "pmd")
    pmd: tuple | None    # every folio order 9: (blocks, first tails) of heads, then of uh

    def __init__(self, addrs: np.ndarray, key: tuple, phys: P.PhysMem):
        self.addrs, self.key, self.n = addrs, key, len(addrs)
        self.pmd = None
        fl, od = phys.flags, phys.order
        r: Any = -1                          # -1 or pa_translate's tuple
        oh: Any = None
        tr = _translate_c()
        if tr is not None and addrs.dtype == np.uint64:
            h, sel, oh = np.empty(self.n, np.int64), np.empty(self.n, np.int64), np.empty(self.n, np.uint8)
            uh, self.sz = np.empty(self.n, np.int64), np.empty(self.n, np.uint64)
            r = tr(fl.flat, fl.base, od.flat, od.base, addrs, phys.base_pfn, P.PRESENT,
                   h, sel, oh, uh, self.sz)
        if r != -1:
            k, omin, omax, inc, u = r
            self.sel = None if k == self.n else sel[:k]
            h, oh = h[:k], oh[:k]
            self.order0 = omax == 0
            pmd = omin == omax == PMD_ORDER
            self.uh = (h if u == k else uh[:u]) if inc else uniq(h)
        else:
            self.sz = np.full(self.n, PAGE_SIZE, np.uint64)
            h, oh = self._translate(phys)
            self.uh = h if len(h) < 2 or (h[1:] > h[:-1]).all() else uniq(h)
            pmd = not self.order0 and np.minimum.reduce(oh) == PMD_ORDER == np.maximum.reduce(oh)
        self.heads = h
        self.uh.setflags(write=False)        # the write log may keep it as it is
        if pmd:
            shift = np.int64(BLOCK_SHIFT - PAGE_SHIFT)
            hb, h1 = h >> shift, h + 1
            self.pmd = (hb, h1) + ((hb, h1) if self.uh is h else (self.uh >> shift, self.uh + 1))

    def _translate(self, phys: P.PhysMem) -> tuple[np.ndarray, np.ndarray | None]:
        """The numpy code of FAST.pa_translate: sets sel, order0 and sz; (heads, their orders)."""
        p = (self.addrs >> np.uint64(PAGE_SHIFT)).astype(np.int64)
        p -= phys.base_pfn
        inr = (p >= 0) & (p < phys.nr_pages)
        if not inr.all():
            p[~inr] = 0
            pres = phys.flags.gather(p, PRESENT_OF) & inr
        else:
            pres = phys.flags.gather(p, PRESENT_OF)
        if pres.all():
            self.sel = None
        else:
            self.sel = np.flatnonzero(pres)
            p = p[self.sel]
        o = phys.order.gather(p, IDENT) if phys.any_large else None
        if o is None or not len(o) or not np.bitwise_or.reduce(o):
            self.order0 = True
            return p, None
        h, self.order0 = p & HEAD_MASK.take(o), False
        oh = phys.order.gather(h, IDENT)
        self.sz[self.sel if self.sel is not None else slice(None)] = FOLIO_SZ.take(oh)
        return h, oh

    def matches(self, addrs: np.ndarray, key: tuple) -> bool:
        if key != self.key:
            return False
        if addrs is self.addrs and not addrs.flags.writeable:    # the caller's read-only array, again
            return True
        return len(addrs) == self.n and not np.count_nonzero(addrs != self.addrs)

    def _simple(self, fl: PageBytes, order: PageBytes, heads: np.ndarray) -> np.ndarray | None:
        """Which folios `heads` keep their whole AF in the head byte (order 0; order 9 on a
        shared row whose tail byte has no AF); None: all of them."""
        if self.order0:
            return None
        o = order.gather(heads, IDENT)
        big = np.flatnonzero(o)
        if not len(big):
            return None
        ok = np.ones(len(heads), bool)
        b = heads[big] >> BLOCK_SHIFT - PAGE_SHIFT
        ok[big] = (o[big] == PMD_ORDER) & fl.bsh[b] & ~AF_SET.take(fl.flat[fl.base[b] + 1])
        return None if ok.all() else ok

    def mkold(self, fl: PageBytes, order: PageBytes) -> None:
        uh = self.uh
        if self.order0:
            fl.update(uh, MKOLD_OF)
            return
        pmd = self.pmd
        if pmd is not None and fl.bsh.take(pmd[2]).all() and not fl.gather(pmd[3], AF_SET).any():
            fl.update(uh, MKOLD_OF)          # shared rows, no AF in the tails: the head byte says it all
            return
        simple = self._simple(fl, order, uh)
        if simple is None:
            fl.update(uh, MKOLD_OF)
            return
        fl.update(uh[simple], MKOLD_OF)
        mkold_general(fl, order, uh[~simple])

    def young(self, fl: PageBytes, order: PageBytes) -> tuple[np.ndarray, np.ndarray]:
        """(young, folio_sz) per address: any AF of the folio || !PG_idle; False / PAGE_SIZE
        where not present."""
        h = self.heads
        y = fl.gather(h, YOUNG_OF)
        pmd = self.pmd
        if pmd is not None and fl.bsh.take(pmd[0]).all():
            y |= fl.gather(pmd[1], AF_SET)   # shared rows: the folio's AF is its head's or its tails'
        elif (simple := self._simple(fl, order, h)) is not None:
            rest = np.flatnonzero(~simple)
            y[rest] |= folio_af(fl, order, h[rest])
        if self.sel is not None:
            full = np.zeros(self.n, bool)
            full[self.sel] = y
            y = full
        return y, self.sz.copy()
