"""DAMOS quotas: charge windows, the effective size quota and goal auto-tuning, as
`mm/damon/core.c` (`damos_adjust_quota`, `damos_set_effective_quota`,
`damon_feed_loop_next_input`, `damos_quota_score`, `damos_goal_tune_esz_bp_*`,
`damos_set_quota_goal_current_value`) plus the score histogram that sets `min_score`.

Time quotas need the time an action took. damond charges emulated work from a fixed,
deterministic cost model (`action_cost_ns`): a per-application base, a per-page scan cost
and a per-page cost of the work actually done, per action. Runs are reproducible; no
host timing enters the engine.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from damond.damon import ops_common, trace
from damond.damon.params import Action, GoalMetric, GoalTuner, OpsId, QuotaGoal, Scheme

PAGE_SIZE = 4096
ULONG_MAX = (1 << 64) - 1
I64_MAX = (1 << 63) - 1
FEED_GOAL = 10000
FEED_MIN_INPUT = 10000

# Emulated cost of applying an action (ns): BASE + SCAN x region pages + WORK x applied pages.
BASE_NS = 1000
SCAN_NS_PER_PAGE = {
    Action.STAT: 2, Action.WILLNEED: 40, Action.COLD: 60, Action.PAGEOUT: 80,
    Action.HUGEPAGE: 0, Action.NOHUGEPAGE: 0, Action.COLLAPSE: 20, Action.SPLIT: 4,
    Action.MTHP_SPLIT: 4, Action.LRU_PRIO: 50, Action.LRU_DEPRIO: 50,
    Action.MIGRATE_HOT: 60, Action.MIGRATE_COLD: 60,
}
WORK_NS_PER_PAGE = {
    Action.STAT: 0, Action.WILLNEED: 400, Action.COLD: 100, Action.PAGEOUT: 2500,
    Action.HUGEPAGE: 0, Action.NOHUGEPAGE: 0, Action.COLLAPSE: 400, Action.SPLIT: 40,
    Action.MTHP_SPLIT: 40, Action.LRU_PRIO: 150, Action.LRU_DEPRIO: 150,
    Action.MIGRATE_HOT: 1800, Action.MIGRATE_COLD: 1800,
}


def action_cost_ns(action: Action, sz: int, applied: int) -> int:
    """Deterministic emulated time (ns) of one action application on a region of `sz` bytes."""
    return (BASE_NS + SCAN_NS_PER_PAGE.get(action, 0) * (sz // PAGE_SIZE)
            + WORK_NS_PER_PAGE.get(action, 0) * (applied // PAGE_SIZE))


# Actions whose work is a memory stall of the task doing it, as PSI counts them: reclaim
# (pageout), migration, and the allocation/compaction of a collapse.
MEMSTALL_ACTIONS = {Action.PAGEOUT, Action.MIGRATE_HOT, Action.MIGRATE_COLD, Action.COLLAPSE}

# goal metric -> the machine method that measures it; a machine without it cannot model it
METRIC_SOURCE = {
    GoalMetric.SOME_MEM_PSI_US: "some_mem_psi_total_us",
    GoalMetric.NODE_MEM_USED_BP: "node_mem_bp", GoalMetric.NODE_MEM_FREE_BP: "node_mem_bp",
    GoalMetric.NODE_MEMCG_USED_BP: "node_memcg_bp", GoalMetric.NODE_MEMCG_FREE_BP: "node_memcg_bp",
    GoalMetric.ACTIVE_MEM_BP: "active_mem_bp", GoalMetric.INACTIVE_MEM_BP: "active_mem_bp",
    GoalMetric.NODE_ELIGIBLE_MEM_BP: "pa_folios",
}


def charge_action(ctx, action: Action, sz: int, applied: int) -> int:
    """The emulated time of one application (for the time quota); the work of a
    MEMSTALL_ACTIONS action is also a memory stall on the machine (PSI)."""
    ns = action_cost_ns(action, sz, applied)
    if action in MEMSTALL_ACTIONS and applied:
        charge = getattr(ctx.machine, "charge_memstall", None)
        if charge is not None:
            charge(ns)
    return ns


def unmodelled_metric(machine, goals) -> GoalMetric | None:
    """The first goal metric `machine` cannot measure (refused at commit), else None."""
    for g in goals:
        src = METRIC_SOURCE.get(g.metric)
        if src is not None and not callable(getattr(machine, src, None)):
            return g.metric
    return None


@dataclass
class QuotaState:
    """The runtime half of struct damos_quota."""
    esz: int = 0
    esz_bp: int = 0
    charged_sz: int = 0
    charged_from_ms: int | None = None
    total_charged_sz: int = 0
    total_charged_ns: int = 0
    charge_target_from: int | None = None   # target position in ctx.targets
    charge_addr_from: int = 0
    min_score: int = 0
    goals: list[QuotaGoal] = field(default_factory=list)   # runtime copies, measured values
    last_psi_total: list[int] = field(default_factory=list)


def is_set(scheme: Scheme) -> bool:
    q = scheme.quota
    return bool(q.ms or q.sz or q.goals)


def feed_loop_next_input(last_input: int, score: int) -> int:
    """damon_feed_loop_next_input(): proportional feedback towards score 10000."""
    if score == FEED_GOAL:
        return last_input
    if score >= FEED_GOAL * 2:
        return FEED_MIN_INPUT
    over = score > FEED_GOAL
    diff = score - FEED_GOAL if over else FEED_GOAL - score
    if last_input < ULONG_MAX // diff:
        comp = last_input * diff // FEED_GOAL
    else:
        comp = last_input // FEED_GOAL * diff
    if over:
        return max(last_input - comp, FEED_MIN_INPUT)
    return min(last_input + comp, ULONG_MAX)


def goal_current_value(ctx, scheme: Scheme, qs: QuotaState, i: int) -> int:
    """damos_set_quota_goal_current_value(): measure a goal's metric on the machine."""
    goal = qs.goals[i]
    m, machine = goal.metric, ctx.machine
    if m == GoalMetric.USER_INPUT:
        return goal.current_value
    if m == GoalMetric.SOME_MEM_PSI_US:
        now = int(machine.some_mem_psi_total_us())
        val = max(now - qs.last_psi_total[i], 0)
        qs.last_psi_total[i] = now
        return val
    if m in (GoalMetric.NODE_MEM_USED_BP, GoalMetric.NODE_MEM_FREE_BP):
        return int(machine.node_mem_bp(goal.nid, m == GoalMetric.NODE_MEM_USED_BP))
    if m in (GoalMetric.NODE_MEMCG_USED_BP, GoalMetric.NODE_MEMCG_FREE_BP):
        return int(machine.node_memcg_bp(goal.nid, goal.path or "", m == GoalMetric.NODE_MEMCG_USED_BP))
    if m in (GoalMetric.ACTIVE_MEM_BP, GoalMetric.INACTIVE_MEM_BP):
        return int(machine.active_mem_bp(m == GoalMetric.ACTIVE_MEM_BP))
    if m == GoalMetric.NODE_ELIGIBLE_MEM_BP:
        return node_eligible_mem_bp(ctx, scheme, goal.nid)
    raise AssertionError(f"goal metric {m} has no model")   # unmodelled_metric() refused it at commit


def node_eligible_mem_bp(ctx, scheme: Scheme, nid: int) -> int:
    """damos_get_node_eligible_mem_bp(): share of pattern-eligible memory on node nid (paddr)."""
    if ctx.ops_id != OpsId.PADDR:
        return 0
    total = node = 0
    au = ctx.addr_unit
    for t in ctx.targets:
        r = t.regions
        ok = pattern_mask(r, scheme)
        for i in np.flatnonzero(ok):
            fa = ctx.machine.pa_folios(int(r.start[i]) * au, int(r.end[i]) * au)
            if len(fa.pfn) == 0:
                continue
            sizes = np.left_shift(np.int64(PAGE_SIZE), np.asarray(fa.order, dtype=np.int64))
            total += int(sizes.sum())
            node += int(sizes[np.asarray(fa.nid) == nid].sum())
    return node * 10000 // total if total else 0


def quota_score(ctx, scheme: Scheme, qs: QuotaState) -> int:
    """damos_quota_score(): the highest goal score (least aggressive wins)."""
    best = 0
    for i, g in enumerate(qs.goals):
        g.current_value = goal_current_value(ctx, scheme, qs, i)
        if g.target_value:
            best = max(best, g.current_value * 10000 // g.target_value)
    return best


def set_effective_quota(ctx, scheme: Scheme, qs: QuotaState) -> None:
    """damos_set_effective_quota()."""
    q = scheme.quota
    if not q.ms and not qs.goals:
        qs.esz = q.sz
        return
    esz = ULONG_MAX
    if qs.goals:
        score = quota_score(ctx, scheme, qs)
        if q.goal_tuner == GoalTuner.TEMPORAL:
            # max quota until the goal is met, then (effectively) zero: a 1-byte quota
            # lets nothing through, where a 0 esz would mean "no quota" to the checks.
            qs.esz_bp = 10000 if score >= 10000 else (q.sz * 10000 if q.sz else ULONG_MAX)
        else:
            qs.esz_bp = feed_loop_next_input(max(qs.esz_bp, 10000), score)
        esz = qs.esz_bp // 10000
    if q.ms:
        if qs.total_charged_ns:
            throughput = qs.total_charged_sz * 1_000_000 // qs.total_charged_ns
        else:
            throughput = PAGE_SIZE * 1024
        esz = min(throughput * q.ms, esz)
        esz = max(ctx.min_region_sz, esz)
    if q.sz and q.sz < esz:
        esz = q.sz
    qs.esz = esz


def pattern_mask(regions, scheme: Scheme) -> np.ndarray:
    """__damos_valid_target() for every region of a target."""
    p = scheme.pattern
    sz = (regions.end - regions.start).astype(np.uint64)
    nr = regions.nr_accesses_bp // 10000
    age = regions.age
    return ((sz >= np.uint64(min(p.min_sz_region, ULONG_MAX)))
            & (sz <= np.uint64(min(p.max_sz_region, ULONG_MAX)))
            & (nr >= min(p.min_nr_accesses, I64_MAX)) & (nr <= min(p.max_nr_accesses, I64_MAX))
            & (age >= min(p.min_age_region, I64_MAX)) & (age <= min(p.max_age_region, I64_MAX)))


def adjust_quota(ctx, scheme: Scheme, qs: QuotaState, stat) -> None:
    """damos_adjust_quota(): charge-window rollover, esz, then the min_score histogram."""
    if not is_set(scheme):
        return
    # the kdamond's own time (sampling intervals passed), as jiffies advance with its sleeps:
    # deterministic, and free of wall-clock catch-up jitter between apply passes
    now_ms = ctx.passed_sample_intervals * max(ctx.attrs.sample_interval, 1) // 1000
    if qs.charged_from_ms is None:
        qs.charged_from_ms = now_ms
        set_effective_quota(ctx, scheme, qs)
    if now_ms >= qs.charged_from_ms + scheme.quota.reset_interval:
        if qs.esz and qs.charged_sz >= qs.esz:
            stat.qt_exceeds += 1
        qs.total_charged_sz += qs.charged_sz
        qs.charged_from_ms = now_ms
        qs.charged_sz = 0
        set_effective_quota(ctx, scheme, qs)
        fns = trace.listeners(ctx)
        if fns:
            trace.esz(ctx, fns, next((i for i, st in enumerate(ctx.schemes) if st.params is scheme), 0), qs.esz)
    # score histogram (every ops set of damond has get_scheme_score)
    hist = np.zeros(ops_common.MAX_SCORE + 1, dtype=np.uint64)
    max_score = 0
    a = ctx.attrs
    for t in ctx.targets:
        r = t.regions
        if not len(r):
            continue
        ok = pattern_mask(r, scheme)
        if not ok.any():
            continue
        scores = ops_common.scheme_scores(ctx.ops_id, scheme, r.nr_accesses[ok], r.age[ok],
                                          a.sample_interval, a.aggr_interval)
        np.add.at(hist, scores, r.sizes()[ok])
        max_score = max(max_score, int(scores.max()))
    cum, score = 0, max_score
    while True:
        cum += int(hist[score])
        if cum >= qs.esz or not score:
            break
        score -= 1
    qs.min_score = score


def new_quota_state(scheme: Scheme) -> QuotaState:
    qs = QuotaState()
    commit_goals(qs, scheme.quota.goals)
    return qs


def commit_goals(qs: QuotaState, goals: list[QuotaGoal]) -> None:
    """Install goals (index-matched, measured state kept where the metric is unchanged)."""
    old, old_psi = qs.goals, qs.last_psi_total
    qs.goals, qs.last_psi_total = [], []
    for i, g in enumerate(goals):
        ng = QuotaGoal(metric=g.metric, target_value=g.target_value, current_value=g.current_value,
                       nid=g.nid, path=g.path)
        psi = 0
        if i < len(old) and old[i].metric == g.metric:
            psi = old_psi[i]
            if g.metric != GoalMetric.USER_INPUT:
                ng.current_value = old[i].current_value
        qs.goals.append(ng)
        qs.last_psi_total.append(psi)
