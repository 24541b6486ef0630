"""DAMON's per-sample access checks on physical addresses: damon_pa_mkold / damon_pa_young.

Owns the translation of one sample's physical addresses into the folios the two checks
act on (rmap view: a folio is young when any of its pages has the AF, or its head lacks
PG_idle; mkold sets PG_young where some AF was set, PG_idle, and clears every page's AF;
order-9 folios block-wise) as a `PaPlan`. DAMON checks the same addresses in mkold and,
one sampling interval later, in young; the machine keeps the last plan and reuses it
while nothing changed what those addresses translate to (`key`: phys.layout_gen and the
machine's map_epoch, which every change to PRESENT/PMD bits, folio orders or block
bindings bumps). The common folios go through pagebytes' C gather/update in one call
each: order-0 pages, and order-9 blocks on a shared row whose tail pages hold no AF (the
whole folio's AF is then its head's). Any other folio takes the general per-order code
(`folio_af`, `mkold_general`); the results are identical.
"""
from __future__ import annotations

import numpy as np

from damond.mm import phys as P
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


class PaPlan:
    """Where the paddr access checks of one address array act (present pages only)."""

    __slots__ = ("addrs", "key", "n", "sel", "heads", "order0", "uh", "sz")

    def __init__(self, addrs: np.ndarray, key: tuple, phys: P.PhysMem):
        self.addrs, self.key, self.n = addrs, key, len(addrs)
        p = (addrs >> np.uint64(PAGE_SHIFT)).astype(np.int64)
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
        self.sz = np.full(self.n, PAGE_SIZE, np.uint64)
        if o is None or not len(o) or not np.bitwise_or.reduce(o):
            self.heads, self.order0 = p, True
        else:
            self.heads, self.order0 = p & HEAD_MASK.take(o), False
            self.sz[self.sel if self.sel is not None else slice(None)] = FOLIO_SZ.take(phys.order.gather(self.heads, IDENT))
        self.uh = uniq(self.heads)

    def matches(self, addrs: np.ndarray, key: tuple) -> bool:
        return key == self.key and len(addrs) == self.n and not np.count_nonzero(addrs != self.addrs)

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
        simple = self._simple(fl, order, h)
        if simple is not None:
            rest = np.flatnonzero(~simple)
            y[rest] |= folio_af(fl, order, h[rest])
        if self.sel is not None:
            full = np.zeros(self.n, bool)
            full[self.sel] = y
            y = full
        return y, self.sz.copy()
