"""The daemon's side of the LD_PRELOAD access tracer for real programs.

Owns the rendezvous (an abstract unix socket named after the mountpoint, put into a
command's environment by `child_env` together with LD_PRELOAD), the accept thread that
learns which real pid is behind each connection (SO_PEERCRED, never what the peer says),
and per traced process a `Channel`: a shared slot table (memfd sent over the socket) in
which `arm()` asks the preloaded helper (csrc/trace_preload.c) to mprotect(PROT_NONE)
the given units, and `young()` reads which of them the program touched since. A process
connects at start; its table is sent only when a twin adopts it, so untargeted
processes cost one idle connection. Layout constants mirror the C structs.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import mmap
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from damond.host.namespace import REAL_PROC_ENV
from damond.log import get_logger

SOCK_ENV = "DAMOND_TRACE_SOCK"
MAGIC = 0x544D4144
NSLOTS = 8192                               # two halves of 4096 units (DAMON's max_nr_regions is 1000 by default)
HDR = np.dtype([("magic", "<u4"), ("nslots", "<u4"), ("epoch", "<u8"), ("seq_done", "<u8"), ("faults", "<u8"),
                ("restores", "<u8"), ("efault_retries", "<u8"), ("failed", "<u8"), ("mapgen", "<u8"), ("advgen", "<u8"),
                ("collapsed", "<u8"), ("pad", "<u8", 6)])
SLOT = np.dtype([("start", "<u8"), ("len", "<u8"), ("addr", "<u8"), ("state", "<u4"), ("prot", "<u4")])
FREE, REQ, ARMING, PROT, YOUNG, DISARMING, RETIRED, FAILED = range(8)
OP_ARM = 1
ADDR_STORE = np.uint64(1 << 63)            # a slot addr's store bit (csrc/trace_preload.c)
PROT_MASK = 0x7                             # slot.prot: the unit's own PROT_* bits ...
HOST_THP = 1 << 31                          # ... | back it by a host THP first (MADV_COLLAPSE, csrc)
MSG = struct.Struct("<QQII")
log = get_logger("damond.host")


def preload_path() -> Path | None:
    """The built tracer (setup.py: damond.host._trace_preload), or None if not built."""
    here = Path(__file__).resolve().parent
    for suf in importlib.machinery.EXTENSION_SUFFIXES:
        p = here / f"_trace_preload{suf}"
        if p.exists():
            return p
    return None


def real_proc() -> str:
    """Where real processes' own /proc entries are read: under `damond exec` /proc/PID/* of
    every Machine process (twins too) is damond's, so the daemon reads the pristine procfs
    exec gives it in $DAMOND_REAL_PROC (damond/host/namespace.py); elsewhere /proc."""
    return os.environ.get(REAL_PROC_ENV, "/proc")


def sock_name(mountpoint: str) -> str:
    """The rendezvous of the daemon serving `mountpoint` ('@' = abstract namespace)."""
    return "@damond-trace:" + hashlib.sha256(os.path.realpath(mountpoint).encode()).hexdigest()[:24]


def child_env(env: dict, mountpoint: str) -> dict:
    """`env` plus what makes every child of a command traceable by the daemon on
    `mountpoint`: LD_PRELOAD (prepended) and DAMOND_TRACE_SOCK. Unchanged if the tracer
    was not built."""
    lib = preload_path()
    if lib is None:
        return dict(env)
    out = dict(env)
    pre = out.get("LD_PRELOAD", "")
    out["LD_PRELOAD"] = str(lib) + (" " + pre if pre else "")
    out[SOCK_ENV] = sock_name(mountpoint)
    return out


def traced_by(pid: int, name: str) -> bool:
    """Whether process `pid` was started with this daemon's rendezvous in its environment."""
    try:
        env = Path(f"{real_proc()}/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{SOCK_ENV}={name}".encode() in env


class Channel:
    """One traced process: its socket and, once attached, the shared slot table."""

    def __init__(self, pid: int, conn: socket.socket):
        self.pid, self.conn = pid, conn
        self.hdr: Any = None
        self.slots: Any = None
        self._mm: Any = None
        self.seq = 0
        self.units = np.zeros(0, np.uint64)         # starts of the units of the current batch
        self.closed = False
        self.skipped = 0                            # batches not armed because the helper lagged
        self.waits = 0                              # batches the daemon had to wait for
        self.wait_s = 0.0                           # the time it waited, in total
        self.wait_max_s = 0.0

    def attach(self) -> bool:
        """Send the slot table (first call only). False if the process has gone."""
        if self.hdr is not None:
            return True
        size = HDR.itemsize + NSLOTS * SLOT.itemsize
        fd = os.memfd_create("damond-trace", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            self._mm = mmap.mmap(fd, size)
            buf = np.frombuffer(self._mm, np.uint8)
            self.hdr = buf[:HDR.itemsize].view(HDR)
            self.slots = buf[HDR.itemsize:].view(SLOT)
            self.hdr["magic"], self.hdr["nslots"] = MAGIC, NSLOTS
            socket.send_fds(self.conn, [struct.pack("<I", NSLOTS)], [fd])
        except OSError:
            self.closed = True
            return False
        finally:
            os.close(fd)
        return True

    @property
    def epoch(self) -> int:
        """Bumped by every mapping change that could invalidate an armed unit."""
        return int(self.hdr["epoch"][0]) if self.hdr is not None else 0

    @property
    def advgen(self) -> int:
        """Bumped by every madvise(MADV_HUGEPAGE/MADV_NOHUGEPAGE): VmFlags to re-read."""
        return int(self.hdr["advgen"][0]) if self.hdr is not None else 0

    @property
    def mapgen(self) -> int:
        """Bumped by every mapping change the helper saw (also new mmaps)."""
        return int(self.hdr["mapgen"][0]) if self.hdr is not None else 0

    def arm(self, starts: np.ndarray, lens: np.ndarray, prots: np.ndarray, epoch: int) -> bool:
        """Ask for these units to be protected (a new sample); a prot with `HOST_THP` set asks
        the helper to collapse the 2 MiB unit into a host THP first, so that one PMD, not 512
        PTEs, is protected. False: not sent (the helper has not finished the previous batch,
        or the process has gone); nothing is armed then."""
        if self.closed or self.hdr is None:
            return False
        if self.seq and int(self.hdr["seq_done"][0]) < self.seq:
            self.skipped += 1
            self.units = np.zeros(0, np.uint64)
            return False
        half = NSLOTS // 2
        n = min(len(starts), half)
        seq = self.seq + 1
        base = (seq & 1) * half
        s = self.slots[base:base + half]
        s["state"][n:] = FREE
        s["start"][:n], s["len"][:n], s["prot"][:n] = starts[:n], lens[:n], prots[:n]
        s["addr"][:n] = 0
        s["state"][:n] = REQ
        try:
            self.conn.send(MSG.pack(seq, epoch, n, OP_ARM), socket.MSG_DONTWAIT)
        except BlockingIOError:
            s["state"][:n] = FREE
            self.skipped += 1
            return False
        except OSError:
            self.closed = True
            return False
        self.seq = seq
        self.units = starts[:n].copy()
        return True

    def wait_armed(self, timeout_s: float) -> bool:
        """Wait until the helper has handled the last batch (at most `timeout_s`)."""
        if self.hdr is None or not self.seq:
            return True
        if int(self.hdr["seq_done"][0]) >= self.seq:
            return True
        t0 = time.monotonic()
        delay = 50e-6
        while int(self.hdr["seq_done"][0]) < self.seq:
            now = time.monotonic()
            if now - t0 >= timeout_s or self.closed:
                break
            time.sleep(delay)
            delay = min(delay * 2, 1e-3)
        dt = time.monotonic() - t0
        self.waits += 1
        self.wait_s += dt
        self.wait_max_s = max(self.wait_max_s, dt)
        return int(self.hdr["seq_done"][0]) >= self.seq

    def young(self) -> np.ndarray:
        """Fault addresses of the current batch's units touched since `arm` (uint64)."""
        return self.young_ops()[0]

    def young_ops(self) -> tuple[np.ndarray, np.ndarray]:
        """(fault addresses, was-a-store mask) of the current batch's touched units. The
        helper sets bit 63 of a slot's addr (ADDR_STORE) when the faulting access was a store
        (x86-64; elsewhere every fault reads as a load)."""
        if self.hdr is None or not self.seq:
            return np.zeros(0, np.uint64), np.zeros(0, bool)
        half = NSLOTS // 2
        base = (self.seq & 1) * half
        s = self.slots[base:base + len(self.units)]
        a = s["addr"][s["state"] == YOUNG]
        return a & ~ADDR_STORE, (a & ADDR_STORE) != 0

    @property
    def busy(self) -> bool:
        """The helper has not finished the last batch yet (a new `arm` would be skipped)."""
        return bool(self.seq) and self.hdr is not None and int(self.hdr["seq_done"][0]) < self.seq

    def units_in_table(self) -> dict[int, tuple[int, int]]:
        """Every unit the helper may have protected lately (both halves, any state but
        FREE/FAILED): start -> (len, prot). Used to recognise our own PROT_NONE pieces in
        /proc/PID/maps."""
        if self.hdr is None:
            return {}
        s = self.slots
        st = s["state"]
        sel = (st != FREE) & (st != FAILED)
        return {int(a): (int(n), int(p) & PROT_MASK) for a, n, p in zip(s["start"][sel].tolist(), s["len"][sel].tolist(),
                                                                         s["prot"][sel].tolist())}

    def stats(self) -> dict:
        h = self.hdr
        if h is None:
            return {}
        return {k: int(h[k][0]) for k in ("faults", "restores", "efault_retries", "failed", "epoch", "mapgen",
                                          "collapsed")}

    def close(self) -> None:
        self.closed = True
        try:
            self.conn.close()
        except OSError:
            pass


class Tracer:
    """Accepts the preloaded helpers' connections on `sock_name(mountpoint)`."""

    def __init__(self, mountpoint: str):
        self.name = sock_name(mountpoint)
        self.channels: dict[int, Channel] = {}
        self._cv = threading.Condition()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._sock.bind("\0" + self.name[1:])
        self._sock.listen(128)
        self._stop = False
        self._thread = threading.Thread(target=self._accept, name="damond-trace", daemon=True)
        self._thread.start()
        log.info("tracer_listening", sock=self.name, preload=str(preload_path()))

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            try:
                conn.settimeout(2.0)
                hello = conn.recv(8, socket.MSG_WAITALL)
                pid = struct.unpack("<iii", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
                conn.settimeout(None)
            except OSError:
                conn.close()
                continue
            if len(hello) != 8 or struct.unpack("<II", hello)[0] != MAGIC or pid <= 0:
                conn.close()
                continue
            with self._cv:
                old = self.channels.get(pid)
                if old is not None:
                    old.close()                 # exec: the new image connects again
                self.channels[pid] = Channel(pid, conn)
                self._cv.notify_all()

    def channel(self, pid: int, timeout_s: float = 0.0) -> Channel | None:
        """The live channel of `pid`, waiting up to `timeout_s` for it to connect."""
        with self._cv:
            ok = self._cv.wait_for(lambda: (c := self.channels.get(pid)) is not None and not c.closed,
                                   timeout=timeout_s)
            return self.channels.get(pid) if ok else None

    def forget(self, pid: int) -> None:
        with self._cv:
            c = self.channels.pop(pid, None)
        if c is not None:
            c.close()

    def prune(self) -> None:
        """Drop connections whose process has gone (its pid may be reused)."""
        with self._cv:
            dead = [p for p, c in self.channels.items() if c.closed or not os.path.exists(f"{real_proc()}/{p}")]
        for p in dead:
            self.forget(p)

    def close(self) -> None:
        self._stop = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        for p in list(self.channels):
            self.forget(p)
