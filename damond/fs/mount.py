"""Mount lifecycle: FUSE options, serving until SIGTERM/SIGINT/SIGHUP or the loss of the
mount, the exit within `EXIT_BUDGET_S` whatever is pending, the systemd watchdog, and
what a mountpoint already holds (`probe_mountpoint`).

Options (fuse-damo-systemd.md section 1): direct_io (reads past a short value are EOF,
values longer than st_size are not cut), attr/entry/negative timeouts 0 (nr_* writes
are visible at once), the multi-threaded loop with every op serialised on
`tree.op_lock` (released while a state command waits for the kdamond, so other files
answer meanwhile and the lock-taking ones get EBUSY, as on a kernel),
max_idle_threads (libfuse 3.14 otherwise logs "Ignoring invalid max threads value"),
fsname=damond (findmnt SOURCE). Owns no tree logic.

Exit: libfuse's own signal handlers are kept out (Python's are installed, with a wakeup
fd); a `Lifecycle` thread reads the signals and watches /proc/self/mountinfo. On either
it flags the FUSE session as exited, wakes the loop's main thread (which joins the
workers and lazily unmounts) and, on a thread of its own, stops the kdamonds (every one
is woken first, so a writer waiting in a state command gets ECANCELED at once, as when a
kdamond exits). If the process is still there EXIT_BUDGET_S later (a worker stuck in an
op, a kdamond in a long iteration) it unmounts lazily if need be and exits.
"""
from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import subprocess
import threading
import time
from typing import Callable

import mfusepy as fuse

from damond.fs.notify import sd_notify
from damond.fs.ops import DamondOps
from damond.fs.root import Served
from damond.log import get_logger

log = get_logger("damond.fs.mount")
READY_FILE = "kernel/mm/damon/admin/kdamonds/nr_kdamonds"
EXIT_BUDGET_S = 0.8         # signal/unmount -> process gone, under the 1 s
MAX_IDLE_THREADS = 10
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
WAKE = signal.SIGUSR1       # interrupts the FUSE main thread's sem_wait


def fuse_options(allow_other: bool = False) -> dict:
    """allow_other: every user sees the tree, the kernel checking the sysfs modes
    (default_permissions), as on sysfs; off, only the mounting user (root) gets in."""
    opts = dict(foreground=True, nothreads=False, direct_io=True, attr_timeout=0, entry_timeout=0,
                negative_timeout=0, fsname="damond", default_permissions=True)
    if allow_other:
        opts["allow_other"] = True
    if fuse.fuse_version_major == 2:
        opts["big_writes"] = True
    else:
        opts["max_idle_threads"] = MAX_IDLE_THREADS
    return opts


# ---- what a mountpoint holds

def mountinfo(path: str = "/proc/self/mountinfo") -> list[tuple[int, str, str, str]]:
    """(mount id, mount point, fstype, source) of every mount, in mount order."""
    out = []
    with open(path, "rb") as f:
        for line in f.read().decode("utf-8", "surrogateescape").splitlines():
            pre, _, post = line.partition(" - ")
            fields, rest = pre.split(), post.split()
            mp = fields[4].encode("latin-1", "surrogateescape").decode("unicode_escape", "surrogateescape") \
                if "\\" in fields[4] else fields[4]
            out.append((int(fields[0]), mp, rest[0] if rest else "", rest[1] if len(rest) > 1 else ""))
    return out


def probe_mountpoint(mp: str) -> str:
    """"free", "live" (a FUSE mount that answers), "stale" (ENOTCONN: its daemon is gone)
    or "other" (another filesystem is mounted there)."""
    try:
        os.stat(mp)
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            return "stale"
        return "free"
    top = [m for m in mountinfo() if m[1] == mp]
    if not top:
        return "free"
    _, _, fstype, _ = top[-1]
    return "live" if fstype.startswith("fuse") else "other"


def clear_stale(mp: str) -> bool:
    """Lazily unmount a stale FUSE mount at mp (fusermount3 -u -z). True if it is gone."""
    for tool in ("fusermount3", "fusermount"):
        try:
            subprocess.run([tool, "-u", "-z", mp], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe_mountpoint(mp) != "stale":
            return True
    return probe_mountpoint(mp) != "stale"


# ---- serving

class Lifecycle:
    """Signals, mount loss and the watchdog for one `serve()`."""

    def __init__(self, mountpoint: str, on_stop: Callable[[], None], alive: Callable[[], bool]):
        self.mountpoint = mountpoint
        self._on_stop, self._alive = on_stop, alive
        self._main = threading.main_thread().ident
        self._fuse_ptr: ctypes.c_void_p | None = None
        self._fuse_mutex = threading.Lock()     # fuse_exit never races fuse_destroy
        self._mount_id: int | None = None
        self.mounted = threading.Event()
        self.returned = threading.Event()       # FUSE() came back
        self.stopping = threading.Event()
        self.reason = ""
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old: dict[int, object] = {}
        self._last_probe = 0.0
        self._watchdog_s = _watchdog_interval()

    # called from the FUSE init op (a FUSE thread)
    def on_mounted(self) -> None:
        self._fuse_ptr = ctypes.c_void_p(fuse._libfuse.fuse_get_context().contents.fuse)
        ids = [m[0] for m in mountinfo() if m[1] == self.mountpoint and m[2].startswith("fuse")]
        self._mount_id = ids[-1] if ids else None
        self._last_probe = time.monotonic()
        self.mounted.set()

    # called from the FUSE destroy op, just before libfuse frees the session
    def on_destroyed(self) -> None:
        with self._fuse_mutex:
            self._fuse_ptr = None

    def install(self) -> None:
        """Main thread, before FUSE(): Python handlers (so libfuse installs none) + wakeup fd."""
        for s in (*SIGNALS, WAKE):
            self._old[s] = signal.signal(s, lambda *_: None)
        self._old_wakeup = signal.set_wakeup_fd(self._wfd, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, name="damond-lifecycle", daemon=True).start()
        if self._watchdog_s:
            threading.Thread(target=self._probe, name="damond-probe", daemon=True).start()

    def uninstall(self) -> None:
        """Restore the handlers, except WAKE's no-op: a late wake must not kill the process."""
        signal.set_wakeup_fd(self._old_wakeup)
        for s, h in self._old.items():
            if s != WAKE:
                signal.signal(s, h)  # type: ignore[arg-type]

    def _watch(self) -> None:
        """Until the process exits: signals, mount loss, watchdog pings and, once stopping,
        the exit budget (kept even after FUSE() returned: the caller's clean-up may wait
        for a kdamond in the middle of a long iteration)."""
        poller = select.poll()
        poller.register(self._rfd, select.POLLIN)
        mi = open("/proc/self/mountinfo", "rb")
        poller.register(mi, select.POLLPRI | select.POLLERR)
        next_ping = 0.0
        while True:
            events = poller.poll(self._poll_ms())
            sigs = b""
            for fd, _ in events:
                if fd == self._rfd:
                    try:
                        sigs += os.read(self._rfd, 64)
                    except BlockingIOError:
                        pass
                else:
                    mi.seek(0)
                    mi.read()
            got = [s for s in sigs if s in SIGNALS]
            if got and not self.stopping.is_set():
                self.shutdown(f"signal {signal.Signals(got[0]).name}")
            elif self.mounted.is_set() and not self.stopping.is_set() and self._mount_lost():
                self.shutdown("unmounted")
            if self.stopping.is_set():
                if time.monotonic() > self._deadline:
                    self._force_exit()
                continue
            if self.returned.is_set():
                continue
            now = time.monotonic()
            if self._watchdog_s and now >= next_ping and self._healthy(now):
                sd_notify("WATCHDOG=1")
                next_ping = now + self._watchdog_s / 2

    def _poll_ms(self) -> int:
        if self.stopping.is_set():
            return 50
        return 1000 if not self._watchdog_s else int(min(1.0, self._watchdog_s / 4) * 1000)

    def _mount_lost(self) -> bool:
        try:
            ids = {m[0] for m in mountinfo()}
        except OSError:
            return False
        return self._mount_id is not None and self._mount_id not in ids

    def _probe(self) -> None:
        """Watchdog only: a stat through the mount proves the FUSE loop answers."""
        self.mounted.wait()
        path = os.path.join(self.mountpoint, "kernel")
        while not self.stopping.is_set():
            try:
                os.stat(path)
                self._last_probe = time.monotonic()
            except OSError:
                pass
            self.stopping.wait(self._watchdog_s / 4)

    def _healthy(self, now: float) -> bool:
        """WATCHDOG=1 only while the FUSE loop answers and every running kdamond's thread lives."""
        return self.mounted.is_set() and now - self._last_probe < self._watchdog_s / 2 and self._alive()

    def shutdown(self, reason: str) -> None:
        """Stop whatever is pending and end the FUSE loop (any thread, once)."""
        if self.stopping.is_set():
            return
        self.reason = reason
        self._deadline = time.monotonic() + EXIT_BUDGET_S
        self.stopping.set()
        log.info("stopping", reason=reason, mountpoint=self.mountpoint)
        sd_notify("STOPPING=1")
        with self._fuse_mutex:
            if self._fuse_ptr is not None and not self.returned.is_set():
                fuse._libfuse.fuse_exit(self._fuse_ptr)
                try:
                    signal.pthread_kill(self._main, WAKE)  # type: ignore[arg-type]
                except (ProcessLookupError, OSError):
                    pass
        threading.Thread(target=self._stop_all, name="damond-stop", daemon=True).start()

    def _stop_all(self) -> None:
        try:
            self._on_stop()      # cancels what the loop's busy workers wait for
        except Exception:
            log.exception("stop_failed")

    def _force_exit(self) -> None:
        """Not gone in time (a worker stuck in an op, a kdamond in a long iteration):
        unmount if still mounted, and go."""
        returned = self.returned.is_set()       # then the mount is gone: only clean-up is cut short
        (log.info if returned else log.warning)("forced_exit", reason=self.reason, budget_s=EXIT_BUDGET_S,
                                                 loop_returned=returned)
        if probe_mountpoint(self.mountpoint) in ("live", "stale"):
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], capture_output=True)
        os._exit(0)


def _watchdog_interval() -> float:
    """WatchdogSec as systemd passes it (WATCHDOG_USEC, for our pid), in seconds; 0 = none."""
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", "0"))
        pid = os.environ.get("WATCHDOG_PID")
    except ValueError:
        return 0.0
    if usec <= 0 or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return 0.0
    return usec / 1e6


def _kdamonds_alive(served: Served) -> Callable[[], bool]:
    def alive() -> bool:
        for kd in getattr(served.state.system, "kdamonds", []):
            th = getattr(kd, "_thread", None)
            if getattr(kd, "running", False) and th is not None and not th.is_alive():
                return False
        return True
    return alive


def serve(served: Served, mountpoint: str, on_stop: Callable[[], None] | None = None,
          allow_other: bool = False) -> int:
    """Serve `served` at `mountpoint` until unmounted or signalled. Returns 0.

    The caller starts and stops the System around this call; `on_stop` (default:
    `system.stop`) runs first thing on the way down, so nothing pending holds the exit.
    """
    mp = os.path.abspath(mountpoint)
    life = Lifecycle(mp, on_stop or served.state.system.stop, _kdamonds_alive(served))
    ops = DamondOps(served, log, on_mounted=life.on_mounted, on_destroyed=life.on_destroyed)
    log.info("mounting", mountpoint=mp, level=served.tree.level, libfuse=fuse.fuse_version_major)
    life.install()
    keep_sigint = fuse.signal
    fuse.signal = lambda sig, handler: signal.getsignal(sig)    # mfusepy would reset SIGINT to SIG_DFL
    try:
        fuse.FUSE(ops, mp, **fuse_options(allow_other))
    except RuntimeError as e:
        if e.args[:1] != (8,):     # libfuse3 returns 8 after a signal ended the loop
            raise
    finally:
        fuse.signal = keep_sigint
        life.returned.set()
        life.uninstall()
    if not life.stopping.is_set():
        life.shutdown("unmounted")
    log.info("unmounted", mountpoint=mp, reason=life.reason)
    return 0
