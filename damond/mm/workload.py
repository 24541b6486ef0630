"""Workloads: [[workload]] tables -> emulated processes with VMAs and a timeline of access phases.

Owns the kinds (sparse-hotspot, uniform, thp-hot, access_memory, access_memory_even,
masim, tiering, guest-db), their validation, and what each does per touch: a phase holds streams, each a set of
pages `start + (i // n_in) * s_out + (i % n_in) * s_in` (vpn units, i < n) touched at
`rate` page touches per second, either cyclically (a sweep cursor, deterministic) or at
random (independent reference model). A stream with `work` (a timing.Work: the RFC loop's
operations, iteration overhead and sleeps) gets its rate from the timing model each step
(access.Stepper); one without keeps the fixed rate (the `rate` key or [machine]
access_rate). Streams are what the TLB model and the SPE sampler consume.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from damond.config import parse_size
from damond.mm import masim
from damond.mm.phys import PAGE_SHIFT, PAGE_SIZE
from damond.mm.timing import Work

FIXED_RATE = 2e7        # page touches per second of a workload with a fixed rate and no `rate` key
TIME_NS = 20.0          # hot_workload's time(NULL) per iteration (vDSO)
USLEEP_SLACK_NS = 50_000  # default timer slack added to every usleep()

KINDS = ("mmap", "sparse-hotspot", "uniform", "thp-hot", "access_memory", "access_memory_even", "masim",
         "tiering", "guest-db")
COMMON = {"kind", "comm", "rate", "cpu", "node", "memcg", "start_s", "shmem", "huge", "hint"}
KIND_KEYS = {
    "mmap": {"size", "populate"},
    "sparse-hotspot": {"size", "stride", "wait_s"},
    "uniform": {"size", "hot_size", "pattern", "populate"},
    "thp-hot": {"nr_thps", "hot_pct", "duration_s"},
    "access_memory": {"nr_regions", "sz_region", "access_time_ms", "repeat"},
    "access_memory_even": {"nr_regions", "sz_region"},
    "masim": {"file", "repeat"},
    "tiering": {"size", "hot_size", "move_s", "populate"},
    "guest-db": {"size", "seed", "scan_every_s", "scan_s"},
}
MMAP_THRESHOLD = 128 << 10


class SpecError(ValueError):
    """A bad workload table: `key` names the offending key."""

    def __init__(self, key: str, problem: str, path: str | None = None, line: int | None = None):
        super().__init__(problem)
        self.key, self.problem, self.path, self.line = key, problem, path, line


@dataclass
class Stream:
    """Pages touched by one access pattern during a phase."""
    vma_uid: int
    start: int          # first vpn
    n: int              # pages in the stream
    s_in: int = 1
    n_in: int = 0       # 0: one level (n_in = n)
    s_out: int = 0
    rate: float = 0.0   # page touches per second
    cyclic: bool = True
    once: bool = False  # one pass only (populate)
    work: Work | None = None   # timed: the rate follows from the timing model (access.Stepper)
    # the sweep cursor when the rate changed inside a phase: position pos_base at t_base
    base_phase: int | None = field(default=None, repr=False)
    t_base: int = field(default=0, repr=False)
    pos_base: float = field(default=0.0, repr=False)
    # cache of the leaf structure, keyed by the process mapping generation
    cache_gen: object = field(default=None, repr=False)
    nr_leaves: int = field(default=0, repr=False)
    all_present: bool = field(default=False, repr=False)
    has_cold: bool = field(default=True, repr=False)
    af_all: object = field(default=None, repr=False)      # unique AF locations of the whole stream
    af_runs: object = field(default=None, repr=False)     # af_all as a few strided slices, or None
    pidx_all: object = field(default=None, repr=False)    # every page's physical index (small present streams)
    heads_va: object = field(default=None, repr=False)    # block heads in address order (contiguous THP-only streams)
    node_frac: object = field(default=None, repr=False)   # share of the pages per NUMA node (tiered machines)
    af_mark: tuple | None = field(default=None, repr=False)     # (flags.ver, cache_gen) when every af_all leaf had AF
    af_tri: tuple | None = field(default=None, repr=False)      # (cache_gen, af_runs as pagebytes.run_rows)

    def vpns(self, idx: np.ndarray) -> np.ndarray:
        n_in = self.n_in or self.n
        return self.start + (idx // n_in) * self.s_out + (idx % n_in) * self.s_in

    def cursor(self, phase_start: int, t_us: int) -> float:
        """Touches done since the phase started (at the current and the earlier rates)."""
        if self.base_phase != phase_start:
            return self.rate * (t_us - phase_start) / 1e6
        return self.pos_base + self.rate * (t_us - self.t_base) / 1e6

    def set_rate(self, phase_start: int, t_us: int, rate: float) -> None:
        """Change the rate at t_us without moving the cursor."""
        if rate != self.rate:
            self.pos_base, self.t_base, self.base_phase = self.cursor(phase_start, t_us), t_us, phase_start
            self.rate = rate

    def span(self) -> tuple[int, int]:
        """[lowest vpn, highest vpn] touched."""
        n_in = self.n_in or self.n
        last = self.vpns(np.array([self.n - 1]))[0]
        hi = self.start + (min(n_in, self.n) - 1) * self.s_in + ((self.n - 1) // n_in) * self.s_out
        return self.start, int(max(last, hi))


@dataclass
class Phase:
    name: str
    duration_us: int | None            # None: forever
    streams: list[Stream]
    actions: list[tuple] = field(default_factory=list)   # run at phase start: ("clear_refs",), ("madvise", s, e, adv)


@dataclass
class Workload:
    """A process's access timeline. Phase k runs [starts[k], starts[k] + duration)."""
    kind: str
    phases: list[Phase]
    repeat: bool = False
    exit_at_end: bool = False
    t0_us: int = 0
    repeat_from: int = 0      # with repeat: phases before this index run once (e.g. populate)

    def period_us(self) -> int | None:
        rep = self.phases[self.repeat_from:]
        if any(p.duration_us is None for p in rep):
            return None
        return sum(p.duration_us for p in rep)

    def phase_at(self, t_us: int) -> tuple[int, int, int | None]:
        """(phase index, phase start time, phase end time) at t; index -1 before start or after the end."""
        if t_us < self.t0_us:
            return -1, 0, self.t0_us
        rel = t_us - self.t0_us
        acc = 0
        for i, p in enumerate(self.phases[:self.repeat_from]):      # the once-only prefix
            if p.duration_us is None or rel < acc + p.duration_us:
                s = self.t0_us + acc
                return i, s, None if p.duration_us is None else s + p.duration_us
            acc += p.duration_us
        rel -= acc
        period = self.period_us()
        base = acc
        if period is not None and self.repeat and period > 0:
            base += (rel // period) * period
            rel -= (rel // period) * period
        acc = 0
        for i, p in enumerate(self.phases[self.repeat_from:], self.repeat_from):
            if p.duration_us is None or rel < acc + p.duration_us:
                s = self.t0_us + base + acc
                return i, s, None if p.duration_us is None else s + p.duration_us
            acc += p.duration_us
        return len(self.phases), self.t0_us + base + acc, None


# --- spec validation ----------------------------------------------------------------------------
def _size(spec: dict, key: str, default=None) -> int:
    v = spec.get(key, default)
    if v is None:
        raise SpecError(key, f"'{key}' is required for kind {spec.get('kind')!r}")
    try:
        s = parse_size(v, key)
    except ValueError as e:
        raise SpecError(key, str(e)) from None
    if s <= 0:
        raise SpecError(key, f"{key} must be positive")
    return s


def _num(spec: dict, key: str, default, lo: float = 0, hi: float = float("inf"), integer: bool = False):
    v = spec.get(key, default)
    if v is None:
        raise SpecError(key, f"'{key}' is required for kind {spec.get('kind')!r}")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        raise SpecError(key, f"{key} must be {'an integer' if integer else 'a number'}")
    if not lo <= v <= hi:
        raise SpecError(key, f"{key} {v} is out of range [{lo}, {hi}]")
    return v


def check_spec(spec: dict) -> str:
    """Validate keys and types of a [[workload]] table; return its kind."""
    if not isinstance(spec, dict):
        raise SpecError("kind", "a workload must be a table")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise SpecError("kind", f"kind {kind!r} is not one of {', '.join(KINDS)}")
    for k in spec:
        if k not in COMMON and k not in KIND_KEYS[kind]:
            raise SpecError(k, f"unknown key '{k}' for workload kind {kind!r} "
                               f"(known: {', '.join(sorted(COMMON | KIND_KEYS[kind]))})")
    if "hint" in spec and spec["hint"] not in ("hugepage", "nohugepage", "none"):
        raise SpecError("hint", "hint must be 'hugepage', 'nohugepage' or 'none'")
    if "huge" in spec and spec["huge"] not in ("always", "never", "within_size", "advise"):
        raise SpecError("huge", "huge must be always, never, within_size or advise")
    for b in ("shmem", "repeat", "populate"):
        if b in spec and not isinstance(spec[b], bool):
            raise SpecError(b, f"{b} must be true or false")
    if "comm" in spec and (not isinstance(spec["comm"], str) or not spec["comm"]):
        raise SpecError("comm", "comm must be a non-empty string")
    if "memcg" in spec and (not isinstance(spec["memcg"], str) or not spec["memcg"].startswith("/")):
        raise SpecError("memcg", "memcg must be a path starting with '/'")
    if "rate" in spec:
        _num(spec, "rate", 1, 1, 1e12)
    if "start_s" in spec:
        _num(spec, "start_s", 0, 0)
    if kind == "uniform" and spec.get("pattern", "seq") not in ("seq", "random"):
        raise SpecError("pattern", "pattern must be 'seq' or 'random'")
    if kind == "tiering":       # checked here too, so a mount refuses it before its daemon starts
        size = _size(spec, "size")
        hot = _size(spec, "hot_size", max(size // 64, PAGE_SIZE))
        if hot > size or hot % PAGE_SIZE:
            raise SpecError("hot_size", "hot_size must be a multiple of 4096 and not exceed size")
    return kind


# --- guest-db ---------------------------------------------------------------------------------------
# A KVM guest's RAM (QEMU memory-backend on THP tmpfs/shmem, prealloc) running a database
# (timing-and-designs-facts.md 2.7): the first quarter is the guest kernel and free memory
# (touched only by prealloc), then a buffer cache of 0.7 x RAM in 8 KiB blocks: a dense
# index at its start (1/64 of the cache, swept), and point lookups drawn zipfian (theta 0.99,
# YCSB's) over the other blocks, scattered as ScrambledZipfian scatters keys. The zipf law is
# kept as four tiers of block ranks (top 1/1024, next 1/128, next 1/16, all), each tier a
# random stream over blocks at a seed-chosen residue (distinct mod 16, so tiers do not
# overlap) with the tier's share of the accesses; every `scan_every_s` a table scan sweeps a
# seed-chosen 1/8 of the cache for `scan_s` on top of the lookups.
GUEST_DB_THETA = 0.99
GUEST_DB_TIERS = (1024, 128, 16)      # tier k holds every m-th block (1/m of them)
GUEST_DB_INDEX_SHARE = 0.2            # accesses that go to the index


def zipf_tier_shares(nr_blocks: int, tiers=GUEST_DB_TIERS, theta: float = GUEST_DB_THETA) -> list[float]:
    """Access shares of the rank ranges [0, n/m0), [n/m0, n/m0 + n/m1), ..., rest, under zipf(theta)."""
    w = np.arange(1, nr_blocks + 1, dtype=np.float64) ** -theta
    c = np.concatenate(([0.0], np.cumsum(w)))
    edges, acc = [], 0
    for m in tiers:
        acc = min(acc + max(nr_blocks // m, 1), nr_blocks)
        edges.append(acc)
    out, prev = [], 0
    for e in edges + [nr_blocks]:
        out.append(float(c[e] - c[prev]) / float(c[-1]))
        prev = e
    return out


# --- builders ---------------------------------------------------------------------------------------
class Builder:
    """Creates the VMAs of one process through `mapper` and returns its Workload.

    `mapper(length, name, anon, shmem, hint, huge, where)` maps a VMA and returns it;
    where is "mmap" or "heap".
    """

    def __init__(self, spec: dict, mapper, access_rate: float | None, bandwidth: float, base_dir: Path | None):
        """access_rate None: timed (rates from the timing model) unless the spec has `rate`."""
        self.spec, self.map, self.base_dir = spec, mapper, base_dir
        fixed = spec.get("rate", access_rate)
        self.timed = fixed is None
        self.rate = FIXED_RATE if fixed is None else float(fixed)
        # memset and populate (page zeroing on fault) run at the memory bandwidth
        self.memset_rate = bandwidth / PAGE_SIZE if self.timed else min(self.rate, bandwidth / PAGE_SIZE)
        self.shmem = bool(spec.get("shmem", False))
        hint = spec.get("hint")
        self.hint = None if hint in (None, "none") else hint
        self.huge = spec.get("huge")

    def work(self, w: Work = Work()) -> Work | None:
        return w if self.timed else None

    def area(self, length: int, name: str = "") -> tuple:
        if self.shmem and not name:
            name = "/dev/shm/damond-area"
        v = self.map(length, name, not self.shmem, self.shmem, self.hint, self.huge, "mmap")
        return v, v.start >> PAGE_SHIFT

    def build(self) -> Workload:
        return getattr(self, "_" + self.spec["kind"].replace("-", "_"))()

    def _populate(self, v, vpn: int, n: int) -> Phase:
        r = self.memset_rate if self.timed else self.rate
        return Phase("populate", int(n / r * 1e6) + 1, [Stream(v.uid, vpn, n, rate=r, once=True)])

    def _mmap(self) -> Workload:
        """A mapping and nothing else (tests, or memory for explicit `Machine.access` traces)."""
        size = _size(self.spec, "size")
        v, vpn = self.area(size)
        phases = [self._populate(v, vpn, size // PAGE_SIZE)] if self.spec.get("populate", False) else []
        return Workload("mmap", phases + [Phase("idle", None, [])])

    def _sparse_hotspot(self) -> Workload:
        size = _size(self.spec, "size", "8G")
        stride = _size(self.spec, "stride", "2M")
        if stride % PAGE_SIZE or stride > size:
            raise SpecError("stride", "stride must be a multiple of 4096 and not larger than size")
        wait = _num(self.spec, "wait_s", 0, 0)
        v, vpn = self.area(size)
        n = size // PAGE_SIZE
        phases = [self._populate(v, vpn, n)]
        if wait:
            phases.append(Phase("wait", int(wait * 1e6), []))
        phases.append(Phase("sparse", None, [Stream(v.uid, vpn, size // stride, s_in=stride // PAGE_SIZE,
                                                    rate=self.rate, work=self.work())], actions=[("clear_refs",)]))
        return Workload("sparse-hotspot", phases)

    def _uniform(self) -> Workload:
        size = _size(self.spec, "size")
        hot = _size(self.spec, "hot_size", size)
        if hot > size:
            raise SpecError("hot_size", "hot_size must not exceed size")
        v, vpn = self.area(size)
        cyclic = self.spec.get("pattern", "seq") == "seq"
        phases = []
        if self.spec.get("populate", True):
            phases.append(self._populate(v, vpn, size // PAGE_SIZE))
        phases.append(Phase("run", None, [Stream(v.uid, vpn, hot // PAGE_SIZE, rate=self.rate, cyclic=cyclic,
                                                 work=self.work())]))
        return Workload("uniform", phases)

    def _thp_hot(self) -> Workload:
        k = _num(self.spec, "nr_thps", 16, 1, 1 << 20, integer=True)
        pct = _num(self.spec, "hot_pct", 25, 0, 100, integer=True)
        if not 1 <= pct <= 100:
            pct = 25                         # hot_workload.c resets a bad pct to 25
        dur = _num(self.spec, "duration_s", 120, 0)
        total = k << 21
        v, vpn = self.area(total + (2 << 20))
        base = ((v.start + (2 << 20) - 1) & ~((2 << 20) - 1))
        bvpn = base >> PAGE_SHIFT
        hot = max(512 * pct // 100, 1)
        step = 512 // hot
        phases = [self._populate(v, bvpn, k * 512)]
        # hot_workload.c: per iteration one store + one load + 8 loads on one line of each THP,
        # time(NULL), and usleep(100) every 1024 iterations
        work = Work(ops=10, iter_touches=k, iter_ns=TIME_NS, sleep_every=1024 * k,
                    sleep_ns=100_000 + USLEEP_SLACK_NS)
        loop = Stream(v.uid, bvpn, hot * k, s_in=512, n_in=k, s_out=step, rate=self.rate, work=self.work(work))
        phases.append(Phase("hot", int(dur * 1e6) if dur else None, [loop],
                            actions=[("madvise", base, base + total, "hugepage")]))
        return Workload("thp-hot", phases, exit_at_end=bool(dur))

    def _regions(self, nr: int, sz: int) -> list[tuple[int, int]]:
        """malloc(sz) nr times: mmap chunks (>= 128 KB) in one merged VMA, else the heap."""
        per = (sz + 16 + PAGE_SIZE - 1) // PAGE_SIZE
        where = "mmap" if sz >= MMAP_THRESHOLD else "heap"
        v = self.map(per * nr * PAGE_SIZE, "", True, False, self.hint, None, where)
        vpn = v.start >> PAGE_SHIFT
        return [(v.uid, vpn + i * per) for i in range(nr)], per

    def _access_memory(self) -> Workload:
        nr = _num(self.spec, "nr_regions", None, 1, 1 << 16, integer=True)
        sz = _size(self.spec, "sz_region")
        ms = _num(self.spec, "access_time_ms", None, 1, 1 << 31, integer=True)
        regs, per = self._regions(nr, sz)
        npg = (sz + PAGE_SIZE - 1) // PAGE_SIZE
        phases = [Phase(f"region{i}", ms * 1000, [Stream(uid, vpn, npg, rate=self.memset_rate)])
                  for i, (uid, vpn) in enumerate(regs)]
        rep = bool(self.spec.get("repeat", False))
        return Workload("access_memory", phases, repeat=rep, exit_at_end=not rep)

    def _access_memory_even(self) -> Workload:
        nr = _num(self.spec, "nr_regions", None, 1, 1 << 16, integer=True)
        sz = _size(self.spec, "sz_region")
        regs, per = self._regions(nr, sz)
        npg = (sz + PAGE_SIZE - 1) // PAGE_SIZE
        uid, vpn = regs[0]
        even = (nr + 1) // 2
        s = Stream(uid, vpn, npg * even, s_in=1, n_in=npg, s_out=2 * per, rate=self.memset_rate)
        return Workload("access_memory_even", [Phase("even", None, [s])])

    def _tiering(self) -> Workload:
        """A memory tiering workload: `size` mapped (and populated), a hot window of `hot_size`
        swept cyclically that moves every `move_s` seconds to another of up to 64 places spread
        evenly over the area, alternating between its two ends (place 0, n-1, 1, n-2, ...),
        wrapping around, forever; the rest stays untouched (cold)."""
        size = _size(self.spec, "size")
        hot = _size(self.spec, "hot_size", max(size // 64, PAGE_SIZE))
        if hot > size or hot % PAGE_SIZE:
            raise SpecError("hot_size", "hot_size must be a multiple of 4096 and not exceed size")
        move = _num(self.spec, "move_s", 10, 0.001)
        v, vpn = self.area(size)
        npg, hpg = size // PAGE_SIZE, hot // PAGE_SIZE
        phases = [self._populate(v, vpn, npg)] if self.spec.get("populate", True) else []
        first = len(phases)
        places = max(min(npg // hpg, 64), 1)
        gap = npg // places
        order = [p for k in range((places + 1) // 2) for p in dict.fromkeys((k, places - 1 - k))]
        for k in order:
            phases.append(Phase(f"hot{k}", int(move * 1e6),
                                [Stream(v.uid, vpn + k * gap, hpg, rate=self.rate, work=self.work())]))
        return Workload("tiering", phases, repeat=True, repeat_from=first)

    def _masim(self) -> Workload:
        f = self.spec.get("file")
        if not isinstance(f, str):
            raise SpecError("file", "masim workload needs file = \"path\"")
        cfg = masim.load(f, self.base_dir)
        total = sum((r.size + PAGE_SIZE - 1) // PAGE_SIZE for r in cfg.regions) * PAGE_SIZE
        v, vpn = self.area(total)
        where, off = {}, vpn
        for r in cfg.regions:
            npg = (r.size + PAGE_SIZE - 1) // PAGE_SIZE
            where[r.name] = (off, npg)
            off += npg
        phases = []
        for ph in cfg.phases:
            tot = sum(p.weight for p in ph.patterns)
            streams = []
            for p in ph.patterns:
                if not p.weight:
                    continue
                start, npg = where[p.region]
                touches = self.rate * p.weight / tot
                lines = max(1, min(PAGE_SIZE // p.stride, PAGE_SIZE // 64))
                work = self.work(Work(ops=max(1, PAGE_SIZE // p.stride), lines=lines, share=p.weight / tot))
                if p.random:
                    streams.append(Stream(v.uid, start, npg, rate=touches / max(1, PAGE_SIZE // p.stride),
                                          cyclic=False, work=work))
                else:
                    sp = max(1, p.stride // PAGE_SIZE)
                    streams.append(Stream(v.uid, start, (npg + sp - 1) // sp, s_in=sp,
                                          rate=touches / max(1, PAGE_SIZE // p.stride), work=work))
            phases.append(Phase(ph.name, ph.time_ms * 1000, streams))
        rep = bool(self.spec.get("repeat", False))
        return Workload("masim", phases, repeat=rep, exit_at_end=not rep)

    def _guest_db(self) -> Workload:
        size = _size(self.spec, "size", "4G")
        seed = _num(self.spec, "seed", 1, 0, 2 ** 32 - 1, integer=True)
        every = _num(self.spec, "scan_every_s", 20, 1)
        scan = _num(self.spec, "scan_s", 2, 0)
        if size < (64 << 20):
            raise SpecError("size", "guest-db size must be at least 64M")
        rng = np.random.default_rng(seed)
        v, vpn = self.area(size, "" if not self.shmem else "/dev/shm/qemu-guest-ram")
        npg = size // PAGE_SIZE
        c0 = vpn + npg // 4                                   # the buffer cache
        cache = int(npg * 0.7) & ~1
        idx_pg = max(cache // 64, 2) & ~1
        blk0, nblk = c0 + idx_pg, (cache - idx_pg) // 2
        res = rng.permutation(16)[:len(GUEST_DB_TIERS)]
        shares = zipf_tier_shares(nblk)
        lookups = self.rate * (1 - GUEST_DB_INDEX_SHARE)
        streams = [Stream(v.uid, c0, idx_pg, rate=self.rate * GUEST_DB_INDEX_SHARE, work=self.work())]
        for k, m in enumerate(GUEST_DB_TIERS):
            a = int(res[k]) + 16 * int(rng.integers(0, m // 16))
            n = (nblk - a + m - 1) // m
            streams.append(Stream(v.uid, blk0 + 2 * a, 2 * n, s_in=1, n_in=2, s_out=2 * m, rate=lookups * shares[k],
                                  cyclic=False, work=self.work(Work(share=shares[k]))))
        streams.append(Stream(v.uid, blk0, 2 * nblk, rate=lookups * shares[-1], cyclic=False,
                              work=self.work(Work(share=shares[-1]))))
        sc_n = cache // 8
        sc0 = c0 + int(rng.integers(0, 8)) * sc_n
        phases = [self._populate(v, vpn, npg)]
        for _ in range(int(3600 // (every + scan)) + 1):        # an hour of oltp + scan cycles
            phases.append(Phase("oltp", int(every * 1e6), list(streams)))
            if scan:
                phases.append(Phase("scan", int(scan * 1e6), list(streams) + [
                    Stream(v.uid, sc0, sc_n, rate=self.rate, work=self.work())]))
        return Workload("guest-db", phases)
