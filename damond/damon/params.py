"""What users set: the engine's parameter objects, as `include/linux/damon.h` declares them.

The FUSE front builds these from staged files on `on`/`commit` (damond/fs/commit*.py);
the engine validates and runs them. Nothing here parses text or touches the machine.
Keyword enums carry the kernel's sysfs words as values, in the kernel's enum order,
so one table serves parsing, printing and `avail_*` files.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

ULONG_MAX = (1 << 64) - 1
UINT_MAX = (1 << 32) - 1
NUMA_NO_NODE = -1


class OpsId(str, enum.Enum):
    VADDR = "vaddr"
    FVADDR = "fvaddr"
    PADDR = "paddr"
    VADDR_PERF = "vaddr_perf"   # damond's "next" level: perf-event (SPE) samples as the access source


class Action(str, enum.Enum):
    """DAMOS actions in mm.git 2026 enum order, plus the RFC's split actions after collapse."""
    WILLNEED = "willneed"
    COLD = "cold"
    PAGEOUT = "pageout"
    HUGEPAGE = "hugepage"
    NOHUGEPAGE = "nohugepage"
    COLLAPSE = "collapse"
    MTHP_SPLIT = "mthp_split"   # RFC v3 0/6 name
    SPLIT = "split"             # PATCH v2 name
    LRU_PRIO = "lru_prio"
    LRU_DEPRIO = "lru_deprio"
    MIGRATE_HOT = "migrate_hot"
    MIGRATE_COLD = "migrate_cold"
    STAT = "stat"

    @property
    def is_split(self) -> bool:
        return self in (Action.SPLIT, Action.MTHP_SPLIT)


class FilterType(str, enum.Enum):
    ANON = "anon"
    ACTIVE = "active"
    MEMCG = "memcg"
    YOUNG = "young"
    HUGEPAGE_SIZE = "hugepage_size"
    UNMAPPED = "unmapped"
    ADDR = "addr"
    TARGET = "target"

    @property
    def is_core(self) -> bool:
        return self in (FilterType.ADDR, FilterType.TARGET)


class WmarkMetric(str, enum.Enum):
    NONE = "none"
    FREE_MEM_RATE = "free_mem_rate"


class GoalMetric(str, enum.Enum):
    USER_INPUT = "user_input"
    SOME_MEM_PSI_US = "some_mem_psi_us"
    NODE_MEM_USED_BP = "node_mem_used_bp"
    NODE_MEM_FREE_BP = "node_mem_free_bp"
    NODE_MEMCG_USED_BP = "node_memcg_used_bp"
    NODE_MEMCG_FREE_BP = "node_memcg_free_bp"
    ACTIVE_MEM_BP = "active_mem_bp"
    INACTIVE_MEM_BP = "inactive_mem_bp"
    NODE_ELIGIBLE_MEM_BP = "node_eligible_mem_bp"


class GoalTuner(str, enum.Enum):
    CONSIST = "consist"
    TEMPORAL = "temporal"


@dataclass
class IntervalsGoal:
    access_bp: int = 0
    aggrs: int = 0
    min_sample_us: int = 0
    max_sample_us: int = 0


@dataclass
class Attrs:
    """struct damon_attrs."""
    sample_interval: int = 5000          # us
    aggr_interval: int = 100000          # us
    ops_update_interval: int = 60000000  # us (sysfs update_us)
    intervals_goal: IntervalsGoal = field(default_factory=IntervalsGoal)
    min_nr_regions: int = 10
    max_nr_regions: int = 1000


@dataclass
class AddrRange:
    start: int
    end: int


@dataclass
class Target:
    """struct damon_target as staged: pid for vaddr/fvaddr (None for paddr), initial regions."""
    pid: int | None = None
    regions: list[AddrRange] = field(default_factory=list)
    obsolete: bool = False


@dataclass
class AccessPattern:
    """struct damos_access_pattern. nr_accesses in samples per aggregation, age in aggregations."""
    min_sz_region: int = 0
    max_sz_region: int = 0
    min_nr_accesses: int = 0
    max_nr_accesses: int = 0
    min_age_region: int = 0
    max_age_region: int = 0


@dataclass
class QuotaGoal:
    metric: GoalMetric = GoalMetric.USER_INPUT
    target_value: int = 0
    current_value: int = 0
    nid: int = 0
    path: str = ""


@dataclass
class Quota:
    """struct damos_quota (user-set part)."""
    ms: int = 0
    sz: int = 0
    reset_interval: int = 0  # ms
    weight_sz: int = 0
    weight_nr_accesses: int = 0
    weight_age: int = 0
    goals: list[QuotaGoal] = field(default_factory=list)
    goal_tuner: GoalTuner = GoalTuner.CONSIST
    fail_charge_num: int = 0
    fail_charge_denom: int = 0


@dataclass
class Watermarks:
    metric: WmarkMetric = WmarkMetric.NONE
    interval: int = 0  # us
    high: int = 0
    mid: int = 0
    low: int = 0


@dataclass
class Filter:
    """struct damos_filter. addr_* for `addr`, target_idx for `target`, sz_* for `hugepage_size`."""
    type: FilterType = FilterType.ANON
    matching: bool = False
    allow: bool = False
    memcg_path: str = ""
    addr_start: int = 0
    addr_end: int = 0
    target_idx: int = 0
    sz_min: int = 0
    sz_max: int = 0


@dataclass
class Dest:
    id: int = 0
    weight: int = 0


@dataclass
class Scheme:
    """struct damos (user-set part), with the RFC's target_order and hot_threshold."""
    pattern: AccessPattern = field(default_factory=AccessPattern)
    action: Action = Action.STAT
    apply_interval_us: int = 0
    quota: Quota = field(default_factory=Quota)
    wmarks: Watermarks = field(default_factory=Watermarks)
    target_nid: int = NUMA_NO_NODE
    core_filters: list[Filter] = field(default_factory=list)
    ops_filters: list[Filter] = field(default_factory=list)
    dests: list[Dest] = field(default_factory=list)
    target_order: int = 0
    hot_threshold: int = 0
    max_nr_snapshots: int = 0


@dataclass
class Ctx:
    """struct damon_ctx as committed by sysfs: one context per kdamond."""
    ops: OpsId = OpsId.VADDR
    addr_unit: int = 1
    attrs: Attrs = field(default_factory=Attrs)
    targets: list[Target] = field(default_factory=list)
    schemes: list[Scheme] = field(default_factory=list)
    pause: bool = False


# Results the engine hands back to the front on update_* commands.

@dataclass
class SchemeStats:
    """struct damos_stat."""
    nr_tried: int = 0
    sz_tried: int = 0
    nr_applied: int = 0
    sz_applied: int = 0
    sz_ops_filter_passed: int = 0
    qt_exceeds: int = 0
    nr_snapshots: int = 0


@dataclass
class TriedRegion:
    start: int
    end: int
    nr_accesses: int
    age: int
    sz_filter_passed: int = 0
