"""Files that make `damond exec`'s host look like the emulated machine's kernel:
`kernel/tracing/available_events` (the damon:* events damond's engine emits, which is what
damo probes), `damond/trace_pipe` (the event stream the `perf` shim records: each open file
is one listener with its own buffer; a read returns what was emitted since the last read,
possibly nothing, and never blocks), and on arm64 machines the arm_spe PMU directory
`bus/event_source/devices/arm_spe_0` (type, cpumask, caps/, format/ as
drivers/perf/arm_spe_pmu.c shows them for an SPEv1 without the optional filters).

trace_pipe lines: `<ts_ns> <pid> <cpu> <kdamond> <event>: <TP_printk text>`; ts is the
emulated clock placed on CLOCK_MONOTONIC at the moment the reader opened.
"""
from __future__ import annotations

import collections
import functools
import glob
import threading
import time
from typing import Any

from damond.damon import trace
from damond.fs.files import TextFile

PMU_DIR = "bus/event_source/devices/arm_spe_0"
SPE_FORMAT = {"ts_enable": "config:0", "pa_enable": "config:1", "pct_enable": "config:2", "jitter": "config:16",
              "branch_filter": "config:32", "load_filter": "config:33", "store_filter": "config:34",
              "event_filter": "config1:0-63", "min_latency": "config2:0-11"}
SPE_CAPS = {"arch_inst": 1, "ernd": 0, "count_size": 12, "min_interval": 1024}
TRACE_BUFFER = 1 << 20        # events kept per reader between reads (older ones are lost, as in a ring buffer)


def tracing_handlers(system: Any) -> dict[str, TextFile]:
    return {"available_events": TextFile(0o444, lambda: "".join(f"damon:{e}\n" for e in trace.EVENTS).encode())}


class _Reader:
    __slots__ = ("buf", "base_ns", "fn", "mutex")

    def __init__(self):
        self.buf: collections.deque = collections.deque(maxlen=TRACE_BUFFER)
        self.mutex = threading.Lock()
        self.base_ns = 0
        self.fn: Any = None


class TracePipe:
    """damond/trace_pipe (0400)."""
    mode = 0o400

    def __init__(self, system: Any):
        self.system = system

    def open(self, flags: int) -> object:
        r = _Reader()
        r.base_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - self.system.clock.now_us() * 1000
        nr_cpus = getattr(getattr(self.system.machine, "spec", None), "nr_cpus", 1)

        def listen(evs: list) -> None:
            with r.mutex:
                r.buf.extend(f"{r.base_ns + e.t_us * 1000} {e.pid} {e.kdamond % nr_cpus} {e.kdamond} "
                             f"{e.name}: {e.text}\n" for e in evs)
        r.fn = listen
        self.system.trace_listeners.append(listen)
        return r

    def read(self, st: _Reader, size: int, offset: int) -> bytes:
        out, n = [], 0
        with st.mutex:
            while st.buf and n + len(st.buf[0]) <= size:
                line = st.buf.popleft()
                out.append(line)
                n += len(line)
        return "".join(out).encode()

    def write(self, st, data: bytes) -> int:
        from damond.fs.tree import FsError
        import errno
        raise FsError(errno.EINVAL, "trace_pipe is read-only")

    def release(self, st: _Reader) -> None:
        if st.fn in self.system.trace_listeners:
            self.system.trace_listeners.remove(st.fn)


def _pmu_type() -> int:
    """A dynamic PMU type no real PMU of this host uses (the kernel hands them out in order)."""
    used = []
    for p in glob.glob("/sys/bus/event_source/devices/*/type"):
        try:
            with open(p) as f:
                used.append(int(f.read()))
        except (OSError, ValueError):
            pass
    return max(used + [9]) + 1


def pmu_handlers(system: Any) -> dict[str, TextFile]:
    """relpath under PMU_DIR -> handler, for arm64 machines."""
    nr_cpus = system.machine.spec.nr_cpus
    typ = _pmu_type()
    out = {"type": TextFile(0o444, lambda: b"%d\n" % typ),
           "cpumask": TextFile(0o444, lambda: f"0-{nr_cpus - 1}\n".encode()),
           "perf_event_mux_interval_ms": TextFile(0o444, lambda: b"1\n")}
    for k, cap in SPE_CAPS.items():
        out[f"caps/{k}"] = TextFile(0o444, functools.partial(bytes, b"%d\n" % cap))
    for k, fmt in SPE_FORMAT.items():
        out[f"format/{k}"] = TextFile(0o444, functools.partial(bytes, f"{fmt}\n".encode()))
    return out
