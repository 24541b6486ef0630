"""Same-pid stand-ins and the per-process /proc binds of `damond exec` (runs inside the
daemon, in exec's private PID and mount namespaces).

Every Machine process (a configured workload, a `damond/spawn`, a twin) and every running
kdamond appears in exec's /proc under its emulated pid:
- an emulated process (pid below namespace.REAL_PID_BASE; twins carry real pids above it)
  gets a stand-in: `cat` reading a pipe the daemon holds, exec'd through a symlink named
  after the comm (so /proc/PID/comm, status, `ps` and `kill -0` see it), created with
  exactly that pid by the single-threaded spawner (spawner.py: clone3 set_tid), argv
  `/usr/bin/<comm>` (kdamonds: `kdamond.N`);
- damond's proc/PID/{maps,smaps,smaps_rollup,pagemap,numa_maps,statm} are bind-mounted
  over /proc/PID/* (for twins too), so every reader sees the emulated address space.
Killing a stand-in kills the emulated process (a kdamond's comes back: kernel threads
ignore signals); an emulated process that exits takes its stand-in with it. When the
daemon dies, the pipe closes and every stand-in exits by itself.

The Machine's process observer only enqueues; one worker thread talks to the spawner and
does all mounts (a mount's source lookup is a FUSE request this daemon answers, so it
must never run under the machine's lock or inside a FUSE op).
"""
from __future__ import annotations

import ctypes
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from damond.host.namespace import REAL_PID_BASE
from damond.log import get_logger

PROC_FILES = ("maps", "smaps", "smaps_rollup", "pagemap", "numa_maps", "statm")
POLL_S = 0.02
MS_BIND = 4096

log = get_logger("damond.host")
_libc = ctypes.CDLL(None, use_errno=True)


def bind(src: str, dst: str) -> None:
    """mount --bind SRC DST (raises OSError)."""
    if _libc.mount(src.encode(), dst.encode(), None, MS_BIND, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"bind {src} -> {dst}: {os.strerror(e)}")


class StandIns:
    """Keeps exec's /proc in step with the Machine's processes and the running kdamonds."""

    def __init__(self, system: Any, root: str, workdir: str):
        self.system, self.machine = system, system.machine
        self.root = root                                   # damond's mountpoint
        self.bindir = Path(workdir) / "standin-bin"        # comm-named symlinks to cat
        self.bindir.mkdir(parents=True, exist_ok=True)
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self.children: dict[int, str] = {}                 # pid -> "proc" | "kthread"
        self.bound: set[int] = set()
        self._kthreads: dict[int, int] = {}                # kdamond index -> pid with a stand-in
        self._stop = threading.Event()
        self._spawner: subprocess.Popen | None = None
        self._lines = b""

    def start(self) -> None:
        keep_r, self._keep_w = os.pipe()                   # the stand-ins' stdin: EOF when we die
        self._spawner = subprocess.Popen([sys.executable, "-m", "damond.host.spawner", str(keep_r)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(keep_r,))
        os.close(keep_r)
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

    # ---- the spawner
    def _read_line(self, timeout: float) -> str | None:
        out = self._spawner.stdout.fileno()
        while b"\n" not in self._lines:
            if not select.select([out], [], [], timeout)[0]:
                return None
            chunk = os.read(out, 4096)
            if not chunk:
                raise EOFError("the stand-in spawner exited")
            self._lines += chunk
        line, self._lines = self._lines.split(b"\n", 1)
        return line.decode()

    def _handle(self, line: str) -> str | None:
        """Acts on an `exit` report; returns any other line."""
        words = line.split()
        if words[0] != "exit":
            return line
        pid = int(words[1])
        kind = self.children.pop(pid, None)
        self.bound.discard(pid)
        if kind == "proc" and self.machine.process(pid) is not None:
            log.info("standin_killed", pid=pid, status=int(words[2]))
            self.machine.kill(pid)                 # killing the stand-in kills the emulated process
        elif kind == "kthread":
            self._kthreads = {i: p for i, p in self._kthreads.items() if p != pid}
        return None

    def _standin(self, pid: int, comm: str, argv0: str, kind: str) -> bool:
        """False if the pid is taken for now: the caller retries on a later round."""
        self._spawner.stdin.write(f"spawn {pid} {self._exe(comm)} {argv0}\n".encode())
        self._spawner.stdin.flush()
        while True:
            line = self._read_line(5.0)
            if line is None:
                raise TimeoutError("the stand-in spawner did not answer")
            reply = self._handle(line)
            if reply is not None:
                break
        if reply.startswith("ok "):
            self.children[pid] = kind
            return True
        return False

    # ---- processes
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
        if self.children.pop(pid, None) is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _sync_kthreads(self) -> None:
        live = {kd.index: kd.pid for kd in list(self.system.kdamonds) if kd.running and kd.pid > 0}
        for idx, pid in list(self._kthreads.items()):
            if live.get(idx) != pid:
                self._drop(pid)
                del self._kthreads[idx]
        for idx, pid in live.items():
            if idx not in self._kthreads and self._standin(pid, f"kdamond.{idx}", f"kdamond.{idx}", "kthread"):
                self._kthreads[idx] = pid

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
                while (line := self._read_line(0)) is not None:
                    self._handle(line)
        except Exception:
            log.exception("standins_failed")
        finally:
            for pid in list(self.children):
                self._drop(pid)
