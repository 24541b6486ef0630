"""The emulated ARM64 machine: the one object the DAMON engine, the SPE sampler and the front use.

Owns time ("emulated up to" now_us), processes and their workloads, the access checks
DAMON's vaddr/paddr operations call (damon_va_mkold/young, damon_pa_mkold/young), folio
queries, DAMOS actions, memory metrics, ground truth and the procfs texts, all behind one
internal mutex (calls come from the kdamond, ticker and FUSE threads). Contract:
docs/ARCHITECTURE.md "damond/mm: the Machine". State lives in `pagetable.PageTables`;
stepping in `access.Stepper`; folio actions in `folio_ops`.
"""
from __future__ import annotations

import errno
import math
import threading
import numpy as np

from damond.config import Config
from damond.errors import ConfigError
from damond.log import get_logger
from damond.mm import folio_ops, folios, mconfig, procfs, timing
from damond.mm import phys as P
from damond.mm.access import Stepper, StepAccesses
from damond.mm.folios import FolioArray, FolioInfo, memcg_norm
from damond.mm.pagetable import PageTables
from damond.mm.phys import uniq, BLOCK_PAGES, BLOCK_SHIFT, PAGE_SHIFT, PAGE_SIZE, PhysMem
from damond.mm.sample import SamplePlan
from damond.mm import pa_sample
from damond.mm.pa_sample import PaPlan
from damond.mm.process import HEAP_SIZE, STACK_SIZE, STACK_TOP, TEXT_BASE, Process, Vma, page_index
from damond.mm.thp import PMD_ORDER, ThpSettings
from damond.mm.truth import TruthRecorder
from damond.mm.workload import Builder, SpecError, check_spec

__all__ = ["Machine", "FolioInfo", "FolioArray", "StepAccesses", "Vma", "Process", "PAGE_SIZE"]
MAX_STEP_US = 1_000_000
PMD_SZ = np.uint64(2 << 20)
_BYTES = np.arange(256, dtype=np.uint8)
NOT_AF_LUT = _BYTES & ~np.uint8(P.AF)                                   # clear_refs
ACTIVATE_LUT = np.where(_BYTES & P.PRESENT, _BYTES | P.ACTIVE, _BYTES).astype(np.uint8)
DEACTIVATE_LUT = np.where(_BYTES & P.PRESENT, _BYTES & ~np.uint8(P.ACTIVE), _BYTES).astype(np.uint8)
NINE = np.int64(9)
_UNIFORM_SZ_OF = {True: int(PMD_SZ), False: PAGE_SIZE}     # folio size of a uniform row: PMD?
COMMS = {"mmap": "mmap_idle", "sparse-hotspot": "sparse_8g", "uniform": "uniform", "thp-hot": "hot_workload",
         "access_memory": "access_memory", "access_memory_even": "access_memory_even", "masim": "masim",
         "tiering": "tiering", "guest-db": "qemu-system-aar"}
log = get_logger("damond.mm")


class Machine:
    """See the module docstring and ARCHITECTURE.md. Build with `Machine.from_config`."""

    def __init__(self, spec: mconfig.MachineSpec, thp: ThpSettings, seed: int, clock=None):
        self.spec, self.thp, self.clock = spec, thp, clock
        self.rng = np.random.default_rng(seed)
        self.tlb_cfg = spec.tlb
        timing_of, self.timing = timing.for_preset(spec.preset, spec.tlb.arch)
        # what each node's memory costs (timing.MEMORY_KINDS); tiered: some node is not local DRAM
        self.node_memory = [timing.MEMORY_KINDS[k] for k in (spec.node_memory or ["dram"] * spec.numa_nodes)]
        self.tiered = any(k != timing.MEMORY_KINDS["dram"] for k in self.node_memory)
        self.truth: TruthRecorder | None = None     # counted ground truth, once someone asks
        self.phys = PhysMem(spec.memory, spec.numa_nodes)
        self.pt = PageTables(self.phys, thp, spec.tlb, spec.nr_cpus)
        self.stepper = Stepper(self)
        self.now_us = 0
        self.map_epoch = 0
        self.observers: list = []
        self.process_observers: list = []      # fn(event, proc): "spawn" | "exit", see add_process_observer
        self.memcgs = list(spec.memcgs)
        self._mutex = threading.RLock()
        self._next_pid = 1000
        self._dead: set[int] = set()
        self._phase_seen: dict[int, tuple] = {}
        self._procs_ver = 0                       # bumped when a process comes or goes (advance_to's cache)
        self._steady: tuple | None = None         # (_procs_ver, until_us, active): see _active
        self._last_plan: SamplePlan | None = None
        self._last_pa_plan: PaPlan | None = None    # pa_mkold's translation, for pa_young
        self._prefetch: dict[int, tuple] = {}     # pid -> what va_prefetch translated (see there)
        self._next_khugepaged_us = thp.khugepaged.scan_sleep_millisecs * 1000
        self.pid_resolver = None          # pid -> Process | None for pids with no process yet (host twins)
        log.info("machine_built", preset=spec.preset, memory=spec.memory, cpus=spec.nr_cpus,
                 nodes=spec.numa_nodes, tlb_model=spec.tlb.model, timing=timing_of, seed=seed)

    @classmethod
    def from_config(cls, config: Config, clock=None) -> "Machine":
        spec = mconfig.parse(config)
        thp = ThpSettings()
        mconfig.configure_thp(config, thp)
        m = cls(spec, thp, config.seed, clock)
        for i, w in enumerate(spec.workloads):
            try:
                m.spawn(w)
            except ConfigError:
                raise
            except (SpecError, ValueError, P.OutOfMemory) as e:
                key = getattr(e, "key", None)
                problem = getattr(e, "problem", None) or str(e) or "not enough emulated memory"
                raise ConfigError(config.path, problem, mconfig.workload_line(config, i, key)) from None
        return m

    # --- time ----------------------------------------------------------------------------------
    def advance_to(self, t_us: int) -> None:
        with self._mutex:
            while self.now_us < t_us:
                now = self.now_us
                c = self._steady
                if c is not None and c[0] == self._procs_ver and now < c[1]:
                    active = c[2]                      # every process still in the phase it was in
                    b = min(int(t_us), now + MAX_STEP_US, self._next_khugepaged_us, c[1])
                else:
                    active, b = self._active(now, min(int(t_us), now + MAX_STEP_US, self._next_khugepaged_us))
                b = max(b, now + 1)
                obs = self.stepper.step(now, b, active)
                self.now_us = b
                if obs is not None and obs.processes:
                    for fn in list(self.observers):
                        fn(obs)
                if b >= self._next_khugepaged_us:
                    folio_ops.khugepaged_scan(self.pt, [p for p in self.pt.procs.values() if p.alive])
                    self.map_epoch += 1
                    self._next_khugepaged_us = b + max(self.thp.khugepaged.scan_sleep_millisecs, 1) * 1000

    def _active(self, now: int, b: int) -> tuple[list, int]:
        """(proc, phase start, streams) of every process running a phase at `now`, and the
        step's end `b` cut at the next phase boundary; enters new phases, ends finished
        processes. Kept (self._steady) until that boundary while no process comes or goes."""
        active = []
        until, changed = None, False
        for proc in list(self.pt.procs.values()):
            w = proc.workload
            if w is None or not proc.alive:
                continue
            i, ps, pe = w.phase_at(now)
            if pe is not None:
                b = min(b, pe)
                until = pe if until is None else min(until, pe)
            if i < 0:
                continue
            if i >= len(w.phases):
                if w.exit_at_end:
                    self._exit(proc)
                    changed = True
                continue
            key = (ps, i)
            if self._phase_seen.get(proc.pid) != key:
                self._phase_seen[proc.pid] = key
                self._enter_phase(proc, w.phases[i])
                changed = True
            active.append((proc, ps, w.phases[i].streams))
        self._steady = None if changed else (self._procs_ver, math.inf if until is None else until, active)
        return active, b

    def _enter_phase(self, proc: Process, phase) -> None:
        for act in phase.actions:
            if act[0] == "clear_refs":
                blocks = proc.chunk_tbl[proc.chunk_tbl >= 0]
                self.phys.flags.apply_rows(blocks, NOT_AF_LUT)
            elif act[0] == "madvise":
                self._madvise(proc, act[1], act[2], act[3])

    # --- processes -----------------------------------------------------------------------------
    def processes(self) -> list[Process]:
        with self._mutex:
            return [p for p in self.pt.procs.values() if p.alive]

    def process(self, pid: int) -> Process | None:
        p = self.pt.procs.get(pid)          # one dict read, atomic under the GIL: no lock (every sample asks)
        return p if p is not None and p.alive else None

    def resolve_pid(self, pid: int) -> Process | None:
        """The live process `pid`, else the twin `pid_resolver` adopts for it (a real
        program, damond/host/twin.py), else None. Called without the mutex held: adopting
        reads /proc and may wait for the program's tracer."""
        p = self.process(pid)
        if p is None and self.pid_resolver is not None:
            p = self.pid_resolver(pid)
        return p

    def adopt_twin(self, pid: int, comm: str) -> Process:
        """An empty process under a real program's pid; the twin fills its VMAs and pages.
        ValueError if an emulated process already has that pid."""
        with self._mutex:
            old = self.pt.procs.get(pid)
            if old is not None and old.alive:
                raise ValueError(f"pid {pid} is an emulated process")
            proc = Process(pid, comm[:15], 0, 0, "/")
            self.pt.procs[pid] = proc
            self.map_epoch += 1
            self._procs_ver += 1
            log.info("twin_process", pid=pid, comm=proc.comm)
            self._notify_process("spawn", proc)     # exec's /proc binds cover twins too
            return proc

    def new_kthread_pid(self) -> int:
        with self._mutex:
            self._next_pid += 1
            return self._next_pid

    def spawn(self, spec: dict) -> int:
        """Start a workload process from a [[workload]] table; raises SpecError (a ValueError)."""
        with self._mutex:
            kind = check_spec(spec)
            self._next_pid += 1
            pid = self._next_pid
            cpu = spec.get("cpu", (pid - 1001) % self.spec.nr_cpus)
            node = spec.get("node", 0)
            if not isinstance(cpu, int) or not 0 <= cpu < self.spec.nr_cpus:
                raise SpecError("cpu", f"cpu must be in [0, {self.spec.nr_cpus - 1}]")
            if not isinstance(node, int) or not 0 <= node < self.spec.numa_nodes:
                raise SpecError("node", f"node must be in [0, {self.spec.numa_nodes - 1}]")
            memcg = memcg_norm(spec.get("memcg", "/"))
            if memcg not in self.memcgs:
                self.memcgs.append(memcg)
            comm = spec.get("comm", COMMS[kind])
            proc = Process(pid, comm[:15], cpu, node, memcg)
            self.pt.procs[pid] = proc
            self._procs_ver += 1
            try:
                self._layout(proc)
                heap = [v for v in proc.vmas() if v.name == "[heap]"][0]

                def mapper(length, name, anon, shmem, hint, huge, where):
                    length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
                    if where == "heap":
                        start = heap.end
                        return self.pt.new_vma(proc, start, length, name="", hint=hint)
                    return self.pt.new_vma(proc, proc.mmap_area(length), length, anon=anon, shmem=shmem,
                                           name=name, hint=hint, perms="rw-s" if shmem else "rw-p", huge=huge)
                w = Builder(spec, mapper, self.spec.access_rate, self.spec.mem_bandwidth, self.spec.base_dir).build()
            except BaseException:
                self._exit(proc)
                del self.pt.procs[pid]
                raise
            w.t0_us = self.now_us + int(float(spec.get("start_s", 0)) * 1e6)
            proc.workload = w
            self._procs_ver += 1
            log.info("process_spawned", pid=pid, comm=proc.comm, kind=kind)
            self._notify_process("spawn", proc)
            return pid

    def _layout(self, proc: Process) -> None:
        jit = int(self.rng.integers(0, 1 << 12)) << 16
        text = TEXT_BASE + jit
        self.pt.new_vma(proc, text, 64 << 10, anon=False, name=f"/usr/bin/{proc.comm}", perms="r-xp")
        self.pt.new_vma(proc, text + (2 << 20), HEAP_SIZE, name="[heap]")
        proc.mmap_next -= int(self.rng.integers(0, 1 << 12)) << 21
        libc = proc.mmap_area(1 << 20, PAGE_SIZE)
        self.pt.new_vma(proc, libc, 1 << 20, anon=False, name="/usr/lib/aarch64-linux-gnu/libc.so.6", perms="r-xp")
        stack_top = STACK_TOP - (int(self.rng.integers(0, 1 << 10)) << 16)
        self.pt.new_vma(proc, stack_top - STACK_SIZE, STACK_SIZE, name="[stack]")

    def kill(self, pid: int) -> None:
        with self._mutex:
            p = self.pt.procs.get(pid)
            if p is not None and p.alive:
                self._exit(p)

    def _exit(self, proc: Process) -> None:
        if self.truth is not None:
            self.truth.flush()                 # before the pages are freed
        for v in proc.vmas():
            self.pt.unmap_vma(proc, v)
        proc.alive = False
        self.map_epoch += 1
        self._procs_ver += 1
        self._prefetch.pop(proc.pid, None)
        log.info("process_exited", pid=proc.pid, comm=proc.comm)
        self._notify_process("exit", proc)

    def access(self, pid: int, vaddrs: np.ndarray) -> np.ndarray:
        """An explicit access trace of `pid` (in order) through the TLB: faults missing pages,
        sets the AF of every leaf that walks. Returns per access whether it walked. With the
        exact model this is the reference LRU; with the fast model a present leaf counts as
        TLB-resident unless it was invalidated (COLD)."""
        with self._mutex:
            proc = self._proc_or_none(pid)
            a = np.asarray(vaddrs, np.uint64) & ~np.uint64(PAGE_SIZE - 1)
            walked = np.zeros(len(a), bool)
            if proc is None or not len(a):
                return walked
            ok, vi, pidx = proc.translate(a)
            fl = self.phys.flags
            present = ok.copy()
            present[ok] = (fl[pidx[ok]] & P.PRESENT) != 0
            vmas = proc.vmas()
            inside = np.zeros(len(a), bool)
            for i in uniq(vi[vi >= 0]).tolist():
                v = vmas[i]
                sel = (vi == i) & ~present & (a >= np.uint64(v.start)) & (a < np.uint64(v.end))
                inside |= sel
                if sel.any():
                    self.pt.fault(proc, v, a[sel])
            ok, _, pidx = proc.translate(a)
            ok[ok] = (fl[pidx[ok]] & P.PRESENT) != 0
            faulted = inside & ok
            if self.pt.exact is not None:
                w = self.stepper._exact_walks(proc, a[ok], pidx[ok], faulted[ok])
            else:
                w = faulted[ok] | ((fl[self.pt.tlb_loc(pidx[ok])] & P.COLD) != 0)
            walked[ok] = w
            if self.truth is not None:
                self.truth.mark(pidx[ok], self.now_us)
            p = pidx[ok][w]
            fl.set_bits(self.pt.af_loc(p), P.AF)
            fl.clear_bits(self.pt.tlb_loc(p), P.COLD)
            self.map_epoch += 1
            return walked

    # --- vaddr access checks ---------------------------------------------------------------------
    def _present(self, pid: int, addrs: np.ndarray):
        a = np.asarray(addrs, np.uint64)
        proc = self.process(pid)
        if proc is None:
            return a, np.zeros(len(a), bool), np.zeros(len(a), np.int64)
        ok, _, pidx = proc.translate(a)
        ok[ok] = (self.phys.flags[pidx[ok]] & P.PRESENT) != 0
        return a, ok, pidx

    def _plan(self, pid: int, addrs: np.ndarray, reuse: bool = True, proc: Process | None = None) -> SamplePlan | None:
        """The translation of `addrs` for the access checks; with `reuse`, the last one while
        the addresses and the mapping are unchanged (see sample.py). `proc`: the live
        process `pid`, when the caller just looked it up."""
        if proc is None:
            proc = self._proc_or_none(pid)
            if proc is None:
                return None
        a = np.asarray(addrs, np.uint64)
        key = (proc.gen, self.phys.layout_gen, self.map_epoch)
        plan = self._last_plan
        if reuse and plan is not None and plan.matches(pid, a, key):
            return plan
        if not reuse:
            pf = self._prefetch.get(pid)
            if pf is not None:
                if pf[0] == key:
                    i = pf[1].get(id(a))
                    if i is not None and pf[2][i] is a and (pf[5] is None or pf[5][i]):
                        plan = self._last_plan = SamplePlan.uniform(pid, a, key, pf[3][i], pf[4][i])
                        return plan
                else:
                    del self._prefetch[pid]
        blk = proc.one_vma_blocks(a)
        if blk is None:
            ok, _, pidx = proc.translate(a)
            plan = self._last_plan = SamplePlan(pid, a.copy(), key, ok, pidx, self.phys)
            return plan
        kinds = self.phys.block_kinds()
        if kinds is not None:
            k = kinds.take(blk)
            kind = int(k[0])
            if kind and not np.count_nonzero(k != kind):        # one kind of block throughout
                if kind == P.KIND_PMD:
                    blk <<= NINE
                    plan = SamplePlan.uniform(pid, a.copy(), key, blk, PMD_SZ)
                else:
                    plan = SamplePlan.uniform(pid, a.copy(), key, page_index(blk, a), np.uint64(PAGE_SIZE))
                self._last_plan = plan
                return plan
        plan = self._last_plan = SamplePlan(pid, a.copy(), key, None, page_index(blk, a), self.phys)
        return plan

    def va_prefetch(self, pid: int, rows: list[np.ndarray], block: np.ndarray | None = None) -> None:
        """The sampling addresses of DAMON's coming samples of `pid`, one read-only uint64
        array per sample, each to be passed as is to va_mkold and then va_young: translate
        them all now (one numpy pass instead of one per sample). `block`: the same rows as
        one 2-D array, when the caller has it (saves stacking them). A row's translation is
        used only while the mapping is what it was here (the plan key) and only for rows
        whose pages all sit in blocks of one kind (sample.SamplePlan.uniform); any other
        address array is translated when it is checked, as before."""
        with self._mutex:
            self._prefetch.pop(pid, None)
            proc = self._proc_or_none(pid)
            if proc is None or not rows or self.tlb_cfg.flush_on_mkold or proc.twin is not None:
                return
            if block is None:
                if any(r.flags.writeable or r.dtype != np.uint64 for r in rows):
                    return
                a2 = np.stack(rows)
            elif block.flags.writeable or block.dtype != np.uint64 or len(block) != len(rows):
                return
            else:
                a2 = block
            blk = proc.one_vma_blocks(a2.ravel())
            kinds = self.phys.block_kinds() if blk is not None else None
            if kinds is None:
                return
            blk = blk.reshape(a2.shape)
            k = kinds.take(blk)
            k0 = int(k.flat[0])
            if k0 and int(np.minimum.reduce(k, axis=None)) == int(np.maximum.reduce(k, axis=None)):
                # one kind of block throughout (the usual case): every row is uniform
                uniform = None
                szs = [_UNIFORM_SZ_OF[k0 == P.KIND_PMD]] * len(rows)
                leaf = blk << NINE if k0 == P.KIND_PMD else page_index(blk, a2)
            else:
                kind = k[:, 0]
                uniform = ((kind != 0) & (k == kind[:, None]).all(axis=1)).tolist()
                pmd = kind == P.KIND_PMD
                blk <<= NINE
                leaf = np.where(pmd[:, None], blk, blk | ((a2.view(np.int64) >> PAGE_SHIFT) & (BLOCK_PAGES - 1)))
                szs = [_UNIFORM_SZ_OF[p] for p in pmd.tolist()]
            key = (proc.gen, self.phys.layout_gen, self.map_epoch)
            leaf.setflags(write=False)         # plan.af of those rows: the write log keeps them as they are
            # (key, id(row) -> i, rows, leaf per row, folio size per row, row i uniform (None: all))
            self._prefetch[pid] = (key, dict(zip(map(id, rows), range(len(rows)))), rows, leaf, szs, uniform)

    def va_mkold(self, pid: int, addrs: np.ndarray) -> None:
        with self._mutex:
            proc = self._proc_or_none(pid)
            if proc is not None and proc.twin is not None:
                proc.twin.mkold(proc, addrs)          # a real program: protect the sampled units
            if self.tlb_cfg.flush_on_mkold:
                _, ok, pidx = self._present(pid, addrs)
                self.pt.mkold(pidx[ok], np.full(int(ok.sum()), pid))
                self.map_epoch += 1
                return
            # a new sample: new addresses
            plan = self._plan(pid, addrs, False, proc if proc is not None and proc.twin is None else None)
            if plan is not None:
                plan.mkold(self.phys.flags)

    def va_young(self, pid: int, addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._mutex:
            proc = self._proc_or_none(pid)
            if proc is not None and proc.twin is not None:
                proc.twin.collect(proc)               # a real program: the units it touched are young
            elif proc is not None:
                plan = self._last_plan                # the plan va_mkold made for this very (read-only) array
                if (plan is not None and addrs is plan.addrs and plan.pid == pid and not addrs.flags.writeable
                        and plan.key == (proc.gen, self.phys.layout_gen, self.map_epoch)):
                    return plan.young(self.phys.flags)
            plan = self._plan(pid, addrs, True, proc if proc is not None and proc.twin is None else None)
            if plan is None:
                n = len(addrs)
                return np.zeros(n, bool), np.full(n, PAGE_SIZE, np.uint64)
            return plan.young(self.phys.flags)

    # --- paddr access checks -----------------------------------------------------------------------
    def ram_ranges(self) -> list[tuple[int, int]]:
        return self.phys.ram_ranges()

    def _pa_plan(self, paddrs: np.ndarray) -> PaPlan:
        """The translation of `paddrs` for the paddr checks: the last one while the
        addresses and the layout are unchanged (see pa_sample.py)."""
        a = np.asarray(paddrs, np.uint64)
        key = (self.phys.layout_gen, self.map_epoch)
        plan = self._last_pa_plan
        if plan is None or not plan.matches(a, key):
            plan = self._last_pa_plan = PaPlan(a if not a.flags.writeable else a.copy(), key, self.phys)
        return plan

    def pa_mkold(self, paddrs: np.ndarray) -> None:
        with self._mutex:
            plan = self._pa_plan(paddrs)
            fl = self.phys.flags
            if not self.tlb_cfg.flush_on_mkold:
                plan.mkold(fl, self.phys.order)
                return
            heads = plan.uh
            pa_sample.mkold_general(fl, self.phys.order, heads)
            if len(heads):
                fl[self.pt.tlb_loc(heads)] |= P.COLD
                self.map_epoch += 1

    def pa_young(self, paddrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._mutex:
            return self._pa_plan(paddrs).young(self.phys.flags, self.phys.order)

    # --- folios -------------------------------------------------------------------------------------
    def folio_walk(self, pid: int, addr: int) -> FolioInfo | None:
        with self._mutex:
            return folios.folio_walk(self, pid, addr)

    def va_orders(self, pid: int, addrs: np.ndarray) -> np.ndarray:
        """Order of the folio mapping each of `addrs` (int64), -1 where nothing is present:
        what folio_walk(pid, a).order says for each, in one translation."""
        with self._mutex:
            a, ok, pidx = self._present(pid, addrs)
            out = np.full(len(a), -1, np.int64)
            if ok.any():
                out[ok] = self.phys.order[pidx[ok]]
            return out

    def va_folios(self, pid: int, start: int, end: int) -> FolioArray:
        """Every folio mapped in [start, end) of pid, in address order, with `va` and `addr`
        (see folios.FolioArray); empty for a dead or unknown pid."""
        with self._mutex:
            proc = self._proc_or_none(pid)
            if proc is None:
                return folios.va_folios(self, None, 0, 0)
            return folios.va_folios(self, proc, int(start), int(end))

    def pa_folios(self, start: int, end: int) -> FolioArray:
        with self._mutex:
            return folios.pa_folios(self, start, end)

    # --- actions ------------------------------------------------------------------------------------
    def _proc_or_none(self, pid):
        p = self.pt.procs.get(pid)
        return p if p is not None and p.alive else None

    def split_folio_to_order(self, pid: int, addr: int, new_order: int) -> int:
        with self._mutex:
            proc = self._proc_or_none(pid)
            if proc is None:
                return -errno.ESRCH
            before = self.folio_walk(pid, addr)
            r = folio_ops.split_folio(self.pt, proc, int(addr), int(new_order))
            if r == 0:
                self.map_epoch += 1
                if before is not None and int(before.order) == PMD_ORDER:
                    folio_ops.note_damos_split(self.pt, pid, int(addr))
            elif r != -errno.ENOENT:
                o = self.folio_walk(pid, addr)
                if o is not None:
                    self.thp.count(o.order, "split_failed")
            return r

    def collapse_range(self, pid: int, addr: int, order: int = 9) -> int:
        with self._mutex:
            proc = self._proc_or_none(pid)
            if proc is None:
                return -errno.ESRCH
            r = folio_ops.collapse(self.pt, proc, int(addr), int(order))
            if r == 0:
                self.map_epoch += 1
                self.pt.damos_split.pop((pid, int(addr)), None)     # DAMOS collapsed it: no ping-pong to count
            return r

    def madvise(self, pid: int, start: int, end: int, advice: str) -> int:
        with self._mutex:
            proc = self._proc_or_none(pid)
            if proc is None:
                return -errno.ESRCH
            return self._madvise(proc, int(start), int(end), advice)

    def _madvise(self, proc: Process, start: int, end: int, advice: str) -> int:
        if start % PAGE_SIZE or end < start:
            return -errno.EINVAL
        if advice not in ("willneed", "cold", "pageout", "hugepage", "nohugepage", "collapse"):
            return -errno.EINVAL
        end = (end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        vmas = [v for v in proc.vmas() if v.start < end and start < v.end]
        covered = sum(min(v.end, end) - max(v.start, start) for v in vmas)
        ret = 0 if covered == end - start else -errno.ENOMEM
        self.map_epoch += 1
        for v in vmas:
            s, e = max(v.start, start), min(v.end, end)
            if advice in ("hugepage", "nohugepage"):
                v.hugepage_hint = advice
            elif advice == "pageout":
                folio_ops.pageout_pages(self.pt, proc, v, s, e)
            elif advice == "cold":
                for a, b in self.pt._block_slices(proc, s, e):
                    self.phys.flags[a:b] &= ~np.uint8(P.ACTIVE)
                _, ok, pidx = self._present(proc.pid, np.arange(s, e, PAGE_SIZE, dtype=np.uint64))
                self.pt.mkold(pidx[ok])
                self.pt.invalidate(proc, s, e)
            elif advice == "willneed":
                swapped = np.arange(s, e, PAGE_SIZE, dtype=np.uint64)
                ok, _, pidx = proc.translate(swapped)
                back = swapped[ok][(self.phys.flags[pidx[ok]] & P.SWAP) != 0]
                if len(back):
                    self.pt.fault(proc, v, back)
            elif advice == "collapse":
                if not v.anon:
                    ret = -errno.EINVAL
                    continue
                a = (s + (2 << 20) - 1) & ~((2 << 20) - 1)
                while a + (2 << 20) <= e:
                    r = folio_ops.collapse(self.pt, proc, a)
                    blk = proc.chunk_tbl[v.tbl_off + (a >> BLOCK_SHIFT) - v.chunk0]
                    already = blk >= 0 and self.phys.flags[blk * BLOCK_PAGES] & P.PMD
                    if r and not already:
                        ret = r if r != -errno.EINVAL or ret == 0 else ret
                    a += 2 << 20
        return ret

    def pageout_range(self, pid: int | None, start: int, end: int) -> int:
        with self._mutex:
            self.map_epoch += 1
            if pid is None:
                return folio_ops.pageout_phys(self.pt, int(start), int(end))
            proc = self._proc_or_none(pid)
            if proc is None:
                return 0
            return sum(folio_ops.pageout_pages(self.pt, proc, v, max(v.start, start), min(v.end, end))
                       for v in proc.vmas() if v.start < end and start < v.end)

    def migrate_range(self, pid: int | None, start: int, end: int, nid: int) -> int:
        with self._mutex:
            if not 0 <= nid < self.spec.numa_nodes:
                return 0
            self.map_epoch += 1
            moved = 0
            if pid is None:
                ok, lo = self.phys.pidx_of_paddr(np.array([max(start, P.RAM_BASE)], np.uint64))
                b0 = int(lo[0]) // BLOCK_PAGES if ok[0] else self.phys.nr_blocks
                b1 = min(((end - 1 - P.RAM_BASE) >> BLOCK_SHIFT) + 1, self.phys.nr_blocks) if end > P.RAM_BASE else 0
                # block by block in address order; runs of one process's blocks go together
                run, run_proc = [], None
                bs = np.arange(b0, max(b1, b0), dtype=np.int64)
                bs = bs[(self.phys.blk_owner[bs] >= 0) & (self.phys.blk_node[bs] != nid)]
                for b, owner, vc in zip(bs.tolist(), self.phys.blk_owner[bs].tolist(),
                                        self.phys.blk_vchunk[bs].tolist()):
                    if owner in self.pt.vma_by_uid:
                        proc, v = self.pt.vma_by_uid[owner]
                        if proc is not run_proc and run:
                            moved += folio_ops.migrate_blocks(self.pt, run_proc, run, nid)
                            run = []
                        run_proc = proc
                        run.append((v.tbl_off + vc - v.chunk0, b))
                if run:
                    moved += folio_ops.migrate_blocks(self.pt, run_proc, run, nid)
                return moved
            proc = self._proc_or_none(pid)
            if proc is None:
                return 0
            for v in proc.vmas():
                if v.start < end and start < v.end:
                    c0 = (max(v.start, start) >> BLOCK_SHIFT) - v.chunk0
                    c1 = ((min(v.end, end) - 1) >> BLOCK_SHIFT) - v.chunk0 + 1
                    pairs = [(v.tbl_off + c, int(proc.chunk_tbl[v.tbl_off + c])) for c in range(c0, c1)]
                    moved += folio_ops.migrate_blocks(self.pt, proc, [p for p in pairs if p[1] >= 0], nid)
            return moved

    def lru_prio(self, pstart: int, pend: int, prio: bool) -> int:
        with self._mutex:
            base = self.phys.base_pfn
            s = max((pstart >> PAGE_SHIFT) - base, 0)
            e = min((pend >> PAGE_SHIFT) - base, self.phys.nr_pages)
            if e <= s:
                return 0
            fl = self.phys.flags
            pres = fl.count_range(s, e, P.PRESENT, P.PRESENT)
            fl.apply_range(s, e, ACTIVATE_LUT if prio else DEACTIVATE_LUT)
            return pres * PAGE_SIZE

    # --- metrics -------------------------------------------------------------------------------------
    def free_mem_rate(self) -> int:
        with self._mutex:
            return (self.phys.nr_pages - self.phys.present_pages()) * 1000 // self.phys.nr_pages

    def node_mem_bp(self, nid: int, used: bool) -> int:
        with self._mutex:
            if not 0 <= nid < self.spec.numa_nodes:       # invalid_mem_node(): 0 % used, 100 % free
                return 0 if used else 10000
            total = int(self.phys.node_blocks[nid]) * BLOCK_PAGES
            u = int(self.phys.node_present[nid])
            return (u if used else total - u) * 10000 // max(total, 1)

    def charge_memstall(self, ns: int) -> None:
        """Account `ns` of memory stall (reclaim, migration, compaction work done for a task)."""
        with self._mutex:
            self.pt.memstall_ns += int(ns)

    def some_mem_psi_total_us(self) -> int:
        """psi_system.total[PSI_AVGS][PSI_MEM_SOME] in us: emulated memory stall time (swap-in
        refaults, charged reclaim/migration/compaction), at most the time the machine ran."""
        with self._mutex:
            return min(self.pt.memstall_ns // 1000, self.now_us)

    def node_memcg_bp(self, nid: int, path: str, used: bool) -> int:
        """damos_get_node_memcg_used_bp(): resident pages of memcg `path` (and its children,
        as the memcg's lruvec counts are hierarchical) on node `nid`, in bp of the node's
        pages; `used=False` gives the rest. A missing memcg or node: 0 used / 10000 free."""
        with self._mutex:
            cg = memcg_norm(path)
            if cg not in self.memcgs or not 0 <= nid < self.spec.numa_nodes:
                return 0 if used else 10000
            total = int(self.phys.node_blocks[nid]) * BLOCK_PAGES
            inside = {uid for uid, (proc, _) in self.pt.vma_by_uid.items()
                      if cg == "/" or proc.memcg == cg or proc.memcg.startswith(cg + "/")}
            blocks = np.flatnonzero((self.phys.blk_node == nid)
                                    & np.isin(self.phys.blk_owner, np.fromiter(inside, np.int32, len(inside))))
            u = self.phys.flags.count(P.PRESENT, P.PRESENT, blocks)
            return (u if used else total - u) * 10000 // max(total, 1)

    def active_mem_bp(self, active: bool) -> int:
        with self._mutex:
            pres = self.phys.present_pages()
            if not pres:
                return 0
            act = self.phys.flags.count(P.PRESENT | P.ACTIVE, P.PRESENT | P.ACTIVE)
            return (act if active else pres - act) * 10000 // pres

    def memcg_exists(self, path: str) -> bool:
        return memcg_norm(path) in self.memcgs

    def memcg_id(self, path: str) -> int | None:
        """The id pa_folios/va_folios report for folios charged to memcg `path` (its index
        in `memcgs` + 1); None if no such memcg."""
        p = memcg_norm(path)
        return self.memcgs.index(p) + 1 if p in self.memcgs else None

    # --- ground truth -----------------------------------------------------------------------------------
    def truth_start(self) -> int:
        """Start counting which pages are touched (idempotent); returns when counting began."""
        with self._mutex:
            if self.truth is None:
                self.truth = TruthRecorder(self.phys.nr_pages, self.now_us)
                log.info("truth_recording", since_us=self.now_us)
            return self.truth.t0_us

    def truth_touched(self, pid: int, start: int, end: int, since_us: int) -> np.ndarray | None:
        """Per 4 KiB page of [start, end) of pid: counted as touched in [since_us, now).
        None when counting was not running for the whole window (see truth_start)."""
        with self._mutex:
            rec = self.truth
            if rec is None or not rec.covers(since_us):
                return None
            lo, hi = start & ~(PAGE_SIZE - 1), (end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
            proc = self.pt.procs.get(pid)
            out = np.zeros((hi - lo) // PAGE_SIZE, bool)
            if proc is None or not proc.alive or hi <= lo:
                return out
            va = np.arange(lo, hi, PAGE_SIZE, dtype=np.uint64)
            ok, _, pidx = proc.translate(va)
            ok[ok] = (self.phys.flags[pidx[ok]] & P.PRESENT) != 0
            out[ok] = rec.touched(pidx[ok], since_us)
            return out

    def truth_counted(self, pid: int, start: int, end: int, since_us: int) -> int | None:
        """Bytes of [start, end) of pid counted as touched in [since_us, now); None as truth_touched."""
        with self._mutex:
            proc = self.pt.procs.get(pid)
            if self.truth is None or not self.truth.covers(since_us):
                return None
            if proc is None or not proc.alive:
                return 0
            total = 0
            for v in proc.vmas():                      # only mapped ranges: translate what exists
                s, e = max(v.start, start), min(v.end, end)
                if s < e:
                    total += int(np.count_nonzero(self.truth_touched(pid, s, e, since_us))) * PAGE_SIZE
            return total

    def truth_accessed(self, pid: int, start: int, end: int, t0_us: int, t1_us: int) -> int:
        """The analytic (expected) value from the workload's definition: a cross-check for
        the tests; reports use truth_counted."""
        with self._mutex:
            proc = self.pt.procs.get(pid)
            if proc is None or proc.workload is None or t1_us <= t0_us:
                return 0
            w = proc.workload
            lo, hi = start >> PAGE_SHIFT, (end + PAGE_SIZE - 1) >> PAGE_SHIFT
            total, t = 0.0, t0_us
            while t < t1_us:
                i, ps, pe = w.phase_at(t)
                b = t1_us if pe is None else min(pe, t1_us)
                if 0 <= i < len(w.phases):
                    per = sum(self.stepper.truth_pages(s, ps, t, b, lo, hi) for s in w.phases[i].streams)
                    total += per
                if b <= t:
                    break
                t = b
            return int(min(total, hi - lo)) * PAGE_SIZE

    # --- procfs -----------------------------------------------------------------------------------------
    def proc_maps(self, pid: int) -> str:
        with self._mutex:
            p = self.process(pid)
            return procfs.maps(self, p) if p else ""

    def proc_smaps(self, pid: int) -> str:
        with self._mutex:
            p = self.process(pid)
            return procfs.smaps(self, p) if p else ""

    def proc_smaps_rollup(self, pid: int) -> str:
        with self._mutex:
            p = self.process(pid)
            return procfs.smaps_rollup(self, p) if p else ""

    # --- observers --------------------------------------------------------------------------------------
    def add_step_observer(self, fn) -> None:
        with self._mutex:
            self.observers.append(fn)

    def add_process_observer(self, fn) -> None:
        """fn(event, proc) after a process appeared ("spawn") or exited ("exit"), emulated or
        twin alike. Called under the machine's lock from whatever thread changed the process
        list: fn must only record or enqueue (never block, never call back into FUSE)."""
        with self._mutex:
            self.process_observers.append(fn)

    def remove_process_observer(self, fn) -> None:
        with self._mutex:
            if fn in self.process_observers:
                self.process_observers.remove(fn)

    def _notify_process(self, event: str, proc: Process) -> None:
        for fn in list(self.process_observers):
            try:
                fn(event, proc)
            except Exception:       # an observer's bug must not break the machine
                log.exception("process_observer_failed", event=event, pid=proc.pid)

    def remove_step_observer(self, fn) -> None:
        with self._mutex:
            if fn in self.observers:
                self.observers.remove(fn)
