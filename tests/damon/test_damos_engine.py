"""Engine-level equivalents of the kernel's functional DAMOS selftests (kernel-sysfs.md
5.3) on the real Kdamond loop in virtual time, over the core's fake machine: a process
whose first N MiB are always accessed (what `access_memory` makes DAMON see)."""
from __future__ import annotations


from damond.damon import params
from damond.damon.kdamond import Kdamond
from damond.damon.params import AccessPattern, Action, GoalMetric, Quota, QuotaGoal, Scheme
from tests.damon.conftest import FakeMachine, make_system
from tests.damon.test_damos_fakes import FakeSpe

MiB = 1 << 20
HEAP = 0x400000
MMAP = 0x7f0000000000
STACK = 0x7ffff0000000
UINT_MAX = (1 << 32) - 1


def kdamond(heap_mib: int, hot_mib: int, schemes: list[Scheme], **attrs) -> Kdamond:
    m = FakeMachine()
    vmas = [(HEAP, HEAP + heap_mib * MiB), (MMAP, MMAP + 16 * 4096), (STACK, STACK + 8 * 4096)]
    m.add_process(42, vmas, hot=[(HEAP, HEAP + hot_mib * MiB)])
    s = make_system(m)
    s.spe = FakeSpe()
    k = Kdamond(s, 0)
    k.start(params.Ctx(ops=params.OpsId.VADDR, attrs=params.Attrs(**attrs),
                       targets=[params.Target(pid=42)], schemes=schemes))
    return k


def hot_pattern() -> AccessPattern:
    return AccessPattern(0, (1 << 64) - 1, 5, 20, 2, UINT_MAX)


def tried_bytes(k: Kdamond, i: int = 0) -> int:
    return sum(r.end - r.start for r in k.walk_tried_regions(1.0, total_only=True)[i])


def test_quota_bounds_every_tried_bytes_and_counts_exceeds():
    """damos_quota.py: 1 MiB per 100 ms."""
    k = kdamond(20, 10, [Scheme(pattern=hot_pattern(), action=Action.STAT,
                                quota=Quota(sz=MiB, reset_interval=100))])
    k.run_for(1_000_000)
    samples = []
    for _ in range(10):
        samples.append(tried_bytes(k))
        k.run_for(100_000)
    assert all(0 < s <= MiB for s in samples), samples
    assert k.scheme_stats()[0].qt_exceeds >= len(samples)


def test_apply_interval_ratio():
    """damos_apply_interval.py: 10 ms apply interval tries >= 9x the default (100 ms)."""
    all_ = AccessPattern(0, (1 << 64) - 1, 0, UINT_MAX, 0, UINT_MAX)
    k = kdamond(20, 10, [Scheme(pattern=all_, action=Action.STAT),
                         Scheme(pattern=all_, action=Action.STAT, apply_interval_us=10000)])
    k.run_for(2_000_000)
    slow, fast = (s.nr_tried for s in k.scheme_stats())
    assert slow > 0 and fast >= 9 * slow


def test_user_input_goal_moves_the_effective_quota():
    """damos_quota_goal.py."""
    def goal(cur):
        return QuotaGoal(metric=GoalMetric.USER_INPUT, target_value=10000, current_value=cur)
    k = kdamond(20, 10, [Scheme(pattern=hot_pattern(), action=Action.STAT,
                                quota=Quota(reset_interval=100, goals=[goal(0)]))])
    k.run_for(200_000)
    for cur in (0, 15000, 5000, 18000):
        k.commit_quota_goals([[goal(cur)]])
        before = k.effective_quotas()[0]
        k.run_for(500_000)
        after = k.effective_quotas()[0]
        if cur < 10000:
            assert after > before, (cur, before, after)
        else:
            assert after < before or before == after == 1, (cur, before, after)


def test_working_set_estimate_within_20_percent():
    """sysfs_update_schemes_tried_regions_wss_estimation.py: 10 MiB hot of 100 MiB."""
    k = kdamond(100, 10, [Scheme(pattern=hot_pattern(), action=Action.STAT)])
    k.run_for(1_000_000)
    wss = sorted(tried_bytes(k) for _ in range(20))
    for pct in (50, 75):
        got = wss[len(wss) * pct // 100]
        assert abs(got - 10 * MiB) <= 2 * MiB, (pct, wss)


def test_tried_regions_cover_the_hot_range_in_address_order():
    """damos_tried_regions.py, engine side: every region the scheme is applied to, in order."""
    all_ = AccessPattern(0, (1 << 64) - 1, 0, UINT_MAX, 0, UINT_MAX)
    k = kdamond(20, 10, [Scheme(pattern=all_, action=Action.STAT)])
    k.run_for(500_000)
    walk = k.walk_tried_regions(1.0)[0]
    starts = [r.start for r in walk]
    assert starts == sorted(starts) and len(walk) >= 10
    hot = [r for r in walk if r.end <= HEAP + 10 * MiB]
    assert hot and all(r.nr_accesses == 20 for r in hot)
