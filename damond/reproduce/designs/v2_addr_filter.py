"""Design (b), "v2-addr-filter": the PATCH v2 direction. The kernel only splits (`split`,
no hot_threshold, no PFN tree); a userspace control plane decides which 2 MiB ranges, from
SPE samples, and hands them to DAMOS as `addr` filters, each round bounded by
`max_nr_snapshots` (feature level 7.0).

The SPE samples are the runner's (`uses_spe`: each period's histogram arrives in
`feed_spe`, the same records design rfc-v3 writes to spe_feed), as `perf record -e
arm_spe_0/pa_enable=1/` | spe_hist would give them to damon_spe_ctl.sh. `control()` is one
round of `damond/spe/ctlplane.py`, the code `damond spe-ctl` runs on a mount: sparse THPs,
pagemap, filters, max_nr_snapshots, commit. Control CPU covers that round, not the
`perf script` text round trip.
"""
from __future__ import annotations

import numpy as np

from damond.reproduce.designs.base import Design
from damond.reproduce.session import Session
from damond.spe import ctlplane


class V2AddrFilter(Design):
    name = "v2-addr-filter"
    feature_level = "7.0+rfc"
    uses_spe = True                  # fed the period's SPE histogram (not written to spe_feed)
    control_period_us = 1_000_000

    def __init__(self, **params):
        super().__init__(**params)
        self.hist = (np.zeros(0, np.uint64), np.zeros(0, np.uint64))
        self.fresh = False
        self.rounds: list[ctlplane.Round] = []

    def _params(self, pid: int) -> ctlplane.Params:
        p = self.params
        return ctlplane.Params(pid=pid, threshold=p.get("threshold", 30), target_order=p.get("target_order", 2),
                               max_filters=p.get("max_filters", 256), snapshots=p.get("snapshots", ctlplane.AUTO))

    def setup(self, s: Session, pid: int) -> None:
        ctlplane.setup(ctlplane.SessionFiles(s), self._params(pid))

    def feed_spe(self, s: Session, pid: int, pfns, counts) -> None:
        """The period's SPE histogram (4 KiB PFNs, record counts): kept for control()."""
        self.hist = (np.asarray(pfns, np.uint64), np.asarray(counts, np.uint64))
        self.fresh = True

    def control(self, s: Session, pid: int) -> None:
        """One round on the histogram fed since the last round (none fed: no round)."""
        if not self.fresh:
            return
        self.fresh = False
        self.rounds.append(ctlplane.control_round(ctlplane.SessionFiles(s), self._params(pid), self.hist))

    def reported_hot_bytes(self, s: Session, pid: int) -> int:
        """The last period's histogram: subpages at >= 1/10 of their THP's peak count."""
        return ctlplane.hot_bytes(*self.hist)


DESIGN = V2AddrFilter
