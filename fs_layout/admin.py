"""`/sys/kernel/mm/damon/admin`: every directory and file of the DAMON sysfs interface,
declared once, as `mm/damon/sysfs.c` and `mm/damon/sysfs-schemes.c` declare their
attributes and ktypes (kernel-sysfs.md section 1), plus the RFC's per-scheme
`target_order` and `hot_threshold` (rfc-damon-spe.md section 1).

Keyword files take their words from the enums in `damond.damon.params` (one table for
parsing, printing and `avail_*`); `KEYWORD_SINCE` holds the few words that appeared
after 6.18.
"""
from __future__ import annotations

import errno

from damond.damon.params import Action, FilterType, GoalMetric, GoalTuner, OpsId, WmarkMetric
from fs_layout import NEVER, Attr, Dir, Indexed, ul_range

# words that exist only from a later level ("rfc": with the RFC applied, i.e. every level)
KEYWORD_SINCE: dict = {
    Action.COLLAPSE: "rfc",
    Action.MTHP_SPLIT: "rfc",
    Action.SPLIT: "rfc",
    GoalMetric.NODE_MEMCG_USED_BP: "6.19",
    GoalMetric.NODE_MEMCG_FREE_BP: "6.19",
    GoalMetric.ACTIVE_MEM_BP: "7.0",
    GoalMetric.INACTIVE_MEM_BP: "7.0",
    GoalMetric.NODE_ELIGIBLE_MEM_BP: NEVER,
    OpsId.VADDR_PERF: "next",      # not a kernel word: damond's perf-event access check (damond/damon/perf.py)
}

# The kernel's state commands (kernel-sysfs.md 3.1), with the level they appeared at.
STATE_COMMANDS: dict[str, str] = {
    "on": "6.18", "off": "6.18", "commit": "6.18", "commit_schemes_quota_goals": "6.18",
    "update_schemes_stats": "6.18", "update_schemes_tried_regions": "6.18",
    "update_schemes_tried_bytes": "6.18", "clear_schemes_tried_regions": "6.18",
    "update_schemes_effective_quotas": "6.18", "update_tuned_intervals": "6.18",
    "update_schemes_quota_goals": "7.1",
}

HPAGE_PMD_ORDER = 9
CORE_FILTER_TYPES = tuple(t for t in FilterType if t.is_core)
OPS_FILTER_TYPES = tuple(t for t in FilterType if not t.is_core)


def _filter(choices: tuple) -> Dir:
    return Dir("", (
        Attr("type", "keyword", FilterType.ANON, keywords=FilterType, choices=choices),
        Attr("matching", "bool", False),
        Attr("allow", "bool", False),
        Attr("memcg_path", "string", b"", role="locked"),
        Attr("addr_start", "u64"),
        Attr("addr_end", "u64"),
        Attr("min", "u64"),
        Attr("max", "u64"),
        Attr("damon_target_idx", "int"),
    ), role="filter")


def _filters(name: str, choices: tuple) -> Indexed:
    return Indexed(name, "nr_filters", _filter(choices), role=name)


GOAL = Dir("", (
    Attr("target_metric", "keyword", GoalMetric.USER_INPUT, keywords=GoalMetric),
    Attr("target_value", "u64"),
    Attr("current_value", "u64"),
    Attr("nid", "int"),
    Attr("path", "string", b"", role="locked", since="6.19"),
), role="goal")

QUOTAS = Dir("quotas", (
    Attr("ms", "u64", errno=errno.EINVAL),
    Attr("bytes", "u64", errno=errno.EINVAL),
    Attr("reset_interval_ms", "u64", errno=errno.EINVAL),
    Attr("effective_bytes", "u64", mode=0o400),
    Attr("goal_tuner", "keyword", GoalTuner.CONSIST, keywords=GoalTuner, since="7.1"),
    Attr("fail_charge_num", "u32", errno=errno.EINVAL, since=NEVER),
    Attr("fail_charge_denom", "u32", errno=errno.EINVAL, since=NEVER),
    Dir("weights", (
        Attr("sz_permil", "u32"),
        Attr("nr_accesses_permil", "u32"),
        Attr("age_permil", "u32"),
    )),
    Indexed("goals", "nr_goals", GOAL),
))

TRIED_REGION = Dir("", (
    Attr("start", "u64", mode=0o400),
    Attr("end", "u64", mode=0o400),
    Attr("nr_accesses", "u32", mode=0o400),
    Attr("age", "u32", mode=0o400),
    Attr("sz_filter_passed", "u64", mode=0o400),
), role="tried_region")

SCHEME = Dir("", (
    Attr("action", "keyword", Action.STAT, keywords=Action),
    Attr("apply_interval_us", "u64"),
    Attr("target_nid", "int", -1),
    Attr("target_order", "u32", 0, hi=HPAGE_PMD_ORDER, invalid=(1,), since="rfc"),
    Attr("hot_threshold", "u32", 0, hi=100, since="rfc"),
    Dir("access_pattern", (ul_range("sz"), ul_range("nr_accesses"), ul_range("age"))),
    QUOTAS,
    Dir("watermarks", (
        Attr("metric", "keyword", WmarkMetric.NONE, keywords=WmarkMetric),
        Attr("interval_us", "u64"),
        Attr("high", "u64"),
        Attr("mid", "u64"),
        Attr("low", "u64"),
    )),
    _filters("filters", tuple(FilterType)),
    _filters("core_filters", CORE_FILTER_TYPES),
    _filters("ops_filters", OPS_FILTER_TYPES),
    Indexed("dests", "nr_dests", Dir("", (Attr("id", "u32"), Attr("weight", "u32")), role="dest")),
    Dir("stats", (
        Attr("nr_tried", "u64", mode=0o400),
        Attr("sz_tried", "u64", mode=0o400),
        Attr("nr_applied", "u64", mode=0o400),
        Attr("sz_applied", "u64", mode=0o400),
        Attr("sz_ops_filter_passed", "u64", mode=0o400),
        Attr("qt_exceeds", "u64", mode=0o400),
        Attr("nr_snapshots", "u64", mode=0o400, since="7.0"),
        Attr("max_nr_snapshots", "u64", since="7.0"),
    )),
    Indexed("tried_regions", None, TRIED_REGION, extra=(Attr("total_bytes", "u64", mode=0o400),)),
), role="scheme")

TARGET = Dir("", (
    Attr("pid_target", "int", 0, errno=errno.EINVAL),
    Attr("obsolete_target", "bool", False, since="6.19"),
    Indexed("regions", "nr_regions", Dir("", (Attr("start", "u64"), Attr("end", "u64")), role="region")),
), role="target")

CONTEXT = Dir("", (
    Attr("avail_operations", "keyword_list", tuple(OpsId), mode=0o400, keywords=OpsId),
    Attr("operations", "keyword", OpsId.VADDR, keywords=OpsId),
    Attr("addr_unit", "u64", 1, lo=1),
    Attr("pause", "bool", False, since=NEVER),
    Dir("monitoring_attrs", (
        Dir("intervals", (
            Attr("sample_us", "u64", 5000),
            Attr("aggr_us", "u64", 100000),
            Attr("update_us", "u64", 60000000),
            Dir("intervals_goal", (
                Attr("access_bp", "u64"),
                Attr("aggrs", "u64"),
                Attr("min_sample_us", "u64"),
                Attr("max_sample_us", "u64"),
            )),
        )),
        Dir("nr_regions", (Attr("min", "u64", 10), Attr("max", "u64", 1000))),
    )),
    Indexed("targets", "nr_targets", TARGET),
    Indexed("schemes", "nr_schemes", SCHEME),
), role="context")

KDAMOND = Dir("", (
    Attr("state", "keyword", "off", role="state"),
    Attr("pid", "int", -1, mode=0o400, role="pid"),
    Attr("refresh_ms", "u32", 0, role="refresh_ms"),
    Indexed("contexts", "nr_contexts", CONTEXT, max_nr=1),
), role="kdamond")

ADMIN = Dir("admin", (
    Indexed("kdamonds", "nr_kdamonds", KDAMOND, busy_if_running=True),
))
