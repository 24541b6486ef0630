"""Design (e), "perf-event": DAMON with the planned perf-event access check, SPE samples as
the access source (`operations` = `vaddr_perf`, damond's "next" level, damond/damon/perf.py).

All in the kernel: no spe_feed, no PFN tree, no userspace. A sample is an access report,
so a TLB hit that sets no Access Flag is still seen, and regions can follow sub-THP
boundaries. Scheme 0 splits what stays cold: regions with nr_accesses 0 for at least
`min_age` aggregations; the split handler works on each 2 MiB chunk such a region touches
(no SPE tree data: the RFC's unconditional split of a PMD-mapped THP). Scheme 1 is a
`stat` scheme on regions with nr_accesses >= 1, whose tried bytes are what this design
reports as hot.
"""
from __future__ import annotations

from damond.reproduce.designs.base import Design
from damond.reproduce.session import CTX, ULONG_MAX, UINT_MAX, Session


class PerfEvent(Design):
    name = "perf-event"
    feature_level = "next+rfc"
    uses_spe = False                 # the operations set samples by itself
    control_period_us = 1_000_000

    def config_extra(self) -> str:
        """The sampling period (`period`, default 16384 ops: at the workloads' 1e8-1e9 ops/s
        still hundreds of samples per 5 ms sampling interval, at 1/16 of the emulation cost
        of perf's 1024). A [damon] table: the workload config must not carry one."""
        return f"[damon]\nperf_sample_period = {int(self.params.get('period', 16384))}\n"

    def setup(self, s: Session, pid: int) -> None:
        p = self.params
        split = {"action": "split", "target_order": p.get("target_order", 2),
                 "nr_accesses": (0, 0), "age": (p.get("min_age", 5), UINT_MAX), "sz": (0, ULONG_MAX)}
        hot = {"action": "stat", "nr_accesses": (1, UINT_MAX)}
        s.stage([pid], [split, hot], ops="vaddr_perf", nr_regions=(10, p.get("max_nr_regions", 1000)))
        s.state("on")

    def reported_hot_bytes(self, s: Session, pid: int) -> int:
        """Bytes of the regions DAMON saw accessed (scheme 1's tried bytes, one apply pass)."""
        s.state("update_schemes_tried_bytes")
        return s.read_int(f"{CTX}/schemes/1/tried_regions/total_bytes")


DESIGN = PerfEvent
