"""DAMOS engine unit tests on a fake ctx/machine: apply interval, pattern, quotas and
their continuation, prioritisation, filters, walks, watermarks, goals, stats."""
from __future__ import annotations

import errno

import pytest

from test_damos_fakes import PMD, FakeCtx, FakeMachine, MiB, Vma
from damond.damon import damos, ops_common, quota
from damond.damon.params import (AccessPattern, Action, Filter, FilterType, GoalMetric, GoalTuner,
                                 Quota, QuotaGoal, Scheme, Watermarks, WmarkMetric)
from damond.errors import DamonError

ALL = AccessPattern(0, (1 << 64) - 1, 0, (1 << 32) - 1, 0, (1 << 32) - 1)
BASE = 0x10000000


def ten_regions():
    return [(BASE + i * MiB, BASE + (i + 1) * MiB) for i in range(10)]


def stat_scheme(**kw) -> Scheme:
    return Scheme(pattern=ALL, action=Action.STAT, **kw)


# --- scores and the feedback loop (ops-common.c, core.c) ----------------------------

@pytest.mark.parametrize("nr, age, wn, wa, hot", [
    (10, 0, 1, 1, 49),      # freq 50, age subscore 50 -> 50 -> 49
    (20, 0, 1, 0, 99),      # freq 100
    (0, 100, 1, 1, 20),     # 10 s idle: age_log -4 -> subscore 43; (0+43)/2=21 -> 20
    (0, 0, 0, 0, 0),        # both weights 0: undivided 0
    (5, 1_000_000, 0, 1, 50 * 99 // 100 * 0 + (32 + 17) * 100 // 32 // 2 * 99 // 100),
])
def test_hot_score_matches_kernel_integer_maths(nr, age, wn, wa, hot):
    assert ops_common.hot_score(nr, age, 5000, 100000, wn, wa) == hot
    assert ops_common.cold_score(nr, age, 5000, 100000, wn, wa) == 99 - hot


def test_score_kind_per_ops():
    from damond.damon.params import OpsId
    assert ops_common.score_kind(OpsId.VADDR, Action.PAGEOUT) == "cold"
    assert ops_common.score_kind(OpsId.VADDR, Action.MIGRATE_HOT) == "hot"
    assert ops_common.score_kind(OpsId.VADDR, Action.LRU_PRIO) == "max"
    assert ops_common.score_kind(OpsId.PADDR, Action.LRU_PRIO) == "hot"
    assert ops_common.score_kind(OpsId.PADDR, Action.LRU_DEPRIO) == "cold"
    assert ops_common.score_kind(OpsId.PADDR, Action.STAT) == "max"


@pytest.mark.parametrize("last, score, nxt", [
    (10000, 0, 20000), (20000, 15000, 10000), (30000, 5000, 45000), (50000, 20000, 10000),
    (40000, 10000, 40000), (100000, 12000, 80000),
])
def test_feed_loop_next_input(last, score, nxt):
    assert quota.feed_loop_next_input(last, score) == nxt


# --- apply interval, stats ----------------------------------------------------------

def test_apply_interval_zero_means_aggregation_interval_and_stats_accumulate():
    ctx = FakeCtx(ten_regions(), [stat_scheme(), stat_scheme(apply_interval_us=10000)])
    ctx.run_samples(20)   # 100 ms at 5 ms samples
    s0, s1 = ctx.schemes[0].stat, ctx.schemes[1].stat
    assert (s0.nr_tried, s0.sz_tried, s0.nr_applied, s0.sz_applied) == (10, 10 * MiB, 0, 0)
    assert s1.nr_tried == 10 * 10           # every 2 samples
    assert s0.nr_snapshots == 1 and s1.nr_snapshots == 10
    assert ctx.spe.prunes == 10             # once per pass with something to apply


def test_pattern_uses_nr_accesses_bp_and_age():
    ctx = FakeCtx(ten_regions(), [Scheme(pattern=AccessPattern(0, 1 << 40, 5, 20, 2, 100),
                                         action=Action.STAT)])
    r = ctx.targets[0].regions
    r.nr_accesses_bp[:] = 49999     # 4 accesses: below min
    r.nr_accesses_bp[3] = 50000
    r.age[:] = 2
    r.nr_accesses[:] = 20           # ignored by the pattern check
    ctx.run_samples(20)
    assert ctx.schemes[0].stat.nr_tried == 1


def test_max_nr_snapshots_stops_the_scheme():
    ctx = FakeCtx(ten_regions(), [stat_scheme(apply_interval_us=5000, max_nr_snapshots=3)])
    ctx.run_samples(10)
    st = ctx.schemes[0].stat
    assert st.nr_snapshots == 3 and st.nr_tried == 30


def test_non_stat_action_resets_age():
    ctx = FakeCtx(ten_regions(), [Scheme(pattern=ALL, action=Action.COLD)],
                  machine=FakeMachine([Vma(BASE, BASE + 10 * MiB)]))
    ctx.targets[0].regions.age[:] = 7
    ctx.run_samples(20)
    assert list(ctx.targets[0].regions.age) == [0] * 10
    st = ctx.schemes[0].stat
    assert (st.nr_applied, st.sz_applied) == (10, 10 * MiB)
    assert ctx.machine.calls[0] == ("madvise", BASE, BASE + MiB, "cold")


# --- quotas -------------------------------------------------------------------------

def test_size_quota_charges_continue_from_where_the_window_stopped():
    ctx = FakeCtx(ten_regions(), [stat_scheme(quota=Quota(sz=3 * MiB, reset_interval=1000))])
    ctx.run_samples(20)                    # first pass at 100 ms
    st = ctx.schemes[0]
    assert (st.stat.nr_tried, st.stat.sz_tried) == (3, 3 * MiB)
    assert st.quota.charge_addr_from == BASE + 3 * MiB + 1
    ctx.run_samples(20 * 9)                # same 1 s window: quota stays full
    assert st.stat.sz_tried == 3 * MiB and st.stat.qt_exceeds == 0
    ctx.run_samples(20)                    # new window at >= 1000 ms
    assert st.stat.qt_exceeds == 1
    assert st.stat.sz_tried == 6 * MiB
    ctx.run_samples(20 * 9)
    tried = damos.request_walk(ctx, False)
    ctx.run_samples(20)                    # next window: continues at region 6
    assert tried.done.is_set() and not tried.cancelled
    # the kernel resumes one byte past the last charged region (charge_addr_from = end + 1),
    # so each window skips a page and ends with a page-sized quota split
    K4 = 4096
    assert [(r.start - BASE, r.end - BASE) for r in tried.result[0]] == [
        (6 * MiB + K4, 7 * MiB), (7 * MiB, 8 * MiB), (8 * MiB, 9 * MiB), (9 * MiB, 9 * MiB + K4)]


def test_quota_splits_a_region_to_fit_and_merges_it_back():
    ctx = FakeCtx(ten_regions(), [stat_scheme(quota=Quota(sz=MiB + MiB // 2, reset_interval=1000))])
    walk = damos.request_walk(ctx, False)
    ctx.run_samples(20)
    assert [(r.end - r.start) for r in walk.result[0]] == [MiB, MiB // 2]
    assert ctx.schemes[0].stat.sz_tried == MiB + MiB // 2
    assert ctx.regions() == ten_regions()        # identical pieces merged back


def test_quota_split_piece_stays_when_the_action_reset_its_age():
    ctx = FakeCtx(ten_regions(), [Scheme(pattern=ALL, action=Action.COLD,
                                         quota=Quota(sz=MiB + MiB // 2, reset_interval=1000))],
                  machine=FakeMachine([Vma(BASE, BASE + 10 * MiB)]))
    ctx.targets[0].regions.age[:] = 3
    ctx.run_samples(20)
    assert len(ctx.regions()) == 11
    assert ctx.regions()[1] == (BASE + MiB, BASE + MiB + MiB // 2)


def test_time_quota_uses_default_throughput_then_the_charged_cost():
    ctx = FakeCtx(ten_regions(), [stat_scheme(quota=Quota(ms=1, reset_interval=100))])
    ctx.run_samples(20)
    q = ctx.schemes[0].quota
    assert q.esz == 4096 * 1024                  # PAGE_SIZE * 1024 bytes per ms, 1 ms
    cost = quota.action_cost_ns(Action.STAT, MiB, 0)
    assert q.total_charged_ns == 4 * cost
    ctx.run_samples(20)
    assert q.esz == (4 * MiB) * 1_000_000 // (4 * cost) * 1


def test_fail_charge_ratio_charges_unapplied_bytes_less():
    s = stat_scheme(quota=Quota(sz=10 * MiB, reset_interval=1000, fail_charge_num=1, fail_charge_denom=1024))
    ctx = FakeCtx(ten_regions(), [s])
    ctx.run_samples(20)
    assert ctx.schemes[0].quota.charged_sz == 10 * (MiB // 1024)


def test_prioritisation_applies_the_coldest_regions_first():
    s = Scheme(pattern=ALL, action=Action.PAGEOUT,
               quota=Quota(sz=2 * MiB, reset_interval=1000, weight_nr_accesses=1, weight_age=1))
    ctx = FakeCtx(ten_regions(), [s], machine=FakeMachine([Vma(BASE, BASE + 10 * MiB)]))
    r = ctx.targets[0].regions
    r.nr_accesses[:] = 10
    r.nr_accesses[[4, 7]] = 0
    r.age[[4, 7]] = 100
    walk = damos.request_walk(ctx, False)
    ctx.run_samples(20)
    assert [(x.start - BASE) // MiB for x in walk.result[0]] == [4, 7]
    assert ctx.schemes[0].quota.min_score == ops_common.cold_score(0, 100, 5000, 100000, 1, 1)


def test_user_input_goal_raises_then_lowers_the_effective_quota():
    g = QuotaGoal(metric=GoalMetric.USER_INPUT, target_value=10000, current_value=0)
    s = stat_scheme(quota=Quota(reset_interval=100, goals=[g], sz=100 * MiB))
    ctx = FakeCtx(ten_regions(), [s])
    ctx.run_samples(20 * 5)
    e1 = damos.effective_quotas(ctx)[0]
    ctx.run_samples(20 * 5)
    e2 = damos.effective_quotas(ctx)[0]
    assert e2 > e1 >= 1
    damos.commit_quota_goals(ctx, [[QuotaGoal(metric=GoalMetric.USER_INPUT, target_value=10000,
                                              current_value=15000)]])
    ctx.run_samples(20 * 2)
    assert damos.effective_quotas(ctx)[0] < e2
    assert damos.goal_current_values(ctx) == [[15000]]


def test_temporal_tuner_stops_when_the_goal_is_met():
    g = QuotaGoal(metric=GoalMetric.USER_INPUT, target_value=100, current_value=0)
    s = stat_scheme(quota=Quota(reset_interval=100, goals=[g], sz=4 * MiB, goal_tuner=GoalTuner.TEMPORAL))
    ctx = FakeCtx(ten_regions(), [s])
    ctx.run_samples(20)
    assert damos.effective_quotas(ctx) == [4 * MiB]
    damos.commit_quota_goals(ctx, [[QuotaGoal(metric=GoalMetric.USER_INPUT, target_value=100,
                                              current_value=100)]])
    before = ctx.schemes[0].stat.sz_tried
    ctx.run_samples(40)
    assert damos.effective_quotas(ctx) == [1]
    assert ctx.schemes[0].stat.sz_tried == before


# --- filters ------------------------------------------------------------------------

def test_addr_allow_filter_splits_at_the_edges_and_counts_only_inside():
    f = Filter(type=FilterType.ADDR, matching=True, allow=True,
               addr_start=BASE + MiB + MiB // 2, addr_end=BASE + 3 * MiB)
    ctx = FakeCtx(ten_regions(), [stat_scheme(core_filters=[f])])
    walk = damos.request_walk(ctx, False)
    ctx.run_samples(20)
    assert ctx.regions()[1] == (BASE + MiB, BASE + MiB + MiB // 2)
    assert ctx.regions()[2] == (BASE + MiB + MiB // 2, BASE + 2 * MiB)
    # the in-range piece made by the split is visited from the next pass on
    assert [(x.start, x.end) for x in walk.result[0]] == [(BASE + 2 * MiB, BASE + 3 * MiB)]
    walk = damos.request_walk(ctx, False)
    ctx.run_samples(20)
    assert [(x.start, x.end) for x in walk.result[0]] == [(BASE + MiB + MiB // 2, BASE + 2 * MiB),
                                                          (BASE + 2 * MiB, BASE + 3 * MiB)]


def test_target_reject_filter_and_default_rules():
    rej = Filter(type=FilterType.TARGET, matching=True, allow=False, target_idx=0)
    ctx = FakeCtx(ten_regions(), [stat_scheme(core_filters=[rej])])
    ctx.run_samples(20)
    assert ctx.schemes[0].stat.nr_tried == 0
    other = Filter(type=FilterType.TARGET, matching=True, allow=True, target_idx=1)
    ctx = FakeCtx(ten_regions(), [stat_scheme(core_filters=[other])])
    ctx.run_samples(20)
    assert ctx.schemes[0].stat.nr_tried == 0        # last filter allows: unmatched rejected
    ctx = FakeCtx(ten_regions(), [stat_scheme(core_filters=[other], ops_filters=[
        Filter(type=FilterType.ANON, matching=True, allow=True)])])
    assert ctx.schemes[0].core_default_reject is False
    assert ctx.schemes[0].ops_default_reject is True


def test_vaddr_stat_counts_ops_filter_passed_per_folio():
    m = FakeMachine([Vma(BASE, BASE + 4 * PMD)])
    for i in range(4):
        m.map_thp(BASE + i * PMD, 0x1000 + i * 512)
    m.folios[BASE + PMD].anon = False
    regions = [(BASE, BASE + 4 * PMD)]
    f = Filter(type=FilterType.ANON, matching=True, allow=True)
    ctx = FakeCtx(regions, [stat_scheme(ops_filters=[f])], machine=m)
    ctx.run_samples(20)
    assert ctx.schemes[0].stat.sz_ops_filter_passed == 3 * PMD


# --- walks and watermarks -----------------------------------------------------------

def test_second_walk_request_is_busy_and_cancel_wakes_the_waiter():
    ctx = FakeCtx(ten_regions(), [stat_scheme()])
    w = damos.request_walk(ctx, True)
    with pytest.raises(DamonError) as e:
        damos.request_walk(ctx, True)
    assert e.value.errno == errno.EBUSY
    damos.cancel_walks(ctx)
    assert w.done.is_set() and w.cancelled


def test_walk_with_no_scheme_is_cancelled():
    ctx = FakeCtx(ten_regions(), [])
    w = damos.request_walk(ctx, False)
    assert w.done.is_set() and w.cancelled


def test_free_mem_rate_watermarks_deactivate_and_reactivate():
    wm = Watermarks(metric=WmarkMetric.FREE_MEM_RATE, interval=5000, high=800, mid=600, low=100)
    m = FakeMachine(free_rate=900)
    ctx = FakeCtx(ten_regions(), [stat_scheme(wmarks=wm)], machine=m)
    w = damos.request_walk(ctx, False)
    assert damos.schemes_active(ctx) is False and damos.wmarks_wait_us(ctx) == 5000
    assert w.cancelled
    m.free_rate = 700                       # between mid and high: stays inactive
    assert damos.schemes_active(ctx) is False
    m.free_rate = 500
    assert damos.schemes_active(ctx) is True
    m.free_rate = 50
    assert damos.schemes_active(ctx) is False


def test_commit_keeps_stats_and_adds_new_schemes():
    ctx = FakeCtx(ten_regions(), [stat_scheme()])
    ctx.run_samples(20)
    damos.commit_schemes(ctx, [stat_scheme(), stat_scheme()])
    assert ctx.schemes[0].stat.nr_tried == 10 and ctx.schemes[1].stat.nr_tried == 0
    ctx.run_samples(20)
    assert [s.stat.nr_tried for s in ctx.schemes] == [20, 10]
    damos.commit_schemes(ctx, [])
    assert ctx.schemes == []


def test_scalar_and_vector_scores_agree():
    import numpy as np
    from damond.damon.params import OpsId
    s = Scheme(action=Action.PAGEOUT, quota=Quota(weight_nr_accesses=3, weight_age=7))
    nr = np.arange(0, 21).repeat(40)
    age = np.tile(np.array([0, 1, 9, 10, 11, 99, 100, 1000, 10**5, 10**9] * 4), 21)
    vec = ops_common.scheme_scores(OpsId.VADDR, s, nr, age, 5000, 100000)
    one = [ops_common.scheme_score(OpsId.VADDR, s, int(a), int(b), 5000, 100000) for a, b in zip(nr, age)]
    assert list(vec) == one
