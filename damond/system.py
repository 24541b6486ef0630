"""The composed emulation: config, clock, machine, SPE tree and kdamonds in one object.

The FUSE front serves one `System`; experiments and tests build one on a `VirtualClock`
without any FUSE. Owns the [daemon] config section and the wall-clock ticker that keeps
the machine's workloads running when no kdamond is.
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass

from damond.clock import Clock, VirtualClock, WallClock
from damond.config import Config
from damond.log import get_logger

FEATURE_LEVELS = ("6.18+rfc", "6.19+rfc", "7.0+rfc", "7.1+rfc", "next+rfc")   # next: not a kernel (fs_layout)
COLLAPSE_MODES = ("spe-guarded", "rfc")
TICK_US = 20000            # ticker step while an observer (SPE sampler) listens and no kdamond runs
IDLE_TICK_US = 100000      # ticker step otherwise: an unobserved machine (the same emulation, fewer
                           # wake-ups), or one running kdamonds drive (the ticker only waits)
SWITCH_INTERVAL_S = 0.0005  # GIL hand-over: a FUSE request waits at most this for the ticker/kdamonds

log = get_logger("damond.system")


@dataclass
class DaemonSettings:
    time_factor: float = 1.0
    feature_level: str = "6.18+rfc"
    collapse: str = "spe-guarded"

    @classmethod
    def from_config(cls, config: Config) -> "DaemonSettings":
        sec = config.section("daemon")
        known = {"time_factor", "feature_level", "collapse"}
        for k in sec:
            if k not in known:
                raise config.error(f"daemon.{k}", f"unknown key '{k}' in [daemon] (known: {', '.join(sorted(known))})")
        s = cls()
        tf = sec.get("time_factor", s.time_factor)
        if not isinstance(tf, (int, float)) or isinstance(tf, bool) or tf <= 0:
            raise config.error("daemon.time_factor", "time_factor must be a positive number")
        s.time_factor = float(tf)
        fl = sec.get("feature_level", s.feature_level)
        if fl not in FEATURE_LEVELS:
            raise config.error("daemon.feature_level", f"feature_level {fl!r} is not one of {', '.join(FEATURE_LEVELS)}")
        s.feature_level = fl
        cm = sec.get("collapse", s.collapse)
        if cm not in COLLAPSE_MODES:
            raise config.error("daemon.collapse", f"collapse {cm!r} is not one of {', '.join(COLLAPSE_MODES)}")
        s.collapse = cm
        return s


class System:
    """Everything behind the files. Build with `System.from_config`."""

    def __init__(self, config: Config, clock: Clock, settings: DaemonSettings, machine, spe):
        self.config, self.clock, self.settings = config, clock, settings
        self.machine, self.spe = machine, spe
        self.kdamonds: list = []
        self.trace_listeners: list = []      # damond/damon/trace.py: fn(list[TraceEvent]) per emitted batch
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self._stop_mutex = threading.Lock()

    @classmethod
    def from_config(cls, config: Config, clock: Clock | None = None, virtual: bool = False) -> "System":
        from damond.mm.machine import Machine
        from damond.spe.tree import PfnTree

        settings = DaemonSettings.from_config(config)
        if clock is None:
            clock = VirtualClock() if virtual else WallClock(settings.time_factor)
        machine = Machine.from_config(config, clock)
        spe = PfnTree.from_config(config, clock)
        log.info("system_built", config=config.path, seed=config.seed, feature_level=settings.feature_level)
        return cls(config, clock, settings, machine, spe)

    def new_kdamond(self):
        from damond.damon.kdamond import Kdamond

        return Kdamond(self, len(self.kdamonds))

    def start(self) -> None:
        """Wall-clock mode: advance the machine in the background. Also shortens the
        interpreter's GIL switch interval so FUSE requests are not queued behind the
        emulation threads."""
        if isinstance(self.clock, VirtualClock) or self._ticker:
            return
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick, name="damond-ticker", daemon=True)
        self._ticker.start()

    def tick_us(self) -> int:
        """The ticker's step: short while a step observer listens and no kdamond runs, else
        IDLE_TICK_US (running kdamonds advance the machine themselves every sample)."""
        if any(kd.running for kd in self.kdamonds):
            return IDLE_TICK_US
        return TICK_US if getattr(self.machine, "observers", None) else IDLE_TICK_US

    def _tick(self) -> None:
        while not self._stop.is_set():
            try:
                # a running kdamond drives the machine itself, one exact sampling window at a time
                if not any(kd.running for kd in self.kdamonds):
                    self.machine.advance_to(self.clock.now_us())
            except Exception:  # a bug: say so loudly, keep serving
                log.exception("ticker_failed")
            self._stop.wait(self.tick_us() / 1e6 / getattr(self.clock, "factor", 1.0))

    def stop(self) -> None:
        """Stop the kdamonds and the ticker (idempotent; the daemon's exit path and its
        caller may both call it)."""
        with self._stop_mutex:
            for kd in list(self.kdamonds):      # wake every kdamond first: pending commands end now
                if kd.running and hasattr(kd, "request_stop"):
                    kd.request_stop()
            for kd in list(self.kdamonds):
                if kd.running:
                    try:
                        kd.stop()
                    except Exception:
                        log.exception("kdamond_stop_failed")
            self._stop.set()
            if self._ticker:
                self._ticker.join(timeout=5)
                self._ticker = None
