"""Small fakes for DAMOS unit tests: a runtime ctx, a machine and an SPE tree with just
the Machine / PfnTree contract calls DAMOS makes (docs/ARCHITECTURE.md)."""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from damond.clock import VirtualClock
from damond.damon import damos
from damond.damon.params import Attrs, OpsId, Scheme
from damond.damon.regions import Regions

MiB = 1 << 20
PMD = 2 * MiB


@dataclass
class Vma:
    start: int
    end: int
    anon: bool = True
    shmem: bool = False
    name: str = ""
    hugepage_hint: str = ""


@dataclass
class Folio:
    pfn: int
    order: int
    level: str
    young: bool = False
    anon: bool = True
    shmem: bool = False
    nid: int = 0
    va: int = 0
    pid: int = 1
    active: bool = False
    memcg: str = "/"


class FakeMachine:
    """One process (pid 1) whose VMAs are backed by folios listed by virtual address."""

    def __init__(self, vmas=(), free_rate=500):
        self.vmas_ = list(vmas)
        self.folios: dict[int, Folio] = {}     # by va
        self.free_rate = free_rate
        self.calls: list[tuple] = []

    # processes
    def process(self, pid):
        return SimpleNamespace(pid=pid, vmas=lambda: list(self.vmas_)) if pid == 1 else None

    def map_thp(self, va: int, pfn: int) -> None:
        self.folios[va] = Folio(pfn=pfn, order=9, level="pmd", va=va)

    def folio_walk(self, pid, addr):
        for va, f in self.folios.items():
            if va <= addr < va + (4096 << f.order):
                return f
        return None

    def va_orders(self, pid, addrs):
        """Machine.va_orders: each address's folio order as folio_walk gives it, -1 for none."""
        out = []
        for a in addrs.tolist():
            f = self.folio_walk(pid, a)
            out.append(-1 if f is None else f.order)
        return np.array(out, np.int64)

    def split_folio_to_order(self, pid, addr, new_order):
        self.calls.append(("split", addr, new_order))
        f = self.folio_walk(pid, addr)
        if f is None:
            return -22
        del self.folios[f.va]
        n = 1 << (f.order - new_order)
        for i in range(n):
            va = f.va + i * (4096 << new_order)
            self.folios[va] = Folio(pfn=f.pfn + (i << new_order), order=new_order, level="pte", va=va)
        return 0

    def collapse_range(self, pid, addr, order=9):
        self.calls.append(("collapse", addr, order))
        return 0

    def madvise(self, pid, start, end, advice):
        self.calls.append(("madvise", start, end, advice))
        return 0

    def va_mkold(self, pid, addrs):
        self.calls.append(("mkold", tuple(int(a) for a in addrs)))

    def free_mem_rate(self):
        return self.free_rate


class FakeSpe:
    def __init__(self):
        self.fractions: dict[int, int] = {}
        self.prunes = 0

    def prune(self):
        self.prunes += 1
        return 0

    def heatmap(self, folio_pfn, folio_order, target_order):
        if folio_pfn not in self.fractions:
            return None
        n = 1 << (folio_order - target_order)
        hot = self.fractions[folio_pfn] * n // 100
        return np.arange(n) < hot

    def hot_fraction(self, folio_pfn, folio_order, target_order):
        hm = self.heatmap(folio_pfn, folio_order, target_order)
        return None if hm is None else int(hm.sum()) * 100 // len(hm)


@dataclass
class FakeTarget:
    index: int
    pid: int | None
    regions: Regions
    valid: bool = True


class FakeCtx:
    def __init__(self, regions: list[tuple[int, int]], schemes: list[Scheme], ops=OpsId.VADDR,
                 machine=None, collapse="spe-guarded", attrs: Attrs | None = None):
        self.clock = VirtualClock()
        self.machine = machine or FakeMachine()
        self.spe = FakeSpe()
        self.system = SimpleNamespace(machine=self.machine, spe=self.spe, clock=self.clock,
                                      settings=SimpleNamespace(collapse=collapse))
        self.attrs = attrs or Attrs()
        self.ops_id = ops
        self.addr_unit = 1
        self.min_region_sz = 4096
        r = Regions([s for s, _ in regions], [e for _, e in regions])
        self.targets = [FakeTarget(0, 1 if ops != OpsId.PADDR else None, r)]
        self.passed_sample_intervals = 0
        self.schemes: list = []
        for s in schemes:
            self.schemes.append(damos.new_scheme_state(self, s))
        damos.init_schemes(self)

    def aggr_samples(self):
        return max(self.attrs.aggr_interval // max(self.attrs.sample_interval, 1), 1)

    def sz_limit(self):
        total = sum(t.regions.total_size() for t in self.targets)
        return max(total // 10, self.min_region_sz)

    def run_samples(self, n: int) -> None:
        """Advance n sampling intervals, applying schemes after each (no monitoring)."""
        for _ in range(n):
            self.clock.sleep_us(self.attrs.sample_interval)
            self.passed_sample_intervals += 1
            damos.apply_schemes(self)

    def regions(self, t: int = 0) -> list[tuple[int, int]]:
        r = self.targets[t].regions
        return [(int(s), int(e)) for s, e in zip(r.start, r.end)]
