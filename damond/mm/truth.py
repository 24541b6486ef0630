"""Counted ground truth: which pages the workloads really touched, page by page.

Owns the recorder the access path marks while someone is asking (a reader opened a
window with `Machine.truth_start`; the daemon's damond/truth file, the demo and the
experiments of `damond reproduce` do): per physical page the 100 us tick of the end of
the step in which it was last touched (uint32, 0 = not since recording began). "Touched
in [since, now)" is then one vectorised comparison, for every window ending now at once;
a step that ends inside the window counts whole (the kdamond's steps are its sampling
intervals, so its windows hold whole steps; the daemon's idle ticker steps 100 ms).
Recording costs 4 bytes per emulated page and turns off the access path's shortcuts
that skip streams whose AF state cannot change (see access.Stepper), so it stays off
until asked for. A page that moves (migration, compaction) keeps its old stamp behind.
"""
from __future__ import annotations

import numpy as np

TICK_US = 100


class TruthRecorder:
    def __init__(self, nr_pages: int, t0_us: int):
        self.t0_us = int(t0_us)
        self.stamp = np.zeros(nr_pages, np.uint32)
        # streams touched whole in their last steps: (physical indexes, last us), marked on flush()
        # (the same 4096 scattered pages every 5 ms cost the host more than the step itself)
        self.pending: dict[int, tuple[np.ndarray, int]] = {}

    def defer(self, key: int, pidx: np.ndarray, last_us: int) -> None:
        """All of `pidx` touched in a step ending at last_us; marked at the next flush()."""
        self.pending[key] = (pidx, last_us)

    def flush(self, key: int | None = None) -> None:
        """Mark deferred pages (one stream's, or all) before their translation can change or
        before a reader looks."""
        keys = list(self.pending) if key is None else ([key] if key in self.pending else [])
        for k in keys:
            pidx, last = self.pending.pop(k)
            if len(pidx):                      # never older than a direct mark made since
                self.stamp[pidx] = np.maximum(self.stamp[pidx], self._tick(last))

    def _tick(self, t_us: int) -> int:
        return (int(t_us) - self.t0_us) // TICK_US + 1

    def mark(self, pidx: np.ndarray, last_us: int) -> None:
        """Pages (physical indexes) touched in a step whose last microsecond is last_us."""
        if len(pidx):
            self.stamp[pidx] = self._tick(last_us)

    def touched(self, pidx: np.ndarray, since_us: int) -> np.ndarray:
        """Per page: touched in a step that ended after since_us."""
        self.flush()
        return self.stamp[pidx] >= max(self._tick(since_us), 1)

    def covers(self, since_us: int) -> bool:
        """Whether recording ran for the whole window starting at since_us."""
        return since_us >= self.t0_us
