"""Emulated twins of real programs: a real pid becomes a Machine process DAMON can monitor.

Owns the mirror of a real process in the emulated machine: its VMAs from /proc/PID/maps
(madvise hints from the VmFlags `hg`/`nh` of /proc/PID/smaps), its populated pages from
the present bit of /proc/PID/pagemap, faulted into the twin so folio sizes follow the
emulated THP policy (AnonHugePages, split, collapse and pageout are the emulated
machine's; the real memory is never touched by DAMOS). A poll thread keeps twins in step
(maps every `refresh_ms` and at once when the tracer reports a mapping change; smaps when
a VMA appears or the program madvises; pagemap on mapping changes, else every second),
and ends a twin when its process is reaped (a zombie keeps its pid, as a dead task keeps
its struct, but loses its memory), so the kdamond stops as the kernel's does.

Access checks (called by the Machine under its mutex): `mkold` asks the preloaded helper
(tracing.py) to protect the unit of each sampled address that the twin maps with one leaf
(2 MiB for a PMD-mapped folio, 64 KiB for a contpte one, else 4 KiB); `collect` sets the
twin's accessed bit for every unit the program touched since (faulting the page in if the
twin did not have it yet). Only anonymous and shmem mappings are protected, never the
stack, [vvar]/[vdso], an executable's .bss or the tracer's own table. A PMD unit whose real
pages are mostly present is first collapsed into a host THP by the helper (MADV_COLLAPSE;
the real process then has the huge page the emulated machine gives it), so arming and
restoring it costs one PMD update instead of 512 PTE updates (bench/twins_speed.py).
"""
from __future__ import annotations

import os
import threading
from bisect import bisect_right
import time
from dataclasses import dataclass

import numpy as np

from damond.host import tracing
from damond.host.tracing import real_proc
from damond.log import get_logger
from damond.mm import phys as P
from damond.mm.phys import PAGE_SIZE

log = get_logger("damond.host")
MAX_PAGEMAP_VMA = 64 << 30           # never read pagemap of reservations larger than this
PAGEMAP_S = 1.0                      # pagemap of unchanged mappings at most this often (DAMON's update interval)
SPECIAL = ("[vvar]", "[vdso]", "[vsyscall]", "[vvar_vclock]", "[uprobes]")
UNIT_PMD, UNIT_CONT = 2 << 20, 64 << 10
ADOPT_AFTER_S = 0.2                  # a traced process connected this long becomes a twin unasked
# A 2 MiB unit the twin maps with a PMD folio is backed by a host THP (tracing.HOST_THP) when
# at least this many of its 512 real pages are present: protecting it then rewrites one PMD,
# not 512 PTEs, and the real memory of the unit grows at most twofold to match the twin's.
HOST_THP_MIN_PAGES = 256
ARM_WAIT_S = 0.02
# Host CPU steal: a sample window in which the program was runnable but did not get a host
# CPU is stretched until it has had a window of CPU time or stops being runnable (with its
# completed run-queue waits added), as on the emulated machine, where it has a CPU; at most
# STRETCH_MAX x the window and STRETCH_MAX_S in all. Read from the process CPU clock and
# /proc/PID/task/*/schedstat (run_delay) and stat (state).
STRETCH_MAX, STRETCH_MAX_S, STRETCH_TASKS = 2.0, 0.01, 64


@dataclass
class MapEntry:
    """One line of /proc/PID/maps."""
    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    name: str
    tmpfs_huge: str | None = None    # a file on a tmpfs mount: that mount's huge= option

    @property
    def anon(self) -> bool:
        return self.inode == 0 and (self.name == "" or self.name.startswith("[anon:") or self.name in ("[heap]", "[stack]"))

    @property
    def shmem(self) -> bool:
        n = self.name
        return self.perms[3] == "s" and (n.startswith(("/dev/zero", "/SYSV", "/dev/shm/", "/memfd:"))
                                         or (self.inode == 0 and not n) or self.tmpfs_huge is not None)


def parse_maps(text: str) -> list[MapEntry]:
    out = []
    for line in text.splitlines():
        f = line.split(None, 5)
        if len(f) < 5:
            continue
        s, e = f[0].split("-")
        out.append(MapEntry(int(s, 16), int(e, 16), f[1], int(f[2], 16), f[3], int(f[4]),
                            f[5].strip() if len(f) > 5 else ""))
    return out


def parse_tmpfs_mounts(text: str) -> dict[tuple[int, int], str]:
    """/proc/PID/mountinfo -> {(major, minor): huge= option} of its tmpfs mounts ("never"
    when the mount has none, as shmem's default)."""
    out = {}
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        f, g = pre.split(), post.split()
        if not sep or len(f) < 3 or len(g) < 3 or g[0] != "tmpfs" or ":" not in f[2]:
            continue
        huge = next((o[5:] for o in g[2].split(",") if o.startswith("huge=")), "never")
        major, minor = f[2].split(":")
        out[(int(major), int(minor))] = huge
    return out


def mark_tmpfs(entries: list[MapEntry], mounts: dict[tuple[int, int], str]) -> None:
    """Shared mappings of files on a tmpfs mount are shmem (the kernel's shmem folios,
    PMD-sized as the mount's huge= says)."""
    for e in entries:
        if e.inode and e.perms[3] == "s" and ":" in e.dev:
            major, minor = e.dev.split(":")
            e.tmpfs_huge = mounts.get((int(major, 16), int(minor, 16)))


def perms_of(prot: int, flag: str) -> str:
    return ("r" if prot & 1 else "-") + ("w" if prot & 2 else "-") + ("x" if prot & 4 else "-") + flag


def canonical(entries: list[MapEntry], armed: dict[int, tuple[int, int]]) -> list[MapEntry]:
    """The program's own view of its mappings: pieces that are only our protection
    (`armed`: unit start -> (len, original prot)) get their original perms back, and the
    pieces the kernel split for them are merged again."""
    out: list[MapEntry] = []
    starts = sorted(armed)
    for e in entries:
        if e.perms.startswith("---") and armed:
            prot = _covered(starts, armed, e.start, e.end)      # the kernel merges adjacent units
            if prot is not None:
                e = MapEntry(e.start, e.end, perms_of(prot, e.perms[3]), e.offset, e.dev, e.inode, e.name,
                             e.tmpfs_huge)
        p = out[-1] if out else None
        if (p is not None and p.end == e.start and p.perms == e.perms and p.name == e.name and p.dev == e.dev
                and p.inode == e.inode and (not e.inode or p.offset + (p.end - p.start) == e.offset)):
            out[-1] = MapEntry(p.start, e.end, p.perms, p.offset, p.dev, p.inode, p.name, p.tmpfs_huge)
        else:
            out.append(e)
    return out


def _covered(starts: list[int], armed: dict[int, tuple[int, int]], lo: int, hi: int) -> int | None:
    """The prot of the units covering [lo, hi) completely, None if they do not."""
    i = max(bisect_right(starts, lo) - 1, 0)
    at, prot = lo, None
    while i < len(starts) and starts[i] <= at < hi:
        s = starts[i]
        ln, p = armed[s]
        if s + ln > at:
            at, prot = s + ln, p if prot is None else prot
        i += 1
    return prot if at >= hi else None


def parse_vmflags(text: str) -> dict[int, str]:
    """start -> "hugepage"/"nohugepage" from the VmFlags lines of smaps."""
    hints, cur = {}, None
    for line in text.splitlines():
        if line[:1] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
            cur = int(line.split("-", 1)[0], 16)
        elif line.startswith("VmFlags:") and cur is not None:
            fl = line.split()[1:]
            if "hg" in fl:
                hints[cur] = "hugepage"
            elif "nh" in fl:
                hints[cur] = "nohugepage"
    return hints


def prot_bits(perms: str) -> int:
    return (1 if perms[0] == "r" else 0) | (2 if perms[1] == "w" else 0) | (4 if perms[2] == "x" else 0)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in ticks) of a real process, None if it does not exist."""
    try:
        with open(f"{real_proc()}/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rfind(")") + 2:].split()
    return rest[0], int(rest[19])


def sched_sample(pid: int) -> tuple[int, int, bool] | None:
    """(CPU ns the process has run, ns its threads waited runnable on a host run queue, any
    thread runnable now) of real `pid` (waits and states of its first STRETCH_TASKS threads);
    None if it has gone. The CPU time is the process CPU clock (exact, also for a thread on a
    CPU now); run_delay in schedstat only grows when a wait ends."""
    base = f"{real_proc()}/{pid}/task"
    try:
        run = time.clock_gettime_ns(((~pid) << 3) | 2)       # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
        tids = os.listdir(base)[:STRETCH_TASKS]
    except OSError:
        return None
    delay = 0
    runnable = False
    for t in tids:
        try:
            with open(f"{base}/{t}/schedstat") as f:
                a = f.read().split()
            with open(f"{base}/{t}/stat") as f:
                st = f.read()
        except OSError:
            continue
        delay += int(a[1])
        runnable |= st[st.rfind(")") + 2:st.rfind(")") + 3] == "R"
    return run, delay, runnable


def read_comm(pid: int) -> str:
    try:
        with open(f"{real_proc()}/{pid}/comm") as f:
            return f.read().strip()[:15]
    except OSError:
        return "?"


class Twin:
    """The emulated side of one real process."""

    def __init__(self, machine, pid: int, chan: tracing.Channel, starttime: int):
        self.m, self.pid, self.chan, self.starttime = machine, pid, chan, starttime
        self.protectable: set[int] = set()          # uids of twin VMAs that may be armed
        self.armed: dict[int, tuple[int, int]] = {}  # DAMON's sample: unit start -> (len, prot)
        self.seen: set[int] = set()                 # fault addresses of the current batch already taken
        self.spe_set: set[int] = set()              # starts of the SPE source's units in the current batch
        self.batch_starts = np.zeros(0, np.uint64)  # the current batch's units, sorted
        self.batch_lens = np.zeros(0, np.uint64)
        self.spe_pick = None                        # the SPE source's unit picker while a session selects us
        self.spe_hits: list = []                    # touches of SPE units not taken by the SPE source yet
        self.epoch_seen = 0
        self.mapgen_seen = -1
        self.last_refresh = 0.0
        self.last_pagemap = 0.0
        self.advgen_seen = -1
        self.last_stats = 0.0
        self.zombie = False
        self._refresh_lock = threading.Lock()
        self.refresh_started = 0.0
        self._entries: list[MapEntry] | None = None
        self._hints: dict[int, str] = {}
        self._tmpfs: dict[tuple[int, int], str] = {}
        self._window: tuple[float, tuple[int, int, bool] | None] | None = None   # mkold's time, sched_sample
        self.stretched_s = 0.0                      # what _stretch added to sample windows, in total
        self._dense: dict[int, np.ndarray] = {}     # VMA start -> its 2 MiB units mostly present on the host
        self.dense = np.zeros(0, np.uint64)         # all of them, sorted

    # --- mirror ---------------------------------------------------------------------------------
    def refresh(self, full: bool = False, since: float | None = None) -> bool:
        """Re-read maps and pagemap (all of it with `full`) into the twin. False if the process
        has no mm any more. One refresh at a time (the poll thread and /proc readers); with
        `since`, nothing to do if a refresh started at or after that monotonic time."""
        with self._refresh_lock:
            if since is not None and self.refresh_started >= since:
                return True
            self.refresh_started = time.monotonic()
            return self._refresh(full)

    def _refresh(self, force: bool) -> bool:
        epoch = self.chan.epoch
        mapgen = self.chan.mapgen
        armed = self.chan.units_in_table()          # before and after: batches armed meanwhile
        try:
            with open(f"{real_proc()}/{self.pid}/maps") as f:
                raw = parse_maps(f.read())
        except OSError:
            return False
        armed.update(self.chan.units_in_table())
        entries = canonical(raw, armed)
        if not entries:
            return False
        if any(b.start < a.end for a, b in zip(entries, entries[1:])):
            return True                  # maps read across a concurrent change (seq_file pages): next time
        known = {(e.start, e.end) for e in self._entries or ()}
        advgen, now = self.chan.advgen, time.monotonic()
        if any((e.start, e.end) not in known for e in entries) or advgen != self.advgen_seen:
            try:                                   # smaps walks page tables: only for new VMAs or madvise
                with open(f"{real_proc()}/{self.pid}/smaps") as f:
                    self._hints = parse_vmflags(f.read())
                with open(f"{real_proc()}/{self.pid}/mountinfo") as f:
                    self._tmpfs = parse_tmpfs_mounts(f.read())
            except OSError:
                return False
            self.advgen_seen = advgen
        mark_tmpfs(entries, self._tmpfs)
        present = {}
        full = force or mapgen != self.mapgen_seen or now - self.last_pagemap >= PAGEMAP_S
        for e in entries:                          # pagemap: on mapping changes, new VMAs, else every PAGEMAP_S
            if self._mirrored(e) and (full or (e.start, e.end) not in known):
                present[e.start] = self._present(e)
        if full:
            self.last_pagemap = now
        self._note_dense(entries, present)
        with self.m._mutex:
            proc = self.m.process(self.pid)
            if proc is None:
                return False
            self._apply_vmas(proc, entries)
            for v in proc.vmas():
                pages = present.get(v.start)
                if pages is not None and len(pages):
                    self._fault_missing(proc, v, pages)
            self.m.map_epoch += 1
        self._entries = entries
        self.epoch_seen, self.mapgen_seen = epoch, mapgen
        self.last_refresh = time.monotonic()
        return True

    def _note_dense(self, entries: list[MapEntry], present: dict[int, np.ndarray | None]) -> None:
        """Remember which 2 MiB units have at least HOST_THP_MIN_PAGES real pages present."""
        live = {e.start for e in entries}
        changed = False
        for k in [k for k in self._dense if k not in live]:
            del self._dense[k]
            changed = True
        for start, pages in present.items():
            if pages is None or not len(pages):
                changed |= self._dense.pop(start, None) is not None
                continue
            units, counts = np.unique(pages >> np.uint64(21), return_counts=True)
            self._dense[start] = units[counts >= HOST_THP_MIN_PAGES] << np.uint64(21)
            changed = True
        if changed:
            d = list(self._dense.values())
            self.dense = np.sort(np.concatenate(d)) if d else np.zeros(0, np.uint64)

    @staticmethod
    def _mirrored(e: MapEntry) -> bool:
        return e.name not in SPECIAL and e.end <= 1 << 48

    def _present(self, e: MapEntry) -> np.ndarray | None:
        """Virtual addresses of the pages of `e` the real process has populated."""
        if e.perms.startswith("---") or e.end - e.start > MAX_PAGEMAP_VMA:
            return None
        n = (e.end - e.start) // PAGE_SIZE
        try:
            fd = os.open(f"{real_proc()}/{self.pid}/pagemap", os.O_RDONLY)
            try:
                buf = os.pread(fd, n * 8, (e.start // PAGE_SIZE) * 8)
            finally:
                os.close(fd)
        except OSError:
            return None
        pm = np.frombuffer(buf[:len(buf) // 8 * 8], np.uint64)
        idx = np.flatnonzero(pm >> np.uint64(63))
        return (np.uint64(e.start) + idx.astype(np.uint64) * np.uint64(PAGE_SIZE))

    def _apply_vmas(self, proc, entries: list[MapEntry]) -> None:
        want = {(e.start, e.end): e for e in entries if self._mirrored(e)}
        have = {(v.start, v.end): v for v in proc.vmas()}
        for k, v in have.items():
            e = want.get(k)
            if e is None or e.anon != v.anon or e.shmem != v.shmem or e.name != v.name or e.tmpfs_huge != v.huge:
                log.debug("twin_vma_gone", pid=self.pid, start=hex(v.start), end=hex(v.end))
                self.m.pt.unmap_vma(proc, v)
                self.protectable.discard(v.uid)
        prev = None
        for e in sorted(want.values(), key=lambda x: x.start):
            v = proc.find_vma(e.start)
            hint = self._hints.get(e.start)
            if v is None:
                try:
                    v = self.m.pt.new_vma(proc, e.start, e.end - e.start, anon=e.anon, shmem=e.shmem,
                                          name=e.name, hint=hint, perms=e.perms, huge=e.tmpfs_huge)
                except ValueError:       # overlaps a twin VMA that moved: rebuilt next refresh
                    self._entries = None
                    continue
            v.perms, v.hugepage_hint = e.perms, hint
            bss = (e.anon and not e.name and prev is not None and prev.end == e.start and prev.inode != 0
                   and prev.perms.startswith("rw") and prev.perms[3] == "p" and prev.name.startswith("/")
                   and not prev.name.startswith("/memfd:"))          # an ELF's data segment, then its .bss
            ok = (e.anon or e.shmem) and e.name != "[stack]" and not e.perms.startswith("---") and not bss \
                and not e.name.startswith("/memfd:damond-trace")
            (self.protectable.add if ok else self.protectable.discard)(v.uid)
            prev = e

    def _fault_missing(self, proc, v, pages: np.ndarray) -> None:
        """Fault into the twin the real pages it has never seen (neither resident nor
        paged out by DAMOS: a twin page paged out stays out until the program touches it)."""
        ok, _, pidx = proc.translate(pages)
        fl = self.m.phys.flags
        known = np.zeros(len(pages), bool)
        known[ok] = (fl[pidx[ok]] & (P.PRESENT | P.SWAP)) != 0
        miss = pages[~known]
        if len(miss):
            try:
                self.m.pt.fault(proc, v, miss)
            except P.OutOfMemory:
                log.warning("twin_out_of_memory", pid=self.pid, vma=hex(v.start))

    def drop_mm(self) -> None:
        """The process exited (zombie): its memory is gone, its pid stays."""
        with self.m._mutex:
            proc = self.m.process(self.pid)
            if proc is not None:
                for v in proc.vmas():
                    self.m.pt.unmap_vma(proc, v)
                self.m.map_epoch += 1
            self.reset_batch()
        self.zombie = True

    # --- access checks (the Machine calls these holding its mutex) ------------------------------
    # One batch of units is armed at a time (the helper's table): DAMON's sample (`armed`)
    # plus, while an SPE session selects this twin, the SPE source's pages (`spe_set`).
    # Every touch seen in a batch sets the twin's accessed bit once (`_harvest`); touches of
    # SPE units are kept in `spe_hits` until the SPE source takes them (`spe_window`).
    def units(self, proc, addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start, len, prot) of the protectable unit holding each address, deduplicated: 2 MiB
        for a PMD-mapped twin folio, 64 KiB for a contpte one, else 4 KiB."""
        a = np.asarray(addrs, np.uint64)
        vmas = proc.vmas()
        none = (a[:0], a[:0], a[:0].astype(np.uint32))
        if not vmas or not len(a):
            return none
        ok, vi, pidx = proc.translate(a)
        inv = np.searchsorted([v.start for v in vmas], a.view(np.int64), "right") - 1
        inside = (inv >= 0) & (a < np.array([v.end for v in vmas], np.uint64)[np.maximum(inv, 0)])
        can = np.array([v.uid in self.protectable for v in vmas], bool)[np.maximum(inv, 0)] & inside
        if not can.any():
            return none
        fl, order = self.m.phys.flags, self.m.phys.order
        pres = ok.copy()
        pres[ok] = (fl[pidx[ok]] & P.PRESENT) != 0
        unit = np.full(len(a), PAGE_SIZE, np.uint64)
        pmd = pres & ((fl[pidx] & P.PMD) != 0)
        cont = pres & ~pmd & (order[pidx] >= 4)
        unit[pmd] = UNIT_PMD
        unit[cont] = UNIT_CONT
        start = a & ~(unit - np.uint64(1))
        start, unit, iv = start[can], unit[can], inv[can]
        _, first = np.unique(start, return_index=True)
        first.sort()
        start, unit, iv = start[first], unit[first], iv[first]
        prots = np.array([prot_bits(vmas[i].perms) for i in iv.tolist()], np.uint32)
        anon = np.array([vmas[i].anon for i in iv.tolist()], bool)    # shmem: the file is others' too
        prots[anon & (unit == UNIT_PMD) & np.isin(start, self.dense)] |= np.uint32(tracing.HOST_THP)
        return start, unit, prots

    def mkold(self, proc, addrs: np.ndarray) -> None:
        """Protect the unit holding each sampled address (a new sample)."""
        self._harvest(proc)
        self.armed = {}
        if self.zombie or self.chan.closed or not len(addrs):
            return
        start, unit, prots = self.units(proc, addrs)
        if self._arm(start, unit, prots, self.spe_pick(proc) if self.spe_pick is not None else None):
            self.armed = {int(s): (int(n), int(p)) for s, n, p in zip(start.tolist(), unit.tolist(), prots.tolist())}
            self.chan.wait_armed(ARM_WAIT_S)
            self._window = (time.monotonic(), sched_sample(self.pid))

    def _stretch(self) -> None:
        """Extend the window since `mkold` by the time the program waited for a host CPU in it
        (see STRETCH_MAX): host load must not read as the program leaving its memory alone."""
        win, self._window = self._window, None
        if win is None or win[1] is None:
            return
        t0, (run0, delay0, _) = win[0], win[1]
        now = time.monotonic()
        w = now - t0
        limit = t0 + min(w * STRETCH_MAX, w + STRETCH_MAX_S)
        while now < limit:
            cur = sched_sample(self.pid)
            if cur is None:
                break
            run, delay, runnable = cur
            if (run - run0) / 1e9 >= w * 0.9:                    # a full window of its own CPU time
                break
            if not runnable and (now - t0) - (delay - delay0) / 1e9 >= w:   # it sleeps: its own choice
                break
            time.sleep(0.001)
            now = time.monotonic()
        self.stretched_s += now - t0 - w

    def collect(self, proc) -> int:
        """Set the twin's accessed bit for every unit touched since `mkold`; returns how many
        touches were new."""
        self._stretch()
        return self._harvest(proc)

    def reset_batch(self) -> None:
        """Forget the current batch (the helper's table went away: exec, exit)."""
        self.armed, self.seen, self.spe_set = {}, set(), set()
        self.batch_starts, self.batch_lens = np.zeros(0, np.uint64), np.zeros(0, np.uint64)

    def _arm(self, start: np.ndarray, unit: np.ndarray, prots: np.ndarray, spe: tuple | None) -> bool:
        """Arm DAMON's units plus the SPE source's (`spe`: start, len, prot) as one batch:
        the helper keeps one batch at a time."""
        spe_starts: set[int] = set()
        if spe is not None and len(spe[0]):
            new = ~np.isin(spe[0], start)
            room = max(tracing.NSLOTS // 2 - len(start), 0)
            ss, su, sp = (x[new][:room] for x in spe)
            spe_starts = set(ss.tolist()) | set(spe[0][~new].tolist())
            start, unit, prots = np.concatenate([start, ss]), np.concatenate([unit, su]), np.concatenate([prots, sp])
        ok = self.chan.arm(start, unit, prots, self.epoch_seen)
        self.reset_batch()
        if ok:
            order = np.argsort(start, kind="stable")
            self.batch_starts, self.batch_lens = start[order], unit[order]
            self.spe_set = spe_starts
        return ok

    def _unit_of(self, addrs: np.ndarray) -> np.ndarray:
        """Start of the batch unit holding each address (0 where none)."""
        i = np.searchsorted(self.batch_starts, addrs, "right") - 1
        ok = i >= 0
        ok[ok] = addrs[ok] - self.batch_starts[i[ok]] < self.batch_lens[i[ok]]
        return np.where(ok, self.batch_starts[np.maximum(i, 0)] if len(self.batch_starts) else 0, 0)

    def _harvest(self, proc) -> int:
        """Take the touches of the current batch not taken yet: set the accessed bit of their
        pages (faulting in a page the twin lacks; the kernel's hardware sets it on any access)
        and keep those of SPE units for the SPE source. Returns how many were new."""
        addrs, store = self.chan.young_ops()
        if not len(addrs):
            return 0
        new = np.array([a not in self.seen for a in addrs.tolist()], bool)
        if not new.any():
            return 0
        addrs, store = addrs[new], store[new]
        self.seen.update(addrs.tolist())
        self._touch(proc, addrs & ~np.uint64(PAGE_SIZE - 1))
        if self.spe_set:
            sel = np.array([u in self.spe_set for u in self._unit_of(addrs).tolist()], bool)
            if sel.any():
                self.spe_hits.append((addrs[sel], store[sel], time.monotonic()))
        return int(len(addrs))

    def _touch(self, proc, pages: np.ndarray) -> None:
        ok, _, pidx = proc.translate(pages)
        fl = self.m.phys.flags
        pres = ok.copy()
        pres[ok] = (fl[pidx[ok]] & P.PRESENT) != 0
        if pres.any():
            fl[self.m.pt.af_loc(pidx[pres])] |= P.AF
        for p in pages[~pres].tolist():                   # first touch of a page the twin lacks
            v = proc.find_vma(p)
            if v is not None:
                try:
                    self.m.pt.fault(proc, v, np.array([p], np.uint64))
                except P.OutOfMemory:
                    pass
                self.m.map_epoch += 1

    # --- the SPE source's side (damond/host/twin_spe.py; called holding the machine's mutex) ----
    def spe_window(self, proc, pick) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """End the current SPE window and start the next. Takes the touches of SPE units since
        the last call; with `pick` (proc -> (start, len, prot), the SPE source's choice) arms
        new SPE units together with DAMON's units not touched yet in its sample, unless the
        helper is still busy with the last batch; `pick=None` ends SPE for this twin.
        Returns (fault addresses, store mask, monotonic time of the take) of the touches."""
        self._harvest(proc)
        hits, self.spe_hits = self.spe_hits, []
        ending = pick is None and self.spe_pick is not None
        self.spe_pick = pick
        if (pick is not None or ending) and not self.zombie and not self.chan.closed and not self.chan.busy:
            touched = set(self._unit_of(np.array(sorted(self.seen), np.uint64)).tolist()) if self.seen else set()
            keep = [s for s in self.armed if s not in touched]
            d = (np.array(keep, np.uint64), np.array([self.armed[s][0] for s in keep], np.uint64),
                 np.array([self.armed[s][1] for s in keep], np.uint32))
            armed = self.armed
            if self._arm(*d, pick(proc) if pick is not None else None):   # ending: retire the SPE units
                self.armed = armed
        if not hits:
            return np.zeros(0, np.uint64), np.zeros(0, bool), np.zeros(0)
        return (np.concatenate([h[0] for h in hits]), np.concatenate([h[1] for h in hits]),
                np.concatenate([np.full(len(h[0]), h[2]) for h in hits]))


class Twins:
    """Adopts real pids for the Machine (its `pid_resolver`, and unasked every traced process
    connected ADOPT_AFTER_S), keeps their twins alive and up to date for /proc readers
    (`machine.proc_sync`), and owns the twins' SPE source (`machine.spe_sources`)."""

    def __init__(self, machine, mountpoint: str, refresh_ms: int = 100, wait_s: float = 2.0):
        self.m, self.refresh_s, self.wait_s = machine, refresh_ms / 1000, wait_s
        self.tracer = tracing.Tracer(mountpoint)
        self.twins: dict[int, Twin] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tried: dict[int, tracing.Channel] = {}   # eager adoption: the connection last tried per pid
        self._first_seen: dict[int, float] = {}          # id(channel) -> when the poll first saw it
        machine.pid_resolver = self.adopt
        machine.proc_sync = self.sync                 # damond/fs/procfiles.sync: before a /proc/PID read
        from damond.host.twin_spe import TwinSpe

        self.spe = TwinSpe(self)
        machine.spe_sources = [self.spe]          # damond/spe/sampler.py attaches its sessions here
        self._thread = threading.Thread(target=self._poll, name="damond-twins", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, machine, mountpoint: str) -> "Twins | None":
        """Twins for the daemon on `mountpoint`, or None when the tracer was not built."""
        if tracing.preload_path() is None:
            log.warning("tracer_not_built", hint="real pids are refused; rebuild with pip install -e .")
            return None
        try:
            return cls(machine, mountpoint)
        except OSError as e:                       # the rendezvous is taken: serve without twins
            log.warning("tracer_unavailable", error=str(e), hint="real pids are refused")
            return None

    def adopt(self, pid: int):
        """The twin Process of real `pid` (creating it), or None: no such process in this
        namespace, or not started under this daemon's tracer (static binaries, programs
        started elsewhere)."""
        if not isinstance(pid, int) or pid <= 0:
            return None
        st = proc_stat(pid)
        if st is None or st[0] in "ZX":
            return None
        if not tracing.traced_by(pid, self.tracer.name):
            log.info("twin_refused", pid=pid, reason="not started under this daemon's tracer")
            return None
        chan = self.tracer.channel(pid, self.wait_s)
        if chan is None or not chan.attach():
            log.info("twin_refused", pid=pid, reason="tracer did not connect")
            return None
        with self._lock:
            old = self.twins.get(pid)
            if old is not None and old.starttime == st[1] and self.m.process(pid) is not None:
                return self.m.process(pid)
            try:
                proc = self.m.adopt_twin(pid, read_comm(pid))
            except ValueError as e:
                log.info("twin_refused", pid=pid, reason=str(e))
                return None
            twin = Twin(self.m, pid, chan, st[1])
            proc.twin = twin
            if not twin.refresh():
                self.m.kill(pid)
                return None
            self.twins[pid] = twin
        log.info("twin_adopted", pid=pid, comm=proc.comm, vmas=len(proc.vmas()))
        return proc

    def sync(self, pid: int) -> None:
        """A reader opens /proc/PID/* of `pid`: if it is a twin, bring it up to date with the
        program first (maps and all of pagemap), so a script that reads smaps right after
        its workload printed sees what the kernel would show. Readers arriving together
        share one refresh that started after they asked."""
        asked = time.monotonic()
        twin = self.twins.get(pid)
        if twin is None or twin.zombie:
            return
        try:
            if not twin.refresh(full=True, since=asked):
                twin.drop_mm()
        except Exception as e:                     # a twin's trouble never fails the read
            log.error("twin_sync_failed", pid=pid, error=repr(e))

    def _poll(self) -> None:
        last_prune = 0.0
        while not self._stop.wait(0.02):
            now = time.monotonic()
            for pid, twin in list(self.twins.items()):
                try:
                    self._poll_one(twin, now)
                except Exception as e:             # a twin's trouble never kills the daemon
                    log.error("twin_poll_failed", pid=pid, error=repr(e))
            self._adopt_new(now)
            if now - last_prune > 1.0:
                self.tracer.prune()
                live = {id(c) for c in self.tracer.channels.values()}
                self._tried = {p: c for p, c in self._tried.items() if id(c) in live}
                self._first_seen = {k: t for k, t in self._first_seen.items() if k in live}
                last_prune = now

    def _adopt_new(self, now: float) -> None:
        """Every traced process becomes a twin once its helper has been connected ADOPT_AFTER_S,
        before anyone names its pid: /proc/PID/{maps,smaps,pagemap,...} are then the emulated
        machine's for every reader (a script scans smaps before it writes pid_target).
        Commands that exit sooner (cat, wc, awk in a pipeline) are never mirrored."""
        for pid, chan in list(self.tracer.channels.items()):
            if pid in self.twins or self._tried.get(pid) is chan or chan.closed:
                continue
            first = self._first_seen.setdefault(id(chan), now)
            if now - first < ADOPT_AFTER_S:
                continue
            self._tried[pid] = chan
            self._first_seen.pop(id(chan), None)
            try:
                self.adopt(pid)
            except Exception as e:                 # a process that vanished mid-adoption
                log.info("twin_eager_failed", pid=pid, error=repr(e))

    def _poll_one(self, twin: Twin, now: float) -> None:
        st = proc_stat(twin.pid)
        if st is None or st[1] != twin.starttime:
            self._end(twin, "exited")
            return
        if st[0] in "ZX":
            if not twin.zombie:
                twin.drop_mm()
                log.info("twin_zombie", pid=twin.pid)
            return
        if twin.zombie:
            return
        chan = self.tracer.channels.get(twin.pid)
        if chan is not None and chan is not twin.chan and chan.attach():   # exec: a new image connected
            twin.chan, twin._entries = chan, None
            with self.m._mutex:
                twin.reset_batch()
                proc = self.m.process(twin.pid)
                if proc is not None:
                    proc.comm = read_comm(twin.pid)
        if now - twin.last_stats >= 10.0:
            twin.last_stats = now
            log.info("twin_stats", pid=twin.pid, seq=twin.chan.seq, skipped=twin.chan.skipped, epoch_seen=twin.epoch_seen,
                     armed=len(twin.armed), **twin.chan.stats())
        if twin.chan.mapgen != twin.mapgen_seen or now - twin.last_refresh >= self.refresh_s:
            if not twin.refresh():
                twin.drop_mm()

    def _end(self, twin: Twin, why: str) -> None:
        with self._lock:
            self.twins.pop(twin.pid, None)
        self.m.kill(twin.pid)
        self.tracer.forget(twin.pid)
        c = twin.chan
        log.info("twin_exited", pid=twin.pid, reason=why, seq=c.seq, skipped=c.skipped, waits=c.waits,
                 stretched_ms=round(twin.stretched_s * 1e3, 1),
                 wait_ms=round(c.wait_s * 1e3, 1), wait_max_ms=round(c.wait_max_s * 1e3, 2), **c.stats())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.spe.close()
        self.tracer.close()


__all__ = ["Twin", "Twins", "parse_maps", "canonical", "parse_vmflags"]
