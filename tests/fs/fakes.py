"""Small fakes for front-end tests that must not depend on the engine or machine: a
machine with a few processes and THP settings, a Kdamond that records what it was
given, and a System holding them. `python -m tests.fs.fakes MOUNTPOINT [LEVEL]` serves
the real front over these fakes (used by DamondProcess(fake=True)).
"""
from __future__ import annotations

import errno
import itertools
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace

from damond.clock import VirtualClock
from damond.config import Config
from damond.spe.tree import PfnTree

from damond.damon import params
from damond.errors import DamonError


@dataclass
class FakeVma:
    start: int
    end: int


@dataclass
class FakeProcess:
    pid: int
    comm: str
    kind: str = "fake"
    alive: bool = True

    @property
    def workload(self):
        """Like damond.mm: the running workload knows its kind."""
        return SimpleNamespace(kind=self.kind)

    def vmas(self):
        return [FakeVma(0x400000, 0x800000)]


class FakeKhugepaged:
    def __init__(self):
        self.defrag, self.pages_to_scan, self.scan_sleep_millisecs = 1, 4096, 10000
        self.alloc_sleep_millisecs, self.max_ptes_none, self.max_ptes_swap = 60000, 511, 64
        self.max_ptes_shared, self.pages_collapsed, self.full_scans = 256, 0, 0


class FakeThp:
    def __init__(self):
        self.enabled, self.defrag, self.shmem_enabled = "always", "madvise", "never"
        self.use_zero_page, self.hpage_pmd_size = 1, 2097152
        self.size_enabled = {kb: "never" for kb in (16, 32, 64, 128, 256, 512, 1024)} | {2048: "inherit"}
        self.khugepaged = FakeKhugepaged()
        self.stats = {kb: {} for kb in self.size_enabled}


class FakeMachine:
    def __init__(self):
        self.now_us = 5_000_000
        self.thp = FakeThp()
        self._procs = {100: FakeProcess(100, "sparse"), 101: FakeProcess(101, "hot")}
        self._pids = itertools.count(200)

    def processes(self):
        return [p for p in self._procs.values() if p.alive]

    def process(self, pid):
        p = self._procs.get(pid)
        return p if p is not None and p.alive else None

    def spawn(self, spec: dict) -> int:
        if spec["kind"] not in ("idle", "hot"):
            raise ValueError(f"unknown workload kind {spec['kind']!r}")
        pid = next(self._pids)
        self._procs[pid] = FakeProcess(pid, spec["kind"], spec["kind"])
        return pid

    def kill(self, pid: int) -> None:
        self._procs[pid].alive = False

    def memcg_exists(self, path: str) -> bool:
        return path in ("/", "/a")

    def truth_start(self) -> int:
        return 0

    def truth_counted(self, pid, start, end, since) -> int:
        start, end = 0x400000, 0x800000            # the one mapping proc_maps shows
        return (end - start) // 2 if self.now_us - since <= 100_000 else end - start

    def proc_maps(self, pid):
        return "00400000-00800000 rw-p 00000000 00:00 0 \n"

    proc_smaps = proc_smaps_rollup = proc_maps


class FakeKdamond:
    """Records commands; `running` follows start/stop like the contract says."""

    def __init__(self, system, index: int):
        self.system, self.index = system, index
        self.running, self.pid, self.started = False, -1, False
        self.ctx: params.Ctx | None = None
        self.committed: list[params.Ctx] = []
        self.goals = None
        self.refresh = (0, None)

    def start(self, ctx: params.Ctx) -> None:
        if self.running:
            raise DamonError(errno.EBUSY)
        if ctx.attrs.min_nr_regions < 3 or ctx.attrs.sample_interval > ctx.attrs.aggr_interval:
            raise DamonError(errno.EINVAL, "bad attrs")
        self.ctx, self.running, self.started, self.pid = ctx, True, True, 4242 + self.index

    def stop(self) -> None:
        if not self.started:
            raise DamonError(errno.EINVAL)
        if not self.running:
            raise DamonError(errno.EPERM)
        self.running, self.pid = False, -1

    def _need_running(self):
        if not self.running:
            raise DamonError(errno.EINVAL)

    def commit(self, ctx):
        self._need_running()
        self.ctx = ctx
        self.committed.append(ctx)

    def commit_quota_goals(self, goals):
        self._need_running()
        self.goals = goals

    def scheme_stats(self):
        self._need_running()
        return [params.SchemeStats(nr_tried=i + 1, sz_tried=4096 * (i + 1), nr_applied=i, sz_applied=4096 * i,
                                   qt_exceeds=7) for i in range(len(self.ctx.schemes))]

    def effective_quotas(self):
        self._need_running()
        return [1000 + i for i in range(len(self.ctx.schemes))]

    def tuned_intervals(self):
        self._need_running()
        return (1234, 56789)

    def quota_goal_values(self):
        self._need_running()
        return [[77 for _ in s.quota.goals] for s in self.ctx.schemes]

    def walk_tried_regions(self, timeout_s):
        self._need_running()
        return [[params.TriedRegion(0x1000 * j, 0x1000 * (j + 1), j, 10 + j) for j in range(3)]
                for _ in self.ctx.schemes]

    def set_refresh(self, ms, fn):
        self.refresh = (ms, fn)


@dataclass
class FakeSettings:
    feature_level: str = "6.18+rfc"
    time_factor: float = 1.0


@dataclass
class FakeSystem:
    settings: FakeSettings = field(default_factory=FakeSettings)
    machine: FakeMachine = field(default_factory=FakeMachine)
    kdamonds: list = field(default_factory=list)
    spe: object = field(default_factory=lambda: PfnTree.from_config(Config.load(), VirtualClock()))

    def start(self):
        pass

    def stop(self):
        pass


def main(argv: list[str]) -> int:
    from damond import log as dlog
    from damond.fs import mount
    from damond.fs.root import build

    dlog.configure()
    system = FakeSystem(settings=FakeSettings(feature_level=argv[1] if len(argv) > 1 else "6.18+rfc"))
    return mount.serve(build(system, kdamond_factory=FakeKdamond), argv[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
