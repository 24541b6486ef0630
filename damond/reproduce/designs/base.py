"""The contract between a design and the designs runner.

A design owns only what its real counterpart would do: the schemes it writes into the
served tree (through `Session.write`, as echo would), the files it feeds, and its
userspace control plane. The runner owns the machine, the workload, time, counted truth
and every metric, so that the figures of two designs are comparable.

Order of calls, per run (one design x workload x seed, a fresh Session each):
  cfg = workload config text + design.config_extra()   # e.g. "[spe]\nttl_s = 30\n"
  s = Session(cfg); the runner waits for the workload to populate
  design.setup(s, pid)                                   # stage schemes, `echo on`
  every control_period_us of virtual time:
      s.run(control_period_us)
      if design.uses_spe: design.feed_spe(s, pid, pfns, counts)   # the period's SPE histogram
      t = time.process_time(); design.control(s, pid); control_cpu_s += elapsed
      (feed_spe is timed into control_cpu_s too: it is the design's userspace feeder)
  at the end: design.reported_hot_bytes(s, pid) -> what the design believes is hot
The machine's split/collapse counters, the folios and the timing model give the rest.
"""
from __future__ import annotations

from typing import ClassVar

from damond.reproduce.session import Session


class Design:
    name: ClassVar[str] = ""                 # JSON name, a key of designs.DESIGN_MODULES
    feature_level: ClassVar[str] = "6.18+rfc"  # the [daemon] feature_level its files need
    uses_spe: ClassVar[bool] = False         # the runner feeds emulated SPE (spe_feed) when True
    control_period_us: ClassVar[int] = 1_000_000

    def __init__(self, **params):
        """`params` are the design's tunables (e.g. ttl_s, peak_fraction for rfc-v3), so
        sensitivity sweeps make one Design per point."""
        self.params = params

    def config_extra(self) -> str:
        """Config text appended to the workload's (e.g. an [spe] table); "" by default."""
        return ""

    def setup(self, s: Session, pid: int) -> None:
        """Stage this design's kdamond and schemes for target `pid` and turn it on."""
        raise NotImplementedError

    def feed_spe(self, s: Session, pid: int, pfns, counts) -> None:
        """One control period's SPE samples, as `perf script -F phys_addr | spe_hist` would
        give them: 4 KiB PFNs (uint64, ascending, unique) and their record counts. By
        default written to debugfs spe_feed as `0xPFN COUNT` lines (the RFC v3 path);
        a design with its own histogram (a userspace control plane) overrides this."""
        from damond.spe.hist import feed_bytes
        if len(pfns):
            s.write_file("kernel/debug/damon/spe_feed", feed_bytes(pfns, counts))

    def control(self, s: Session, pid: int) -> None:
        """One period of the design's userspace control plane (nothing for in-kernel designs)."""

    def reported_hot_bytes(self, s: Session, pid: int) -> int:
        """Bytes of `pid`'s memory this design currently reports as hot."""
        raise NotImplementedError


APPLY_US = 1_000_000      # the designs' split schemes apply once a second (see rfc_v3.py)


def stage_context(s: Session, pid: int, schemes: list[dict], ops: str = "vaddr") -> None:
    """The context every design here uses: `ops` (vaddr) on pid, 5 ms / 100 ms / 1 s, 10..1000
    regions (the RFC scripts' DAMON settings), the given schemes; then `echo on`."""
    s.stage([pid], schemes, ops=ops)
    s.state("on")


def tried_bytes(s: Session, nr_schemes: int, scheme: int = 0, intervals: int = 4) -> int:
    """Mean bytes of scheme `scheme`'s tried regions over `intervals` apply intervals
    (`update_schemes_tried_regions`, as damo and the RFC's scripts read what DAMON calls hot)."""
    out = []
    for _ in range(intervals):
        tr = s.tried(nr_schemes)
        out.append(sum(e - st for st, e, _, _ in tr[scheme]))
    return int(sum(out) / len(out))
