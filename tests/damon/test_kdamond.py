"""The kdamond loop on a fake machine and a VirtualClock: exact sample and aggregation
counts, validation at on/commit, commit semantics, self-stop, tuning, refresh, wall mode."""
from __future__ import annotations

import errno
import time

import pytest
from structlog.testing import capture_logs

from damond.clock import WallClock
from damond.damon import params
from damond.damon.kdamond import Kdamond
from damond.errors import DamonError
from tests.damon.conftest import FakeMachine, make_system

G = 1 << 30
HEAP = 0x400000
MMAP = 0x7f0000000000
STACK = 0x7ffff0000000
VMAS = [(HEAP, HEAP + G), (MMAP, MMAP + 16 * 4096), (STACK, STACK + 8 * 4096)]


def vaddr_system(hot=((HEAP, HEAP + G // 4),), pid=42, config_text="seed = 1\n"):
    m = FakeMachine()
    m.add_process(pid, VMAS, hot=list(hot))
    return make_system(m, config_text)


def vaddr_ctx(pid=42, **attrs) -> params.Ctx:
    return params.Ctx(ops=params.OpsId.VADDR, attrs=params.Attrs(**attrs), targets=[params.Target(pid=pid)])


def test_virtual_time_counts_samples_and_aggregations_exactly():
    s = vaddr_system()
    k = Kdamond(s, 0)
    k.start(vaddr_ctx())
    assert k.running and k.pid > 0
    k.run_for(1_000_000)
    ctx = k.ctx
    assert s.clock.now_us() == 1_000_000
    assert ctx.passed_sample_intervals == 200
    assert ctx.nr_aggregations == 10
    assert s.machine.mkold_calls == 200 and s.machine.young_calls == 200
    assert s.machine.now_us == 1_000_000
    k.run_for(50_000)
    assert ctx.passed_sample_intervals == 210 and ctx.nr_aggregations == 10


def test_hot_and_idle_regions():
    """The heap is hot in every sample, the other mappings idle: no region straddles."""
    s = vaddr_system(hot=((HEAP, HEAP + G),))
    k = Kdamond(s, 0)
    k.start(vaddr_ctx())
    k.run_for(2_000_000)
    r = k.ctx.targets[0].regions
    heap = r.end <= HEAP + G
    assert heap.sum() >= 1 and (~heap).sum() >= 2
    assert (r.last_nr_accesses[heap] == 20).all()
    assert (r.last_nr_accesses[~heap] == 0).all()
    assert (r.nr_accesses_bp[heap] == 200000).all() and (r.nr_accesses_bp[~heap] == 0).all()
    assert (r.age[~heap] >= 19).all()             # unchanged level since the start, minus split resets
    assert 10 <= k.ctx.nr_regions() <= 1000


def test_three_regions_initial_split():
    s = vaddr_system()
    k = Kdamond(s, 0)
    k.start(vaddr_ctx(min_nr_regions=10))
    r = k.ctx.targets[0].regions
    assert len(r) == 11 and r.total_size() == G + 24 * 4096
    assert int(r.start[0]) == HEAP and int(r.end[-1]) == STACK + 8 * 4096


def test_self_stop_when_targets_exit():
    s = vaddr_system()
    k = Kdamond(s, 0)
    k.start(vaddr_ctx())
    k.run_for(100_000)
    s.machine.kill(42)
    with capture_logs() as logs:
        k.run_for(100_000)
    assert not k.running and k.pid == -1
    assert any(e["event"] == "kdamond_stopped" and e["reason"] == "targets_exited" for e in logs)
    with pytest.raises(DamonError) as e:
        k.stop()
    assert e.value.errno == errno.EPERM
    with pytest.raises(DamonError) as e:
        k.commit(vaddr_ctx())
    assert e.value.errno == errno.EINVAL


def test_start_stop_errnos():
    s = vaddr_system()
    k = Kdamond(s, 0)
    with pytest.raises(DamonError) as e:
        k.stop()
    assert e.value.errno == errno.EINVAL
    k.start(vaddr_ctx())
    with pytest.raises(DamonError) as e:
        k.start(vaddr_ctx())
    assert e.value.errno == errno.EBUSY
    k.stop()
    assert not k.running and k.pid == -1
    with pytest.raises(DamonError) as e:
        k.stop()
    assert e.value.errno == errno.EPERM
    for call in (k.scheme_stats, k.tuned_intervals, k.effective_quotas):
        with pytest.raises(DamonError) as e:
            call()
        assert e.value.errno == errno.EINVAL


BAD = [
    ("monitoring_attrs/nr_regions/min", vaddr_ctx(min_nr_regions=2)),
    ("monitoring_attrs/nr_regions/min", vaddr_ctx(min_nr_regions=20, max_nr_regions=10)),
    ("monitoring_attrs/intervals/sample_us", vaddr_ctx(sample_interval=200000, aggr_interval=100000)),
    ("monitoring_attrs/intervals/intervals_goal/min_sample_us",
     vaddr_ctx(intervals_goal=params.IntervalsGoal(access_bp=400, aggrs=3, min_sample_us=10, max_sample_us=5))),
    ("monitoring_attrs/intervals/sample_us",
     vaddr_ctx(intervals_goal=params.IntervalsGoal(access_bp=400, aggrs=3, min_sample_us=10, max_sample_us=4000))),
    ("targets/0/pid_target", vaddr_ctx(pid=4242)),
    ("targets/0/pid_target", params.Ctx(ops=params.OpsId.FVADDR, targets=[params.Target(pid=None)])),
    ("targets/nr_targets", params.Ctx(ops=params.OpsId.PADDR, targets=[params.Target(), params.Target()])),
    ("addr_unit", params.Ctx(ops=params.OpsId.PADDR, addr_unit=3)),
    ("targets/0/regions/0/start", params.Ctx(ops=params.OpsId.PADDR, targets=[params.Target(
        regions=[params.AddrRange(8192, 4096)])])),
    ("targets/0/regions/1/start", params.Ctx(ops=params.OpsId.PADDR, targets=[params.Target(
        regions=[params.AddrRange(0, 8192), params.AddrRange(4096, 12288)])])),
    ("targets/0/regions/1/start", params.Ctx(ops=params.OpsId.PADDR, targets=[params.Target(
        regions=[params.AddrRange(8192, 12288), params.AddrRange(0, 4096)])])),
    ("targets/0/regions", params.Ctx(ops=params.OpsId.PADDR, targets=[params.Target(
        regions=[params.AddrRange(4096, 4096)])])),
    ("operations", params.Ctx(ops="nonexistent")),
]


@pytest.mark.parametrize("file, p", BAD, ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD)])
def test_invalid_on_is_einval_with_event(file, p):
    k = Kdamond(vaddr_system(), 0)
    with capture_logs() as logs:
        with pytest.raises(DamonError) as e:
            k.start(p)
    assert e.value.errno == errno.EINVAL
    assert not k.running and k.pid == -1
    ev = [x for x in logs if x["event"] == "commit_rejected"]
    assert ev and ev[0]["file"] == file and ev[0]["errno"] == "EINVAL"


def test_commit_rescales_and_keeps_regions():
    s = vaddr_system()
    k = Kdamond(s, 0)
    k.start(vaddr_ctx())
    k.run_for(1_000_000)
    ctx = k.ctx
    before = ctx.targets[0].regions.ranges()
    last = ctx.targets[0].regions.last_nr_accesses.copy()
    k.commit(vaddr_ctx(sample_interval=10000, aggr_interval=100000))   # aggr_samples 20 -> 10
    assert ctx.targets[0].regions.ranges() == before                 # nr_regions 0 keeps regions
    assert (ctx.targets[0].regions.last_nr_accesses == last // 2).all()
    assert k.tuned_intervals() == (10000, 100000)
    n = ctx.passed_sample_intervals
    k.run_for(1_000_000)
    assert ctx.passed_sample_intervals == n + 100


def test_rejected_commit_leaves_running_context_untouched():
    s = vaddr_system()
    k = Kdamond(s, 0)
    k.start(vaddr_ctx())
    k.run_for(200_000)
    ranges = k.ctx.targets[0].regions.ranges()
    with pytest.raises(DamonError) as e:
        k.commit(vaddr_ctx(min_nr_regions=2))
    assert e.value.errno == errno.EINVAL
    assert k.running and k.ctx.attrs.min_nr_regions == 10
    assert k.ctx.targets[0].regions.ranges() == ranges


def test_commit_user_regions_replace_current_ones():
    s = vaddr_system()
    k = Kdamond(s, 0)
    k.start(params.Ctx(ops=params.OpsId.FVADDR, targets=[params.Target(
        pid=42, regions=[params.AddrRange(HEAP + 100, HEAP + 10 * 4096)])]))
    assert k.ctx.targets[0].regions.ranges() == [(HEAP, HEAP + 10 * 4096)]     # aligned
    k.run_for(300_000)
    k.commit(params.Ctx(ops=params.OpsId.FVADDR, targets=[params.Target(
        pid=42, regions=[params.AddrRange(HEAP, HEAP + 4096), params.AddrRange(HEAP + 4096, HEAP + 8192),
                         params.AddrRange(MMAP, MMAP + 4096)])]))
    r = k.ctx.targets[0].regions
    assert r.start.tolist()[0] == HEAP and r.end.tolist()[-1] == MMAP + 4096
    assert r.total_size() == 3 * 4096


def test_fvaddr_keeps_fixed_regions_across_updates():
    s = vaddr_system()
    k = Kdamond(s, 0)
    k.start(params.Ctx(ops=params.OpsId.FVADDR, attrs=params.Attrs(ops_update_interval=100000),
                       targets=[params.Target(pid=42, regions=[params.AddrRange(HEAP, HEAP + G // 2)])]))
    k.run_for(1_000_000)
    r = k.ctx.targets[0].regions
    assert int(r.start[0]) == HEAP and int(r.end[-1]) == HEAP + G // 2


def test_vaddr_update_follows_new_mappings():
    s = vaddr_system()
    k = Kdamond(s, 0)
    k.start(vaddr_ctx(ops_update_interval=100000))
    k.run_for(100_000)
    s.machine.procs[42].vma_list[0].end = HEAP + 2 * G               # the heap grew
    k.run_for(100_000)
    assert int(k.ctx.targets[0].regions.end[-1]) == STACK + 8 * 4096
    assert k.ctx.targets[0].regions.total_size() == 2 * G + 24 * 4096


def test_paddr_without_regions_monitors_nothing():
    s = vaddr_system()
    k = Kdamond(s, 0)
    k.start(params.Ctx(ops=params.OpsId.PADDR, targets=[params.Target()]))
    k.run_for(500_000)
    assert k.running and k.ctx.nr_regions() == 0 and k.ctx.passed_sample_intervals == 100


def test_paddr_addr_unit_scales_checked_addresses():
    m = FakeMachine()
    m.pa_hot = [(1 << 32, (1 << 32) + (1 << 30))]            # 1 GiB hot above 4 GiB
    s = make_system(m)
    k = Kdamond(s, 0)
    k.start(params.Ctx(ops=params.OpsId.PADDR, addr_unit=1024, targets=[params.Target(
        regions=[params.AddrRange((1 << 32) // 1024, ((1 << 32) + (1 << 30)) // 1024)])]))
    assert k.ctx.min_region_sz == 4
    k.run_for(300_000)
    r = k.ctx.targets[0].regions
    assert (r.last_nr_accesses == 20).all()


def test_intervals_autotuning_grows_intervals_when_idle():
    s = vaddr_system(hot=())
    k = Kdamond(s, 0)
    goal = params.IntervalsGoal(access_bp=400, aggrs=1, min_sample_us=5000, max_sample_us=20000)
    k.start(vaddr_ctx(intervals_goal=goal))
    k.run_for(3_000_000)
    assert k.tuned_intervals() == (20000, 400000)           # x2 per tuning, clamped, aggr_samples 20


def test_intervals_autotuning_shrinks_intervals_when_hot():
    s = vaddr_system(hot=((0, 1 << 48),))
    k = Kdamond(s, 0)
    goal = params.IntervalsGoal(access_bp=400, aggrs=1, min_sample_us=1000, max_sample_us=100000)
    k.start(vaddr_ctx(sample_interval=8000, aggr_interval=160000, intervals_goal=goal))
    k.run_for(3_000_000)
    assert k.tuned_intervals() == (1000, 20000)


def test_refresh_callback_runs_about_every_ms():
    s = vaddr_system()
    k = Kdamond(s, 0)
    seen = []
    k.set_refresh(100, lambda: seen.append((s.clock.now_us(), k.scheme_stats())))
    k.start(vaddr_ctx())
    k.run_for(1_000_000)
    assert len(seen) == 10
    assert all(st == [] for _, st in seen)


def test_pause_stops_monitoring_but_not_time():
    s = vaddr_system()
    k = Kdamond(s, 0)
    p = vaddr_ctx()
    k.start(p)
    k.run_for(100_000)
    n = k.ctx.passed_sample_intervals
    p.pause = True
    k.commit(p)
    k.run_for(100_000)
    assert k.ctx.passed_sample_intervals <= n + 1
    assert s.clock.now_us() >= 200_000


def test_wall_clock_thread_serves_commands():
    m = FakeMachine()
    m.add_process(42, VMAS, hot=[(HEAP, HEAP + G // 4)])
    s = make_system(m)
    s.clock = WallClock(1.0)
    k = Kdamond(s, 0)
    k.start(vaddr_ctx(sample_interval=1000, aggr_interval=20000))
    assert k._thread is not None and k.pid > 0
    deadline = time.monotonic() + 5
    while k.ctx.nr_aggregations < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert k.ctx.nr_aggregations >= 3
    k.commit(vaddr_ctx(sample_interval=2000, aggr_interval=20000))
    assert k.tuned_intervals() == (2000, 20000)
    assert k.scheme_stats() == []
    k.stop()
    assert not k.running and k.pid == -1 and k._thread is None
