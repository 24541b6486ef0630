"""Design (b), "v2-addr-filter": the PATCH v2 direction. The kernel only splits (`split`,
no hot_threshold, no PFN tree); a userspace control plane decides which 2 MiB ranges, from
SPE samples, and hands them to DAMOS as `addr` filters, each round bounded by
`max_nr_snapshots` (feature level 7.0).

Owns the control plane's SPE session (an emulated arm_spe PMU on the target pid, as
`perf record -e arm_spe_0/pa_enable=1/ -p PID` would run beside the workload) and the
calls into `damond/spe/ctlplane.py`, the same code `damond spe-ctl` runs on a mount.
`control()` is one round: drain the period's samples, histogram, sparse THPs, pagemap,
filters, commit. Control CPU covers the histogram, the pagemap walk and the writes; not
the `perf script` text round trip (the runner times `control()` only).
"""
from __future__ import annotations

import numpy as np

from damond.reproduce.designs.base import Design
from damond.reproduce.session import Session
from damond.spe import ctlplane
from damond.spe.sampler import Sampler, SpeConfig


class V2AddrFilter(Design):
    name = "v2-addr-filter"
    feature_level = "7.0+rfc"
    uses_spe = False                 # the design records its own samples (no spe_feed)
    control_period_us = 1_000_000

    def __init__(self, **params):
        super().__init__(**params)
        self.sampler: Sampler | None = None
        self.hist = (np.zeros(0, np.uint64), np.zeros(0, np.uint64))
        self.rounds: list[ctlplane.Round] = []

    def _params(self, pid: int) -> ctlplane.Params:
        p = self.params
        return ctlplane.Params(pid=pid, threshold=p.get("threshold", 30), target_order=p.get("target_order", 2),
                               max_filters=p.get("max_filters", 256), snapshots=p.get("snapshots", 1))

    def setup(self, s: Session, pid: int) -> None:
        seed = s.config.seed + 11
        cfg = SpeConfig.parse(f"period={self.params.get('period', 1024)} pa_enable=1 ts_enable=1 "
                              f"pid={pid} seed={seed}")
        self.sampler = Sampler(cfg, s.machine.spec.nr_cpus,
                               np.random.default_rng(seed))
        self.sampler.start(s.machine)
        ctlplane.setup(ctlplane.SessionFiles(s), self._params(pid))

    def control(self, s: Session, pid: int) -> None:
        assert self.sampler is not None, "setup() first"
        recs = self.sampler.drain()
        self.hist = ctlplane.records_histogram(recs["pa"])
        self.rounds.append(ctlplane.control_round(ctlplane.SessionFiles(s), self._params(pid), self.hist))

    def reported_hot_bytes(self, s: Session, pid: int) -> int:
        """The last period's histogram: subpages at >= 1/10 of their THP's peak count."""
        return ctlplane.hot_bytes(*self.hist)


DESIGN = V2AddrFilter
