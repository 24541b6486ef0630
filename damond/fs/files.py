"""Files that are not DAMON attributes: the THP controls (bound to `machine.thp`),
`/proc/<pid>/{maps,smaps,smaps_rollup}` (from `machine.proc_*`, appearing and vanishing
with the emulated processes) and damond's own control files under `damond/`
(`processes`, `spawn`, `kill`, `truth`).

Each is a `FileHandler` (docs/ARCHITECTURE.md): reads come from a snapshot taken at
offset 0, as seq_file does; each write is one store of at most a page. THP formats and
parsers are those of `mm/huge_memory.c`/`mm/khugepaged.c` (`always [madvise] never`).
"""
from __future__ import annotations

import errno
import re
import tomllib
from typing import Any, Callable

from damond.fs import parse
from damond.fs.parse import ParseError, cstring, sysfs_streq
from damond.fs.tree import DirNode, FsError, HandlerNode, Node, Snap
from fs_layout.thp import ThpFile

TRUTH_WINDOWS_US = (("wss_100ms", 100_000), ("wss_1s", 1_000_000))


class TextFile:
    """A FileHandler from two callables: `text() -> bytes` and `store(bytes)` (None: ro)."""

    def __init__(self, mode: int, text: Callable[[], bytes] | None, store: Callable[[bytes], None] | None = None):
        self.mode, self._text, self._store = mode, text, store

    def open(self, flags: int) -> object:
        return Snap()

    def read(self, st: Snap, size: int, offset: int) -> bytes:
        if self._text is None:
            raise FsError(errno.EINVAL, "write-only")
        return st.read(self._text, size, offset)

    def write(self, st, data: bytes) -> int:
        data = data[:parse.PAGE_SIZE]
        self._store(cstring(data))
        return len(data)

    def release(self, st) -> None:
        pass


# ---- THP controls

def _resolve(obj: Any, bind: str) -> tuple[Any, Any]:
    """'khugepaged.max_ptes_none' -> (thp.khugepaged, 'max_ptes_none');
    'size_enabled[16]' -> (thp.size_enabled, 16); 'stats[16][split]' -> (thp.stats[16], 'split')."""
    parts = re.findall(r"[^.\[\]]+", bind)
    for p in parts[:-1]:
        obj = obj[int(p)] if isinstance(obj, dict) else getattr(obj, p)
    last = parts[-1]
    return obj, int(last) if isinstance(obj, dict) and last.isdigit() else last


def thp_handler(spec: ThpFile, get_thp: Callable[[], Any]) -> TextFile:
    def get() -> Any:
        obj, key = _resolve(get_thp(), spec.bind)
        if isinstance(obj, dict):
            return obj.get(key, 0)
        return getattr(obj, key)

    def text() -> bytes:
        v = get()
        if spec.kind == "choice":
            return (" ".join(f"[{c}]" if c == v else c for c in spec.choices) + "\n").encode()
        return b"%d\n" % int(v)

    def store(s: bytes) -> None:
        if spec.kind == "choice":
            v: Any = next((c for c in spec.choices if sysfs_streq(s, c.encode())), None)
            if v is None:
                raise FsError(errno.EINVAL, f"not one of {' '.join(spec.choices)}")
        elif spec.kind == "flag":
            v = parse.kstrtoul(s, 10)
            if v > 1:
                raise FsError(errno.EINVAL, "0 or 1")
        else:
            try:
                v = parse.kstrtouint(s, 10)
            except ParseError as e:
                raise FsError(errno.EINVAL, e.msg) from None
            if not spec.lo <= v <= spec.hi:
                raise FsError(errno.EINVAL, f"not in [{spec.lo}, {spec.hi}]")
        thp = get_thp()
        obj, key = _resolve(thp, spec.bind)
        try:
            if isinstance(obj, dict):
                setter = getattr(thp, "set_" + spec.bind.partition("[")[0], None)
                if setter is not None:
                    setter(key, v)
                else:
                    obj[key] = v
            else:
                setattr(obj, key, v)
        except ValueError as e:
            raise FsError(errno.EINVAL, str(e)) from None

    return TextFile(spec.mode, text, None if spec.kind == "ro" else store)


# ---- /proc/<pid>

class ProcFs:
    """Resolves `/proc/<pid>/...` against the machine's live processes on every lookup."""

    FILES = ("maps", "smaps", "smaps_rollup")

    def __init__(self, proc_dir: DirNode, machine: Any):
        self.dir, self.machine = proc_dir, machine
        self._cache: dict[int, tuple[DirNode, dict[str, HandlerNode]]] = {}

    def _alive(self, pid: int) -> bool:
        p = self.machine.process(pid)
        return p is not None and getattr(p, "alive", True)

    def pids(self) -> list[str]:
        return [str(p.pid) for p in self.machine.processes()]

    def lookup(self, rel: str) -> Node | None:
        """rel is the path below /proc ("123" or "123/maps")."""
        head, _, name = rel.partition("/")
        if not head.isdigit() or not self._alive(int(head)):
            return None
        pid = int(head)
        if pid not in self._cache:
            d = DirNode(head, self.dir)
            files = {}
            from damond.fs.procfiles import pid_handlers, sync     # pagemap, numa_maps, statm
            for f in self.FILES:
                fn = getattr(self.machine, "proc_" + f)
                files[f] = HandlerNode(f, d, TextFile(0o444, lambda fn=fn, pid=pid: (sync(self.machine, pid),
                                                                                     fn(pid).encode())[1]))
                d.children[f] = files[f]
            for f, h in pid_handlers(self.machine, pid).items():
                files[f] = d.children[f] = HandlerNode(f, d, h)
            self._cache = {p: v for p, v in self._cache.items() if self._alive(p)}
            self._cache[pid] = (d, files)
        d, files = self._cache[pid]
        return d if not name else files.get(name)


# ---- damond/ control files

def _spawn_spec(s: bytes) -> dict:
    """`KIND key=value ...` -> a [[workload]] table. Values are read as TOML values
    (true, 3, 2.5, "x y"), bare words such as 10M stay strings, as in the config file."""
    words = s.decode("utf-8", "replace").split()
    if not words:
        raise FsError(errno.EINVAL, "empty spawn line")
    spec: dict[str, Any] = {"kind": words[0]}
    for w in words[1:]:
        k, eq, v = w.partition("=")
        if not eq or not k:
            raise FsError(errno.EINVAL, f"not key=value: {w!r}")
        try:
            spec[k] = tomllib.loads(f"v = {v}")["v"]
        except tomllib.TOMLDecodeError:
            spec[k] = v
    return spec


def _kind_of(p: Any) -> str:
    """The workload kind a process runs (`-` for one without a workload)."""
    return getattr(getattr(p, "workload", None), "kind", None) or "-"


def control_files(machine: Any, log) -> dict[str, TextFile]:
    """damond/{processes,spawn,kill,truth}."""
    last = {"pid": -1}

    def processes() -> bytes:
        return "".join(f"{p.pid} {p.comm} {_kind_of(p)}\n" for p in machine.processes()).encode()

    def spawn(s: bytes) -> None:
        spec = _spawn_spec(s)
        try:
            pid = machine.spawn(spec)
        except Exception as e:   # the machine refuses a bad spec with a ValueError/ConfigError
            if not isinstance(e, (ValueError, KeyError, TypeError)) and type(e).__name__ != "ConfigError":
                raise
            raise FsError(errno.EINVAL, str(e)) from None
        last["pid"] = pid
        log.info("process_spawned", pid=pid, kind=spec["kind"])

    def kill(s: bytes) -> None:
        try:
            pid = parse.kstrtoint(s)
        except ParseError:
            raise
        p = machine.process(pid)
        if p is None or not getattr(p, "alive", True):
            raise FsError(errno.ESRCH, f"no process {pid}")
        machine.kill(pid)
        log.info("process_killed", pid=pid)

    def truth() -> bytes:
        """Counted bytes each process touched in the last 100 ms / 1 s. The first read starts
        the counting (machine.truth_start); a window it does not cover yet reads `-`."""
        machine.truth_start()
        now = machine.now_us
        out = []
        for p in machine.processes():
            vals = []
            for name, win in TRUTH_WINDOWS_US:
                wss = machine.truth_counted(p.pid, 0, 1 << 64, now - win)
                vals.append(f"{name}={'-' if wss is None else wss}")
            out.append(f"pid={p.pid} comm={p.comm} " + " ".join(vals) + "\n")
        return "".join(out).encode()

    return {
        "processes": TextFile(0o400, processes),
        "spawn": TextFile(0o600, lambda: b"%d\n" % last["pid"], spawn),
        "kill": TextFile(0o200, None, kill),
        "truth": TextFile(0o400, truth),
    }
