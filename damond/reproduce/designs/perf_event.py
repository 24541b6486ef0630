"""Design (e), "perf-event": DAMON with the planned perf-event access check, SPE samples as
the access source (`operations` = `vaddr_perf`, damond's "next" level, damond/damon/perf.py).

All in the kernel: no spe_feed, no PFN tree, no userspace. The schemes are design (d)'s
(age.py) so that the two differ only in the access source: hot is `nr_accesses >= 1` for
`age_min` aggregations (a `stat` scheme, scheme 0, whose tried bytes are reported), and a
`split` scheme (target_order 2, applied once a second) takes what stayed idle as long. A
sample is an access report, so a TLB hit that sets no Access Flag is still seen; what a
sample cannot see is a page touched less often than once per `period` memory operations.
"""
from __future__ import annotations

from damond.reproduce.designs.base import Design
from damond.reproduce.session import CTX, UINT_MAX, Session

APPLY_US = 1_000_000


class PerfEvent(Design):
    name = "perf-event"
    feature_level = "next+rfc"
    uses_spe = False                 # the operations set samples by itself
    control_period_us = 1_000_000

    def __init__(self, **params):
        super().__init__(**params)
        self.age_min = int(params.get("age_min", 10))       # 1 s at 100 ms aggregations

    def config_extra(self) -> str:
        """The PMU's sampling period (`period`, default 4096 memory ops; perf's 1024 costs 4x
        the emulation time on the sweeping workloads). A [damon] table: the workload config
        must not carry one."""
        return f"[damon]\nperf_sample_period = {int(self.params.get('period', 4096))}\n"

    def setup(self, s: Session, pid: int) -> None:
        s.stage([pid], [dict(action="stat", nr_accesses=(1, UINT_MAX), age=(self.age_min, UINT_MAX)),
                        dict(action="split", target_order=self.params.get("target_order", 2), nr_accesses=(0, 0),
                             age=(self.age_min, UINT_MAX), apply_interval_us=APPLY_US)],
                ops="vaddr_perf")
        s.state("on")

    def reported_hot_bytes(self, s: Session, pid: int) -> int:
        """Mean bytes of scheme 0's tried regions over 4 apply intervals."""
        out = []
        for _ in range(4):
            s.state("update_schemes_tried_bytes")
            out.append(s.read_int(f"{CTX}/schemes/0/tried_regions/total_bytes"))
        return sum(out) // len(out)


DESIGN = PerfEvent
