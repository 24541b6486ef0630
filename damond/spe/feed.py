"""spe_feed input: lines of `PFN [COUNT]` parsed into arrays, and the per-open feed session.

A line is a PFN in kstrtoul base-0 syntax (optional `+`, `0x` hex, leading-`0` octal or
decimal, no leading whitespace), optionally followed by blanks and a decimal count >= 1
(a histogram line), optionally followed by blanks. PFN 0 is not recorded; anything else
that does not match is malformed. `Ingest` is the hot path: the compiled `_feedparse`
parses, aggregates per THP and adds into the tree in one C pass; the fallback here
(regex per line + `PfnTree.record_many`) gives the same tree and counts. `FeedSession`
joins partial lines across the writes of one open file; `FeedWorker` records the
complete lines on its own thread (the C pass runs without the GIL, so the FUSE thread
takes the next write meanwhile); `rfc_parse` is the RFC's one-PFN-per-write
`spe_feed_write` (first 31 bytes, one trailing newline stripped, kstrtoul).
"""
from __future__ import annotations

import queue
import re
import threading
from typing import Callable
from dataclasses import dataclass, field

import numpy as np

from damond.log import get_logger
from damond.spe.tree import FeedResult

try:
    from damond.spe import _feedparse  # type: ignore[attr-defined]  # the optional C extension
except ImportError:     # not built: see setup.py
    _feedparse = None

U64_MAX = (1 << 64) - 1
MAX_LINE = 4096           # a "line" longer than this without a newline is malformed
RFC_LINE_MAX = 31         # char line[32] in spe_feed_write

_LINE_RE = re.compile(rb"\+?(?:0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))(?:[ \t]+([0-9]+))?[ \t\r]*")


@dataclass
class Parsed:
    """One buffer's lines: PFNs != 0 (uint64), their counts (None: all 1), rejects."""
    pfns: np.ndarray
    counts: np.ndarray | None
    malformed: int = 0
    zero: int = 0

    @property
    def lines(self) -> int:
        return len(self.pfns) + self.malformed + self.zero


def parse_line(line: bytes) -> tuple[int, int] | None:
    """(pfn, count) of one line without its newline, or None when malformed."""
    m = _LINE_RE.fullmatch(line)
    if not m:
        return None
    h, o, d, c = m.groups()
    pfn = int(h, 16) if h is not None else int(o, 8) if o is not None else int(d)
    count = int(c) if c is not None else 1
    if pfn > U64_MAX or count > U64_MAX or count == 0:
        return None
    return pfn, count


def parse_py(data: bytes) -> Parsed:
    """The fallback parser (same contract as `_feedparse.parse`)."""
    if not data:
        return Parsed(np.zeros(0, np.uint64), None)
    lines = bytes(data).split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    pfns, counts, bad, zero = [], [], 0, 0
    for line in lines:
        r = parse_line(line)
        if r is None:
            bad += 1
        elif r[0] == 0:
            zero += 1
        else:
            pfns.append(r[0])
            counts.append(r[1])
    has = any(c != 1 for c in counts)
    return Parsed(np.array(pfns, dtype=np.uint64), np.array(counts, dtype=np.uint64) if has else None, bad, zero)


def parse_c(data) -> Parsed:
    """The compiled parser (requires `_feedparse`)."""
    cap = (len(data) + 1) // 2 + 1
    pfns = np.empty(cap, dtype=np.uint64)
    counts = np.empty(cap, dtype=np.uint64)
    n, bad, zero, has = _feedparse.parse(data, pfns, counts)
    return Parsed(pfns[:n], counts[:n] if has else None, bad, zero)


parse = parse_c if _feedparse is not None else parse_py
PARSER = "compiled" if _feedparse is not None else "python"


@dataclass
class FeedCounters:
    """spe_feed accounting: every line ends in exactly one of recorded / malformed / dropped_full
    (the *_accesses sums wrap modulo 2**64, like the u64 counters they feed)."""
    writes: int = 0
    bytes: int = 0
    lines: int = 0
    recorded: int = 0
    recorded_accesses: int = 0
    malformed: int = 0
    zero_pfn: int = 0             # of the malformed: PFN 0
    dropped_full: int = 0
    dropped_accesses: int = 0
    truncated_writes: int = 0     # rfc mode: writes longer than 31 bytes (the rest ignored)

    def text(self, mode: str, parser: str) -> str:
        f = self.__dict__
        return f"mode={mode} parser={parser}\n" + "".join(f"{k}={v}\n" for k, v in f.items())


@dataclass
class FeedSession:
    """Per-open state of spe_feed: the unterminated tail of the previous write."""
    pending: bytearray = field(default_factory=bytearray)
    overlong: bool = False        # discarding the rest of an over-long line


def split_complete(sess: FeedSession, data: bytes) -> tuple[list, int]:
    """Join `data` with the pending tail; return (the complete lines as one or two buffers
    to parse in order, lines given up as over-long) and keep the new unterminated tail in
    the session. Only the short first line is copied when a tail was pending."""
    cut = data.rfind(b"\n")
    if cut < 0:
        if not sess.overlong:
            sess.pending += data
            if len(sess.pending) > MAX_LINE:
                sess.pending.clear()
                sess.overlong = True
                return [], 1
        return [], 0
    view = memoryview(data)
    first = data.find(b"\n") + 1
    parts: list = []
    if sess.overlong:              # the over-long line ends at the first newline
        sess.overlong = False
    elif sess.pending:
        sess.pending += view[:first]
        parts.append(bytes(sess.pending))
        sess.pending.clear()
    else:
        first = 0
    if first < cut + 1:
        parts.append(view[first:cut + 1])
    tail = view[cut + 1:]
    if len(tail) > MAX_LINE:
        sess.overlong = True
        return parts, 1
    sess.pending += tail
    return parts, 0


class _CAggregate:
    """Per-key sums taken from the C `Aggregator`; its rows stay in C until `add_into`."""
    __slots__ = ("keys", "key_lines", "key_acc", "slots", "_agg")

    def __init__(self, agg, out: tuple[np.ndarray, np.ndarray, np.ndarray]):
        nk = agg.keys(*out)
        self.keys, self.key_lines, self.key_acc = (o[:nk] for o in out)
        self.slots = None
        self._agg = agg

    def add_into(self, counts: np.ndarray, slots: np.ndarray) -> None:
        self._agg.apply(counts, slots)
        self.slots = slots


class Ingest:
    """The spe_feed hot path for complete lines: parse, aggregate per THP, record.

    With `_feedparse` the parse and the aggregation are one C pass (`Aggregator`): lines
    of THPs already in the tree go straight into its counters (the aggregator remembers
    key -> slot and forgets it whenever `PfnTree.layout_gen` moves); Python sees only the
    distinct THPs of a write, resolves new ones (insert / prune / drop, exactly as
    sequential records) and updates totals. Without it, `parse_py` + `record_many`.
    Both leave the same tree and the same counts. Not thread-safe: callers serialise.
    """

    def __init__(self, tree, compiled: bool | None = None, max_rows: int = 1 << 15):
        self.tree = tree
        self.compiled = (_feedparse is not None) if compiled is None else compiled
        if self.compiled:
            self._agg = _feedparse.Aggregator(max_rows, min(tree.capacity, 1 << 16))
            self._out = (np.empty(max_rows, np.uint64), np.empty(max_rows, np.uint64),
                         np.empty(max_rows, np.uint64))
            self._gen = -1
            tree.add_settle_hook(lambda: self._agg.fold(self.tree._counts))

    def lines(self, parts: list):
        """Record the complete lines in `parts` (buffers, in order).

        Returns:
            (ok lines, malformed lines, PFN-0 lines, tree FeedResult).
        """
        if not self.compiled:
            p = parse_py(b"".join(bytes(x) for x in parts))
            return len(p.pfns), p.malformed, p.zero, self.tree.record_many(p.pfns, p.counts)
        ok = bad = zero = 0
        res = None
        tree, agg = self.tree, self._agg
        with tree._mutex:
            try:
                self._sync()
                now = tree.clock.now_us()
                i = off = 0
                while i < len(parts):       # every part in one call without the GIL
                    i, off, o, b, z = agg.feed_parts(parts, i, off, tree._counts, tree._total, tree._last, now)
                    ok, bad, zero = ok + o, bad + b, zero + z
                    if agg.n_rows == agg.max_rows and i < len(parts):
                        res = _sum(res, self._record())     # row buffer full: record what we have, go on
                        now = tree.clock.now_us()
                res = _sum(res, self._record())
            finally:
                agg.clear()
        return ok, bad, zero, res

    def _sync(self) -> None:
        if self.tree.layout_gen != self._gen:
            self._agg.forget()
            self._gen = self.tree.layout_gen

    def _record(self):
        """Finish the batch held by the aggregator (the caller holds the tree's mutex)."""
        agg, tree = self._agg, self.tree
        if agg.n_direct == agg.n_keys:      # every THP was known: the C pass did it all
            res = FeedResult(agg.n_rows, 0, agg.acc_all, 0)
            tree.stats.add(res)
            agg.clear()
            return res
        agg.undo(tree._counts, tree._total, tree._last)     # new THPs: the general path
        a = _CAggregate(agg, self._out)
        res = tree.record_aggregate(a)
        self._sync()
        if a.slots is not None:
            agg.learn(a.keys, a.slots)
        agg.clear()
        return res


def _sum(a, b):
    return b if a is None else a + b


class FeedWorker:
    """Runs feed jobs in submission order on one daemon thread (started at the first job).

    At most `depth` jobs wait: `submit` blocks the caller when the queue is full (the FUSE
    thread, hence the writer, waits: backpressure). `drain` returns once every job
    submitted before it is done, so readers of the accounting see complete figures. A job
    that raises is logged (`spe_feed_worker_failed`) and the thread goes on.
    """

    def __init__(self, depth: int = 8, name: str = "damond-spe-feed"):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._name = name
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        self._log = get_logger("damond.spe")

    def submit(self, job: Callable[[], None]) -> None:
        """Queue `job` (blocks while `depth` jobs wait)."""
        if self._thread is None:
            with self._start:
                if self._thread is None:
                    t = threading.Thread(target=self._run, name=self._name, daemon=True)
                    t.start()
                    self._thread = t
        self._q.put(job)

    def drain(self) -> None:
        """Wait until every job submitted so far has run (not from inside a job)."""
        if self._thread is not None:
            self._q.join()

    def _run(self) -> None:
        while True:
            job = self._q.get()
            try:
                job()
            except Exception:
                self._log.exception("spe_feed_worker_failed")
            finally:
                self._q.task_done()


def rfc_parse(data: bytes) -> int | None:
    """spe_feed_write of the RFC: the PFN kstrtoul gives for this write (0 is not recorded),
    or None when it fails."""
    line = bytes(data[:RFC_LINE_MAX])
    if line.endswith(b"\n"):
        line = line[:-1]
    m = re.fullmatch(rb"\+?(?:0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))", line)
    if not m:
        return None
    h, o, d = m.groups()
    pfn = int(h, 16) if h is not None else int(o, 8) if o is not None else int(d)
    return pfn if pfn <= U64_MAX else None
