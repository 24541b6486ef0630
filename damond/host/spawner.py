"""The stand-in spawner: a single-threaded helper process that creates processes with a
chosen pid through clone3's `set_tid` (exec-host-facts.md C.5), and reports their exits.

Why a process of its own: the pid must be exact and race-free. ns_last_pid is not (any
task created in the namespace meanwhile, e.g. one of the daemon's FUSE or kdamond
threads, takes the pid), and a raw clone from the multi-threaded daemon could inherit a
lock another thread holds. This process has one thread, so its clone3 child is as safe as
a fork, and it execs at once.

Protocol (lines on stdin / stdout):
  `spawn PID EXE ARGV0`  ->  `ok PID` | `err PID ERRNO`   (EEXIST: the pid is taken)
  (unsolicited)          ->  `exit PID STATUS`            (a stand-in ended; STATUS as waitpid's)
The stand-ins' stdin is the fd named by argv[1] (the read end of a pipe the daemon holds):
when the daemon dies they read EOF and exit. EOF on stdin ends the spawner.
"""
from __future__ import annotations

import ctypes
import os
import select
import signal
import sys

SYS_CLONE3 = 435               # x86_64 and arm64 alike


class CloneArgs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
                                               "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def clone_with_pid(pid: int) -> int:
    """fork() as pid `pid` of this PID namespace: 0 in the child, the pid in the parent,
    -errno on failure."""
    tid = (ctypes.c_int32 * 1)(pid)
    args = CloneArgs(exit_signal=signal.SIGCHLD, set_tid=ctypes.addressof(tid), set_tid_size=1)
    r = _libc.syscall(SYS_CLONE3, ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    return r if r >= 0 else -ctypes.get_errno()


def _spawn(pid: int, exe: str, argv0: str, keep_fd: int) -> int:
    r = clone_with_pid(pid)
    if r == 0:                                   # the child: exec now, touching as little as possible
        try:
            os.setsid()
            os.dup2(keep_fd, 0)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            os.closerange(3, 256)
            os.execv(exe, [argv0])
        finally:
            os._exit(127)
    return r


def main() -> int:
    keep_fd = int(sys.argv[1])
    out = sys.stdout
    buf = b""
    while True:
        ready, _, _ = select.select([0], [], [], 0.05)
        while True:                              # report every ended stand-in
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            out.write(f"exit {pid} {status}\n")
            out.flush()
        if not ready:
            continue
        chunk = os.read(0, 4096)
        if not chunk:
            return 0
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            words = line.decode().split(" ", 3)
            if len(words) != 4 or words[0] != "spawn":
                out.write(f"err 0 {22}\n")
                out.flush()
                continue
            pid = int(words[1])
            r = _spawn(pid, words[2], words[3], keep_fd)
            out.write(f"ok {pid}\n" if r > 0 else f"err {pid} {-r}\n")
            out.flush()


if __name__ == "__main__":
    sys.exit(main())
