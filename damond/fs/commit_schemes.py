"""Staged schemes -> `params.Scheme`, and engine results -> scheme files, as
`damon_sysfs_mk_scheme()` and the `damon_sysfs_schemes_update_*()` functions in
`mm/damon/sysfs-schemes.c`.

Owns name mapping, the multi-field checks made at `on`/`commit` (addr filter range,
hugepage_size range, memcg paths), the RFC's `target_order`/`hot_threshold` rewrites
(rfc-damon-spe.md 1.1, 1.2) which are written back to the files, and the index-matched
copy-back of stats, effective quotas, tried regions and goal values. Parses no text.
"""
from __future__ import annotations

import errno

from damond.damon import params
from damond.damon.params import Action, FilterType, GoalMetric
from damond.errors import ErrnoError
from damond.fs.tree import DirNode, Tree

HPAGE_PMD_ORDER = 9
DEFAULT_HOT_THRESHOLD = 30
DEFAULT_SPLIT_ORDER = 2


class SchemeError(ErrnoError):
    """A staged scheme the sysfs layer refuses (EINVAL)."""


def _path(b: bytes) -> str:
    """A stored path as the kernel compares it (sysfs_streq: one trailing newline ignored)."""
    if b.endswith(b"\n"):
        b = b[:-1]
    return b.decode("utf-8", "surrogateescape")


def _memcg_ok(machine, path: str) -> bool:
    return machine is None or machine.memcg_exists(path)


def mk_filter(f: DirNode, machine) -> params.Filter:
    ftype = f.get("type")
    flt = params.Filter(type=ftype, matching=f.get("matching"), allow=f.get("allow"),
                        memcg_path=_path(f.get("memcg_path")),
                        addr_start=f.get("addr_start"), addr_end=f.get("addr_end"),
                        target_idx=f.get("damon_target_idx"), sz_min=f.get("min"), sz_max=f.get("max"))
    if ftype == FilterType.ADDR and flt.addr_end < flt.addr_start:
        raise SchemeError(errno.EINVAL, "addr filter end < start")
    if ftype == FilterType.HUGEPAGE_SIZE and flt.sz_max < flt.sz_min:
        raise SchemeError(errno.EINVAL, "hugepage_size filter max < min")
    if ftype == FilterType.MEMCG and not _memcg_ok(machine, flt.memcg_path):
        raise SchemeError(errno.EINVAL, f"memcg {flt.memcg_path!r} does not exist")
    return flt


def mk_goals(s: DirNode, machine) -> list[params.QuotaGoal]:
    goals = []
    for g in s.node("quotas/goals").items:
        goal = params.QuotaGoal(metric=g.get("target_metric"), target_value=g.get("target_value"),
                                current_value=g.get("current_value"), nid=g.get("nid"),
                                path=_path(g.get("path")) if g.has("path") else "")
        if goal.metric in (GoalMetric.NODE_MEMCG_USED_BP, GoalMetric.NODE_MEMCG_FREE_BP) \
                and not _memcg_ok(machine, goal.path):
            raise SchemeError(errno.EINVAL, f"goal memcg {goal.path!r} does not exist")
        goals.append(goal)
    return goals


def rfc_rewrite(s: DirNode, log=None) -> tuple[int, int]:
    """The RFC's build-time rules; corrected values are written back to the files.

    collapse: target_order not 0/9 -> 0. split/mthp_split: target_order 0 or >= 9 -> 2,
    hot_threshold 0 -> 30. Returns (target_order, hot_threshold) for the scheme.
    """
    if not s.has("target_order"):
        return 0, 0
    action = s.get("action")
    to, th = s.node("target_order"), s.node("hot_threshold")
    if action == Action.COLLAPSE and to.value not in (0, HPAGE_PMD_ORDER):
        if log:
            log.warning("target_order_reset", action=action.value, target_order=to.value, new=0)
        to.value = 0
    elif action.is_split:
        if to.value == 0 or to.value >= HPAGE_PMD_ORDER:
            if log:
                log.warning("target_order_reset", action=action.value, target_order=to.value,
                            new=DEFAULT_SPLIT_ORDER)
            to.value = DEFAULT_SPLIT_ORDER
        if th.value == 0:
            th.value = DEFAULT_HOT_THRESHOLD
        return to.value, th.value
    return to.value, 0


def mk_scheme(s: DirNode, machine, log=None) -> params.Scheme:
    """Staged scheme directory -> engine scheme; the only place names are mapped."""
    p = s.node("access_pattern")
    q = s.node("quotas")
    w = s.node("watermarks")
    target_order, hot_threshold = rfc_rewrite(s, log)
    core, ops = [], []
    # committed order: core_filters, ops_filters, then the old filters/ dir
    for dname in ("core_filters", "ops_filters", "filters"):
        for f in s.node(dname).items:
            flt = mk_filter(f, machine)
            (core if flt.type.is_core else ops).append(flt)
    u32 = params.UINT_MAX
    return params.Scheme(
        pattern=params.AccessPattern(
            min_sz_region=p.get("sz/min"), max_sz_region=p.get("sz/max"),
            min_nr_accesses=p.get("nr_accesses/min") & u32, max_nr_accesses=p.get("nr_accesses/max") & u32,
            min_age_region=p.get("age/min") & u32, max_age_region=p.get("age/max") & u32),
        action=s.get("action"),
        apply_interval_us=s.get("apply_interval_us"),
        quota=params.Quota(
            ms=q.get("ms"), sz=q.get("bytes"), reset_interval=q.get("reset_interval_ms"),
            weight_sz=q.get("weights/sz_permil"), weight_nr_accesses=q.get("weights/nr_accesses_permil"),
            weight_age=q.get("weights/age_permil"), goals=mk_goals(s, machine),
            **({"goal_tuner": q.get("goal_tuner")} if q.has("goal_tuner") else {})),
        wmarks=params.Watermarks(metric=w.get("metric"), interval=w.get("interval_us"),
                                 high=w.get("high"), mid=w.get("mid"), low=w.get("low")),
        target_nid=s.get("target_nid"),
        core_filters=core,
        ops_filters=ops,
        dests=[params.Dest(id=d.get("id"), weight=d.get("weight")) for d in s.node("dests").items],
        target_order=target_order,
        hot_threshold=hot_threshold,
        max_nr_snapshots=s.get("stats/max_nr_snapshots") if s.node("stats").has("max_nr_snapshots") else 0,
    )


def mk_schemes(c: DirNode, machine, log=None) -> list[params.Scheme]:
    return [mk_scheme(s, machine, log) for s in c.node("schemes").items]


def mk_all_goals(c: DirNode, machine) -> list[list[params.QuotaGoal]]:
    """commit_schemes_quota_goals: only the goal files of every scheme."""
    return [mk_goals(s, machine) for s in c.node("schemes").items]


# ---- engine results -> files (index-matched; missing dirs are skipped)

def update_stats(c: DirNode, stats: list[params.SchemeStats]) -> None:
    for s, st in zip(c.node("schemes").items, stats):
        d = s.node("stats")
        for name in ("nr_tried", "sz_tried", "nr_applied", "sz_applied", "sz_ops_filter_passed",
                     "qt_exceeds", "nr_snapshots"):
            if d.has(name):
                d.children[name].value = getattr(st, name)


def update_effective_quotas(c: DirNode, esz: list[int]) -> None:
    for s, v in zip(c.node("schemes").items, esz):
        s.node("quotas/effective_bytes").value = v


def update_goal_values(c: DirNode, values: list[list[int]]) -> None:
    for s, vals in zip(c.node("schemes").items, values):
        for g, v in zip(s.node("quotas/goals").items, vals):
            g.node("current_value").value = v


def update_tuned_intervals(c: DirNode, sample_us: int, aggr_us: int) -> None:
    iv = c.node("monitoring_attrs/intervals")
    iv.node("sample_us").value, iv.node("aggr_us").value = sample_us, aggr_us


def clear_tried_regions(tree: Tree, c: DirNode) -> None:
    for s in c.node("schemes").items:
        tr = s.node("tried_regions")
        tree.set_nr(tr, 0)
        tr.node("total_bytes").value = 0


def update_tried_regions(tree: Tree, c: DirNode, result: list[list[params.TriedRegion]],
                         total_only: bool) -> None:
    for s, regions in zip(c.node("schemes").items, result):
        tr = s.node("tried_regions")
        tr.node("total_bytes").value = sum(r.end - r.start for r in regions)
        if total_only:
            continue
        tree.set_nr(tr, len(regions))
        for d, r in zip(tr.items, regions):
            for name in ("start", "end", "nr_accesses", "age", "sz_filter_passed"):
                d.children[name].value = getattr(r, name)
