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
    ("b", "branch-miss", lambda ev, op: False),
    ("a", "remote-access", lambda ev, op: False),
    ("M", "memory", lambda ev, op: op in (S.OP_LOAD, S.OP_STORE)),
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


def format_records(recs: np.ndarray, comms: dict[int, str], fields: tuple[str, ...], groups: list[str],
                   raw_evsel: str, ns: bool = False) -> str:
    """Every sample line perf script prints for these records.

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
            secs, nsec = divmod(t, 1_000_000_000)
            head += f"{secs:5d}.{nsec:09d}: " if ns else f"{f'{secs}.{nsec // 1000:06d}':>12}: "
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
        names = [name for name, pred in preds if pred(ev, op)]
        if want_instr:
            names.append("instructions")
        for name in names:
            out.append(head + (f"{name:>{width}}: " if "event" in f else "") + tail)
    return "".join(out)
