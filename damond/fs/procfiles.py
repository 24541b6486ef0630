"""The /proc files damond adds beside maps/smaps/smaps_rollup: per process `pagemap`
(binary, pread at any u64-aligned offset), `numa_maps` and `statm`; machine-wide
`proc/iomem`, `proc/meminfo` and `proc/vmstat`. Texts come from `damond.mm.procfs`
under the machine's lock. As on a kernel, pagemap PFNs and iomem addresses show only to
a root reader (the FUSE caller's uid stands for CAP_SYS_ADMIN). `damond exec` binds these
over the real /proc paths (damond/host/namespace.py).
"""
from __future__ import annotations

import errno
from typing import Any

from damond.fs.files import TextFile
from damond.fs.tree import FsError
from damond.mm import procfs

PID_FILES = ("pagemap", "numa_maps", "statm")
GLOBAL_FILES = ("iomem", "meminfo", "vmstat")


def _caller_is_root() -> bool:
    try:
        import mfusepy

        return mfusepy.fuse_get_context()[0] == 0
    except Exception:           # outside a FUSE request (unit tests call handlers directly)
        return True


class _PagemapOpen:
    __slots__ = ("show_pfn",)

    def __init__(self, show_pfn: bool):
        self.show_pfn = show_pfn


class Pagemap:
    """proc/<pid>/pagemap: pagemap_read(); EINVAL for misaligned reads, ESRCH once the process exited."""
    mode = 0o400

    def __init__(self, machine: Any, pid: int):
        self.machine, self.pid = machine, pid

    def open(self, flags: int) -> object:
        sync(self.machine, self.pid)
        return _PagemapOpen(_caller_is_root())

    def read(self, st, size: int, offset: int) -> bytes:
        m = self.machine
        with m._mutex:
            proc = m.process(self.pid)
            if proc is None:
                raise FsError(errno.ESRCH, f"process {self.pid} exited")
            size -= size % 8
            if offset % 8:
                raise FsError(errno.EINVAL, "pagemap reads are u64-aligned")
            return procfs.pagemap(m, proc, offset, size, st.show_pfn)

    def write(self, st, data: bytes) -> int:
        raise FsError(errno.EINVAL, "pagemap is read-only")

    def release(self, st) -> None:
        pass


def sync(machine: Any, pid: int) -> None:
    """Before a /proc/PID file is read: a twin of a real program catches up with it first
    (`machine.proc_sync`, set by damond/host/twin.py; absent elsewhere)."""
    hook = getattr(machine, "proc_sync", None)
    if hook is not None:
        hook(pid)


def _per_process(machine: Any, pid: int, fn) -> bytes:
    sync(machine, pid)
    with machine._mutex:
        proc = machine.process(pid)
        return fn(machine, proc).encode() if proc is not None else b""


def pid_handlers(machine: Any, pid: int) -> dict[str, Any]:
    """The handlers of PID_FILES for one emulated process."""
    return {
        "pagemap": Pagemap(machine, pid),
        "numa_maps": TextFile(0o444, lambda: _per_process(machine, pid, procfs.numa_maps)),
        "statm": TextFile(0o444, lambda: _per_process(machine, pid, procfs.statm)),
    }


def global_handlers(machine: Any) -> dict[str, TextFile]:
    """proc/{iomem,meminfo,vmstat} of the emulated machine."""
    def locked(fn):
        def text() -> bytes:
            with machine._mutex:
                return fn().encode()
        return text

    return {
        "iomem": TextFile(0o444, locked(lambda: procfs.iomem(machine, _caller_is_root()))),
        "meminfo": TextFile(0o444, locked(lambda: procfs.meminfo(machine))),
        "vmstat": TextFile(0o444, locked(lambda: procfs.vmstat(machine))),
    }
