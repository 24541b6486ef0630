"""One experiment's machine and the files it is driven through, on virtual time.

Owns building a `System` from a config text (the daemon's own code: Machine, PfnTree,
Kdamond on a `VirtualClock`) and the served tree (`damond.fs.root.build`, the same tree
the FUSE front serves), and the user's side of it: `write`/`read` are one write(2) or
read of a file exactly as `echo`/`cat` through the mount would do them, so every
parameter goes staged tree -> damond/fs/commit*.py -> params.Ctx -> Kdamond, as on the
mount. Time passes only through `run` (the kdamond loop, or the bare machine while no
kdamond runs).
"""
from __future__ import annotations

import os

from damond.clock import VirtualClock
from damond.config import Config
from damond.fs.root import build
from damond.fs.tree import HandlerNode
from damond.system import System

ADMIN = "kernel/mm/damon/admin"
KD = f"{ADMIN}/kdamonds/0"
CTX = f"{KD}/contexts/0"
ULONG_MAX = (1 << 64) - 1
UINT_MAX = (1 << 32) - 1


class Session:
    def __init__(self, config_text: str, name: str = "reproduce"):
        self.config = Config.from_text(config_text, f"<reproduce:{name}>")
        self.system = System.from_config(self.config, VirtualClock())
        self.machine = self.system.machine
        served = build(self.system)
        self.tree, self.procfs = served.tree, served.procfs

    # --- files -----------------------------------------------------------------------------------
    def _node(self, rel: str):
        rel = rel.strip("/")
        if rel.startswith("proc/"):
            return self.procfs.lookup(rel[len("proc/"):])     # resolved per lookup, as FUSE does
        return self.tree.nodes["/" + rel]

    def write(self, rel: str, value) -> None:
        """`echo value > rel` (one write of the text and a newline)."""
        node = self._node(rel)
        data = f"{value}\n".encode()
        if isinstance(node, HandlerNode):
            st = node.handler.open(os.O_WRONLY)
            try:
                node.handler.write(st, data)
            finally:
                node.handler.release(st)
            return
        self.tree.store(node, data)

    def write_file(self, rel: str, data: bytes) -> None:
        """`cat file > rel`: the whole text in writes of up to 128 KiB, then close."""
        h = self._node(rel).handler
        st = h.open(os.O_WRONLY)
        try:
            for i in range(0, len(data), 128 << 10):
                h.write(st, data[i:i + (128 << 10)])
        finally:
            h.release(st)

    def read(self, rel: str) -> str:
        node = self._node(rel)
        if isinstance(node, HandlerNode):
            st = node.handler.open(os.O_RDONLY)
            try:
                out, off = b"", 0
                while True:
                    b = node.handler.read(st, 1 << 20, off)
                    if not b:
                        break
                    out += b
                    off += len(b)
            finally:
                node.handler.release(st)
            return out.decode()
        return self.tree.show(node).decode()

    def pread(self, rel: str, offset: int, size: int) -> bytes:
        """One pread(2) of a binary file (proc/PID/pagemap)."""
        h = self._node(rel).handler
        st = h.open(os.O_RDONLY)
        try:
            return h.read(st, size, offset)
        finally:
            h.release(st)

    def exists(self, rel: str) -> bool:
        """`test -e rel` (a node the feature level lacks does not exist)."""
        try:
            return self._node(rel) is not None
        except (KeyError, OSError):
            return False

    def read_int(self, rel: str) -> int:
        return int(self.read(rel).split()[0])

    def listdir(self, rel: str) -> list[str]:
        prefix = "/" + rel.strip("/") + "/"
        return sorted({p[len(prefix):].split("/")[0] for p in self.tree.nodes if p.startswith(prefix)})

    # --- time -------------------------------------------------------------------------------------
    @property
    def kdamond(self):
        kds = [k for k in self.system.kdamonds if k.running]
        return kds[0] if kds else None

    def now_us(self) -> int:
        return self.system.clock.now_us()

    def run(self, us: int) -> None:
        """Let `us` of emulated time pass (the kdamond loop drives the machine while it runs)."""
        kd = self.kdamond
        if kd is not None:
            kd.run_for(int(us))
        else:
            self.system.clock.sleep_us(int(us))
            self.machine.advance_to(self.system.clock.now_us())

    def run_until_populated(self, pid: int, limit_us: int = 10_000_000, step_us: int = 100_000) -> None:
        """Wait until pid's workload has left its populate phase (as the RFC's scripts wait
        for the PID line the programs print once their memory is touched)."""
        end = self.now_us() + limit_us
        while self.now_us() < end:
            w = self.machine.process(pid).workload
            i, _, _ = w.phase_at(self.now_us())
            if i >= 0 and i < len(w.phases) and w.phases[i].name != "populate":
                return
            self.run(step_us)

    # --- the RFC scripts' staging ---------------------------------------------------------------
    def stage(self, pids: list[int], schemes: list[dict], ops: str = "vaddr", sample_us: int = 5000,
              aggr_us: int = 100000, update_us: int = 1000000, nr_regions: tuple[int, int] = (10, 1000),
              regions: dict[int, list[tuple[int, int]]] | None = None) -> None:
        """One kdamond, one context, a target per pid, the given schemes (dicts of
        action, nr_accesses, age, sz, target_order, hot_threshold, apply_interval_us, filters)."""
        self.write(f"{ADMIN}/kdamonds/nr_kdamonds", 1)
        self.write(f"{KD}/contexts/nr_contexts", 1)
        self.write(f"{CTX}/operations", ops)
        m = f"{CTX}/monitoring_attrs"
        self.write(f"{m}/intervals/sample_us", sample_us)
        self.write(f"{m}/intervals/aggr_us", aggr_us)
        self.write(f"{m}/intervals/update_us", update_us)
        self.write(f"{m}/nr_regions/min", nr_regions[0])
        self.write(f"{m}/nr_regions/max", nr_regions[1])
        self.write(f"{CTX}/targets/nr_targets", len(pids))
        for i, pid in enumerate(pids):
            self.write(f"{CTX}/targets/{i}/pid_target", pid)
            rs = (regions or {}).get(pid, [])
            self.write(f"{CTX}/targets/{i}/regions/nr_regions", len(rs))
            for j, (a, b) in enumerate(rs):
                self.write(f"{CTX}/targets/{i}/regions/{j}/start", a)
                self.write(f"{CTX}/targets/{i}/regions/{j}/end", b)
        self.stage_schemes(schemes)

    def stage_schemes(self, schemes: list[dict]) -> None:
        s = f"{CTX}/schemes"
        self.write(f"{s}/nr_schemes", len(schemes))
        for i, sc in enumerate(schemes):
            d = f"{s}/{i}"
            self.write(f"{d}/action", sc.get("action", "stat"))
            for key in ("target_order", "hot_threshold", "apply_interval_us"):
                if key in sc:
                    self.write(f"{d}/{key}", sc[key])
            for key, (lo, hi) in (("sz", sc.get("sz", (0, ULONG_MAX))),
                                  ("nr_accesses", sc.get("nr_accesses", (0, UINT_MAX))),
                                  ("age", sc.get("age", (0, UINT_MAX)))):
                self.write(f"{d}/access_pattern/{key}/min", lo)
                self.write(f"{d}/access_pattern/{key}/max", hi)
            filters = sc.get("filters", [])
            if filters:
                self.write(f"{d}/filters/nr_filters", len(filters))
                for j, f in enumerate(filters):
                    for k, v in f.items():
                        self.write(f"{d}/filters/{j}/{k}", v)

    def state(self, cmd: str) -> None:
        self.write(f"{KD}/state", cmd)

    def stats(self, i: int) -> dict[str, int]:
        """`echo update_schemes_stats > state; grep . schemes/<i>/stats/*`."""
        self.state("update_schemes_stats")
        d = f"{CTX}/schemes/{i}/stats"
        return {k: self.read_int(f"{d}/{k}") for k in ("nr_tried", "sz_tried", "nr_applied", "sz_applied")}

    def tried(self, nr_schemes: int) -> list[list[tuple[int, ...]]]:
        """`echo update_schemes_tried_regions > state` (one apply interval passes), then every
        scheme's tried_regions/<R>/{start,end,nr_accesses,age}."""
        self.state("update_schemes_tried_regions")
        out = []
        for i in range(nr_schemes):
            d = f"{CTX}/schemes/{i}/tried_regions"
            regs = []
            for r in sorted((x for x in self.listdir(d) if x.isdigit()), key=int):
                regs.append(tuple(self.read_int(f"{d}/{r}/{k}") for k in ("start", "end", "nr_accesses", "age")))
            out.append(regs)
        return out

    def anon_huge_kb(self, pid: int) -> int:
        for line in self.read(f"proc/{pid}/smaps_rollup").splitlines():
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1])
        return 0

    def nr_anon(self, kb: int) -> int:
        return self.read_int(f"kernel/mm/transparent_hugepage/hugepages-{kb}kB/stats/nr_anon")
