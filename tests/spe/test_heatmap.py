"""Heatmap and hot fraction (rfc-damon-spe.md 3.5): the two-pass filter on crafted
histograms, exact-PFN lookup, errors, and the PTE-walk fallback."""
import errno
from types import SimpleNamespace

import numpy as np
import pytest

from damond.clock import VirtualClock
from damond.errors import ErrnoError
from damond.spe.heatmap import chunk_hot, hot_fraction
from damond.spe.tree import PfnTree

THP = 0x820db800


def tree_with(counts: dict[int, int]) -> PfnTree:
    t = PfnTree(VirtualClock())
    for idx, c in counts.items():
        t.record(THP + idx, c)
    return t


def test_consecutive_128_subpages_is_25_percent():
    t = tree_with({i: 1 for i in range(128)})
    assert t.hot_fraction(THP, 9, 2) == 25
    assert np.flatnonzero(t.heatmap(THP, 9, 2)).tolist() == list(range(32))


def test_460_subpages_is_89_percent():
    assert tree_with({i: 1 for i in range(460)}).hot_fraction(THP, 9, 2) == 89


def test_noise_example_peak_over_ten():
    """One chunk with 40 samples, 30 chunks with 1: sig_thresh 4 -> 1 hot chunk -> 0 %."""
    counts = {0: 40}
    counts.update({4 * c: 1 for c in range(1, 31)})
    t = tree_with(counts)
    assert np.flatnonzero(t.heatmap(THP, 9, 2)).tolist() == [0]
    assert t.hot_fraction(THP, 9, 2) == 0


def test_threshold_is_inclusive_and_integer_divided():
    # peak 59 -> thresh 5: a chunk summing to 5 is hot, 4 is not
    t = tree_with({0: 59, 4: 5, 8: 4, 12: 2, 13: 3})
    assert np.flatnonzero(t.heatmap(THP, 9, 2)).tolist() == [0, 1, 3]


def test_max_below_ten_floor_one():
    # peak 9 -> 9 // 10 == 0 -> floor 1: every chunk with any access is hot, empty ones are not
    t = tree_with({0: 9, 4: 1})
    assert np.flatnonzero(t.heatmap(THP, 9, 2)).tolist() == [0, 1]
    assert t.hot_fraction(THP, 9, 2) == 1        # 2 * 100 // 128


def test_target_order_zero_is_per_subpage():
    t = tree_with({5: 100, 6: 10, 7: 9})
    assert np.flatnonzero(t.heatmap(THP, 9, 0)).tolist() == [5, 6]


def test_lookup_by_exact_folio_pfn_only():
    t = tree_with({0x13: 3})
    assert t.heatmap(THP + 16, 4, 2) is None        # 64 KiB mTHP inside the THP: no match (bug 9)
    assert t.hot_fraction(THP + 512, 9, 2) is None


def test_errors():
    t = tree_with({0: 1})
    with pytest.raises(ErrnoError) as ei:
        t.heatmap(THP, 9, 9)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(ErrnoError) as ei:
        t.heatmap(THP, 10, 0)
    assert ei.value.errno == errno.ERANGE


def test_chunk_hot_empty_histogram_has_no_hot_chunk():
    assert not chunk_hot(np.zeros(512, np.uint64), 128, 2).any()


class FakeMachine:
    def __init__(self, level, young):
        self.level, self.young, self.walked = level, young, []

    def folio_walk(self, pid, addr):
        self.walked.append(addr)
        if self.level is None:
            return None
        return SimpleNamespace(level=self.level, young=self.young(addr))


def test_fallback_pte_young_bits_from_chunk_base():
    folio = SimpleNamespace(pfn=THP, order=9)
    base = 0x7f0000200000
    m = FakeMachine("pte", lambda a: (a - base) // (4096 * 4) < 16)   # first 16 chunks young
    assert hot_fraction(PfnTree(VirtualClock()), m, 1, folio, base, 2) == 12   # 16 * 100 // 128
    assert m.walked[:2] == [base, base + 16384] and len(m.walked) == 128


@pytest.mark.parametrize("level", ["pmd", None])
def test_fallback_eopnotsupp_for_pmd_or_hole(level):
    folio = SimpleNamespace(pfn=THP, order=9)
    with pytest.raises(ErrnoError) as ei:
        hot_fraction(PfnTree(VirtualClock()), FakeMachine(level, lambda a: True), 1, folio, 0x200000, 2)
    assert ei.value.errno == errno.EOPNOTSUPP


def test_spe_data_wins_over_fallback():
    folio = SimpleNamespace(pfn=THP, order=9)
    m = FakeMachine("pmd", lambda a: True)
    assert hot_fraction(tree_with({i: 1 for i in range(128)}), m, 1, folio, 0x200000, 2) == 25
    assert m.walked == []
