"""The kernel's DAMON core KUnit expectations (mm/damon/tests/core-kunit.h), same literals.

Each table row is one KUNIT_EXPECT of the kernel test it names; region sizes use the
kernel test's minimum region size (1 unless the kernel test says otherwise).
"""
from __future__ import annotations

import errno

import numpy as np
import pytest

from damond.damon import core, params
from damond.damon.regions import Regions
from damond.errors import DamonError

from tests.damon.conftest import make_system


def regions_with(ranges, **counters) -> Regions:
    r = Regions.from_ranges(ranges)
    for k, v in counters.items():
        getattr(r, k)[:] = v
    return r


# damon_test_aggregate: kdamond_reset_aggregated zeroes nr_accesses, keeps regions/targets
def test_aggregate_resets_nr_accesses():
    sys_ = make_system()
    ctx = core.Ctx(sys_, params.Ctx(ops=params.OpsId.PADDR))
    saddr = [[10, 20, 30], [5, 42, 49], [13, 33, 55]]
    eaddr = [[15, 27, 40], [31, 45, 55], [23, 44, 66]]
    accesses = [[42, 95, 84], [10, 20, 30], [0, 1, 2]]
    for it in range(3):
        r = regions_with(list(zip(saddr[it], eaddr[it])), nr_accesses=accesses[it])
        r.nr_accesses_bp[:] = np.array(accesses[it]) * 10000
        ctx.targets.append(core.TargetState(it, None, r))
    core.reset_aggregated(ctx)
    assert len(ctx.targets) == 3
    for it, t in enumerate(ctx.targets):
        assert len(t.regions) == 3
        assert t.regions.nr_accesses.tolist() == [0, 0, 0]
        assert t.regions.last_nr_accesses.tolist() == accesses[it]


# damon_test_split_at
def test_split_at():
    r = regions_with([(0, 100)], nr_accesses=42, last_nr_accesses=15, age=10, nr_accesses_bp=420000)
    core.split_region_at(r, 0, 25)
    assert r.ranges() == [(0, 25), (25, 100)]
    for f in ("nr_accesses", "last_nr_accesses", "age", "nr_accesses_bp"):
        assert getattr(r, f)[0] == getattr(r, f)[1]


# damon_test_merge_two
def test_merge_two():
    r = Regions.from_ranges([(0, 100), (100, 300)])
    r.nr_accesses[:] = [10, 20]
    r.age[:] = [9, 21]
    core.merge_two_regions(r, 0)
    assert r.ranges() == [(0, 300)]
    assert int(r.nr_accesses[0]) == 16
    assert int(r.age[0]) == 17
    assert int(r.nr_accesses_bp[0]) == 160000


# damon_test_merge_regions_of
MERGE_SA = [0, 100, 114, 122, 130, 156, 170, 184, 230]
MERGE_EA = [100, 112, 122, 130, 156, 170, 184, 230, 10170]
MERGE_NRS = [0, 0, 10, 10, 20, 30, 1, 2, 5]
MERGE_EXPECT = [(0, 112), (114, 130), (130, 156), (156, 170), (170, 230), (230, 10170)]


def test_merge_regions_of():
    r = regions_with(list(zip(MERGE_SA, MERGE_EA)), nr_accesses=MERGE_NRS)
    core.merge_regions_of(r, 9, 9999)
    assert r.ranges() == MERGE_EXPECT


# damon_test_split_regions_of: the requested count is an upper bound
@pytest.mark.parametrize("ranges, nr_subs, min_sz, max_regions", [
    ([(0, 22)], 2, 1, 2),
    ([(0, 220)], 4, 1, 4),
    ([(0, 220), (300, 400), (500, 700)], 4, 5, 12),
])
def test_split_regions_of(ranges, nr_subs, min_sz, max_regions):
    rng = np.random.default_rng(7)
    for _ in range(50):
        r = Regions.from_ranges(ranges)
        core.split_regions_of(r, nr_subs, min_sz, rng)
        assert len(r) <= max_regions
        assert len(r) >= len(ranges)
        sizes = r.sizes().tolist()
        assert all(s > 0 for s in sizes)
        assert sum(sizes) == sum(e - s for s, e in ranges)


def test_split_regions_of_makes_aligned_cuts_between_10_and_90_percent():
    rng = np.random.default_rng(3)
    for _ in range(200):
        r = Regions.from_ranges([(0, 1000 * 4096)])
        core.split_regions_of(r, 2, 4096, rng)
        assert len(r) == 2
        cut = int(r.end[0])
        assert cut % 4096 == 0 and 100 * 4096 <= cut <= 900 * 4096


# damon_test_split_above_half_progresses (the 2026 "split a fraction" variant)
def test_split_above_half_progresses():
    sys_ = make_system(config_text="seed = 1\n[damon]\nsplit_above_half = true\n")
    ctx = core.Ctx(sys_, params.Ctx(ops=params.OpsId.PADDR,
                                    attrs=params.Attrs(min_nr_regions=10, max_nr_regions=1500)))
    ctx.min_region_sz = 1
    r = Regions.from_ranges([(i * 100, i * 100 + 100) for i in range(760)])
    r.nr_accesses[:] = [0 if i & 1 else 100 for i in range(760)]
    r.age[:] = 5
    ctx.targets.append(core.TargetState(0, None, r))
    nr_before = ctx.nr_regions()
    assert nr_before > ctx.attrs.max_nr_regions // 2
    core.split_regions(ctx)
    nr_after = ctx.nr_regions()
    assert nr_before < nr_after <= ctx.attrs.max_nr_regions


def test_split_above_half_is_a_switch():
    """Without the switch (6.18), more than max/2 regions means no split at all."""
    ctx = core.Ctx(make_system(), params.Ctx(ops=params.OpsId.PADDR,
                                             attrs=params.Attrs(min_nr_regions=10, max_nr_regions=1500)))
    ctx.min_region_sz = 1
    ctx.targets.append(core.TargetState(0, None, Regions.from_ranges([(i * 100, i * 100 + 100) for i in range(760)])))
    core.split_regions(ctx)
    assert ctx.nr_regions() == 760


# damon_test_ops_registration
def test_ops_registration():
    assert core.registered_ops() == [params.OpsId.VADDR, params.OpsId.FVADDR, params.OpsId.PADDR,
                                     params.OpsId.VADDR_PERF]     # damond's "next" level (damon/perf.py)
    assert core.select_ops(params.OpsId.VADDR).id == params.OpsId.VADDR

    class Other:
        id = params.OpsId.VADDR
    with pytest.raises(DamonError) as e:
        core.register_ops(Other)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(DamonError):
        core.select_ops("nonexistent")


# damon_test_set_regions: (old ranges, new ranges, min_region_sz, expected ranges or EINVAL)
SET_REGIONS = [
    ([], [(5, 15), (15, 25)], 1, [(5, 15), (15, 25)]),
    ([(4, 16), (24, 32)], [(18, 23)], 1, [(18, 23)]),
    ([(4, 16), (24, 32)], [(8, 28)], 1, [(8, 16), (16, 24), (24, 28)]),
    ([(0, 4), (4, 17)], [(0, 15), (25, 40)], 1, [(0, 4), (4, 15), (25, 40)]),
    ([(0, 4), (42, 52)], [(0, 15), (25, 40), (44, 50)], 1, [(0, 15), (25, 40), (44, 50)]),
    ([], [(42, 42)], 1, errno.EINVAL),
    ([], [(42, 21)], 1, errno.EINVAL),
    ([], [(10, 20), (20, 30)], 4096, errno.EINVAL),
]


@pytest.mark.parametrize("old, new, min_sz, expect", SET_REGIONS)
def test_set_regions(old, new, min_sz, expect):
    r = Regions.from_ranges(old)
    if isinstance(expect, int):
        with pytest.raises(DamonError) as e:
            core.set_regions(r, new, min_sz)
        assert e.value.errno == expect
        assert r.ranges() == old
    else:
        core.set_regions(r, new, min_sz)
        assert r.ranges() == expect


def test_set_regions_keeps_counters_of_intersecting_regions():
    r = Regions.from_ranges([(4, 16), (24, 32)])
    r.nr_accesses[:] = [3, 7]
    r.age[:] = [5, 9]
    core.set_regions(r, [(8, 28)], 1)
    assert r.nr_accesses.tolist() == [3, 0, 7]
    assert r.age.tolist() == [5, 0, 9]


# damon_test_commit_target_regions: nr_regions 0 keeps the current regions
@pytest.mark.parametrize("dst, src, expect", [
    ([(3, 8), (8, 10)], [(4, 6)], [(4, 6)]),
    ([(3, 8), (8, 10)], [], [(3, 8), (8, 10)]),
])
def test_commit_target_regions(dst, src, expect):
    r = Regions.from_ranges(dst)
    t = params.Target(pid=None, regions=[params.AddrRange(s, e) for s, e in src])
    ranges = core._target_ranges(t)
    if ranges:
        core.set_regions(r, ranges, 1)
    assert r.ranges() == expect


# damon_test_nr_samples_per_aggr / damon_test_nr_accesses_to_accesses_bp
def test_nr_samples_per_aggr():
    assert core.nr_samples_per_aggr(params.Attrs(sample_interval=0, aggr_interval=0)) == 1
    assert core.nr_samples_per_aggr(params.Attrs(sample_interval=0, aggr_interval=(1 << 32))) == (1 << 32) - 1
    big = params.Attrs(sample_interval=10, aggr_interval=((1 << 32)) * 10)
    assert core.mult_frac(123, 10000, core.nr_samples_per_aggr(big)) == 0


# damon_test_update_monitoring_result: (new sample, new aggr) -> (nr_accesses, age), cumulative
UPDATE_RESULT = [
    ((100, 10000), (15, 2)),
    ((1, 1000), (150, 2)),
    ((1, 100), (150, 20)),
]


def test_update_monitoring_result():
    old = params.Attrs(sample_interval=10, aggr_interval=1000)
    r = Regions.from_ranges([(3, 7)])
    r.nr_accesses[0] = 15
    r.age[0] = 20
    for (sample, aggr), (nr, age) in UPDATE_RESULT:
        core.update_monitoring_result(r, old, params.Attrs(sample_interval=sample, aggr_interval=aggr), False)
        assert (int(r.nr_accesses[0]), int(r.age[0])) == (nr, age)
        assert int(r.nr_accesses_bp[0]) == nr * 10000


def test_update_monitoring_result_mid_aggregation_resets_current_window():
    old = params.Attrs(sample_interval=10, aggr_interval=1000)
    r = Regions.from_ranges([(3, 7)])
    r.nr_accesses[0], r.last_nr_accesses[0], r.age[0] = 7, 15, 20
    core.update_monitoring_result(r, old, params.Attrs(sample_interval=1, aggr_interval=1000), True)
    assert (int(r.nr_accesses[0]), int(r.last_nr_accesses[0]), int(r.nr_accesses_bp[0]), int(r.age[0])) \
        == (0, 150, 1500000, 20)


# damon_test_set_attrs
@pytest.mark.parametrize("change, ok", [
    ({}, True),
    ({"min_nr_regions": 1}, False),
    ({"max_nr_regions": 9}, False),
    ({"aggr_interval": 4999}, False),
])
def test_set_attrs(change, ok):
    kw = dict(min_nr_regions=10, max_nr_regions=1000, sample_interval=5000, aggr_interval=100000)
    kw.update(change)
    attrs = params.Attrs(**kw)
    if ok:
        core.validate_attrs(attrs)
    else:
        with pytest.raises(DamonError) as e:
            core.validate_attrs(attrs)
        assert e.value.errno == errno.EINVAL


# damon_test_moving_sum
def test_moving_sum():
    mvsum, nomvsum, len_window = 50000, 50000, 10
    new_values = [10000, 0, 10000, 0, 0, 0, 10000, 0, 0, 0]
    expects = [55000, 50000, 55000, 50000, 45000, 40000, 45000, 40000, 35000, 30000]
    for v, exp in zip(new_values, expects):
        mvsum = core.moving_sum(mvsum, nomvsum, len_window, v)
        assert mvsum == exp


# damon_test_feed_loop_next_input
def test_feed_loop_next_input():
    last_input = 900000
    assert core.feed_loop_next_input(last_input, 200) > last_input
    assert core.feed_loop_next_input(last_input, 250000000) < last_input
    assert core.feed_loop_next_input(last_input, 200) > core.feed_loop_next_input(last_input, 2000)


# damon_test_apply_min_nr_regions: (size, min_region_sz, min_nr_regions) -> (max size, nr regions)
@pytest.mark.parametrize("sz, min_sz, min_nr, max_sz_expect, nr_expect", [
    (10, 1, 10, 1, 10),
    (10, 1, 15, 1, 10),
    (10, 2, 2, 6, 2),
    (10, 2, 10, 2, 5),
])
def test_apply_min_nr_regions(sz, min_sz, min_nr, max_sz_expect, nr_expect):
    ctx = core.Ctx(make_system(), params.Ctx(ops=params.OpsId.PADDR, attrs=params.Attrs(min_nr_regions=min_nr)))
    ctx.min_region_sz = min_sz
    ctx.targets.append(core.TargetState(0, None, Regions.from_ranges([(0, sz)])))
    assert core.apply_min_nr_regions(ctx) == max_sz_expect
    assert len(ctx.targets[0].regions) == nr_expect


# damon_test_commit_ctx: only power-of-two minimum region sizes
@pytest.mark.parametrize("addr_unit, ok", [(1, True), (4096, True), (3, False), (1 << 13, True)])
def test_addr_unit_power_of_two(addr_unit, ok):
    p = params.Ctx(ops=params.OpsId.PADDR, addr_unit=addr_unit)
    if ok:
        core.validate(p, make_system())
    else:
        with pytest.raises(DamonError) as e:
            core.validate(p, make_system())
        assert e.value.errno == errno.EINVAL
