"""The `vaddr_perf` operations set: virtual address spaces whose access check is sampled
memory operations of a perf event (the emulated arm_spe PMU) instead of the Access Flag.
Behind feature level "next", which is not a kernel release (fs_layout/__init__.py).

Models the planned perf-event access check (timing-and-designs-facts.md 2.5: Akinobu
Mita's "mm/damon: introduce perf event based access check", Ravi Jonnalagadda's PMU
sample source, SJ's `damon_report_access()`): each sample becomes an access report keyed
by its data virtual address (addr 0 and kernel addresses dropped, as the vaddr handler
does); at the end of every sampling interval a region with at least one report in the
interval counts as accessed, so `nr_accesses` keeps its meaning (0..aggr samples) and the
rest of the engine is unchanged. Region construction is vaddr's (three regions, updates).
Nothing is mkold'ed: page-table AF and PG_young are left to the rest of the kernel.

The sysfs surface is one `operations` word, the smallest honest one: the PMU is fixed
(arm_spe_0, loads and stores, pa_enable=0), the sampling period is `[damon]
perf_sample_period` (default 1024 ops, perf's -c), the sampler's draws are seeded from the
kdamond's generator. Sampling starts with the first access check (so `on` and a `commit`
that switches to this set behave alike) and stops in `cleanup` (kdamond exit, or a commit
switching away).
"""
from __future__ import annotations

import numpy as np

from damond.damon import core
from damond.damon.params import OpsId
from damond.damon.vaddr import VaddrOps
from damond.spe.sampler import Sampler, SpeConfig

TASK_SIZE = 1 << 48          # arm64 48-bit VA: user addresses are below it


def report_accesses(regions, vaddrs: np.ndarray) -> np.ndarray:
    """Per region, whether any reported address falls inside it (damon_report_access
    aggregated for one sampling interval)."""
    acc = np.zeros(len(regions), dtype=bool)
    if not len(regions) or not len(vaddrs):
        return acc
    va = vaddrs[(vaddrs != 0) & (vaddrs < np.uint64(TASK_SIZE))]
    idx = np.searchsorted(regions.start, va, side="right") - 1
    ok = idx >= 0
    ok[ok] &= va[ok] < regions.end[idx[ok]]
    acc[idx[ok]] = True
    return acc


class VaddrPerfOps(VaddrOps):
    """vaddr regions, perf-event samples as the access source."""

    id = OpsId.VADDR_PERF

    def __init__(self):
        self.sampler: Sampler | None = None

    def _start(self, ctx) -> Sampler:
        if self.sampler is None:
            period = core.engine_settings(ctx.system)["perf_sample_period"]
            seed = int(ctx.rng.integers(1 << 62))
            cfg = SpeConfig(period=period, pa_enable=0, pid=-1, seed=seed)
            self.sampler = Sampler(cfg, ctx.machine.spec.nr_cpus, np.random.default_rng(seed))
            self.sampler.start(ctx.machine)
        return self.sampler

    def prepare_access_checks(self, ctx) -> None:
        """No Access Flag to clear: the PMU samples on its own; make sure it runs."""
        self._start(ctx)

    def check_accesses(self, ctx) -> None:
        """Drain the interval's samples; a region is accessed if any sample hit it."""
        recs = self._start(ctx).drain()
        for t in ctx.targets:
            r = t.regions
            if not len(r):
                continue
            acc = report_accesses(r, recs["va"][recs["pid"] == t.pid])
            core.update_access_rate(r, acc, ctx.attrs)

    def cleanup(self, ctx) -> None:
        """damon_operations->cleanup(): stop sampling."""
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler = None


core.register_ops(VaddrPerfOps)
