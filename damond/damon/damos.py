"""DAMOS: applying schemes to the monitored regions, as `mm/damon/core.c`
(`kdamond_apply_schemes`, `damon_do_apply_schemes`, `damos_apply_scheme`,
`damos_skip_charged_region`, `damos_valid_target`, `damos_update_stat`, the DAMOS walk
and watermarks `damos_wmark_wait_us`).

Owns each scheme's runtime state (`SchemeState`: stats, quota, watermarks, filter
defaults, apply interval) and the tried-regions walk other threads request. Quota maths
live in quota.py, filters in filter.py, the per-ops action effects in actions.py. The
kdamond loop (kdamond.py) calls `apply_schemes(ctx)` every sampling interval.
"""
from __future__ import annotations

import errno
import threading
from dataclasses import dataclass, field

import numpy as np

from damond.damon import actions, ops_common, quota, trace
from damond.damon import filter as dfilter
from damond.damon.params import Action, Attrs, QuotaGoal, Scheme, SchemeStats, TriedRegion, WmarkMetric
from damond.errors import DamonError
from damond.log import get_logger

log = get_logger("damond.damon.damos")


@dataclass
class SchemeState:
    """A running scheme: struct damos minus what params.Scheme already holds."""
    params: Scheme
    stat: SchemeStats = field(default_factory=SchemeStats)
    next_apply_sis: int = 0
    quota: quota.QuotaState = field(default_factory=quota.QuotaState)
    wmarks_active: bool = True
    core_default_reject: bool = False
    ops_default_reject: bool = False
    core_filters_allowed: bool = False
    last_applied: object = None
    walk_completed: bool = False
    split_kept: int = 0          # THPs the split handler kept hot (for reports)
    collapse_guarded: int = 0    # chunks the SPE guard kept from collapsing


@dataclass
class Walk:
    """A tried-regions request (damos_walk_control): filled during each scheme's next apply pass."""
    total_only: bool
    result: list[list[TriedRegion]]
    total_bytes: list[int]
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False
    active: bool = False


class _WalkControl:
    def __init__(self):
        self.lock = threading.Lock()
        self.walk: Walk | None = None


_control_lock = threading.Lock()


def _control(ctx) -> _WalkControl:
    wc = getattr(ctx, "damos_walk_control", None)
    if wc is None:
        with _control_lock:
            wc = getattr(ctx, "damos_walk_control", None)
            if wc is None:
                wc = _WalkControl()
                ctx.damos_walk_control = wc
    return wc


def _interval_sis(ctx, st: SchemeState) -> int:
    sample = ctx.attrs.sample_interval or 1
    return (st.params.apply_interval_us or ctx.attrs.aggr_interval) // sample


def _set_params(st: SchemeState, scheme: Scheme) -> None:
    st.params = scheme
    st.core_default_reject, st.ops_default_reject = dfilter.set_default_rejects(scheme)


def new_scheme_state(ctx, scheme: Scheme) -> SchemeState:
    """damon_new_scheme(): a scheme ready to run from the next apply interval."""
    st = SchemeState(params=scheme, quota=quota.new_quota_state(scheme))
    _set_params(st, scheme)
    st.next_apply_sis = ctx.passed_sample_intervals + _interval_sis(ctx, st)
    return st


def init_schemes(ctx) -> None:
    """kdamond_init_intervals_sis() for the schemes: first apply one interval after start."""
    for st in ctx.schemes:
        st.next_apply_sis = _interval_sis(ctx, st)
        st.wmarks_active = True


def commit_schemes(ctx, schemes: list[Scheme]) -> None:
    """damon_commit_schemes(): index-matched update keeping stats and quota state; extra new
    schemes are added, missing ones removed."""
    old = ctx.schemes
    new: list[SchemeState] = []
    for i, s in enumerate(schemes):
        if i < len(old):
            st = old[i]
            if (s.apply_interval_us or 0) != (st.params.apply_interval_us or 0):
                _set_params(st, s)
                st.next_apply_sis = ctx.passed_sample_intervals + _interval_sis(ctx, st)
            else:
                _set_params(st, s)
            quota.commit_goals(st.quota, s.quota.goals)
        else:
            st = new_scheme_state(ctx, s)
        new.append(st)
    ctx.schemes[:] = new
    wc = _control(ctx)
    with wc.lock:
        w = wc.walk
        if w is not None:
            while len(w.result) < len(new):
                w.result.append([])
                w.total_bytes.append(0)
            del w.result[len(new):]
            del w.total_bytes[len(new):]
    log.info("schemes_committed", nr_schemes=len(new))


def commit_quota_goals(ctx, goals: list[list[QuotaGoal]]) -> None:
    """commit_schemes_quota_goals: only the goals of each (index-matched) scheme.
    Raises DamonError(EINVAL), changing nothing, if a metric cannot be measured."""
    for i, g in enumerate(goals):
        m = quota.unmodelled_metric(ctx.machine, g)
        if m is not None:
            log.warning("commit_rejected", file=f"schemes/{i}/quotas/goals", errno="EINVAL",
                        reason=f"goal metric {m.value} cannot be measured by the emulated machine")
            raise DamonError(errno.EINVAL, f"goal metric {m.value} cannot be measured")
    for st, g in zip(ctx.schemes, goals):
        st.params.quota.goals = list(g)
        quota.commit_goals(st.quota, g)


def effective_quotas(ctx) -> list[int]:
    return [st.quota.esz for st in ctx.schemes]


def goal_current_values(ctx) -> list[list[int]]:
    return [[g.current_value for g in st.quota.goals] for st in ctx.schemes]


def rescale_for_intervals(ctx, old: Attrs, new: Attrs) -> None:
    """Re-derive next_apply_sis when the sampling or aggregation interval changes."""
    if old.sample_interval == new.sample_interval and old.aggr_interval == new.aggr_interval:
        return
    for st in ctx.schemes:
        st.next_apply_sis = ctx.passed_sample_intervals + _interval_sis(ctx, st)


# --- watermarks ---------------------------------------------------------------------

def wmark_wait_us(ctx, st: SchemeState) -> int:
    """damos_wmark_wait_us(): 0 if the scheme is active, else the time to the next check."""
    w = st.params.wmarks
    if w.metric != WmarkMetric.FREE_MEM_RATE:
        return 0
    metric = int(ctx.machine.free_mem_rate())
    if metric > w.high or w.low > metric:
        if st.wmarks_active:
            log.info("scheme_deactivated", action=st.params.action.value, metric=metric,
                     why="high" if metric > w.high else "low")
        st.wmarks_active = False
        return w.interval
    if w.high >= metric >= w.mid and not st.wmarks_active:
        return w.interval
    if not st.wmarks_active:
        log.info("scheme_activated", action=st.params.action.value, metric=metric)
    st.wmarks_active = True
    return 0


def wmarks_wait_us(ctx) -> int:
    """kdamond_wait_activation()'s wait: 0 when any scheme is active (or none exists)."""
    waits = [wmark_wait_us(ctx, st) for st in ctx.schemes]
    return min(waits) if waits else 0


def schemes_active(ctx) -> bool:
    """False when watermarks deactivated every scheme: the loop only polls (and pending
    walks are cancelled, as kdamond_wait_activation does)."""
    if wmarks_wait_us(ctx) == 0:
        return True
    cancel_walks(ctx)
    return False


# --- the tried-regions walk ---------------------------------------------------------

def request_walk(ctx, total_only: bool) -> Walk:
    """damos_walk(): the walk is filled during each scheme's next apply pass. A second
    request while one is pending is refused with EBUSY."""
    from damond.errors import DamonError
    import errno

    wc = _control(ctx)
    n = len(ctx.schemes)
    w = Walk(total_only=total_only, result=[[] for _ in range(n)], total_bytes=[0] * n)
    with wc.lock:
        if wc.walk is not None:
            raise DamonError(errno.EBUSY, "another tried-regions walk is pending")
        if n == 0:
            w.cancelled = True
            w.done.set()
            return w
        wc.walk = w
    return w


def cancel_walks(ctx) -> None:
    """damos_walk_cancel(): the kdamond exits, has no scheme, or all are deactivated."""
    wc = _control(ctx)
    if wc.walk is None:                # nothing pending (the common case, read without the lock)
        return
    with wc.lock:
        w, wc.walk = wc.walk, None
    if w is not None:
        w.cancelled = True
        w.done.set()


def _walk_begin(ctx) -> Walk | None:
    wc = _control(ctx)
    with wc.lock:
        w = wc.walk
        if w is not None and not w.active:
            w.active = True
            for st in ctx.schemes:
                st.walk_completed = False
    return w if w is not None and w.active else None


def _walk_complete(ctx, st: SchemeState) -> None:
    wc = _control(ctx)
    with wc.lock:
        w = wc.walk
        if w is None or not w.active:
            return
        st.walk_completed = True
        if all(s.walk_completed for s in ctx.schemes):
            wc.walk = None
            w.done.set()


# --- applying -----------------------------------------------------------------------

def _valid_target(ctx, regions, i: int, st: SchemeState) -> bool:
    """damos_valid_target(): the access pattern, then the quota's min_score."""
    p = st.params.pattern
    sz = int(regions.end[i]) - int(regions.start[i])
    nr = int(regions.nr_accesses_bp[i]) // 10000
    age = int(regions.age[i])
    if not (p.min_sz_region <= sz <= p.max_sz_region and p.min_nr_accesses <= nr <= p.max_nr_accesses
            and p.min_age_region <= age <= p.max_age_region):
        return False
    if not st.quota.esz:
        return True
    a = ctx.attrs
    score = ops_common.scheme_score(ctx.ops_id, st.params, int(regions.nr_accesses[i]), age,
                                    a.sample_interval, a.aggr_interval)
    return score >= st.quota.min_score


def _skip_charged_region(ctx, tpos: int, regions, i: int, st: SchemeState) -> tuple[bool, int]:
    """damos_skip_charged_region(): continue where the last charge window stopped.
    Returns (skip, index of the region to work on)."""
    q = st.quota
    if q.charge_target_from is None:
        return False, i
    if tpos != q.charge_target_from:
        return True, i
    if i == len(regions) - 1:
        q.charge_target_from, q.charge_addr_from = None, 0
        return True, i
    start, end = int(regions.start[i]), int(regions.end[i])
    if q.charge_addr_from and end <= q.charge_addr_from:
        return True, i
    if q.charge_addr_from and start < q.charge_addr_from:
        mrs = ctx.min_region_sz
        skip = (q.charge_addr_from - start) // mrs * mrs
        if not skip:
            if end - start <= mrs:
                return True, i
            skip = mrs
        regions.split_at(i, start + skip)
        i += 1
    q.charge_target_from, q.charge_addr_from = None, 0
    return False, i


def _update_stat(st: SchemeState, sz_tried: int, sz_applied: int, sz_passed: int) -> None:
    s = st.stat
    s.nr_tried += 1
    s.sz_tried += sz_tried
    if sz_applied:
        s.nr_applied += 1
    s.sz_applied += sz_applied
    s.sz_ops_filter_passed += sz_passed


def _apply_scheme(ctx, tpos: int, target, i: int, st: SchemeState, walk: Walk | None,
                  sidx: int, quota_splits: list) -> None:
    """damos_apply_scheme()."""
    regions, q = target.regions, st.quota
    start = int(regions.start[i])
    sz = int(regions.end[i]) - start
    if q.esz and q.charged_sz + sz > q.esz:
        sz = (q.esz - q.charged_sz) // ctx.min_region_sz * ctx.min_region_sz
        if not sz:
            _update_stat(st, 0, 0, 0)
            return
        regions.split_at(i, start + sz)
        quota_splits.append((tpos, start + sz))
    out, allowed = dfilter.core_filter_out(st.params, st.core_default_reject, tpos, regions, i,
                                           ctx.min_region_sz)
    if out:
        return
    st.core_filters_allowed = allowed
    start, end = int(regions.start[i]), int(regions.end[i])
    fns = trace.listeners(ctx)
    if fns:
        trace.before_apply(ctx, fns, sidx, tpos, regions, i)
    applied, passed = actions.apply_action(ctx, target, start, end, st)
    if walk is not None and not st.walk_completed:
        walk.total_bytes[sidx] += end - start
        walk.result[sidx].append(TriedRegion(start=start, end=end,
                                             nr_accesses=int(regions.nr_accesses_bp[i]) // 10000,
                                             age=int(regions.age[i]), sz_filter_passed=passed))
    qp = st.params.quota
    q.total_charged_ns += quota.charge_action(ctx, st.params.action, sz, applied)
    if qp.fail_charge_denom:
        q.charged_sz += applied + max(sz - applied, 0) * qp.fail_charge_num // qp.fail_charge_denom
    else:
        q.charged_sz += sz
    if q.esz and q.charged_sz >= q.esz:
        q.charge_target_from, q.charge_addr_from = tpos, end + 1
    if st.params.action != Action.STAT:
        regions.age[i] = 0
    _update_stat(st, sz, applied, passed)


def _merge_quota_splits(ctx, quota_splits: list) -> None:
    """Merge back neighbours split only to fit a quota, when nothing tells them apart."""
    if not quota_splits:
        return
    limit = ctx.sz_limit()
    for tpos, addr in sorted(set(quota_splits), reverse=True):
        r = ctx.targets[tpos].regions
        j = int(np.searchsorted(r.start, np.uint64(addr)))
        if not (0 < j < len(r)) or int(r.start[j]) != addr or int(r.end[j - 1]) != addr:
            continue
        if (r.nr_accesses[j] != r.nr_accesses[j - 1] or r.nr_accesses_bp[j] != r.nr_accesses_bp[j - 1]
                or r.last_nr_accesses[j] != r.last_nr_accesses[j - 1] or r.age[j] != r.age[j - 1]):
            continue
        if int(r.end[j]) - int(r.start[j - 1]) > limit:
            continue
        r.end[j - 1] = r.end[j]
        r.remove(j)


def apply_schemes(ctx) -> None:
    """kdamond_apply_schemes(): apply every due, active scheme to every region of every
    valid target, in address order; then complete walks and schedule the next intervals."""
    passed_sis = ctx.passed_sample_intervals
    if not any(passed_sis >= st.next_apply_sis for st in ctx.schemes):
        return
    walk = _walk_begin(ctx)
    due = []
    for st in ctx.schemes:
        if passed_sis < st.next_apply_sis or not st.wmarks_active:
            continue
        mx = st.params.max_nr_snapshots
        if mx and st.stat.nr_snapshots >= mx:
            continue
        due.append(st)
    if due:
        if ctx.spe is not None:
            ctx.spe.prune()
        for st in due:
            quota.adjust_quota(ctx, st.params, st.quota, st.stat)
        sidx = {id(st): k for k, st in enumerate(ctx.schemes)}
        quota_splits: list = []
        for tpos, t in enumerate(ctx.targets):
            if not getattr(t, "valid", True):
                continue
            regions = t.regions
            i = 0
            while i < len(regions):
                nxt = int(regions.start[i + 1]) if i + 1 < len(regions) else None
                for st in due:
                    q = st.quota
                    if q.esz and q.charged_sz >= q.esz:
                        continue
                    skip, i = _skip_charged_region(ctx, tpos, regions, i, st)
                    if skip or not _valid_target(ctx, regions, i, st):
                        continue
                    _apply_scheme(ctx, tpos, t, i, st, walk, sidx[id(st)], quota_splits)
                if nxt is None:
                    break
                i = int(np.searchsorted(regions.start, np.uint64(nxt)))
        _merge_quota_splits(ctx, quota_splits)
        for st in due:
            st.stat.nr_snapshots += 1
    for st in ctx.schemes:
        if passed_sis < st.next_apply_sis:
            continue
        _walk_complete(ctx, st)
        st.next_apply_sis = passed_sis + _interval_sis(ctx, st)
        st.last_applied = None
