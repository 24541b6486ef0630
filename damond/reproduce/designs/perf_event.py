"""Design (e), "perf-event": DAMON with the planned perf-event access check, SPE samples as
the access source (`operations` = `vaddr_perf`, damond's "next" level, damond/damon/perf.py).

All in the kernel: no spe_feed, no PFN tree, no userspace. The schemes and the reported
figure are design (d)'s (age.py, subclassed), so that the two differ only in the access
source. A sample is an access report, so a TLB hit that sets no Access Flag is still seen;
what a sample cannot see is a page touched less often than once per `period` memory
operations.
"""
from __future__ import annotations

from damond.reproduce.designs.age import Age


class PerfEvent(Age):
    name = "perf-event"
    feature_level = "next+rfc"
    ops = "vaddr_perf"
    uses_spe = False                 # the operations set samples by itself

    def config_extra(self) -> str:
        """The PMU's sampling period (`period`, default 4096 memory ops; perf's 1024 costs 4x
        the emulation time on the sweeping workloads). A [damon] table: the workload config
        must not carry one."""
        return f"[damon]\nperf_sample_period = {int(self.params.get('period', 4096))}\n"


DESIGN = PerfEvent
