"""Time for the engine and the machine: one interface, a virtual and a wall-clock source.

The kdamond loop counts sampling intervals and sleeps in exactly one place
(`clock.sleep_us`). Experiments and tests pass a `VirtualClock`, which advances
instantly; the daemon passes a `WallClock`, optionally scaled (`factor` emulated
microseconds per real microsecond). The engine code is the same for both.
"""
from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_us(self) -> int:
        """Emulated time in microseconds since the clock started."""

    def sleep_us(self, us: int) -> None:
        """Let `us` emulated microseconds pass."""


class VirtualClock:
    """Emulated time that moves only when someone sleeps: runs as fast as the CPU allows."""

    def __init__(self, start_us: int = 0):
        self._now = start_us
        self._mutex = threading.Lock()

    def now_us(self) -> int:
        return self._now

    def sleep_us(self, us: int) -> None:
        with self._mutex:
            self._now += max(0, int(us))

    def advance_to(self, t_us: int) -> None:
        with self._mutex:
            self._now = max(self._now, int(t_us))


class WallClock:
    """Emulated time that follows the wall clock, `factor` times faster (1.0 = real time)."""

    def __init__(self, factor: float = 1.0):
        if factor <= 0:
            raise ValueError("time factor must be positive")
        self.factor = factor
        self._t0 = time.monotonic()

    def now_us(self) -> int:
        return int((time.monotonic() - self._t0) * 1e6 * self.factor)

    def sleep_us(self, us: int) -> None:
        if us > 0:
            time.sleep(us / 1e6 / self.factor)
