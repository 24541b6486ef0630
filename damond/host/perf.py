"""The `perf` that `damond exec` puts first on PATH (damond/host/bin/perf): it serves what
damond emulates and refuses the rest with one line.

- `perf record [-a] [-p PID] [-c N] [-o FILE] -e damon:<event> ... [-- CMD]` records the
  engine's tracepoints (damond/trace_pipe); `-e arm_spe_0/<terms>/` (or `arm_spe/…/`)
  records emulated SPE (damond/spe_record) for `-p PID` or system-wide. Recording stops at
  SIGINT/SIGTERM or when CMD exits; FILE (default perf.data, mode 0600) is damond's own
  format, readable only by this perf: a `#damond-perf-data` header, then sections.
- `perf script [--force] [-i FILE] [-F FIELDS] [--ns] [--itrace=…]` prints the recording as
  perf's builtin-script.c does: tracepoints `%16s %7d [%03d] %12s: %*s: <TP_printk>` (event
  width = longest event name of the session), SPE through damond.spe.perf_script.
- `perf list [pmu|tracepoint]` lists damon:* (`[Tracepoint event]`) and arm_spe_0//
  (`[Kernel PMU event]`, arm64 machines only); `perf --version`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MAGIC = "#damond-perf-data v1"
SERVED = ("perf (damond): served here are `perf record -e damon:<event>|arm_spe_0/<terms>/ [-a|-p PID] [-o F]`, "
          "`perf script [-i F] [-F fields]`, `perf list` and `perf --version`")
PMU_DIR = Path("/sys/bus/event_source/devices/arm_spe_0")
POLL_S = 0.05


class PerfError(Exception):
    pass


def _root() -> Path:
    r = os.environ.get("DAMOND_ROOT")
    if not r:
        raise PerfError("perf (damond): DAMOND_ROOT is not set; run under `damond exec`")
    return Path(r)


def _events() -> list[str]:
    from damond.damon.trace import EVENTS

    return [f"damon:{e}" for e in EVENTS]


def _opts(argv: list[str], spec: dict[str, str]) -> tuple[dict[str, list[str]], list[str]]:
    """perf-style options: spec maps each spelling (-e, --event) to a key; keys ending in
    '!' are flags. Returns (key -> values, the rest after `--` or the first non-option)."""
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return out, argv[i + 1:]
        if not a.startswith("-") or a == "-":
            return out, argv[i:]
        name, eq, val = a.partition("=")
        key = spec.get(name)
        if key is None and not a.startswith("--") and len(a) > 2 and a[:2] in spec:   # -eEVENT, -ofile
            name, val, eq, key = a[:2], a[2:], "=", spec[a[:2]]
        if key is None:
            raise PerfError(f"perf (damond): unknown option {a!r}. {SERVED}")
        if key.endswith("!"):
            out.setdefault(key[:-1], []).append("1")
        else:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise PerfError(f"perf (damond): option {name} needs a value")
                val = argv[i]
            out.setdefault(key, []).append(val)
        i += 1
    return out, []


# ---- record

RECORD_OPTS = {"-e": "event", "--event": "event", "-o": "output", "--output": "output", "-a": "all!",
               "--all-cpus": "all!", "-p": "pid", "--pid": "pid", "-c": "count", "--count": "count",
               "-q": "quiet!", "--quiet": "quiet!", "-C": "cpu", "--cpu": "cpu"}


def _split_events(values: list[str]) -> list[str]:
    out = []
    for v in values:                         # -e a,b (commas outside /.../ separate events)
        cur, depth = "", 0
        for ch in v:
            if ch == "/":
                depth ^= 1
            if ch == "," and not depth:
                out.append(cur)
                cur = ""
            else:
                cur += ch
        out.append(cur)
    return [e for e in out if e]


def _spe_terms(ev: str) -> str | None:
    """`arm_spe_0/a=1,b=2/` -> 'a=1 b=2'; None for a non-SPE event."""
    for pmu in ("arm_spe_0/", "arm_spe/"):
        if ev.startswith(pmu):
            body = ev[len(pmu):]
            if not body.endswith("/"):
                raise PerfError(f"perf (damond): bad event {ev!r} (expected {pmu}<terms>/)")
            return body[:-1].replace(",", " ")
    return None


class _Stop:
    def __init__(self):
        self.flag = False
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._set)

    def _set(self, *_):
        self.flag = True


def record(argv: list[str]) -> int:
    stop = _Stop()                 # first: an early SIGINT (damo ends its recording) still writes the file
    o, cmd = _opts(argv, RECORD_OPTS)
    events = _split_events(o.get("event", []))
    if not events:
        raise PerfError(f"perf (damond): no -e event given (the default cycles event is not emulated). {SERVED}")
    damon, spe = [], []
    known = _events()
    for ev in events:
        terms = _spe_terms(ev)
        if terms is not None:
            if not PMU_DIR.is_dir():
                raise PerfError(f"perf (damond): event '{ev}' not found: this machine has no arm_spe PMU")
            spe.append((ev, terms))
        elif ev in known:
            damon.append(ev)
        else:
            raise PerfError(f"perf (damond): event '{ev}' is not served (served: {', '.join(known)}"
                            + (", arm_spe_0/<terms>/" if PMU_DIR.is_dir() else "") + ")")
    if len(spe) > 1:
        raise PerfError("perf (damond): one arm_spe event per recording")
    out = Path(o.get("output", ["perf.data"])[-1])
    pid = int(o["pid"][-1]) if "pid" in o else -1
    root = _root()
    pipe = open(root / "damond/trace_pipe", "rb", buffering=0) if damon else None
    spe_fd = None
    if spe:
        from damond.spe.sampler import SpeConfig

        try:
            cfg = SpeConfig.parse(spe[0][1])
        except ValueError as e:
            raise PerfError(f"perf (damond): {spe[0][0]}: {e}") from None
        if (cfg.pa_enable or cfg.pct_enable) and os.geteuid() != 0:      # arm_spe_pmu event_init: EACCES
            raise PerfError(f"perf (damond): {spe[0][0]}: pa_enable/pct_enable need CAP_PERFMON "
                            "(Permission denied)")
        terms = spe[0][1] + f" pid={pid}" + (f" period={int(o['count'][-1])}" if "count" in o else "")
        spe_fd = os.open(root / "damond/spe_record", os.O_RDWR)
        try:
            os.write(spe_fd, terms.encode())
        except OSError as e:
            raise PerfError(f"perf (damond): {spe[0][0]}: {e.strerror}") from None
    child = subprocess.Popen(cmd) if cmd else None
    lines: list[bytes] = []
    wanted = {e.split(":", 1)[1] for e in damon}
    tid = str(pid).encode() if pid >= 0 else None     # -p: only that task's events (a kdamond's pid)
    try:
        while not stop.flag and (child is None or child.poll() is None):
            if pipe is not None:
                lines.extend(_read_pipe(pipe, wanted, tid))
            time.sleep(POLL_S)
    finally:
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)
            child.wait()
    if pipe is not None:
        lines.extend(_read_pipe(pipe, wanted, tid))
        pipe.close()
    spe_raw = b""
    if spe_fd is not None:
        chunks = []
        while True:
            b = os.read(spe_fd, 1 << 20)
            if not b:
                break
            chunks.append(b)
        os.close(spe_fd)
        spe_raw = b"".join(chunks)
    head = [MAGIC, f"#events {' '.join(damon + [e for e, _ in spe])}"]
    data = ("\n".join(head) + "\n").encode()
    if damon:
        data += b"#section damon\n" + b"".join(lines)
    if spe:
        data += f"#section spe {spe[0][0]}\n".encode() + spe_raw
    if out.exists():
        out.replace(out.with_name(out.name + ".old"))
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    nr = len(lines) + sum(1 for ln in spe_raw.split(b"\n") if ln and not ln.startswith(b"#"))
    if "quiet" not in o:
        print("[ perf record: Woken up 1 times to write data ]", file=sys.stderr)
        print(f"[ perf record: Captured and wrote {len(data) / 1e6:.3f} MB {out} ({nr} samples) ]", file=sys.stderr)
    return child.returncode if child is not None and child.returncode and child.returncode > 0 else 0


def _read_pipe(pipe, wanted: set[str], tid: bytes | None) -> list[bytes]:
    out = []
    while True:
        b = pipe.read(1 << 16)
        if not b:
            return out
        for ln in b.splitlines(keepends=True):
            f = ln.split(b" ", 5)
            if f[4][:-1].decode() in wanted and (tid is None or f[1] == tid):
                out.append(ln)


# ---- script

SCRIPT_OPTS = {"-i": "input", "--input": "input", "-F": "fields", "--fields": "fields", "-f": "force!",
               "--force": "force!", "--ns": "ns!", "--itrace": "itrace", "-q": "quiet!", "--quiet": "quiet!"}
TP_DEFAULT = ("comm", "tid", "cpu", "time", "event", "trace")


def _tp_fields(spec: str | None) -> tuple[str, ...]:
    if not spec:
        return TP_DEFAULT
    if spec.startswith("tracepoint:"):
        spec = spec[len("tracepoint:"):]
    items = [x for x in spec.split(",") if x]
    if all(x[0] in "+-" for x in items):
        f = list(TP_DEFAULT)
        for x in items:
            if x[0] == "+" and x[1:] not in f:
                f.append(x[1:])
            elif x[0] == "-" and x[1:] in f:
                f.remove(x[1:])
        return tuple(f)
    return tuple(items)


def format_damon(lines: list[bytes], events: list[str], fields: tuple[str, ...], ns: bool) -> bytes:
    """perf script text of trace_pipe lines (`ts_ns pid cpu kdamond event: text`)."""
    from damond.spe import perf_script

    width = max((len(e) for e in events), default=0)
    out = []
    for ln in lines:
        ts, pid, cpu, kd, rest = ln.decode().rstrip("\n").split(" ", 4)
        ev, _, text = rest.partition(": ")
        s = perf_script.sample_head(fields, "kdamond." + kd, int(pid), int(pid), int(cpu), int(ts), ns)
        if "event" in fields:
            s += f"{'damon:' + ev:>{width}}: "
        if "trace" in fields:
            s += text
        out.append((s if "trace" in fields else s.rstrip(" ")) + "\n")
    return "".join(out).encode()


def script(argv: list[str]) -> int:
    o, rest = _opts(argv, SCRIPT_OPTS)
    if rest:
        raise PerfError(f"perf (damond): perf script scripts are not served. {SERVED}")
    path = Path(o.get("input", ["perf.data"])[-1])
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PerfError(f"perf (damond): {path}: {e.strerror}") from None
    if not data.startswith(MAGIC.encode()):
        raise PerfError(f"perf (damond): {path} was not recorded by damond's perf. {SERVED}")
    events: list[str] = []
    sections: list[tuple[str, str, list[bytes]]] = []
    for ln in data.splitlines(keepends=True):
        if ln.startswith(b"#events"):
            events = ln.decode().split()[1:]
        elif ln.startswith(b"#section "):
            parts = ln.decode().split()
            sections.append((parts[1], parts[2] if len(parts) > 2 else "", []))
        elif sections and not ln.startswith(MAGIC.encode()):
            sections[-1][2].append(ln)
    outb = sys.stdout.buffer
    ns = "ns" in o
    try:
        for kind, evsel, body in sections:
            if kind == "damon":
                outb.write(format_damon(body, events, _tp_fields(o.get("fields", [None])[-1]), ns))
            elif kind == "spe":
                outb.write(_format_spe(b"".join(body), evsel, o, ns))
        outb.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _format_spe(raw: bytes, evsel: str, o: dict, ns: bool) -> bytes:
    from damond.spe import perf_script
    from damond.spe.sampler import SpeConfig, parse_records

    recs, comms = parse_records(raw)
    try:
        fields = perf_script.parse_fields(o.get("fields", [""])[-1])
    except ValueError as e:
        raise PerfError(f"perf (damond): -F: {e}") from None
    terms = evsel.split("/", 1)[1].rstrip("/").replace(",", " ")
    raw_name = f"arm_spe_0/{SpeConfig.parse(terms).evsel_terms()}/"
    groups = perf_script.itrace_groups(o.get("itrace", [None])[-1])
    return b"".join(perf_script.format_records_bytes(recs[i:i + perf_script.BATCH], comms, fields, groups, raw_name,
                                                     ns=ns) for i in range(0, len(recs), perf_script.BATCH))


# ---- list, version

def list_events(argv: list[str]) -> int:
    what = argv[0] if argv else ""
    out = []
    if what in ("", "pmu", "hw", "hardware") and PMU_DIR.is_dir():
        out.append(f"  {'arm_spe_0//':<50} [Kernel PMU event]")
    if what in ("", "tracepoint", "tp") or what.startswith("damon"):
        out += [f"  {e:<50} [Tracepoint event]" for e in _events() if e.startswith(what) or what in ("", "tracepoint", "tp")]
    print("\n".join(out))
    return 0


def main(argv: list[str]) -> int:
    try:
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(SERVED)
            return 0 if argv else 1
        cmd, rest = argv[0], argv[1:]
        if cmd in ("--version", "version", "-v"):
            print(f"perf version {os.uname().release} (damond: emulated damon:* and arm_spe events)")
            return 0
        if cmd == "record":
            return record(rest)
        if cmd == "script":
            return script(rest)
        if cmd == "list":
            return list_events(rest)
        raise PerfError(f"perf (damond): 'perf {cmd}' is not served. {SERVED}")
    except PerfError as e:
        print(e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
