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
      t = time.process_time(); design.control(s, pid); control_cpu_s += elapsed
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

    def control(self, s: Session, pid: int) -> None:
        """One period of the design's userspace control plane (nothing for in-kernel designs)."""

    def reported_hot_bytes(self, s: Session, pid: int) -> int:
        """Bytes of `pid`'s memory this design currently reports as hot."""
        raise NotImplementedError
