"""Emulated ARM SPE for the twins of real programs (`perf record -e arm_spe_0/…/ -p PID|-a`).

The stepper's SPE sampler (damond/spe/sampler.py) selects operations from the emulated
workloads' access streams; a twin has no stream, only the program's real accesses seen
through page protection. While an SPE session (a `Sampler`, i.e. an open
damond/spe_record) selects a twin (its pid, or -1 for -a), this source works in windows
of WINDOW_S: each window it arms randomly chosen populated 4 KiB pages of the twin's
protectable mappings (anonymous/shmem, never the stack), and the first touch of an armed
page in the window becomes one SPE record: the exact faulting virtual address, the physical address of the twin's
emulated folio at that address, load or store as the fault says (x86-64), event bits
retired + L1D access + TLB access. So a sample exists only where the program really
touched; untouched memory yields none.

How many units a window arms follows the session's sampling interval: OPS_PER_WINDOW
nominal operations per window, one unit per `period` of them (period 1024 -> 128 units,
at most MAX_UNITS). Each armed unit yields at most one sample per window, so the sample
rate is bounded by units x windows (and by what a fault costs the program). The unit is
4 KiB even inside a PMD-mapped twin folio, unlike DAMON's checks: a 2 MiB unit only ever
samples the first access after arming, and a program that works in bursts makes that the
same address every time (hot_workload.c: one subpage per THP got ~70 % of the samples);
so per-4-KiB histograms (spe_hist) see which pages are touched, and within a page the
first access after arming. Arming 4 KiB inside a real THP splits the program's real PMD
mapping; the twin's folios (what smaps, pagemap and DAMOS see) are not affected.
Not modelled (documented in README/ARCHITECTURE): TLB/cache refills (never set),
latencies (the L1D-hit figures the stepper's sampler uses for a hit: lat_tot 4-5,
lat_xlat 0-1, drawn), the pc (synthetic, as the stepper's sampler), the thread (tid = pid).
Unit choice and latencies take the session's seeded generator (config seed + session).
"""
from __future__ import annotations

import threading
import time

import numpy as np

from damond.host.twin import prot_bits
from damond.log import get_logger
from damond.mm import phys as P
from damond.mm.phys import PAGE_SIZE
from damond.spe import sampler as S

log = get_logger("damond.host")
WINDOW_S = 0.01
OPS_PER_WINDOW = 1 << 17
MAX_UNITS = 512
DRAWS = 4                       # random pages drawn per wanted unit (unpopulated ones are skipped)


def units_per_window(period: int) -> int:
    return int(min(max(OPS_PER_WINDOW // max(period, 1), 1), MAX_UNITS))


class TwinSpe:
    """The machine's SPE source for twins: `machine.spe_sources` holds it; a Sampler attaches
    at start and detaches at stop (damond/spe/sampler.py)."""

    def __init__(self, twins):
        self.twins, self.m = twins, twins.m
        self.samplers: list = []
        self.windows = self.records = 0          # since the source started (the session log line)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="damond-twin-spe", daemon=True)
        self._thread.start()

    def attach(self, sampler) -> None:
        """Sample the twins `sampler` selects from now on. Never blocks and never calls into
        the machine (a Sampler may start under the machine's mutex): a -p pid not mirrored
        yet is adopted by the source's thread."""
        with self._lock:
            self.samplers.append(sampler)
        self._wake.set()

    def detach(self, sampler) -> None:
        """Take the last window's touches into the sessions, then stop sampling for `sampler`
        (the thread retires the SPE pages once no session is left)."""
        with self._lock:
            if sampler not in self.samplers:
                return
            samplers = list(self.samplers)
        self._window(samplers)
        with self._lock:
            self.samplers.remove(sampler)
        log.info("twin_spe_session", windows=self.windows, records=self.records, pid=sampler.cfg.pid)
        self._wake.set()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        tried: set[int] = set()
        while not self._stop:
            with self._lock:
                samplers = list(self.samplers)
            try:
                if not samplers:
                    tried.clear()
                    self._window([])          # retire what the last session left armed (no-op if none)
                    self._wake.wait(1.0)
                    self._wake.clear()
                    continue
                for pid in {s.cfg.pid for s in samplers if s.cfg.pid >= 0} - tried:
                    tried.add(pid)            # -p of a program not mirrored yet: adopt it now (or never)
                    if self.m.process(pid) is None:
                        self.m.resolve_pid(pid)
                time.sleep(WINDOW_S)
                self._window(samplers)
            except Exception as e:            # the source's trouble never kills the daemon
                log.error("twin_spe_failed", error=repr(e))

    def _window(self, samplers: list) -> None:
        """One window for every twin: take the touches, feed them to the `samplers` that
        select it, arm the next pages; a twin no sampler selects any more ends its SPE."""
        self.windows += bool(samplers)
        for twin in list(self.twins.twins.values()):
            sel = [s for s in samplers if s.cfg.pid in (-1, twin.pid)]
            if not sel and twin.spe_pick is None:
                continue
            rng = sel[0].rng if sel else None
            n = units_per_window(min(s.cfg.period for s in sel)) if sel else 0
            with self.m._mutex:
                proc = self.m.process(twin.pid)
                if proc is None or proc.twin is not twin:
                    continue
                pick = (lambda p, t=twin, k=n, r=rng: self._pick(t, p, k, r)) if sel else None
                addrs, store, when = twin.spe_window(proc, pick)
                recs = self._records(proc, addrs, store, when, rng) if len(addrs) and sel else None
            if recs is not None:
                self.records += len(recs)
                for s in sel:
                    s.feed(recs.copy())

    def _pick(self, twin, proc, n: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to `n` distinct populated pages of protectable VMAs, drawn uniformly (4 KiB
        units whatever the twin's folio size: see the module docstring)."""
        vmas = [v for v in proc.vmas() if v.uid in twin.protectable]
        empty = (np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.uint32))
        if not vmas or n <= 0:
            return empty
        pages = np.array([(v.end - v.start) // PAGE_SIZE for v in vmas], np.float64)
        k = n * DRAWS
        vi = rng.choice(len(vmas), size=k, p=pages / pages.sum())
        off = (rng.random(k) * pages[vi]).astype(np.uint64) * np.uint64(PAGE_SIZE)
        addrs = np.array([vmas[i].start for i in vi.tolist()], np.uint64) + off
        ok, _, pidx = proc.translate(addrs)
        ok[ok] = (self.m.phys.flags[pidx[ok]] & P.PRESENT) != 0
        _, first = np.unique(addrs[ok], return_index=True)
        first = np.sort(first)[:n]                          # distinct pages, in draw order
        start = addrs[ok][first]
        prot = np.array([prot_bits(vmas[i].perms) for i in vi[ok][first].tolist()], np.uint32)
        return start, np.full(len(start), PAGE_SIZE, np.uint64), prot

    def _records(self, proc, addrs: np.ndarray, store: np.ndarray, when: np.ndarray, rng) -> np.ndarray:
        n = len(addrs)
        r = np.zeros(n, dtype=S.RECORD_DTYPE)
        now_us = self.m.clock.now_us() if self.m.clock is not None else self.m.now_us
        t = np.maximum(now_us - (time.monotonic() - when) * 1e6, 0)
        r["time_ns"] = (t * 1000).astype(np.uint64)
        r["pid"] = r["tid"] = proc.pid
        r["cpu"] = proc.pid % max(self.m.spec.nr_cpus, 1)
        r["op"] = np.where(store, S.OP_STORE, S.OP_LOAD)
        r["va"] = addrs
        pages = addrs & ~np.uint64(PAGE_SIZE - 1)
        ok, _, pidx = proc.translate(pages)
        ok[ok] = (self.m.phys.flags[pidx[ok]] & P.PRESENT) != 0
        pfn = (pidx.astype(np.int64) + self.m.phys.base_pfn).astype(np.uint64)
        r["pa"] = np.where(ok, (pfn << np.uint64(12)) | (addrs & np.uint64(PAGE_SIZE - 1)), 0)
        r["events"] = S.EV_RETIRED | S.EV_L1D_ACCESS | S.EV_TLB_ACCESS
        lat_x = rng.integers(0, 2, n)
        r["lat_xlat"] = lat_x
        r["lat_tot"] = lat_x + rng.integers(4, 6, n)
        r["pc"] = np.uint64(0xaaaad4c01000) + np.uint64(proc.pid % 4096 * 0x100) + r["op"].astype(np.uint64) * np.uint64(8)
        r = r[ok]                       # a page the twin lost meanwhile (unmapped): no physical address, no record
        return r[np.argsort(r["time_ns"], kind="stable")]
