"""Same-pid stand-ins and the per-process /proc binds of `damond exec` (runs inside the
daemon, in exec's private PID and mount namespaces).

Every Machine process (a configured workload, a `damond/spawn`, a twin) and every running
kdamond appears in exec's /proc under its emulated pid:
- an emulated process (pid below namespace.REAL_PID_BASE; twins carry real pids above it)
  gets a stand-in: `cat` reading a pipe the
  daemon holds, exec'd through a symlink named after the comm (so /proc/PID/comm, status,
  `ps` and `kill -0` see it), with pid chosen through /proc/sys/kernel/ns_last_pid
  (exec-host-facts.md C.5; the writer's namespace only) and argv `/usr/bin/<comm>`
  (kdamonds: `kdamond.N`);
- damond's proc/PID/{maps,smaps,smaps_rollup,pagemap,numa_maps,statm} are bind-mounted
  over /proc/PID/* (for twins too), so every reader sees the emulated address space.
Killing a stand-in kills the emulated process (a kdamond's comes back: kernel threads
ignore signals); an emulated process that exits takes its stand-in with it. When the
daemon dies, the pipe closes and every stand-in exits by itself.

The Machine's process observer only enqueues; one worker thread does all forks and mounts
(a mount's source lookup is a FUSE request this daemon answers, so it must never run under
the machine's lock or a FUSE op).
"""
from __future__ import annotations

import ctypes
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from damond.host.namespace import REAL_PID_BASE
from damond.log import get_logger

PROC_FILES = ("maps", "smaps", "smaps_rollup", "pagemap", "numa_maps", "statm")
NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"
POLL_S = 0.02
MS_BIND = 4096

log = get_logger("damond.host")
_libc = ctypes.CDLL(None, use_errno=True)


def bind(src: str, dst: str) -> None:
    """mount --bind SRC DST (raises OSError)."""
    if _libc.mount(src.encode(), dst.encode(), None, MS_BIND, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"bind {src} -> {dst}: {os.strerror(e)}")


def fork_with_pid(pid: int, argv: list[str], executable: str, stdin) -> subprocess.Popen | None:
    """Start `executable` as pid `pid` of this PID namespace (ns_last_pid = pid - 1, then
    fork), restoring ns_last_pid after. None if another process already holds the pid or a
    fork raced us to it."""
    if os.path.exists(f"/proc/{pid}"):
        return None
    with open(NS_LAST_PID) as f:
        saved = int(f.read())
    with open(NS_LAST_PID, "w") as f:
        f.write(str(pid - 1))
    child = subprocess.Popen(argv, executable=executable, stdin=stdin, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True)
    with open(NS_LAST_PID, "w") as f:
        f.write(str(max(saved, 0)))
    if child.pid != pid:
        child.kill()
        child.wait()
        return None
    return child


class StandIns:
    """Keeps exec's /proc in step with the Machine's processes and the running kdamonds."""

    def __init__(self, system: Any, root: str, workdir: str):
        self.system, self.machine = system, system.machine
        self.root = root                                   # damond's mountpoint
        self.bindir = Path(workdir) / "standin-bin"        # comm-named symlinks to cat
        self.bindir.mkdir(parents=True, exist_ok=True)
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._keep_r, self._keep_w = os.pipe()               # the stand-ins' stdin: EOF when we die
        os.set_inheritable(self._keep_w, False)
        self.children: dict[int, tuple[subprocess.Popen, str]] = {}   # pid -> (stand-in, "proc" | "kthread")
        self.bound: set[int] = set()
        self._kthreads: dict[int, int] = {}                # kdamond index -> pid with a stand-in
        self._stop = threading.Event()

    def start(self) -> None:
        self.machine.add_process_observer(self._observe)
        threading.Thread(target=self._run, name="damond-standins", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.machine.remove_process_observer(self._observe)

    # called under the machine's lock: record only
    def _observe(self, event: str, proc: Any) -> None:
        self._events.put((event, proc.pid))

    def _exe(self, comm: str) -> str:
        path = self.bindir / comm.replace("/", "_")[:15]
        if not path.is_symlink():
            path.symlink_to("/bin/cat")
        return str(path)

    def _standin(self, pid: int, comm: str, argv0: str, kind: str) -> bool:
        """False if the pid is taken for now (a short-lived fork of the namespace, e.g. exec's
        own `mount`): the caller retries on the next round."""
        child = fork_with_pid(pid, [argv0], self._exe(comm), self._keep_r)
        if child is None:
            return False
        self.children[pid] = (child, kind)
        return True

    def _bind_proc(self, pid: int) -> None:
        if pid in self.bound or not os.path.isdir(f"/proc/{pid}"):
            return
        for f in PROC_FILES:
            try:
                bind(f"{self.root}/proc/{pid}/{f}", f"/proc/{pid}/{f}")
            except OSError as e:
                log.warning("proc_bind_failed", pid=pid, file=f, error=str(e))
                return
        self.bound.add(pid)

    def _add(self, pid: int) -> bool:
        """Stand-in (emulated pids, below REAL_PID_BASE) and binds; False: retry later."""
        p = self.machine.process(pid)
        if p is None:
            return True
        if pid < REAL_PID_BASE and pid not in self.children:
            if not self._standin(pid, p.comm, f"/usr/bin/{p.comm}", "proc"):
                return False
        self._bind_proc(pid)
        return True

    def _drop(self, pid: int) -> None:
        self.bound.discard(pid)
        ent = self.children.pop(pid, None)
        if ent is not None:
            ent[0].kill()
            ent[0].wait()

    def _sync_kthreads(self) -> None:
        live = {kd.index: kd.pid for kd in list(self.system.kdamonds) if kd.running and kd.pid > 0}
        for idx, pid in list(self._kthreads.items()):
            if live.get(idx) != pid:
                self._drop(pid)
                del self._kthreads[idx]
        for idx, pid in live.items():
            if idx not in self._kthreads and self._standin(pid, f"kdamond.{idx}", f"kdamond.{idx}", "kthread"):
                self._kthreads[idx] = pid

    def _reap(self) -> None:
        for pid, (child, kind) in list(self.children.items()):
            if child.poll() is None:
                continue
            del self.children[pid]
            self.bound.discard(pid)
            if kind == "proc" and self.machine.process(pid) is not None:
                log.info("standin_killed", pid=pid, status=child.returncode)
                self.machine.kill(pid)             # killing the stand-in kills the emulated process
            elif kind == "kthread":
                self._kthreads = {i: p for i, p in self._kthreads.items() if p != pid}

    def _run(self) -> None:
        ready = os.path.join(self.root, "kernel/mm/damon/admin/kdamonds/nr_kdamonds")
        while not os.path.exists(ready) and not self._stop.is_set():
            time.sleep(POLL_S)
        pending = {p.pid for p in self.machine.processes()}
        try:
            while not self._stop.is_set():
                pending = {pid for pid in pending if not self._add(pid)}
                try:
                    event, pid = self._events.get(timeout=POLL_S)
                    if event == "spawn":
                        pending.add(pid)
                    elif event == "exit":
                        pending.discard(pid)
                        self._drop(pid)
                except queue.Empty:
                    pass
                self._sync_kthreads()
                self._reap()
        except Exception:
            log.exception("standins_failed")
        finally:
            for pid in list(self.children):
                self._drop(pid)

