"""The kernel's vaddr KUnit expectations (mm/damon/tests/vaddr-kunit.h), same literals,
with DAMON_MIN_REGION 1 as the kernel test build uses; plus the folio-result reuse rule."""
from __future__ import annotations

import errno

import numpy as np
import pytest

from damond.damon import core, vaddr
from damond.damon.regions import Regions
from damond.errors import DamonError


# damon_test_three_regions_in_vmas
def test_three_regions_in_vmas():
    vmas = [(10, 20), (20, 25), (200, 210), (210, 220), (300, 305), (307, 330)]
    assert vaddr.three_regions(vmas, 1) == [(10, 25), (200, 220), (300, 330)]


def test_three_regions_needs_two_gaps():
    assert vaddr.three_regions([(10, 20), (20, 25), (40, 50)], 1) is None


# damon_test_apply_three_regions{1,2,3,4}
OLD = [(10, 20), (20, 30), (50, 55), (55, 57), (57, 59), (70, 80), (80, 90), (90, 100)]
APPLY_THREE = [
    ([(5, 27), (45, 55), (73, 104)], [(5, 20), (20, 27), (45, 55), (73, 80), (80, 90), (90, 104)]),
    ([(5, 27), (56, 57), (65, 104)], [(5, 20), (20, 27), (56, 57), (65, 80), (80, 90), (90, 104)]),
    ([(5, 27), (61, 63), (65, 104)], [(5, 20), (20, 27), (61, 63), (65, 80), (80, 90), (90, 104)]),
    ([(5, 7), (30, 32), (65, 68)], [(5, 7), (30, 32), (65, 68)]),
]


@pytest.mark.parametrize("three, expected", APPLY_THREE)
def test_apply_three_regions(three, expected):
    r = Regions.from_ranges(OLD)
    core.set_regions(r, three, 1)
    assert r.ranges() == expected


# damon_test_split_evenly
@pytest.mark.parametrize("start, end, nr_pieces", [(0, 100, 10), (5, 59, 5), (4, 6, 1), (0, 3, 2)])
def test_split_evenly_succ(start, end, nr_pieces):
    r = Regions.from_ranges([(start, end)])
    core.evenly_split_region(r, 0, nr_pieces, 1)
    assert len(r) == nr_pieces
    width = (end - start) // nr_pieces
    expect = [(start + i * width, start + (i + 1) * width) for i in range(nr_pieces)]
    expect[-1] = (expect[-1][0], end)
    assert r.ranges() == expect


@pytest.mark.parametrize("start, end, nr_pieces", [(0, 100, 0), (5, 6, 2)])
def test_split_evenly_fail(start, end, nr_pieces):
    r = Regions.from_ranges([(start, end)])
    with pytest.raises(DamonError) as e:
        core.evenly_split_region(r, 0, nr_pieces, 1)
    assert e.value.errno == errno.EINVAL
    assert r.ranges() == [(start, end)]


def test_init_regions_honours_min_nr_regions():
    """__damon_va_init_regions: pieces of total/min_nr_regions, page aligned."""
    G = 1 << 30
    ranges = [(0x400000, 0x400000 + G), (0x7f0000000000, 0x7f0000000000 + 16 * 4096),
              (0x7ffff0000000, 0x7ffff0000000 + 8 * 4096)]
    r = Regions()
    vaddr.init_regions(r, ranges, 10)
    sizes = r.sizes().tolist()
    assert len(r) == 9 + 1 + 1            # 1 GiB / (1 GiB+96K)/10 -> 9 pieces; the small ones stay whole
    assert all(s % 4096 == 0 for s in sizes)
    assert r.total_size() == sum(e - s for s, e in ranges)


# __damon_va_check_access: reuse of the last result for sampling addresses in its folio
def test_reuse_within_one_folio():
    pmd = 2 << 20
    addrs = np.array([0x200000 + 10, 0x200000 + 5000, 0x200000 + pmd - 1, 0x400000 + 1], dtype=np.uint64)
    young = np.array([True, False, False, False])      # only the first fresh check is young
    fsz = np.array([pmd, pmd, pmd, pmd], dtype=np.uint64)
    acc, _, _ = vaddr.resolve_reuse(young, fsz, addrs)
    assert acc.tolist() == [True, True, True, False]


def test_no_reuse_for_4k_pages():
    addrs = np.array([0x1000, 0x2000, 0x2010, 0x3000], dtype=np.uint64)
    young = np.array([True, False, True, True])
    acc, _, _ = vaddr.resolve_reuse(young, np.full(4, 4096, dtype=np.uint64), addrs)
    assert acc.tolist() == [True, False, False, True]   # 0x2010 reuses 0x2000's result


def test_paddr_reuse_carries_across_samples():
    pmd = 2 << 20
    acc, key, last = vaddr.resolve_reuse(np.array([True]), np.array([pmd], dtype=np.uint64),
                                         np.array([0x200010], dtype=np.uint64), first_is_fresh=False)
    assert acc.tolist() == [True] and key == 0x200000 and last is True
    acc, _, _ = vaddr.resolve_reuse(np.array([False]), np.array([pmd], dtype=np.uint64),
                                    np.array([0x3fffff], dtype=np.uint64), first_is_fresh=False,
                                    last_key=key, last_young=last)
    assert acc.tolist() == [True]
