"""Staged context directory -> `params.Ctx`, as `damon_sysfs_apply_inputs()` and
`damon_sysfs_set_attrs/targets/regions()` in `mm/damon/sysfs.c`.

Owns the sysfs-level checks made when `on`/`commit` builds a context (region order,
target pids, one target for paddr) and raises `CommitError(EINVAL)`; the engine's own
validation (intervals, nr_regions bounds, addr_unit) happens in `Kdamond.start/commit`.
Parses no text: every value was parsed when it was written.
"""
from __future__ import annotations

import errno

from damond.damon import params
from damond.errors import ErrnoError
from damond.fs.commit_schemes import mk_schemes
from damond.fs.tree import DirNode


class CommitError(ErrnoError):
    """A staged tree the kernel refuses to turn into a context (EINVAL)."""


def mk_attrs(c: DirNode) -> params.Attrs:
    iv = c.node("monitoring_attrs/intervals")
    g = iv.node("intervals_goal")
    return params.Attrs(
        sample_interval=iv.get("sample_us"),
        aggr_interval=iv.get("aggr_us"),
        ops_update_interval=iv.get("update_us"),
        intervals_goal=params.IntervalsGoal(
            access_bp=g.get("access_bp"), aggrs=g.get("aggrs"),
            min_sample_us=g.get("min_sample_us"), max_sample_us=g.get("max_sample_us")),
        min_nr_regions=c.get("monitoring_attrs/nr_regions/min"),
        max_nr_regions=c.get("monitoring_attrs/nr_regions/max"),
    )


def mk_regions(t: DirNode) -> list[params.AddrRange]:
    out: list[params.AddrRange] = []
    for i, r in enumerate(t.node("regions").items):
        start, end = r.get("start"), r.get("end")
        if start > end:
            raise CommitError(errno.EINVAL, f"region {i}: start {start} > end {end}")
        if out and out[-1].end > start:
            raise CommitError(errno.EINVAL, f"region {i} overlaps region {i - 1}")
        out.append(params.AddrRange(start, end))
    return out


def mk_target(t: DirNode, ops: params.OpsId, machine) -> params.Target:
    pid = None
    if ops != params.OpsId.PADDR:
        pid = t.get("pid_target")
        resolve = getattr(machine, "resolve_pid", None) or getattr(machine, "process", None)
        proc = resolve(pid) if resolve is not None else None      # a real pid gets its twin here
        if proc is None or not getattr(proc, "alive", True):
            raise CommitError(errno.EINVAL, f"pid_target {pid}: no such process")
    obsolete = t.get("obsolete_target") if t.has("obsolete_target") else False
    return params.Target(pid=pid, regions=mk_regions(t), obsolete=obsolete)


def mk_ctx(c: DirNode, machine, log=None) -> params.Ctx:
    """Build the whole context from a staged `contexts/<C>` directory.

    Raises:
        CommitError: EINVAL for a bad region list, a missing pid, >1 paddr target,
            or a scheme the sysfs layer refuses (commit_schemes.mk_scheme).
    """
    ops = c.get("operations")
    targets = [mk_target(t, ops, machine) for t in c.node("targets").items]
    if ops == params.OpsId.PADDR and len(targets) > 1:
        raise CommitError(errno.EINVAL, "paddr takes one target")
    return params.Ctx(
        ops=ops,
        addr_unit=c.get("addr_unit"),
        attrs=mk_attrs(c),
        targets=targets,
        schemes=mk_schemes(c, machine, log),
        pause=c.get("pause") if c.has("pause") else False,
    )
