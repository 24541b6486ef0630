"""The served tree: nodes built from `fs_layout/`, a path -> node dict, and the global
trylock (the kernel's `damon_sysfs_lock`, `mm/damon/sysfs-common.c`).

Owns node kinds (directories, attribute files, `nr_*` files, `FileHandler` files),
`show`/`store` by kind with the kernel's formats and errnos, and the destroy-and-recreate
of numbered children. It does not interpret values across files (commit*.py) nor run
state commands (state.py). Paths are FUSE paths ("/kernel/mm/damon/admin/...").
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import gc
import stat
import threading
import time
from typing import Any, Callable, Iterator, Protocol, TypeVar

import fs_layout
from damond.errors import ErrnoError
from damond.fs import parse
from damond.fs.parse import ParseError, cstring, sysfs_streq
from damond.log import get_logger
from fs_layout import Attr, Dir, Indexed

ADMIN_PATH = "/kernel/mm/damon/admin"
SHOW_MAX = parse.PAGE_SIZE - 1   # sysfs_emit()/sysfs_kf_seq_show(): a show fills at most a page minus the NUL
NODE_BUDGET = 250_000     # an nr_* write that would grow the tree beyond this gets ENOMEM
_N = TypeVar("_N", bound="Node")
RELEASE_MIN_NODES = 2_000  # an nr_* write that destroys this many nodes gives the memory back
_T_NS = time.time_ns()

log = get_logger("damond.fs")


class FsError(ErrnoError):
    """What a file operation returns to the caller: one errno."""


class Snap:
    """One open file's seq_file buffer. A read at offset 0, or anywhere but where the last
    read ended (a pread on a fresh fd), shows the file again and serves from that offset,
    as seq_read_iter() re-traverses when ki_pos != read_pos."""
    __slots__ = ("data", "pos")

    def __init__(self):
        self.data, self.pos = b"", -1

    def read(self, show: Callable[[], bytes], size: int, offset: int) -> bytes:
        if offset == 0 or offset != self.pos:
            self.data = show()
        out = self.data[offset:offset + size]
        self.pos = offset + len(out)
        return out


class FileHandler(Protocol):
    mode: int

    def open(self, flags: int) -> object: ...
    def read(self, st, size: int, offset: int) -> bytes: ...
    def write(self, st, data: bytes) -> int: ...
    def release(self, st) -> None: ...


def _st(mode: int) -> dict:
    if stat.S_ISDIR(mode):
        return {"st_mode": mode, "st_nlink": 2, "st_size": 0, "st_uid": 0, "st_gid": 0,
                "st_atime": _T_NS, "st_mtime": _T_NS, "st_ctime": _T_NS}
    return {"st_mode": mode, "st_nlink": 1, "st_size": 4096, "st_uid": 0, "st_gid": 0,
            "st_atime": _T_NS, "st_mtime": _T_NS, "st_ctime": _T_NS}


class Node:
    __slots__ = ("name", "parent", "path", "st", "mode")
    is_dir = False

    def __init__(self, name: str, parent: "DirNode | None", mode: int = 0o755):
        self.name, self.parent, self.mode = name, parent, mode
        self.path = "" if parent is None else f"{parent.path}/{name}"
        self.st = _st(mode | (stat.S_IFDIR if self.is_dir else stat.S_IFREG))


class DirNode(Node):
    __slots__ = ("children", "role", "index", "obj")
    is_dir = True

    def __init__(self, name: str, parent: "DirNode | None", role: str = ""):
        super().__init__(name, parent)
        self.children: dict[str, Node] = {}
        self.role, self.index, self.obj = role, -1, None

    def get(self, rel: str) -> Any:
        """The staged value of a descendant attribute, e.g. `d.get("quotas/ms")`."""
        return self.node(rel).value

    def node(self, rel: str) -> Any:
        n: Any = self
        for part in rel.split("/"):
            n = n.children[part]
        return n

    def has(self, name: str) -> bool:
        return name in self.children

    def up(self, role: str) -> "DirNode":
        n: Any = self
        while n is not None and n.role != role:
            n = n.parent
        return n


class IndexedNode(DirNode):
    """The holder directory of an `Indexed` spec; `items` are its numbered children."""
    __slots__ = ("spec", "items")

    def __init__(self, name, parent, spec: Indexed):
        super().__init__(name, parent, spec.role or spec.name)
        self.spec, self.items = spec, []


class AttrNode(Node):
    __slots__ = ("spec", "value")

    def __init__(self, spec: Attr, parent: DirNode):
        super().__init__(spec.name, parent, spec.mode)
        self.spec, self.value = spec, spec.default


class NrNode(Node):
    """An `nr_*` file: reads the number of items, a write recreates them."""
    __slots__ = ("holder",)

    def __init__(self, name: str, holder: IndexedNode):
        super().__init__(name, holder, 0o600)
        self.holder = holder


class HandlerNode(Node):
    __slots__ = ("handler",)

    def __init__(self, name: str, parent: DirNode, handler: FileHandler):
        super().__init__(name, parent, handler.mode)
        self.handler = handler


def _subtree_size(spec, level: str) -> int:
    if isinstance(spec, Attr):
        return 1
    if isinstance(spec, Indexed):
        return 1 + (1 if spec.nr else 0) + len(spec.extra)
    return 1 + sum(_subtree_size(c, level) for c in spec.children if fs_layout.present(c.since, level))


class Tree:
    """All nodes, by path. `hooks` receives role events (state.py installs them)."""

    def __init__(self, level: str = fs_layout.DEFAULT_LEVEL):
        fs_layout.level_index(level)
        self.level = level
        self.nodes: dict[str, Node] = {}
        self.root = DirNode("", None)
        self.nodes["/"] = self.root
        self.tree_mutex = threading.Lock()
        # serialises FUSE ops (the FUSE loop is multi-threaded); a state command that waits
        # for the kdamond releases it (ops_released) so other files stay usable meanwhile
        self.op_lock = threading.RLock()
        self.on_destroy: list[Callable[[DirNode], None]] = []   # called for each destroyed item dir
        self.roles: dict[str, Any] = {}     # role name -> object with show(node) / store(node, data)
        self._size_cache: dict[int, int] = {}
        one_malloc_arena()

    # ---- building
    def mkdir_p(self, path: str) -> DirNode:
        d = self.root
        for part in path.strip("/").split("/"):
            if part not in d.children:
                self._add(d, DirNode(part, d))
            d = d.children[part]
        return d

    def _add(self, parent: DirNode, node: _N) -> _N:
        parent.children[node.name] = node
        self.nodes[node.path] = node
        return node

    def build(self, parent: DirNode, spec: Dir, name: str | None = None) -> DirNode:
        d = self._add(parent, DirNode(spec.name if name is None else name, parent, spec.role))
        for c in spec.children:
            if not fs_layout.present(c.since, self.level):
                continue
            if isinstance(c, Attr):
                self._add(d, AttrNode(c, d))
            elif isinstance(c, Indexed):
                h = self._add(d, IndexedNode(c.name, d, c))
                if c.nr:
                    self._add(h, NrNode(c.nr, h))
                for e in c.extra:
                    self._add(h, AttrNode(e, h))
            else:
                self.build(d, c)
        return d

    def add_file(self, path: str, handler: FileHandler) -> HandlerNode:
        parent_path, _, name = path.rstrip("/").rpartition("/")
        d = self.mkdir_p(parent_path) if parent_path else self.root
        return self._add(d, HandlerNode(name, d, handler))

    def remove(self, node: Node) -> None:
        if isinstance(node, DirNode):
            for c in list(node.children.values()):
                self.remove(c)
            node.children.clear()
        self.nodes.pop(node.path, None)
        if node.parent is not None:
            node.parent.children.pop(node.name, None)

    # ---- numbered children
    def set_nr(self, holder: IndexedNode, n: int) -> None:
        """Destroy every item of `holder`, then create n fresh ones (even if unchanged)."""
        key = id(holder.spec.item)
        if key not in self._size_cache:
            self._size_cache[key] = _subtree_size(holder.spec.item, self.level)
        if n * self._size_cache[key] + len(self.nodes) - self._items_size(holder) > NODE_BUDGET:
            raise FsError(errno.ENOMEM, f"{n} directories exceed the emulator's budget")
        before = len(self.nodes)
        for item in holder.items:
            self._destroy_item(item)
        holder.items = []
        if before - len(self.nodes) >= RELEASE_MIN_NODES:
            self._release_memory(holder)
        for i in range(n):
            item = self.build(holder, holder.spec.item, str(i))
            item.index = i
            holder.items.append(item)

    def _release_memory(self, holder: IndexedNode) -> None:
        """Give back what destroying many directories freed, so RSS returns to where it was:
        Python dicts never shrink their tables on deletion (re-insert into fresh ones, in
        place: the FUSE ops hold a reference to `nodes`), the node objects refer to their
        parents (cycles: collect them now), and glibc keeps freed small blocks in its arenas
        until malloc_trim()."""
        for d in (self.nodes, holder.children):
            live = dict(d)
            d.clear()
            d.update(live)
        gc.collect()
        _malloc_trim()

    def _items_size(self, holder: IndexedNode) -> int:
        if not holder.items:
            return 0
        return len(holder.items) * self._size_cache.get(id(holder.spec.item), 1)

    def _destroy_item(self, item: DirNode) -> None:
        stack = [item]
        while stack:
            d = stack.pop()
            if d.role:
                for fn in self.on_destroy:
                    fn(d)
            stack.extend(c for c in d.children.values() if isinstance(c, DirNode))
        self.remove(item)

    # ---- the global trylock
    def trylock(self) -> None:
        if not self.tree_mutex.acquire(blocking=False):
            raise FsError(errno.EBUSY, "damon sysfs lock is held")

    def unlock(self) -> None:
        self.tree_mutex.release()

    @contextlib.contextmanager
    def ops_released(self) -> Iterator[None]:
        """Let other FUSE ops run while this one waits for the kdamond (the kernel's
        damon_sysfs_lock is still held, so nr_*/state/pid/path ops get EBUSY meanwhile)."""
        try:
            self.op_lock.release()
        except RuntimeError:          # not called from a FUSE op (tests, virtual time)
            yield
            return
        try:
            yield
        finally:
            self.op_lock.acquire()

    # ---- show / store
    def show(self, node: Node) -> bytes:
        if isinstance(node, AttrNode):
            role = self.roles.get(node.spec.role)
            if role is not None and role.show is not None:
                return role.show(node)[:SHOW_MAX]
            return format_value(node.spec, node.value, self.level)[:SHOW_MAX]
        if isinstance(node, NrNode):
            return b"%d\n" % len(node.holder.items)
        raise FsError(errno.EINVAL)

    def store(self, node: Node, data: bytes) -> None:
        """One write(): parse it on its own and stage it (or run the role's behaviour)."""
        s = cstring(data)
        if isinstance(node, NrNode):
            self.store_nr(node.holder, s)
            return
        if not isinstance(node, AttrNode):
            raise FsError(errno.EINVAL)
        role = self.roles.get(node.spec.role)
        if role is not None and role.store is not None:
            role.store(node, s)
            return
        node.value = parse_value(node.spec, s, self.level)

    def store_nr(self, holder: IndexedNode, s: bytes) -> None:
        n = parse.kstrtoint(s)
        spec = holder.spec
        if n < 0 or (spec.max_nr is not None and n > spec.max_nr):
            raise FsError(errno.EINVAL, f"{spec.nr} out of range")
        self.trylock()
        try:
            if spec.busy_if_running:
                busy = self.roles.get("busy_if_running")
                if busy is not None and busy(holder):
                    raise FsError(errno.EBUSY, "a kdamond is running")
            self.set_nr(holder, n)
        finally:
            self.unlock()


def keywords_at(spec: Attr, level: str) -> tuple:
    """The words a keyword file accepts (and avail_* lists) at this level."""
    from fs_layout.admin import KEYWORD_SINCE

    words = spec.choices or tuple(spec.keywords)
    return tuple(w for w in words if fs_layout.present(KEYWORD_SINCE.get(w, "6.18"), level))


def format_value(spec: Attr, v: Any, level: str) -> bytes:
    k = spec.kind
    if k in ("u64", "u32", "int"):
        return b"%d\n" % v
    if k == "bool":
        return b"Y\n" if v else b"N\n"
    if k == "keyword":
        return (getattr(v, "value", v)).encode() + b"\n"
    if k == "string":
        return v + b"\n"
    if k == "keyword_list":
        return "".join(f"{w.value}\n" for w in keywords_at(spec, level)).encode()
    raise AssertionError(k)


_INT_PARSERS = {"u64": parse.kstrtoul, "u32": parse.kstrtouint, "int": parse.kstrtoint}


def parse_value(spec: Attr, s: bytes, level: str) -> Any:
    """Parse one store for a plain attribute; raises ParseError/FsError with the errno."""
    k = spec.kind
    if k in _INT_PARSERS:
        try:
            v = _INT_PARSERS[k](s)
        except ParseError as e:
            if spec.errno is not None:
                raise ParseError(spec.errno, e.msg) from None
            raise
        if (spec.lo is not None and v < spec.lo) or (spec.hi is not None and v > spec.hi) or v in spec.invalid:
            raise FsError(errno.EINVAL, f"{spec.name} out of range")
        return v
    if k == "bool":
        return parse.kstrtobool(s)
    if k == "keyword":
        for w in keywords_at(spec, level):
            if sysfs_streq(s, w.value.encode()):
                return w
        raise FsError(errno.EINVAL, f"unknown {spec.name}")
    if k == "string":
        return bytes(s)
    raise FsError(errno.EACCES)


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
            _LIBC.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):
            _LIBC = False
    return _LIBC


def one_malloc_arena() -> None:
    """mallopt(M_ARENA_MAX, 1) before the FUSE loop starts its worker threads: with one
    arena per thread, memory a thread frees stays in that thread's arena and malloc_trim()
    cannot give it back (measured: +15 MB per 4000-scheme cycle). The GIL serialises the
    Python work anyway, so one arena costs no parallelism. No-op without glibc."""
    libc = _libc()
    if libc:
        libc.mallopt(M_ARENA_MAX, 1)


def _malloc_trim() -> None:
    """glibc's malloc_trim(0): return free arena memory to the system (no-op elsewhere)."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)


M_ARENA_MAX = -8


_LIBC: Any = None
