"""An emulated arm_spe PMU over the running machine (`drivers/perf/arm_spe_pmu.c` semantics).

A `Sampler` is a machine step observer. Each step reports, per process, the expected
number of accesses to each page and the fraction that missed the L2 TLB. The population
is the memory operations; a counter selects one op every `period` ops (with `jitter`, the
low 8 bits of each reload are random, as PMSIRR.RND), carried across steps. Each selected
op becomes a record: op (load/store), exact data VA (a random 8-byte offset in the page),
PA when `pa_enable`, event bits (retired, L1D access, TLB access, TLB refill drawn from
the TLB model's miss fraction, L1D refill / LLC access / LLC miss), latencies, pid/tid,
cpu and time. Filters apply after selection, as on hardware. All draws come from one
seeded Generator. Records accumulate in numpy arrays until drained.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

# event bits (PMSEVFR_EL1 numbering)
EV_RETIRED = 1 << 1
EV_L1D_ACCESS = 1 << 2
EV_L1D_REFILL = 1 << 3
EV_TLB_ACCESS = 1 << 4
EV_TLB_REFILL = 1 << 5
EV_LLC_ACCESS = 1 << 8
EV_LLC_MISS = 1 << 9
OP_LOAD, OP_STORE = 0, 1
PAGE_SIZE = 4096
MAX_PENDING = 1_000_000        # records kept undrained; more are counted as lost

RECORD_DTYPE = np.dtype([("time_ns", np.uint64), ("pid", np.int32), ("tid", np.int32), ("cpu", np.int32),
                         ("op", np.uint8), ("va", np.uint64), ("pa", np.uint64), ("events", np.uint32),
                         ("lat_tot", np.uint32), ("lat_xlat", np.uint32), ("pc", np.uint64)])

TERMS = ("period", "jitter", "pa_enable", "ts_enable", "pct_enable", "load_filter", "store_filter",
         "branch_filter", "min_latency", "event_filter", "pid", "seed")


@dataclass
class SpeConfig:
    """The perf_event_attr config terms damond understands (plus `period` = -c, `pid` = -p)."""
    period: int = 1024
    jitter: int = 1
    pa_enable: int = 0
    ts_enable: int = 1
    pct_enable: int = 0
    load_filter: int = 0
    store_filter: int = 0
    branch_filter: int = 0
    min_latency: int = 0
    event_filter: int = 0
    pid: int = -1            # -1: system-wide (-a)
    seed: int = 1

    @classmethod
    def parse(cls, text: str) -> "SpeConfig":
        """`period=1024 pa_enable=1 ...` (spaces or commas). Raises ValueError naming the term."""
        cfg = cls()
        for tok in text.replace(",", " ").split():
            k, eq, v = tok.partition("=")
            if k not in TERMS:
                raise ValueError(f"unknown term {k!r} (known: {', '.join(TERMS)})")
            try:
                val = int(v, 0) if eq else 1
            except ValueError:
                raise ValueError(f"{k}: {v!r} is not an integer") from None
            if k == "period" and not 1 <= val <= 1 << 24:
                raise ValueError(f"period {val} out of range 1..{1 << 24}")
            if k != "pid" and val < 0:
                raise ValueError(f"{k} must be >= 0")
            setattr(cfg, k, val)
        return cfg

    def evsel_terms(self) -> str:
        """The config terms as perf names the raw evsel: arm_spe_0/<terms>/."""
        terms = [f"{k}={getattr(self, k)}" for k in ("ts_enable", "pa_enable", "pct_enable", "jitter",
                                                     "load_filter", "store_filter", "branch_filter",
                                                     "min_latency", "event_filter") if getattr(self, k)]
        return ",".join(terms)


def _procs(step) -> list:
    for name in ("processes", "procs", "per_process"):
        v = getattr(step, name, None)
        if v is not None:
            return list(v.values()) if isinstance(v, dict) else list(v)
    return []


class Sampler:
    """Samples a machine's accesses; attach with `start(machine)`, take records with `drain()`."""

    def __init__(self, cfg: SpeConfig, nr_cpus: int = 4, rng: np.random.Generator | None = None):
        self.cfg, self.nr_cpus = cfg, max(1, nr_cpus)
        self.rng = rng if rng is not None else np.random.default_rng(cfg.seed)
        self._carry = float(self._interval() - 1)    # op index of the next selection
        self._chunks: list[np.ndarray] = []
        self._pending = 0
        self._mutex = threading.Lock()
        self.selected = self.filtered = self.lost = 0
        self._machine = None

    def _interval(self) -> int:
        p = self.cfg.period
        if self.cfg.jitter and p >= 256:
            return (p & ~0xFF) | int(self.rng.integers(0, 256))
        return p

    def _intervals(self, n: int) -> np.ndarray:
        p = self.cfg.period
        if self.cfg.jitter and p >= 256:
            return ((p & ~0xFF) | self.rng.integers(0, 256, n)).astype(np.float64)
        return np.full(n, float(p))

    def start(self, machine) -> None:
        self._machine = machine
        machine.add_step_observer(self.on_step)
        for src in list(getattr(machine, "spe_sources", ())):   # record sources outside the stepper (twins)
            src.attach(self)

    def stop(self) -> None:
        if self._machine is not None:
            for src in list(getattr(self._machine, "spe_sources", ())):
                src.detach(self)
            remove = getattr(self._machine, "remove_step_observer", None)
            if remove is not None:
                remove(self.on_step)
            self._machine = None

    def on_step(self, step) -> None:
        """Machine step observer: select ops, build records."""
        out = []
        for p in _procs(step):
            if self.cfg.pid >= 0 and p.pid != self.cfg.pid:
                continue
            recs = self._sample_proc(p, int(step.t0_us), int(step.t1_us))
            if recs is not None and len(recs):
                out.append(recs)
        if not out:
            return
        recs = np.concatenate(out) if len(out) > 1 else out[0]
        recs.sort(order="time_ns", kind="stable")
        with self._mutex:
            room = MAX_PENDING - self._pending
            if len(recs) > room:
                self.lost += len(recs) - room
                recs = recs[:room]
            self._chunks.append(recs)
            self._pending += len(recs)

    def _sample_proc(self, p, t0_us: int, t1_us: int) -> np.ndarray | None:
        counts = np.asarray(p.counts, dtype=np.float64)
        total = float(counts.sum())
        if total <= 0:
            return None
        # selection positions in [0, total): first at carry, then every interval
        x = self._carry
        if x >= total:
            self._carry = x - total
            return None
        low = (self.cfg.period & ~0xFF) if self.cfg.jitter and self.cfg.period >= 256 else self.cfg.period
        est = int((total - x) // max(low, 1)) + 2
        ints = self._intervals(est)
        pos = x + np.concatenate([[0.0], np.cumsum(ints[:-1], dtype=np.float64)])
        n = int(np.searchsorted(pos, total))
        self._carry = float(pos[n - 1] + ints[n - 1] - total)
        pos = pos[:n]
        rng = self.rng
        self.selected += n
        page = np.minimum(np.searchsorted(np.cumsum(counts), pos, side="right"), len(counts) - 1)
        miss = np.asarray(p.miss_frac, dtype=np.float64)[page]
        op = (rng.random(n) < 0.3).astype(np.uint8)            # 70 % loads, 30 % stores
        off = rng.integers(0, PAGE_SIZE // 8, n).astype(np.uint64) * np.uint64(8)
        tlb_refill = rng.random(n) < miss
        l1d_refill = rng.random(n) < np.minimum(0.05 + miss, 1.0)
        llc_miss = l1d_refill & (rng.random(n) < 0.3)
        ev = np.full(n, EV_RETIRED | EV_L1D_ACCESS | EV_TLB_ACCESS, dtype=np.uint32)
        ev |= np.where(tlb_refill, EV_TLB_REFILL, 0).astype(np.uint32)
        ev |= np.where(l1d_refill, EV_L1D_REFILL | EV_LLC_ACCESS, 0).astype(np.uint32)
        ev |= np.where(llc_miss, EV_LLC_MISS, 0).astype(np.uint32)
        lat_x = np.where(tlb_refill, rng.integers(20, 60, n), rng.integers(0, 2, n)).astype(np.uint32)
        lat_t = (lat_x + np.where(llc_miss, rng.integers(150, 300, n),
                                  np.where(l1d_refill, rng.integers(20, 40, n), rng.integers(4, 6, n)))).astype(np.uint32)
        keep = self._keep(op, ev, lat_t)
        c = self.cfg
        self.filtered += int(n - np.count_nonzero(keep))
        if not keep.any():
            return None
        r = np.zeros(int(np.count_nonzero(keep)), dtype=RECORD_DTYPE)
        span = max(t1_us - t0_us, 1) * 1000
        r["time_ns"] = np.uint64(t0_us * 1000) + np.sort(rng.integers(0, span, len(r))).astype(np.uint64)
        r["pid"] = r["tid"] = p.pid
        r["cpu"] = p.pid % self.nr_cpus
        r["op"] = op[keep]
        vaddrs = np.asarray(p.vaddrs, dtype=np.uint64)[page[keep]]
        r["va"] = vaddrs + off[keep]
        if c.pa_enable:
            r["pa"] = np.asarray(p.paddrs, dtype=np.uint64)[page[keep]] + off[keep]
        r["events"] = ev[keep]
        r["lat_tot"], r["lat_xlat"] = lat_t[keep], lat_x[keep]
        r["pc"] = np.uint64(0xaaaad4c01000) + np.uint64(p.pid % 4096 * 0x100) + (op[keep].astype(np.uint64) * np.uint64(8))
        return r

    def _keep(self, op: np.ndarray, ev: np.ndarray, lat_t: np.ndarray) -> np.ndarray:
        """The filters (PMSFCR_EL1 / PMSEVFR_EL1 / PMSLATFR_EL1), applied after selection."""
        keep = np.ones(len(op), dtype=bool)
        c = self.cfg
        if c.load_filter or c.store_filter or c.branch_filter:
            keep &= ((op == OP_LOAD) & bool(c.load_filter)) | ((op == OP_STORE) & bool(c.store_filter))
        if c.event_filter:
            keep &= (ev & np.uint32(c.event_filter)) == np.uint32(c.event_filter)
        if c.min_latency:
            keep &= lat_t >= c.min_latency
        return keep

    def feed(self, recs: np.ndarray) -> None:
        """Records selected by a source outside the machine's stepper (the twins of real
        programs, damond/host/twin_spe.py): filtered and queued like the sampler's own."""
        if not len(recs):
            return
        keep = self._keep(recs["op"], recs["events"], recs["lat_tot"])
        self.selected += len(recs)
        self.filtered += int(len(recs) - np.count_nonzero(keep))
        recs = recs[keep]
        if not self.cfg.pa_enable:
            recs["pa"] = 0
        with self._mutex:
            room = MAX_PENDING - self._pending
            if len(recs) > room:
                self.lost += len(recs) - room
                recs = recs[:room]
            if len(recs):
                self._chunks.append(recs)
                self._pending += len(recs)

    def drain(self, max_n: int | None = None) -> np.ndarray:
        """Up to `max_n` (default all) records not yet drained, oldest first."""
        with self._mutex:
            chunks, self._chunks, self._pending = self._chunks, [], 0
            if not chunks:
                return np.zeros(0, dtype=RECORD_DTYPE)
            recs = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
            t = recs["time_ns"]
            if len(chunks) > 1 and (t[1:] < t[:-1]).any():   # the stepper's chunks come in time order,
                recs = recs[np.argsort(t, kind="stable")]     # fed ones (twins) in between
            if max_n is not None and len(recs) > max_n:
                self._chunks, self._pending = [recs[max_n:]], len(recs) - max_n
                recs = recs[:max_n]
        return recs


# The spe_record file's raw format: `#comm PID NAME` lines, then one fixed-width line per
# record: time_ns pid tid cpu op va pa events lat_tot lat_xlat pc (decimal zero-padded
# except va pa events pc in hex; op L or S). Fixed widths make both sides vectorised.
_RAW = (("time_ns", 20, 10), ("pid", 10, 10), ("tid", 10, 10), ("cpu", 5, 10), ("op", 1, 0),
        ("va", 16, 16), ("pa", 16, 16), ("events", 8, 16), ("lat_tot", 10, 10), ("lat_xlat", 10, 10),
        ("pc", 16, 16))
RAW_LINE = sum(w + 1 for _, w, _ in _RAW)


def records_bytes(recs: np.ndarray, comms: dict[int, str]) -> bytes:
    """The raw text of `recs`: a `#comm` line per pid, then one line per record."""
    from damond.spe import textfmt as T
    n = len(recs)
    if n == 0:
        return b""
    head = "".join(f"#comm {p} {comms.get(p, '-')}\n" for p in np.unique(recs["pid"]).tolist()).encode()
    cols = []
    for name, width, base in _RAW:
        if name == "op":
            cols.append(T.table([b"L", b"S"], recs["op"] != OP_LOAD))
        else:
            cols.append(T.num(recs[name].astype(np.uint64), width, base or 10, pad="0"))
        cols.append(T.const(b" " if name != "pc" else b"\n", n))
    return head + T.join(cols)


def records_text(recs: np.ndarray, comms: dict[int, str]) -> str:
    """`records_bytes` as str."""
    return records_bytes(recs, comms).decode()


_VAL = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _VAL[_c] = _i


def parse_records(text: str | bytes) -> tuple[np.ndarray, dict[int, str]]:
    """Inverse of `records_bytes` (several concatenated outputs too); a malformed line raises
    ValueError naming it."""
    buf = text.encode() if isinstance(text, str) else bytes(text)
    comms: dict[int, str] = {}
    lines = buf.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    rows = []
    for ln in lines:
        if ln.startswith(b"#comm "):
            _, pid, name = ln.decode("utf-8", "replace").split(" ", 2)
            comms[int(pid)] = name
        elif len(ln) != RAW_LINE - 1:
            raise ValueError(f"bad record line: {ln[:80]!r}")
        else:
            rows.append(ln)
    out = np.zeros(len(rows), dtype=RECORD_DTYPE)
    if not rows:
        return out, comms
    mat = np.frombuffer(b"".join(rows), np.uint8).reshape(len(rows), RAW_LINE - 1)
    pos = 0
    for name, width, base in _RAW:
        col = mat[:, pos:pos + width]
        if name == "op":
            if not np.isin(col[:, 0], np.frombuffer(b"LS", np.uint8)).all():
                raise ValueError("bad record line: op is not L or S")
            out["op"] = (col[:, 0] == ord("S")).astype(np.uint8)
        else:
            d = _VAL[col]
            if (d >= base).any():
                raise ValueError(f"bad record line: {name} is not a base-{base} number")
            v = np.zeros(len(rows), np.uint64)
            for k in range(width):
                v = v * np.uint64(base) + d[:, k].astype(np.uint64)
            out[name] = v.astype(out.dtype[name])
        pos += width + 1
    return out, comms
