"""Thin mfusepy `Operations` over the served tree (ratarmount's FuseMount pattern).

Resolves a path to a node and delegates: getattr (st_size 4096, ns times), readdir, open
with kernfs' EACCES rules, read from a per-open snapshot taken at offset 0 (seq_file),
write = one independent store per write() cut to a page, zero-length and truncate no-ops,
create EACCES, mkdir/rmdir/unlink/rename/chmod/chown EPERM. Turns `ErrnoError` into
`FuseOSError`, logs rejected writes (debug, rate-limited), and logs anything else loudly as a bug.
Attribute names never collide with FUSE op names (no `lock`, `read`, ...).
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import threading
import time
from typing import Any

import mfusepy as fuse

from damond.errors import ErrnoError
from damond.fs.parse import PAGE_SIZE
from damond.fs.root import Served
from damond.fs.notify import sd_notify
from damond.fs.tree import DirNode, HandlerNode, Node, Snap
from damond.log import RateLimit

_ACC = os.O_ACCMODE
PREVIEW = 64


class _OpenFile:
    __slots__ = ("node", "st", "snap")

    def __init__(self, node: Node, st: Any):
        self.node, self.st, self.snap = node, st, Snap()


_pinned = threading.local()


def _pin_thread_state() -> None:
    """Keep this libfuse worker thread's Python thread state for the thread's life.

    ctypes runs each callback on a foreign thread between PyGILState_Ensure and _Release,
    which creates and destroys a thread state every time: a 16 KiB frame stack mmap'ed and
    munmap'ed per request, the munmap's TLB-shootdown IPI interrupting every other thread
    of the daemon (an spe_feed write: about a quarter of the FUSE thread's time). One
    Ensure without a Release makes the state outlive the callback; libfuse keeps its
    workers (max_idle_threads) and the interpreter frees the states at exit."""
    if not getattr(_pinned, "on", False):
        ctypes.pythonapi.PyGILState_Ensure()
        _pinned.on = True


def _serial(fn):
    """Run the op under the tree's op lock: FUSE threads never interleave inside the tree."""
    @functools.wraps(fn)
    def op(self, *args):
        _pin_thread_state()
        with self._tree.op_lock:
            return fn(self, *args)
    return op


class DamondOps(fuse.Operations):
    use_ns = True

    def __init__(self, served: Served, log, on_mounted=None, on_destroyed=None):
        self._on_mounted, self._on_destroyed = on_mounted, on_destroyed
        self._rejected = RateLimit()
        self._tree = served.tree
        self._nodes = served.tree.nodes
        self._procfs = served.procfs
        self._log = log
        self._files: dict[int, _OpenFile] = {}
        self._next_fh = 1

    def _node(self, path: str) -> Node:
        node = self._nodes.get(path)
        if node is None:
            if self._procfs is not None and path.startswith("/proc/"):
                node = self._procfs.lookup(path[6:])
            if node is None:
                raise fuse.FuseOSError(errno.ENOENT)
        return node

    @fuse.overrides(fuse.Operations)
    def init(self, path: str) -> None:
        notified = sd_notify("READY=1")       # before on_mounted, which lets the watchdog ping
        if self._on_mounted is not None:
            self._on_mounted()
        self._log.info("mounted", notified=notified)

    @fuse.overrides(fuse.Operations)
    def destroy(self, path: str) -> None:
        if self._on_destroyed is not None:
            self._on_destroyed()

    @fuse.overrides(fuse.Operations)
    @_serial
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        node = self._nodes.get(path)
        if node is None:
            node = self._node(path)
        return node.st

    @fuse.overrides(fuse.Operations)
    @_serial
    def readdir(self, path: str, fh: int) -> list[str]:
        node = self._node(path)
        if not isinstance(node, DirNode):
            raise fuse.FuseOSError(errno.ENOTDIR)
        names = [".", "..", *node.children]
        if self._procfs is not None and node is self._procfs.dir:
            names.extend(self._procfs.pids())
        return names

    @fuse.overrides(fuse.Operations)
    @_serial
    def open(self, path: str, flags: int) -> int:
        node = self._node(path)
        if node.is_dir:
            raise fuse.FuseOSError(errno.EISDIR)
        acc = flags & _ACC
        mode = node.st["st_mode"]         # kernfs: the current mode (chmod) and the file's ops
        if (acc != os.O_RDONLY and not (node.mode & 0o200 and mode & 0o222)) or \
                (acc != os.O_WRONLY and not (node.mode & 0o400 and mode & 0o444)):
            raise fuse.FuseOSError(errno.EACCES)
        st = None
        if isinstance(node, HandlerNode):
            st = self._call(node, node.handler.open, flags)
        fh = self._next_fh
        self._next_fh += 1
        self._files[fh] = _OpenFile(node, st)
        return fh

    @fuse.overrides(fuse.Operations)
    @_serial
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        f = self._files[fh]
        node = f.node
        if isinstance(node, HandlerNode):
            return self._call(node, node.handler.read, f.st, size, offset)
        self._check_active(node)
        return f.snap.read(lambda: self._call(node, self._tree.show, node), size, offset)

    def _check_active(self, node: Node) -> None:
        """kernfs_get_active(): a file whose directory an nr_* write removed is ENODEV."""
        if self._nodes.get(node.path) is not node:
            raise fuse.FuseOSError(errno.ENODEV)

    @fuse.overrides(fuse.Operations)
    @_serial
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        if not data:
            return 0
        f = self._files[fh]
        node = f.node
        try:
            if isinstance(node, HandlerNode):
                return node.handler.write(f.st, data)
            data = data[:PAGE_SIZE]
            self._check_active(node)
            self._tree.store(node, data)
            return len(data)
        except fuse.FuseOSError:
            raise
        except ErrnoError as e:
            ok, missed = self._rejected.allow()
            if ok:
                self._log.debug("write_rejected", path=node.path, value=repr(data[:PREVIEW]),
                                errno=errno.errorcode.get(e.errno, e.errno), reason=e.msg,
                                **({"suppressed": missed} if missed else {}))
            raise fuse.FuseOSError(e.errno) from None
        except Exception:
            self._log.exception("fs_op_failed", op="write", path=node.path, value=repr(data[:PREVIEW]))
            raise fuse.FuseOSError(errno.EINVAL) from None

    def _call(self, node: Node, fn, *args):
        try:
            return fn(*args)
        except ErrnoError as e:
            raise fuse.FuseOSError(e.errno) from None
        except Exception:
            self._log.exception("fs_op_failed", op=getattr(fn, "__name__", "?"), path=node.path)
            raise fuse.FuseOSError(errno.EINVAL) from None

    @fuse.overrides(fuse.Operations)
    @_serial
    def release(self, path: str, fh: int) -> int:
        f = self._files.pop(fh, None)
        if f is not None and isinstance(f.node, HandlerNode):
            self._call(f.node, f.node.handler.release, f.st)
        return 0

    @fuse.overrides(fuse.Operations)
    @_serial
    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        self._node(path)
        return 0

    @fuse.overrides(fuse.Operations)
    def create(self, path: str, mode: int, fi=None) -> int:
        raise fuse.FuseOSError(errno.EACCES)

    @fuse.overrides(fuse.Operations)
    def mkdir(self, path: str, mode: int) -> int:
        raise fuse.FuseOSError(errno.EPERM)

    @fuse.overrides(fuse.Operations)
    def rmdir(self, path: str) -> int:
        raise fuse.FuseOSError(errno.EPERM)

    @fuse.overrides(fuse.Operations)
    def unlink(self, path: str) -> int:
        raise fuse.FuseOSError(errno.EPERM)

    @fuse.overrides(fuse.Operations)
    def rename(self, old: str, new: str) -> int:
        raise fuse.FuseOSError(errno.EPERM)

    @fuse.overrides(fuse.Operations)
    @_serial
    def chmod(self, path: str, mode: int) -> int:
        """kernfs_iop_setattr: the owner (root) may chmod; the new mode reads back."""
        node = self._node(path)
        st = node.st
        st["st_mode"] = (st["st_mode"] & ~0o7777) | (mode & 0o7777)
        st["st_ctime"] = time.time_ns()
        return 0

    @fuse.overrides(fuse.Operations)
    @_serial
    def chown(self, path: str, uid: int, gid: int) -> int:
        node = self._node(path)
        if uid != -1 and uid != 0xFFFFFFFF:
            node.st["st_uid"] = uid
        if gid != -1 and gid != 0xFFFFFFFF:
            node.st["st_gid"] = gid
        node.st["st_ctime"] = time.time_ns()
        return 0

    @fuse.overrides(fuse.Operations)
    def symlink(self, target: str, source: str) -> int:
        raise fuse.FuseOSError(errno.EPERM)       # kernfs has no symlink op for sysfs users

    @fuse.overrides(fuse.Operations)
    def link(self, target: str, source: str) -> int:
        raise fuse.FuseOSError(errno.EPERM)

    @fuse.overrides(fuse.Operations)
    def mknod(self, path: str, mode: int, dev: int) -> int:
        raise fuse.FuseOSError(errno.EPERM)
