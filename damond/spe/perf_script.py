"""`perf script` text for ARM SPE records, as `tools/perf/builtin-script.c` prints it.

`tools/perf/util/arm-spe.c` turns each SPE record into several samples, one per matching
group, in this order: l1d-miss, l1d-access (itrace `f`), llc-miss, llc-access (`m`),
tlb-miss, tlb-access (`t`), branch-miss (`b`), remote-access (`a`), memory (`M`, every
load/store), instructions (`i`, only when asked for). Fields print in perf's fixed order
with its widths: comm `%16s `, pid/tid `%7d/%-7d ` or `%7d `, cpu `[%03d] `, time
`%12s: ` (secs.usecs), period `%10lu `, event `%*s: ` (width = longest evsel name of
the session, the raw `arm_spe_0/<terms>/` one included), addr `%16lx`, weight `%16lu`,
ip `' ' %16lx` + ` sym+0xoff` + ` (dso)`, phys_addr `%16lx`.
"""
from __future__ import annotations

import numpy as np

from damond.spe import sampler as S
from damond.spe import textfmt as T

ALL_FIELDS = ("comm", "pid", "tid", "cpu", "time", "period", "event", "addr", "weight", "ip", "sym",
              "symoff", "dso", "phys_addr")
DEFAULT_FIELDS = ("comm", "tid", "cpu", "time", "period", "event", "ip", "sym", "symoff", "dso")
# (itrace letter, name, predicate on (events, op))
GROUPS = (
    ("f", "l1d-miss", lambda ev, op: ev & S.EV_L1D_REFILL),
    ("f", "l1d-access", lambda ev, op: ev & S.EV_L1D_ACCESS),
    ("m", "llc-miss", lambda ev, op: ev & S.EV_LLC_MISS),
    ("m", "llc-access", lambda ev, op: ev & S.EV_LLC_ACCESS),
    ("t", "tlb-miss", lambda ev, op: ev & S.EV_TLB_REFILL),
    ("t", "tlb-access", lambda ev, op: ev & S.EV_TLB_ACCESS),
    ("b", "branch-miss", lambda ev, op: np.zeros(np.shape(ev), bool)),
    ("a", "remote-access", lambda ev, op: np.zeros(np.shape(ev), bool)),
    ("M", "memory", lambda ev, op: (op == S.OP_LOAD) | (op == S.OP_STORE)),
)
DEFAULT_ITRACE = "fmtbaM"


def parse_fields(spec: str | None) -> tuple[str, ...]:
    """perf's -F: `f1,f2` replaces the defaults; `+f`/`-f` items (or a leading `,`) edit them.

    Raises:
        ValueError: an unknown field, naming it.
    """
    if not spec:
        return DEFAULT_FIELDS
    items = [i for i in spec.split(",") if i]
    edit = spec.startswith(",") or all(i[0] in "+-" for i in items)
    fields = list(DEFAULT_FIELDS) if edit else []
    for i in items:
        sign, name = (i[0], i[1:]) if i[0] in "+-" else ("+", i)
        if name not in ALL_FIELDS:
            raise ValueError(f"unknown field {name!r} (known: {', '.join(ALL_FIELDS)})")
        if sign == "-":
            fields = [f for f in fields if f != name]
        elif name not in fields:
            fields.append(name)
    return tuple(f for f in ALL_FIELDS if f in fields)


def itrace_groups(itrace: str | None) -> list[str]:
    """Group names synthesized for an --itrace letter string (default: all but instructions)."""
    letters = DEFAULT_ITRACE if not itrace else itrace
    names = [name for letter, name, _ in GROUPS if letter in letters]
    if "i" in letters:
        names.append("instructions")
    return names


def event_width(groups: list[str], raw_evsel: str) -> int:
    """Longest evsel name of the session: the synthesized groups, the raw SPE event, dummy:u."""
    return max([len(g) for g in groups] + [len(raw_evsel), len("dummy:u")])


def _ip_text(pc: int, comm: str, fields: tuple[str, ...]) -> str:
    s = " " + f"{pc:16x}"
    if "sym" in fields:
        s += " access_loop" + (f"+{pc & 0xff:#x}" if "symoff" in fields else "")
    if "dso" in fields:
        s += f" (/usr/local/bin/{comm})"
    return s


BATCH = 50_000          # records formatted per vectorised pass (bounds the byte matrices)


def format_records(recs: np.ndarray, comms: dict[int, str], fields: tuple[str, ...], groups: list[str],
                   raw_evsel: str, ns: bool = False) -> str:
    """Every sample line perf script prints for these records (see `format_records_bytes`)."""
    return format_records_bytes(recs, comms, fields, groups, raw_evsel, ns).decode()


def format_records_bytes(recs: np.ndarray, comms: dict[int, str], fields: tuple[str, ...], groups: list[str],
                         raw_evsel: str, ns: bool = False) -> bytes:
    """Every sample line perf script prints for these records, vectorised per batch of
    records (byte-identical to `format_records_loop`, the per-record reference).

    Args: as `format_records_loop`.
    """
    return b"".join(_format_batch(recs[i:i + BATCH], comms, fields, groups, raw_evsel, ns)
                    for i in range(0, len(recs), BATCH))


def _format_batch(recs, comms, fields, groups, raw_evsel, ns) -> bytes:
    n = len(recs)
    if n == 0:
        return b""
    width = event_width(groups, raw_evsel)
    f = set(fields)
    upids, pinv = np.unique(recs["pid"], return_inverse=True)
    comm = [comms.get(int(p), ":%d" % int(p)) for p in upids]
    head: list = []
    if "comm" in f:
        head.append(T.table([f"{c:>16} ".encode() for c in comm], pinv))
    if "pid" in f and "tid" in f:
        head += [T.num(recs["pid"], 7), T.const(b"/", n), T.num(recs["tid"], 7, left=True), T.const(b" ", n)]
    elif "pid" in f:
        head += [T.num(recs["pid"], 7), T.const(b" ", n)]
    elif "tid" in f:
        head += [T.num(recs["tid"], 7), T.const(b" ", n)]
    if "cpu" in f:
        head += [T.const(b"[", n), T.num(recs["cpu"], 3, pad="0"), T.const(b"] ", n)]
    if "time" in f:
        t = recs["time_ns"].astype(np.uint64)
        secs, nsec = t // np.uint64(1_000_000_000), t % np.uint64(1_000_000_000)
        frac = T.num(nsec, 9, pad="0") if ns else T.num(nsec // np.uint64(1000), 6, pad="0")
        head += [T.num(secs, 5), T.const(b".", n), frac, T.const(b": ", n)]
    if "period" in f:
        head.append(T.const(f"{1:10d} ".encode(), n))
    tail: list = []
    if "addr" in f:
        tail.append(T.num(recs["va"], 16, 16))
    if "weight" in f:
        tail.append(T.num(recs["lat_tot"], 16))
    if "ip" in f:
        tail += [T.const(b" ", n), T.num(recs["pc"], 16, 16)]
        if "sym" in f:
            tail.append(T.const(b" access_loop", n))
            if "symoff" in f:
                tail += [T.const(b"+0x", n), T.num(recs["pc"] & np.uint64(0xff), 0, 16)]
        if "dso" in f:
            tail.append(T.table([f" (/usr/local/bin/{c})".encode() for c in comm], pinv))
    if "phys_addr" in f:
        tail.append(T.num(recs["pa"], 16, 16))
    tail.append(T.const(b"\n", n))
    gset = set(groups)
    names = [name for _, name, _ in GROUPS if name in gset]
    ev, op = recs["events"].astype(np.int64), recs["op"].astype(np.int64)
    sel = [np.asarray(pred(ev, op), bool) for _, name, pred in GROUPS if name in gset]
    if "instructions" in gset:
        names.append("instructions")
        sel.append(np.ones(n, bool))
    if not names:
        return b""
    ri, gi = np.nonzero(np.stack(sel, axis=1))       # record-major, perf's group order within
    cols = [T.take(c, ri) for c in head]
    if "event" in f:
        cols.append(T.table([f"{name:>{width}}: ".encode() for name in names], gi))
    cols += [T.take(c, ri) for c in tail]
    return T.join(cols)


def sample_head(f: set[str] | tuple[str, ...], comm: str, pid: int, tid: int, cpu: int, t_ns: int, ns: bool) -> str:
    """The start of a perf script sample line (tools/perf builtin-script.c
    perf_sample__fprintf_start): comm, pid/tid, [cpu], time, each only when in `f`."""
    head = ""
    if "comm" in f:
        head += f"{comm:>16} "
    if "pid" in f and "tid" in f:
        head += f"{pid:7d}/{tid:<7d} "
    elif "pid" in f:
        head += f"{pid:7d} "
    elif "tid" in f:
        head += f"{tid:7d} "
    if "cpu" in f:
        head += f"[{cpu:03d}] "
    if "time" in f:
        secs, nsec = divmod(t_ns, 1_000_000_000)
        head += f"{secs:5d}.{nsec:09d}: " if ns else f"{f'{secs}.{nsec // 1000:06d}':>12}: "
    return head


def format_records_loop(recs: np.ndarray, comms: dict[int, str], fields: tuple[str, ...], groups: list[str],
                        raw_evsel: str, ns: bool = False) -> str:
    """Every sample line perf script prints for these records, one record at a time (the
    reference the vectorised printer is tested against).

    Args:
        recs: sampler.RECORD_DTYPE records.
        comms: pid -> comm.
        fields: the output fields (parse_fields).
        groups: synthesized group names (itrace_groups), in perf's order.
        raw_evsel: the raw SPE event name, e.g. `arm_spe_0/ts_enable=1,pa_enable=1/`.
        ns: --ns time format.
    """
    width = event_width(groups, raw_evsel)
    gset = set(groups)
    preds = [(name, pred) for _, name, pred in GROUPS if name in gset]
    want_instr = "instructions" in gset
    f = set(fields)
    out = []
    for t, pid, tid, cpu, op, va, pa, ev, lt, lx, pc in recs.tolist():
        comm = comms.get(pid, ":%d" % pid)
        head = sample_head(f, comm, pid, tid, cpu, t, ns)
        if "period" in f:
            head += f"{1:10d} "
        tail = ""
        if "addr" in f:
            tail += f"{va:16x}"
        if "weight" in f:
            tail += f"{lt:16d}"
        if "ip" in f:
            tail += _ip_text(pc, comm, fields)
        if "phys_addr" in f:
            tail += f"{pa:16x}"
        tail += "\n"
        names = [name for name, pred in preds if bool(pred(ev, op))]
        if want_instr:
            names.append("instructions")
        for name in names:
            out.append(head + (f"{name:>{width}}: " if "event" in f else "") + tail)
    return "".join(out)
