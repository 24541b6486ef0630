"""DAMON's tracepoints (include/trace/events/damon.h): damon_aggregated (every region of
every target at each aggregation, before the counters reset), damos_before_apply (each
region a scheme is about to apply to), damon_monitor_intervals_tune (a new sample
interval) and damos_esz (a quota's new effective size at each charge-window rollover).
The engine calls these only when `system.trace_listeners` is non-empty, so a kdamond nobody traces
pays one attribute test per aggregation.

A listener is `fn(TraceEvent)`, called on the kdamond's thread: it must only buffer.
Texts are the events' TP_printk output.
"""
from __future__ import annotations

from dataclasses import dataclass

EVENTS = ("damon_aggregated", "damon_monitor_intervals_tune", "damos_before_apply", "damos_esz")   # 6.18's, in id order


@dataclass(frozen=True)
class TraceEvent:
    name: str           # without the "damon:" system
    t_us: int           # the kdamond's clock
    kdamond: int        # kdamond index (comm kdamond.N)
    pid: int            # the kdamond's (emulated) pid
    text: str


def listeners(ctx) -> list:
    return getattr(getattr(ctx, "system", None), "trace_listeners", None) or []


def _emit(ctx, fns: list, name: str, texts: list[str]) -> None:
    kds = getattr(ctx.system, "kdamonds", [])
    pid = kds[ctx.index].pid if ctx.index < len(kds) else -1
    t = ctx.clock.now_us()
    evs = [TraceEvent(name, t, ctx.index, pid, x) for x in texts]
    for fn in list(fns):
        fn(evs)


def aggregated(ctx, fns: list) -> None:
    """trace_damon_aggregated(ti, r, nr_regions), from kdamond_reset_aggregated()."""
    texts = []
    for ti, t in enumerate(ctx.targets):
        r = t.regions
        n = len(r)
        for s, e, nr, age in zip(r.start.tolist(), r.end.tolist(), r.nr_accesses.tolist(), r.age.tolist()):
            texts.append(f"target_id={ti} nr_regions={n} {s}-{e}: {nr} {age}")
    _emit(ctx, fns, "damon_aggregated", texts)


def before_apply(ctx, fns: list, sidx: int, tidx: int, regions, i: int) -> None:
    """trace_damos_before_apply(cidx, sidx, tidx, r, nr_regions, do_trace)."""
    _emit(ctx, fns, "damos_before_apply",
          [f"ctx_idx=0 scheme_idx={sidx} target_idx={tidx} nr_regions={len(regions)} "
           f"{int(regions.start[i])}-{int(regions.end[i])}: {int(regions.nr_accesses_bp[i]) // 10000} "
           f"{int(regions.age[i])}"])


def intervals_tune(ctx, fns: list, sample_us: int) -> None:
    """trace_damon_monitor_intervals_tune(sample_us)."""
    _emit(ctx, fns, "damon_monitor_intervals_tune", [f"sample_us={sample_us}"])


def esz(ctx, fns: list, sidx: int, esz: int) -> None:
    """trace_damos_esz(cidx, sidx, esz), from damos_adjust_quota() after a new charge window."""
    _emit(ctx, fns, "damos_esz", [f"ctx_idx=0 scheme_idx={sidx} esz={esz}"])
