"""Fakes for the engine tests: a deterministic machine and a System on a VirtualClock.

The fake machine answers the Machine contract calls the monitoring core makes (process,
vmas, va/pa mkold and young, kthread pids, advance_to) from fixed "hot" address ranges,
so sample and aggregation counts can be asserted exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest

from damond.clock import VirtualClock
from damond.config import Config
from damond.system import DaemonSettings
from test_damos_fakes import Vma as FakeVma  # noqa: F401  (one fake VMA for both fake machines)

PAGE = 4096


@dataclass
class FakeProcess:
    pid: int
    vma_list: list
    comm: str = "fake"
    alive: bool = True

    def vmas(self):
        return list(self.vma_list)


@dataclass
class FakeMachine:
    """Accesses: `hot[pid]` is a list of (start, end) ranges that are always young;
    `folio_sz` is what young checks report (4 KiB or 2 MiB)."""
    procs: dict = field(default_factory=dict)
    hot: dict = field(default_factory=dict)
    pa_hot: list = field(default_factory=list)
    folio_sz: int = PAGE
    now_us: int = 0
    mkold_calls: int = 0
    young_calls: int = 0
    advances: int = 0
    next_kpid: int = 900

    def add_process(self, pid: int, vmas: list[tuple[int, int]], hot: list[tuple[int, int]] = ()):
        self.procs[pid] = FakeProcess(pid, [FakeVma(s, e) for s, e in vmas])
        self.hot[pid] = list(hot)

    def process(self, pid):
        p = self.procs.get(pid)
        return p if p is not None and p.alive else None

    def processes(self):
        return [p for p in self.procs.values() if p.alive]

    def kill(self, pid):
        self.procs[pid].alive = False

    def new_kthread_pid(self):
        self.next_kpid += 1
        return self.next_kpid

    def advance_to(self, t_us):
        self.advances += 1
        self.now_us = max(self.now_us, int(t_us))

    def _young(self, ranges, addrs):
        addrs = np.asarray(addrs, dtype=np.uint64)
        y = np.zeros(len(addrs), dtype=bool)
        for s, e in ranges:
            y |= (addrs >= np.uint64(s)) & (addrs < np.uint64(e))
        return y, np.full(len(addrs), self.folio_sz, dtype=np.uint64)

    def va_mkold(self, pid, addrs):
        self.mkold_calls += 1

    def va_young(self, pid, addrs):
        self.young_calls += 1
        return self._young(self.hot.get(pid, []), addrs)

    def pa_mkold(self, paddrs):
        self.mkold_calls += 1

    def pa_young(self, paddrs):
        self.young_calls += 1
        return self._young(self.pa_hot, paddrs)

    def ram_ranges(self):
        return [(0, 1 << 30)]

    def free_mem_rate(self):
        return 500


def make_system(machine=None, config_text: str = "seed = 1\n"):
    return SimpleNamespace(config=Config.from_text(config_text), clock=VirtualClock(),
                           machine=machine or FakeMachine(), spe=None, settings=DaemonSettings(),
                           kdamonds=[])


@pytest.fixture
def fake_system():
    return make_system()
