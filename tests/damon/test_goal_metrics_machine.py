"""Quota goal metrics measured on the real emulated Machine, virtual time: some_mem_psi_us
rises where memory stalls happen (swap-in refaults, charged pageout work) and the tuner
sees it; node_memcg_used/free_bp follow the folios' memcg and node; a metric the machine
cannot measure is refused at commit (EINVAL), never read as 0."""
from __future__ import annotations

import errno

import pytest

from damond.damon import params
from damond.damon.kdamond import Kdamond
from damond.damon.params import Action, GoalMetric, Quota, QuotaGoal, Scheme
from damond.errors import DamonError
from test_actions_machine import ALL, IDLE, MiB, area, pids, rollup_kb, run_machine, system, vaddr

HOT_UNIFORM = 'kind = "uniform"\nsize = "64M"\nhot_size = "64M"'


def test_psi_is_zero_without_stalls_and_grows_with_refaults():
    s = system(HOT_UNIFORM)
    pid = pids(s)[0]
    before = s.machine.some_mem_psi_total_us()
    run_machine(s, 500_000)
    assert s.machine.some_mem_psi_total_us() == before     # resident and hot: nothing stalls
    v = area(s, pid)
    s.machine.pageout_range(pid, v.start, v.end)            # everything hot goes to swap
    run_machine(s, 500_000)                                  # the workload refaults it
    grown = s.machine.some_mem_psi_total_us() - before
    assert rollup_kb(s, pid, "Swap") < 64 * 1024
    assert 0 < grown <= 500_000


def test_pageout_of_hot_memory_shows_in_the_psi_goal_and_the_tuner_backs_off():
    """A pageout scheme on memory that is in use makes the workload refault; the
    some_mem_psi_us goal measures the stall (the kernel: delta of the PSI total between
    goal updates) and, at twice its target or more, the feedback loop drops the quota to
    its minimum (damon_feed_loop_next_input), then grows it again while nothing stalls."""
    s = system(HOT_UNIFORM)
    pid = pids(s)[0]
    goal = QuotaGoal(metric=GoalMetric.SOME_MEM_PSI_US, target_value=2000)
    k = vaddr(s, pid, Scheme(pattern=ALL, action=Action.PAGEOUT,
                             quota=Quota(sz=64 * MiB, reset_interval=50, goals=[goal])))
    values, quotas = [], []
    for _ in range(80):
        k.run_for(50_000)
        values.append(k.quota_goal_values()[0][0])
        quotas.append(k.effective_quotas()[0])
    stalled = next(i for i, v in enumerate(values) if v >= 2 * 2000)
    assert quotas[stalled - 1] >= MiB                      # the quota had grown before the stall
    assert quotas[stalled] == 1                            # score >= 2x goal: minimum input
    assert max(quotas[stalled:]) < quotas[stalled - 1]     # and it regrows from there
    assert k.scheme_stats()[0].sz_applied > 0
    k.stop()


def test_node_memcg_bp_follows_the_memcg_and_node_of_the_folios():
    s = system('kind = "mmap"\nsize = "64M"\npopulate = true\nmemcg = "/a"\nnode = 0',
               'kind = "mmap"\nsize = "32M"\npopulate = true\nmemcg = "/a/b"\nnode = 1',
               'kind = "mmap"\nsize = "16M"\npopulate = true\nmemcg = "/c"\nnode = 1', nodes=2)
    node_pages = (1 << 30) // 2 // 4096
    m = s.machine
    assert m.node_memcg_bp(0, "/a", True) == (64 * MiB // 4096) * 10000 // node_pages
    assert m.node_memcg_bp(1, "/a", True) == (32 * MiB // 4096) * 10000 // node_pages   # child /a/b
    assert m.node_memcg_bp(1, "/a/b", True) == (32 * MiB // 4096) * 10000 // node_pages
    assert m.node_memcg_bp(1, "/c", True) == (16 * MiB // 4096) * 10000 // node_pages
    assert m.node_memcg_bp(0, "/c", True) == 0
    assert m.node_memcg_bp(1, "/c", False) == (node_pages - 16 * MiB // 4096) * 10000 // node_pages
    assert m.node_memcg_bp(0, "/nonexistent", True) == 0 and m.node_memcg_bp(0, "/nonexistent", False) == 10000
    # through a running kdamond's goal
    pid = [p.pid for p in m.processes() if p.memcg == "/c"][0]
    goal = QuotaGoal(metric=GoalMetric.NODE_MEMCG_USED_BP, target_value=5000, nid=1, path="/c")
    k = vaddr(s, pid, Scheme(pattern=IDLE, action=Action.STAT, quota=Quota(sz=MiB, reset_interval=50, goals=[goal])))
    k.run_for(300_000)
    assert k.quota_goal_values()[0][0] == m.node_memcg_bp(1, "/c", True) > 0
    k.stop()


@pytest.mark.parametrize("metric", [GoalMetric.SOME_MEM_PSI_US, GoalMetric.NODE_MEMCG_USED_BP])
def test_a_metric_the_machine_cannot_measure_is_refused_at_commit(metric, fake_system):
    k = Kdamond(fake_system, 0)          # the fake machine: no stall or memcg accounting
    goal = QuotaGoal(metric=metric, target_value=100, path="/")
    ctx = params.Ctx(ops=params.OpsId.PADDR, targets=[params.Target(regions=[params.AddrRange(0, 1 << 20)])],
                     schemes=[Scheme(pattern=ALL, action=Action.STAT, quota=Quota(reset_interval=10, goals=[goal]))])
    with pytest.raises(DamonError) as e:
        k.start(ctx)
    assert e.value.errno == errno.EINVAL and metric.value in e.value.msg
    assert not k.running
