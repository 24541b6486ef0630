"""paddr's access checks (Machine.pa_mkold / pa_young through pa_sample.PaPlan) against the
rmap rule written out page by page on a plain copy of the flags: a folio is young when any
of its pages has the AF or its head lacks PG_idle; mkold sets PG_young on the head where
some AF was set, PG_idle, and clears every page's AF. Folios of order 0, 2, 4 and 9 (PMD
blocks on shared rows, and on private rows with AF in their tails), absent pages and
addresses outside RAM; sorted, repeated and unsorted address arrays; with the C loops
and with pagebytes' numpy fallback."""
from __future__ import annotations

import numpy as np
import pytest

from damond.mm import pagebytes
from damond.mm import phys as P
from tests.mm.conftest import exact_mmap


def _ref_young(m, pa, flags, orders):
    p = (pa >> np.uint64(12)).astype(np.int64) - m.phys.base_pfn
    young, sz = np.zeros(len(pa), bool), np.full(len(pa), 4096, np.uint64)
    for i, x in enumerate(p.tolist()):
        if 0 <= x < len(flags) and flags[x] & P.PRESENT:
            h = x & ~((1 << int(orders[x])) - 1)
            n = 1 << int(orders[h])
            young[i] = bool((flags[h:h + n] & P.AF).any()) or not flags[h] & P.IDLE
            sz[i] = 4096 << int(orders[h])
    return young, sz


def _ref_mkold(m, pa, flags, orders):
    p = (pa >> np.uint64(12)).astype(np.int64) - m.phys.base_pfn
    for h in sorted({x & ~((1 << int(orders[x])) - 1) for x in p.tolist() if 0 <= x < len(flags) and flags[x] & P.PRESENT}):
        n = 1 << int(orders[h])
        was = bool((flags[h:h + n] & P.AF).any())
        flags[h:h + n] &= np.uint8(~P.AF & 0xFF)
        flags[h] |= P.IDLE | (P.YOUNG if was else 0)


@pytest.mark.parametrize("fast", [True, False])
def test_pa_checks_follow_the_rmap_rule(fast):
    saved = pagebytes.FAST
    if not fast:
        pagebytes.FAST = None
    elif saved is None:
        pytest.skip("damond.mm._pagefast not built")
    try:
        m, pid, start = exact_mmap("24M", "always")
        m.access(pid, np.arange(start, start + (24 << 20), 4096, dtype=np.uint64))
        for k, order in enumerate((0, 2, 4)):                 # some blocks split to smaller folios
            assert m.split_folio_to_order(pid, start + (k << 21), order) == 0
        assert m.pageout_range(pid, start + (4 << 21), start + (5 << 21)) > 0    # absent pages
        lo, hi = m.ram_ranges()[0]
        rng = np.random.default_rng(3)
        used = np.flatnonzero(m.phys.flags.copy() & P.PRESENT)
        pmd = used[m.phys.order.copy()[used] == 9]
        assert len(pmd) and len(pmd) < len(used)
        seen = set()
        for it in range(40):
            fl = m.phys.flags
            fl.set_bits(rng.choice(used, 40), P.AF)           # PMD tails too: private rows with tail AF
            fl.clear_bits(rng.choice(used, 40), P.IDLE)
            pa = (m.phys.base_pfn + rng.choice(pmd if it % 2 else used, 200)).astype(np.uint64) << np.uint64(12)
            pa |= rng.integers(0, 4096, len(pa)).astype(np.uint64)
            if it % 4 < 2:                                    # only order-9 folios, or anything
                pa = np.concatenate([pa, rng.integers(lo - 8192, hi + 8192, 50).astype(np.uint64)])
            if it % 3:
                pa = np.sort(pa)                              # kdamond's order, with repeats in a folio
            flags, orders = m.phys.flags.copy(), m.phys.order.copy()
            _ref_mkold(m, pa, flags, orders)
            m.pa_mkold(pa)
            assert np.array_equal(m.phys.flags.copy(), flags)
            fl.set_bits(rng.choice(used, 40), P.AF)           # accesses between mkold and young
            flags = m.phys.flags.copy()
            y, sz = m.pa_young(pa.copy())
            ry, rsz = _ref_young(m, pa, flags, orders)
            assert y.tolist() == ry.tolist() and sz.tolist() == rsz.tolist()
            seen |= {bool(v) for v in ry.tolist()}
        assert seen == {True, False}
    finally:
        pagebytes.FAST = saved
