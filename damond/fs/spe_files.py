"""The SPE files of the mount: debugfs `damon/spe_feed`, `spe_stats`, `spe_feed_stats`
(`mm/damon/spe.c`'s debugfs interface, fixed) and damond's `damond/spe_record` session.

spe_feed (0200): in "lines" mode every line of every write is parsed (partial lines are
joined across the writes of one open file, a pending last line is taken at close) and
every line is accounted as recorded, malformed (incl. PFN 0) or dropped because the tree
was full; a write never fails for bad lines. A write hands its complete lines to the
feed's `FeedWorker` and returns (while that job waits in the queue, later writes of the
same open file join it, up to COALESCE_BYTES: fewer, larger batches for the worker);
close (release) and every read of spe_feed_stats or spe_stats first wait until the
queued lines are recorded. In "rfc" mode it is the RFC's
spe_feed_write: one PFN from the first 31 bytes of each write. spe_stats (0400) is
`PfnTree.stats_text()`. spe_record (0600): a write of perf config terms starts an
emulated arm_spe session for that open file; the first read ends the recording and
reads drain its raw records.
"""
from __future__ import annotations

import errno
import threading

from damond.log import get_logger
from damond.spe import feed as F
from damond.spe.sampler import Sampler, SpeConfig, records_bytes

from damond.fs.tree import FsError, Snap

DEBUG_DIR = "kernel/debug/damon"
_U64 = (1 << 64) - 1
DRAIN_BATCH = 20_000         # records formatted per read (keeps each FUSE read short)
COALESCE_BYTES = 1 << 19     # a queued spe_feed job takes later writes of its file up to this size;
# with one job queued (depth 1) at most about 1 MiB of accepted lines wait, as with 8 queued 128 KiB writes
log = get_logger("damond.spe")


class _Job:
    """Complete lines of consecutive writes of one open file, recorded by one worker run."""
    __slots__ = ("mine", "parts", "size")

    def __init__(self, mine: F.FeedCounters):
        self.mine, self.parts, self.size = mine, [], 0


class SpeFeed:
    """kernel/debug/damon/spe_feed."""
    mode = 0o200

    def __init__(self, spe, compiled: bool | None = None, max_rows: int = 1 << 15, depth: int = 1):
        self.spe = spe
        self.counters = F.FeedCounters()
        self._mutex = threading.Lock()         # counters, _open
        self._ingest = F.Ingest(spe, compiled, max_rows)     # used by the worker thread only
        self.worker = F.FeedWorker(depth)
        self._open: _Job | None = None         # queued, not started: later writes of its file join it

    def open(self, flags: int) -> object:
        return (F.FeedSession(), F.FeedCounters())

    def read(self, st, size: int, offset: int) -> bytes:
        raise FsError(errno.EINVAL, "spe_feed has no read")

    def write(self, st, data: bytes) -> int:
        sess, mine = st
        n = len(data)
        if self.spe.feed == "rfc":
            self._rfc(data, mine)
            return n
        parts, overlong = F.split_complete(sess, data)
        with self._mutex:
            for c in (self.counters, mine):     # _add, spelled out: once per write
                c.writes += 1
                c.bytes += n
                if overlong:
                    c.lines += overlong
                    c.malformed += overlong
            if not parts:
                return n
            job = self._open
            if job is not None and job.mine is mine and job.size < COALESCE_BYTES:
                job.parts += parts                 # the worker has not taken it yet
                job.size += n
                return n
            job = self._open = _Job(mine)
            job.parts += parts
            job.size = n
        self.worker.submit(lambda: self._run(job))
        return n

    def _run(self, job: _Job) -> None:
        """Take `job` (no write joins it any more) and record its lines (worker thread)."""
        with self._mutex:
            if self._open is job:
                self._open = None
        self._lines(job.parts, job.mine)

    def drain(self) -> None:
        """Wait until the lines of every write so far are recorded and accounted."""
        self.worker.drain()

    def _rfc(self, data: bytes, mine: F.FeedCounters) -> None:
        pfn = F.rfc_parse(data)
        d = {"writes": 1, "bytes": len(data), "lines": 1, "truncated_writes": int(len(data) > F.RFC_LINE_MAX)}
        if pfn is None or pfn == 0:
            d.update(malformed=1, zero_pfn=int(pfn == 0))
        elif self.spe.record(pfn):
            d.update(recorded=1, recorded_accesses=1)
        else:
            d.update(dropped_full=1, dropped_accesses=1)
        with self._mutex:
            self._add(mine, **d)

    def _lines(self, parts: list, mine: F.FeedCounters) -> None:
        """Parse, record and account complete lines (on the worker thread)."""
        ok, bad, zero, res = self._ingest.lines(parts)
        with self._mutex:
            for c in (self.counters, mine):     # _add, spelled out: once per job
                c.lines += ok + bad + zero
                c.recorded += res.recorded
                c.recorded_accesses = (c.recorded_accesses + res.recorded_accesses) & _U64
                if bad or zero:
                    c.malformed += bad + zero
                    c.zero_pfn += zero
                if res.dropped or res.dropped_accesses:
                    c.dropped_full += res.dropped
                    c.dropped_accesses = (c.dropped_accesses + res.dropped_accesses) & _U64

    def _add(self, mine: F.FeedCounters, **kv) -> None:
        """Add to the file's and this open file's counters (caller holds the mutex)."""
        for k, v in kv.items():
            m = _U64 if k.endswith("_accesses") else -1
            setattr(self.counters, k, (getattr(self.counters, k) + v) & m)
            setattr(mine, k, (getattr(mine, k) + v) & m)

    def release(self, st) -> None:
        sess, mine = st
        if sess.pending and not sess.overlong:
            tail, sess.pending = bytes(sess.pending), bytearray()
            self.worker.submit(lambda: self._lines([tail], mine))
        self.worker.drain()
        if mine.writes:
            log.info("spe_feed_closed", mode=self.spe.feed, writes=mine.writes, lines=mine.lines,
                     recorded=mine.recorded, malformed=mine.malformed, dropped_full=mine.dropped_full)
            if mine.dropped_full:
                log.warning("spe_tree_full", dropped=mine.dropped_full, capacity=self.spe.capacity)

    def stats_text(self) -> bytes:
        self.drain()
        with self._mutex:
            return self.counters.text(self.spe.feed, "compiled" if self._ingest.compiled else "python").encode()


class ReadOnly:
    """A 0400 file read as a seq_file (tree.Snap)."""
    mode = 0o400

    def __init__(self, text):
        self._text = text

    def open(self, flags: int) -> object:
        return Snap()

    def read(self, st: Snap, size: int, offset: int) -> bytes:
        return st.read(self._text, size, offset)

    def write(self, st, data: bytes) -> int:
        raise FsError(errno.EACCES, "read-only")

    def release(self, st) -> None:
        pass


class _Session:
    __slots__ = ("sampler", "buf", "synced")

    def __init__(self):
        self.sampler: Sampler | None = None
        self.buf = b""
        self.synced = False


class SpeRecord:
    """damond/spe_record: write config terms to start sampling, read to drain raw records."""
    mode = 0o600

    def __init__(self, system):
        self.system = system
        self._n = 0

    def open(self, flags: int) -> object:
        return _Session()

    def write(self, st: _Session, data: bytes) -> int:
        if st.sampler is not None:
            raise FsError(errno.EBUSY, "this open file is already recording")
        try:
            cfg = SpeConfig.parse(bytes(data).decode("utf-8", "replace"))
        except ValueError as e:
            raise FsError(errno.EINVAL, str(e)) from None
        m = self.system.machine
        seed = getattr(self.system.config, "seed", 1)
        self._n += 1
        import numpy as np
        rng = np.random.default_rng([seed, 0x5BE, self._n])
        st.sampler = Sampler(cfg, nr_cpus=m.spec.nr_cpus, rng=rng)
        st.sampler.start(m)
        log.info("spe_record_started", period=cfg.period, pa_enable=cfg.pa_enable, pid=cfg.pid)
        return len(data)

    def read(self, st: _Session, size: int, offset: int) -> bytes:
        if st.sampler is None:
            raise FsError(errno.EINVAL, "write config terms (e.g. 'period=1024 pa_enable=1') first")
        if not st.buf:
            m = self.system.machine
            if not st.synced:        # bring the machine up to now so the recording window is complete,
                m.advance_to(self.system.clock.now_us())
                st.sampler.stop()    # and end it there, as `perf record` has ended before `perf script`
                st.synced = True     # reads: a drain slower than the sampling would never reach EOF
            recs = st.sampler.drain(DRAIN_BATCH)
            comms = {p.pid: p.comm for p in m.processes()}
            st.buf = records_bytes(recs, comms)
        out, st.buf = st.buf[:size], st.buf[size:]
        return out

    def release(self, st: _Session) -> None:
        if st.sampler is not None:
            st.sampler.stop()
            s = st.sampler
            log.info("spe_record_stopped", selected=s.selected, filtered=s.filtered, lost=s.lost)


def handlers(system) -> dict:
    """relpath -> FileHandler for the front to mount."""
    feed = SpeFeed(system.spe)
    return {
        f"{DEBUG_DIR}/spe_feed": feed,
        f"{DEBUG_DIR}/spe_stats": ReadOnly(lambda: (feed.drain(), system.spe.stats_text().encode())[1]),
        f"{DEBUG_DIR}/spe_feed_stats": ReadOnly(feed.stats_text),
        "damond/spe_record": SpeRecord(system),
    }
