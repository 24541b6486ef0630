"""The Access Flag rules of emulator-facts.md §1: one AF per PMD, contpte ORs 16 PTEs,
small mTHP folios keep per-page AFs, TLB hits set nothing, walks after eviction or
invalidation set it again, PMD split inherits young."""
from __future__ import annotations

import numpy as np

from tests.mm.conftest import KB, MB, addrs, exact_mmap

PG = 4096


def test_one_af_per_pmd():
    m, pid, s = exact_mmap("4M")
    assert m.access(pid, addrs(s)).tolist() == [True]              # fault: walk, AF set
    pages = np.arange(s, s + 2 * MB, PG, dtype=np.uint64)
    y, sz = m.va_young(pid, pages)
    assert y.all() and set(sz.tolist()) == {2 * MB}
    m.va_mkold(pid, addrs(s + 100 * PG))                          # mkold any subpage clears the one AF
    assert not m.va_young(pid, pages)[0].any()
    f = m.folio_walk(pid, s + 5 * PG)
    assert (f.order, f.level, f.young) == (9, "pmd", False)


def test_tlb_hit_leaves_af_clear_then_eviction_sets_it():
    m, pid, s = exact_mmap("64M", tlb="l1_entries = 1\nl1_assoc = 0\nl2_entries = 2\nl2_assoc = 0")
    m.access(pid, addrs(s))
    m.va_mkold(pid, addrs(s))
    assert m.access(pid, addrs(s + 7 * PG)).tolist() == [False]   # TLB hit: no walk
    assert m.va_young(pid, addrs(s))[0].tolist() == [False]
    m.access(pid, addrs(s + 2 * MB, s + 4 * MB, s + 6 * MB))        # evict the first PMD's entry
    assert m.access(pid, addrs(s + 9 * PG)).tolist() == [True]    # miss, walk
    assert m.va_young(pid, addrs(s))[0].tolist() == [True]


def test_pmd_split_inherits_young_and_invalidates():
    m, pid, s = exact_mmap("4M")
    m.access(pid, addrs(s))
    assert m.split_folio_to_order(pid, s, 2) == 0
    pages = np.arange(s, s + 2 * MB, PG, dtype=np.uint64)
    y, sz = m.va_young(pid, pages)
    assert y.all() and set(sz.tolist()) == {16 * KB}
    m.va_mkold(pid, pages)
    assert not m.va_young(pid, pages)[0].any()
    # an old PMD splits into old PTEs; the range was invalidated, so the next access walks
    m2, pid2, s2 = exact_mmap("4M")
    m2.access(pid2, addrs(s2))
    m2.va_mkold(pid2, addrs(s2))
    assert m2.split_folio_to_order(pid2, s2, 2) == 0
    assert not m2.va_young(pid2, np.arange(s2, s2 + 2 * MB, PG, dtype=np.uint64))[0].any()
    assert m2.access(pid2, addrs(s2 + 3 * PG)).tolist() == [True]
    y = m2.va_young(pid2, addrs(s2, s2 + 3 * PG, s2 + 4 * PG))[0]
    assert y.tolist() == [False, True, False]                     # 16 KB folios: per-page AFs


def test_contpte_af_shared_by_16_ptes():
    m, pid, s = exact_mmap("1M", thp="never", extra='size_enabled = { 64 = "always" }',
                           tlb="l1_entries = 1\nl2_entries = 2\nl2_assoc = 0")
    m.access(pid, addrs(s))
    f = m.folio_walk(pid, s)
    assert (f.order, f.level) == (4, "pte")
    block = np.arange(s, s + 64 * KB, PG, dtype=np.uint64)
    y, sz = m.va_young(pid, block)
    assert y.all() and set(sz.tolist()) == {64 * KB}
    m.va_mkold(pid, addrs(s + 15 * PG))                            # clears all 16 together
    assert not m.va_young(pid, block)[0].any()
    assert m.access(pid, addrs(s + 3 * PG)).tolist() == [False]    # one TLB entry for the 64 KB block
    m.access(pid, addrs(s + 64 * KB, s + 128 * KB, s + 192 * KB))   # evict
    assert m.access(pid, addrs(s + 5 * PG)).tolist() == [True]
    assert m.va_young(pid, block)[0].all()                         # read as the OR of the 16


def test_16k_folios_have_per_page_afs():
    m, pid, s = exact_mmap("1M", thp="never", extra='size_enabled = { 16 = "always" }',
                           tlb="l1_entries = 1\nl2_entries = 2\nl2_assoc = 0")
    m.access(pid, addrs(s))
    assert m.folio_walk(pid, s + PG).order == 2
    four = addrs(s, s + PG, s + 2 * PG, s + 3 * PG)
    assert m.va_young(pid, four)[1].tolist() == [16 * KB] * 4
    m.va_mkold(pid, four)
    m.access(pid, addrs(s + 64 * KB, s + 128 * KB, s + 192 * KB))
    m.access(pid, addrs(s + PG))
    assert m.va_young(pid, four)[0].tolist() == [False, True, False, False]


def test_flush_on_mkold_makes_the_next_access_walk():
    m, pid, s = exact_mmap("4M", tlb="flush_on_mkold = true")
    m.access(pid, addrs(s))
    m.va_mkold(pid, addrs(s))
    assert m.access(pid, addrs(s + PG)).tolist() == [True]
    assert m.va_young(pid, addrs(s))[0].tolist() == [True]


def test_unmapped_addresses_are_not_errors():
    m, pid, s = exact_mmap("4M")
    y, sz = m.va_young(pid, addrs(0, 1 << 40, s))
    assert y.tolist() == [False, False, False] and sz.tolist() == [PG] * 3
    m.va_mkold(99999, addrs(s))
    assert m.va_young(99999, addrs(s))[0].tolist() == [False]
