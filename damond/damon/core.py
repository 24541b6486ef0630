"""The DAMON monitoring core: runtime context, validation, adaptive regions, commit.

Mirrors the monitoring half of `mm/damon/core.c`: `damon_set_regions`, the merge and
split of adaptive regions (`kdamond_merge_regions`, `kdamond_split_regions`), the
`nr_accesses` / `nr_accesses_bp` / age bookkeeping, `damon_set_attrs` with its rescaling
of results, intervals auto-tuning, and `damon_commit_ctx`. It owns the runtime `Ctx`
the kdamond loop (`kdamond.py`) and DAMOS (`damos.py`) share. It does not own the loop,
the operations sets (`vaddr.py`, `paddr.py`) or anything of DAMOS. Every function works
on `Regions` arrays; the sequential merge/split walks run over plain lists once per
aggregation, never per sample.
"""
from __future__ import annotations

import copy
import errno
from dataclasses import dataclass, field

import numpy as np

from damond.damon import params, trace
from damond.damon.regions import (Regions, check_ranges, evenly_split_region, merge_regions_of,  # noqa: F401
                                   merge_two_regions, set_regions, split_region_at, split_regions_of,
                                   update_access_rate)
from damond.damon.regions import max_nr_accesses as _max_nr_of
from damond.errors import DamonError
from damond.log import get_logger

PAGE_SIZE = 4096
UINT_MAX = params.UINT_MAX
ULONG_MAX = params.ULONG_MAX

log = get_logger("damond.damon.core")


# ---------------------------------------------------------------------------
# kernel integer helpers

def mult_frac(x: int, numer: int, denom: int) -> int:
    """The kernel's mult_frac(): x * numer / denom without intermediate overflow."""
    q, r = divmod(x, denom)
    return q * numer + (r * numer) // denom


def align_down(x: int, a: int) -> int:
    return x - x % a


def align_up(x: int, a: int) -> int:
    return -(-x // a) * a


def nr_samples_per_aggr(attrs: params.Attrs) -> int:
    """damon_max_nr_accesses() / damon_nr_samples_per_aggr(): aggr / sample, in [1, UINT_MAX]."""
    return max(min(attrs.aggr_interval // max(attrs.sample_interval, 1), UINT_MAX), 1)


def moving_sum(mvsum: int, nomvsum: int, len_window: int, new_value: int) -> int:
    """damon_moving_sum(): the pseudo moving sum behind nr_accesses_bp."""
    return mvsum - nomvsum // len_window + new_value


def feed_loop_next_input(last_input: int, score: int, positive: bool = True) -> int:
    """damon_feed_loop_next_input(): next input so that `score` approaches 10000."""
    goal, min_input = 10000, 10000
    if score == goal:
        return last_input
    if (positive and score >= goal * 2) or (not positive and not score):
        return min_input
    score = min(score, goal * 2)
    compensation = mult_frac(last_input, abs(score - goal), goal)
    if score > goal:
        positive = not positive
    if not positive:
        return max(last_input - compensation, min_input)
    return min(last_input + compensation, ULONG_MAX)


# ---------------------------------------------------------------------------
# runtime context

@dataclass
class TargetState:
    """A running target: its index, pid (None for paddr) and regions."""
    index: int
    pid: int | None
    regions: Regions = field(default_factory=Regions)
    valid: bool = True


class Ctx:
    """Runtime context of one running kdamond (struct damon_ctx, the kernel-internal part).

    Built by `build_ctx` from committed `params.Ctx`; the loop and DAMOS mutate it only
    from the kdamond's own thread (or under the kdamond lock in virtual-time mode).
    """

    def __init__(self, system, p: params.Ctx, index: int = 0):
        self.system = system
        self.machine = system.machine
        self.spe = system.spe
        self.clock = system.clock
        self.index = index
        self.params = copy.deepcopy(p)
        self.attrs = copy.deepcopy(p.attrs)
        self.ops_id = p.ops
        self.ops = select_ops(p.ops)
        self.addr_unit = p.addr_unit
        self.min_region_sz = min_region_sz_for(p.ops, p.addr_unit)
        self.pause = p.pause
        self.targets: list[TargetState] = []
        self.schemes: list = []
        self.passed_sample_intervals = 0
        self.next_aggregation_sis = 0
        self.next_ops_update_sis = 0
        self.next_intervals_tune_sis = 0
        self.nr_aggregations = 0
        self.sz_limit_cached = 0
        self.nr_bp_fixes = 0
        self.last_nr_regions = 0       # kdamond_split_regions' static
        self.split_rotation = 0        # damon_split_some_regions' static
        seed = system.config.seed if getattr(system, "config", None) is not None else 0
        self._rng = np.random.default_rng([seed, 0xDA30, index])
        self.sample_batch = None       # vaddr's pre-drawn sampling addresses (vaddr.SampleBatch)
        sec = engine_settings(system)
        self.split_above_half = sec["split_above_half"]
        self.apply_min_nr_regions_on = sec["apply_min_nr_regions"]

    @property
    def rng(self) -> np.random.Generator:
        """The context's generator (the kernel's damon_rand), in the state sequential
        draws would leave: sampling addresses drawn ahead and not used yet are given back."""
        if self.sample_batch is not None:
            self.sample_batch.settle(self._rng)
            self.sample_batch = None
        return self._rng

    def aggr_samples(self) -> int:
        return nr_samples_per_aggr(self.attrs)

    def sz_limit(self) -> int:
        return region_sz_limit(self)

    def nr_regions(self) -> int:
        return sum(len(t.regions) for t in self.targets)

    def init(self) -> None:
        """kdamond_init_ctx(): schedule the first aggregation, ops update and tuning."""
        a = self.attrs
        sample = max(a.sample_interval, 1)
        self.passed_sample_intervals = 0
        self.next_aggregation_sis = a.aggr_interval // sample
        self.next_ops_update_sis = a.ops_update_interval // sample
        self.next_intervals_tune_sis = self.next_aggregation_sis * a.intervals_goal.aggrs


def engine_settings(system) -> dict:
    """The optional [damon] config section: algorithm variants of newer kernels."""
    defaults = {"split_above_half": False, "apply_min_nr_regions": False, "perf_sample_period": 1024}
    cfg = getattr(system, "config", None)
    if cfg is None:
        return defaults
    sec = cfg.section("damon")
    out = dict(defaults)
    for k, v in sec.items():
        if k not in defaults:
            raise cfg.error(f"damon.{k}", f"unknown key '{k}' in [damon] (known: {', '.join(sorted(defaults))})")
        if isinstance(defaults[k], bool) and not isinstance(v, bool):
            raise cfg.error(f"damon.{k}", f"{k} must be true or false")
        if not isinstance(defaults[k], bool) and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v < 1 << 32):
            raise cfg.error(f"damon.{k}", f"{k} must be an integer in [1, {(1 << 32) - 1}]")
        out[k] = v
    return out


def min_region_sz_for(ops: params.OpsId, addr_unit: int) -> int:
    """DAMON_MIN_REGION_SZ, or max(PAGE_SIZE / addr_unit, 1) for paddr (sysfs.c)."""
    if ops == params.OpsId.PADDR and addr_unit > 0:
        return max(PAGE_SIZE // addr_unit, 1)
    return PAGE_SIZE


# ---------------------------------------------------------------------------
# operations registry (damon_register_ops / damon_select_ops)

_REGISTRY: dict[params.OpsId, type] = {}


def register_ops(cls: type) -> type:
    """Register an operations class by its `id`; a second registration is EINVAL."""
    if cls.id in _REGISTRY and _REGISTRY[cls.id] is not cls:
        raise DamonError(errno.EINVAL, f"operations {cls.id.value} already registered")
    _REGISTRY[cls.id] = cls
    return cls


def registered_ops() -> list[params.OpsId]:
    _load_ops()
    return [o for o in params.OpsId if o in _REGISTRY]


def _load_ops() -> None:
    if len(_REGISTRY) < len(params.OpsId):
        from damond.damon import paddr, perf, vaddr  # noqa: F401  (registers on import)


def select_ops(ops_id: params.OpsId):
    _load_ops()
    cls = _REGISTRY.get(ops_id)
    if cls is None:
        raise DamonError(errno.EINVAL, f"operations {getattr(ops_id, 'value', ops_id)!r} not registered")
    return cls()


# ---------------------------------------------------------------------------
# validation at on/commit (kernel-sysfs.md §3.2)

def _reject(file: str, why: str, **kw) -> DamonError:
    log.warning("commit_rejected", file=file, reason=why, errno="EINVAL", **kw)
    return DamonError(errno.EINVAL, f"{file}: {why}")


def validate_attrs(a: params.Attrs) -> None:
    """damon_set_attrs() checks, plus the intervals goal (damon_valid_intervals_goal)."""
    g = a.intervals_goal
    if g.aggrs:
        if g.min_sample_us > g.max_sample_us:
            raise _reject("monitoring_attrs/intervals/intervals_goal/min_sample_us",
                          f"min_sample_us {g.min_sample_us} > max_sample_us {g.max_sample_us}")
        if not g.min_sample_us <= a.sample_interval <= g.max_sample_us:
            raise _reject("monitoring_attrs/intervals/sample_us",
                          f"sample_us {a.sample_interval} outside intervals_goal "
                          f"[{g.min_sample_us}, {g.max_sample_us}]")
    if a.min_nr_regions < 3:
        raise _reject("monitoring_attrs/nr_regions/min", f"min_nr_regions {a.min_nr_regions} < 3")
    if a.min_nr_regions > a.max_nr_regions:
        raise _reject("monitoring_attrs/nr_regions/min",
                      f"min_nr_regions {a.min_nr_regions} > max_nr_regions {a.max_nr_regions}")
    if a.sample_interval > a.aggr_interval:
        raise _reject("monitoring_attrs/intervals/sample_us",
                      f"sample_us {a.sample_interval} > aggr_us {a.aggr_interval}")


def validate(p: params.Ctx, system) -> None:
    """Every check `on`/`commit` makes before touching a context. Raises DamonError(EINVAL)
    naming the staged file and why, and logs `commit_rejected`."""
    _load_ops()
    if p.ops not in _REGISTRY:
        raise _reject("operations", f"operations {getattr(p.ops, 'value', p.ops)!r} not registered")
    validate_attrs(p.attrs)
    if p.addr_unit <= 0:
        raise _reject("addr_unit", f"addr_unit {p.addr_unit} must be positive")
    mrs = min_region_sz_for(p.ops, p.addr_unit)
    if mrs & (mrs - 1):
        raise _reject("addr_unit", f"minimum region size {mrs} (PAGE_SIZE / addr_unit {p.addr_unit}) "
                      "is not a power of two")
    if p.ops == params.OpsId.PADDR:
        if len(p.targets) > 1:
            raise _reject("targets/nr_targets", f"paddr context with {len(p.targets)} targets (max 1)")
    else:
        for i, t in enumerate(p.targets):
            if t.obsolete:
                continue
            if t.pid is None or system.machine.process(t.pid) is None:
                raise _reject(f"targets/{i}/pid_target", f"no process with pid {t.pid}", target=i)
    for i, t in enumerate(p.targets):
        prev_end = None
        for j, r in enumerate(t.regions):
            if r.start > r.end:
                raise _reject(f"targets/{i}/regions/{j}/start",
                              f"region start {r.start:#x} > end {r.end:#x}", target=i, region=j)
            if prev_end is not None and prev_end > r.start:
                raise _reject(f"targets/{i}/regions/{j}/start",
                              f"region {j} starts at {r.start:#x}, before region {j - 1} ends at {prev_end:#x} "
                              "(regions must be sorted and not overlap)", target=i, region=j)
            prev_end = r.end
        try:
            check_ranges([(r.start, r.end) for r in t.regions], mrs)
        except DamonError as e:
            raise _reject(f"targets/{i}/regions", e.msg, target=i) from None
    from damond.damon.quota import unmodelled_metric
    for i, s in enumerate(p.schemes):
        m = unmodelled_metric(system.machine, s.quota.goals)
        if m is not None:
            raise _reject(f"schemes/{i}/quotas/goals", f"goal metric {m.value} cannot be measured: "
                          "the emulated machine has no model for it", scheme=i)
        if p.ops != params.OpsId.PADDR and any(g.metric == params.GoalMetric.NODE_ELIGIBLE_MEM_BP
                                               for g in s.quota.goals):
            raise _reject(f"schemes/{i}/quotas/goals", "node_eligible_mem_bp needs paddr operations", scheme=i)


# ---------------------------------------------------------------------------
# size limit and min_nr_regions

def region_sz_limit(ctx) -> int:
    """damon_region_sz_limit(): total monitored bytes / min_nr_regions, at least min size."""
    sz = sum(t.regions.total_size() for t in ctx.targets)
    if ctx.attrs.min_nr_regions:
        sz //= ctx.attrs.min_nr_regions
    return max(sz, ctx.min_region_sz)


def apply_min_nr_regions(ctx) -> int:
    """damon_apply_min_nr_regions() (2026): split regions above the size limit; returns it."""
    max_sz = align_up(region_sz_limit(ctx), ctx.min_region_sz)
    for t in ctx.targets:
        r = t.regions
        if not len(r) or int(r.sizes().max()) <= max_sz:
            continue
        cols = r.columns()
        out = {f: [] for f in cols}
        for i in range(len(cols["start"])):
            s, e = cols["start"][i], cols["end"][i]
            while e - s > max_sz:
                for f in cols:
                    out[f].append(cols[f][i])
                out["start"][-1], out["end"][-1] = s, s + max_sz
                out["sampling_addr"][-1] = s if s > cols["sampling_addr"][i] else cols["sampling_addr"][i]
                s += max_sz
            for f in cols:
                out[f].append(cols[f][i])
            out["start"][-1], out["end"][-1] = s, e
        r.assign_columns(out)
    return max_sz


def max_nr_accesses(ctx) -> int:
    """The largest nr_accesses of any region: what the kernel's check_accesses returns
    every sample, worked out here only when an aggregation uses it."""
    return max([_max_nr_of(t.regions) for t in ctx.targets], default=0)


def merge_regions(ctx, threshold: int, sz_limit: int) -> None:
    """kdamond_merge_regions(): merge every target; while above max_nr_regions, repeat with a
    doubled threshold (ages counted in the first pass only)."""
    max_thres = nr_samples_per_aggr(ctx.attrs)
    count_age = True
    while True:
        nr_regions = 0
        for t in ctx.targets:
            merge_regions_of(t.regions, threshold, sz_limit, count_age)
            nr_regions += len(t.regions)
        count_age = False
        if nr_regions <= ctx.attrs.max_nr_regions or max_thres <= threshold:
            break
        threshold = max(1, threshold * 2) if threshold < max_thres // 2 else max_thres


# ---------------------------------------------------------------------------
# split (kdamond_split_regions)

def split_some_regions(ctx, split_step: int) -> None:
    """damon_split_some_regions() (2026): split one in every split_step regions in two,
    starting from a rotating offset."""
    offset = ctx.split_rotation % split_step
    ctx.split_rotation += 1
    idx = 0
    for t in ctx.targets:
        cols = t.regions.columns()
        n = len(cols["start"])
        out = {f: [] for f in cols}
        for i in range(n):
            for f in cols:
                out[f].append(cols[f][i])
            pick = idx % split_step == offset
            idx += 1
            if not pick:
                continue
            s, e = cols["start"][i], cols["end"][i]
            if e - s < 2 * ctx.min_region_sz:
                continue
            sz_sub = align_down(int(ctx.rng.integers(1, 10)) * (e - s) // 10, ctx.min_region_sz)
            if sz_sub == 0 or sz_sub >= e - s:
                continue
            out["end"][-1] = s + sz_sub
            for f in cols:
                out[f].append(cols[f][i])
            out["start"][-1] = out["sampling_addr"][-1] = s + sz_sub
        t.regions.assign_columns(out)


def split_regions(ctx) -> None:
    """kdamond_split_regions(): 2 pieces per region (3 if the count did not change since
    the last split and is below max/3), only while at most max/2 regions exist; with
    `split_above_half` (2026 kernels) split a fraction of regions between max/2 and max."""
    nr_regions = ctx.nr_regions()
    max_nr = ctx.attrs.max_nr_regions
    if ctx.split_above_half:
        if nr_regions >= max_nr:
            ctx.last_nr_regions = nr_regions
            return
        if nr_regions > max_nr // 2:
            split_some_regions(ctx, max_nr // (max_nr - nr_regions))
            ctx.last_nr_regions = nr_regions
            return
    elif nr_regions > max_nr // 2:
        return
    nr_subs = 3 if (ctx.last_nr_regions == nr_regions and nr_regions < max_nr // 3) else 2
    for t in ctx.targets:
        split_regions_of(t.regions, nr_subs, ctx.min_region_sz, ctx.rng)
    ctx.last_nr_regions = nr_regions


def reset_aggregated(ctx) -> None:
    """kdamond_reset_aggregated(): last_nr_accesses = nr_accesses; nr_accesses = 0, after
    fixing an nr_accesses_bp that drifted from nr_accesses * 10000."""
    fns = trace.listeners(ctx)
    if fns:
        trace.aggregated(ctx, fns)
    for t in ctx.targets:
        r = t.regions
        bad = r.nr_accesses_bp != r.nr_accesses * 10000
        if bad.any():
            ctx.nr_bp_fixes += int(bad.sum())
            r.nr_accesses_bp = r.nr_accesses * 10000
        r.last_nr_accesses = r.nr_accesses.copy()
        r.nr_accesses = np.zeros_like(r.nr_accesses)
    ctx.nr_aggregations += 1


# ---------------------------------------------------------------------------
# attrs: damon_set_attrs and result rescaling

def nr_accesses_for_new_attrs(nr: int, old: params.Attrs, new: params.Attrs) -> int:
    """damon_nr_samples_for_new_attrs(): count -> bp under old attrs -> count under new."""
    bp = mult_frac(nr, 10000, nr_samples_per_aggr(old))
    return bp * nr_samples_per_aggr(new) // 10000


def age_for_new_attrs(age: int, old: params.Attrs, new: params.Attrs) -> int:
    return age * old.aggr_interval // new.aggr_interval


def update_monitoring_result(regions: Regions, old: params.Attrs, new: params.Attrs,
                             aggregating: bool) -> None:
    """damon_update_monitoring_result() for every region of a target (on new arrays:
    see Regions)."""
    for f in ("nr_accesses", "nr_accesses_bp", "last_nr_accesses", "age"):
        setattr(regions, f, getattr(regions, f).copy())
    for i in range(len(regions)):
        if not aggregating:
            nr = nr_accesses_for_new_attrs(int(regions.nr_accesses[i]), old, new)
            regions.nr_accesses[i] = nr
            regions.nr_accesses_bp[i] = nr * 10000
        else:
            last = nr_accesses_for_new_attrs(int(regions.last_nr_accesses[i]), old, new)
            regions.last_nr_accesses[i] = last
            regions.nr_accesses_bp[i] = last * 10000
            regions.nr_accesses[i] = 0
        regions.age[i] = age_for_new_attrs(int(regions.age[i]), old, new)


def set_attrs(ctx, new: params.Attrs) -> None:
    """damon_set_attrs(): validate, reschedule aggregation/update/apply points from now,
    and rescale every region's nr_accesses and age to the new intervals."""
    validate_attrs(new)
    new = copy.deepcopy(new)
    old = ctx.attrs
    sample = max(new.sample_interval, 1)
    aggregating = ctx.passed_sample_intervals < ctx.next_aggregation_sis
    ctx.next_aggregation_sis = ctx.passed_sample_intervals + new.aggr_interval // sample
    ctx.next_ops_update_sis = ctx.passed_sample_intervals + new.ops_update_interval // sample
    if old.sample_interval and old.aggr_interval and new.sample_interval and new.aggr_interval:
        for t in ctx.targets:
            update_monitoring_result(t.regions, old, new, aggregating)
    ctx.attrs = new
    for s in ctx.schemes:
        apply_us = s.params.apply_interval_us or new.aggr_interval
        s.next_apply_sis = ctx.passed_sample_intervals + apply_us // sample
    from damond.damon import damos
    damos.rescale_for_intervals(ctx, old, new)


# ---------------------------------------------------------------------------
# intervals auto-tuning (6.15)

def intervals_score(ctx) -> int:
    """damon_get_intervals_score(): observed access events vs. the goal, in bp."""
    goal_bp = ctx.attrs.intervals_goal.access_bp
    k = ctx.aggr_samples()
    max_events = events = 0
    for t in ctx.targets:
        r = t.regions
        if not len(r):
            continue
        sz = r.sizes().astype(object)
        max_events += int(sz.sum()) * k
        events += int((sz * r.nr_accesses.astype(object)).sum())
    target = max_events * goal_bp // 10000 or 1
    return mult_frac(events, 10000, target)


def intervals_adaptation_bp(ctx) -> int:
    adaptation = feed_loop_next_input(100000000, intervals_score(ctx), True) // 10000
    if adaptation <= 10000:
        adaptation = 5000 + adaptation // 2
    return adaptation


def tune_intervals(ctx) -> None:
    """kdamond_tune_intervals(): scale sample_us by the adaptation, clamp to the goal's
    bounds, keep aggr_samples fixed, and apply via set_attrs."""
    adaptation = intervals_adaptation_bp(ctx)
    if adaptation == 10000:
        return
    goal = ctx.attrs.intervals_goal
    k = ctx.aggr_samples()
    new = copy.deepcopy(ctx.attrs)
    new.sample_interval = max(goal.min_sample_us, min(goal.max_sample_us,
                                                      ctx.attrs.sample_interval * adaptation // 10000))
    new.aggr_interval = new.sample_interval * k
    set_attrs(ctx, new)
    fns = trace.listeners(ctx)
    if fns:
        trace.intervals_tune(ctx, fns, new.sample_interval)
    log.debug("intervals_tuned", kdamond=ctx.index, sample_us=new.sample_interval, aggr_us=new.aggr_interval)


# ---------------------------------------------------------------------------
# build and commit (damon_start / damon_commit_ctx)

def _target_ranges(t: params.Target) -> list[tuple[int, int]]:
    """damon_commit_target_regions(): adjacent user regions fused into ranges."""
    ranges: list[list[int]] = []
    for r in t.regions:
        if ranges and ranges[-1][1] == r.start:
            ranges[-1][1] = r.end
        else:
            ranges.append([r.start, r.end])
    return [(a, b) for a, b in ranges]


def _new_target(ctx, i: int, t: params.Target) -> TargetState:
    pid = t.pid if ctx.ops_id != params.OpsId.PADDR else None
    ts = TargetState(index=i, pid=pid, regions=Regions())
    if t.regions:
        # sysfs adds one region per staged region dir (damon_sysfs_set_regions)
        set_regions(ts.regions, [(r.start, r.end) for r in t.regions], ctx.min_region_sz)
    return ts


def build_ctx(system, p: params.Ctx, index: int = 0) -> Ctx:
    """Validate and build a runtime context from committed params (damon_start's trial
    commit). Raises DamonError(EINVAL); nothing is started."""
    from damond.damon import damos
    validate(p, system)
    ctx = Ctx(system, p, index)
    ctx.targets = [_new_target(ctx, i, t) for i, t in enumerate(p.targets) if not t.obsolete]
    for i, ts in enumerate(ctx.targets):
        ts.index = i
    ctx.schemes = [damos.new_scheme_state(ctx, s) for s in p.schemes]
    return ctx


def commit_ctx(ctx: Ctx, p: params.Ctx) -> None:
    """damon_commit_ctx(): apply new params to a running context, called from the kdamond
    between samples. Trial-builds first so a rejected commit leaves ctx untouched."""
    from damond.damon import damos
    scratch = build_ctx(ctx.system, p, ctx.index)          # raises before any change
    dst = ctx.targets
    if p.ops == params.OpsId.PADDR and len(p.targets) > 1:
        raise _reject("targets/nr_targets", "paddr context with more than one target")
    for i, src in enumerate(p.targets):
        if src.obsolete and i >= len(dst):
            raise _reject(f"targets/{i}/obsolete_target", "obsolete target has no running counterpart")
    min_sz = scratch.min_region_sz
    trial = []
    for i, src in enumerate(p.targets):
        if i < len(dst) and not src.obsolete and src.regions:
            r = dst[i].regions.copy()
            set_regions(r, _target_ranges(src), min_sz)
            trial.append((i, r))
    # -- from here on nothing raises for valid input
    damos.commit_schemes(ctx, p.schemes)
    new_targets: list[TargetState] = []
    trial_regions = dict(trial)
    for i, src in enumerate(p.targets):
        if i < len(dst):
            if src.obsolete:
                continue
            ts = dst[i]
            if i in trial_regions:
                ts.regions.assign(trial_regions[i])
            ts.pid = src.pid if p.ops != params.OpsId.PADDR else None
            new_targets.append(ts)
        else:
            ts = TargetState(index=0, pid=src.pid if p.ops != params.OpsId.PADDR else None)
            if src.regions:
                set_regions(ts.regions, _target_ranges(src), min_sz)
            new_targets.append(ts)
    for i, ts in enumerate(new_targets):
        ts.index = i
    ctx.targets = new_targets
    if ctx.attrs != p.attrs:
        set_attrs(ctx, p.attrs)
    ctx.pause = p.pause
    if p.ops != ctx.ops_id:
        old, ctx.ops = ctx.ops, scratch.ops
        ctx.ops_id = p.ops
        if getattr(old, "cleanup", None) is not None:
            old.cleanup(ctx)
    ctx.addr_unit = p.addr_unit
    ctx.min_region_sz = min_sz
    ctx.params = copy.deepcopy(p)
    log.info("ctx_committed", kdamond=ctx.index, ops=p.ops.value, nr_targets=len(ctx.targets),
             nr_schemes=len(p.schemes), sample_us=ctx.attrs.sample_interval, aggr_us=ctx.attrs.aggr_interval)
