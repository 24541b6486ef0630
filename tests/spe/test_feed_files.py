"""spe_feed / spe_stats / spe_feed_stats handlers called directly (the mount test is in
test_pipeline.py): line parsing both parsers, partial lines, accounting, rfc mode."""
from types import SimpleNamespace

import numpy as np
import pytest

from damond.clock import VirtualClock
from damond.fs.spe_files import handlers
from damond.spe import feed as F
from damond.spe.tree import PfnTree

PARSERS = [F.parse_py] + ([F.parse_c] if F._feedparse is not None else [])


def files(capacity=1024, feed="lines"):
    system = SimpleNamespace(spe=PfnTree(VirtualClock(), capacity=capacity, feed=feed))
    return system, handlers(system)


def write_all(h, chunks):
    st = h.open(0o1)
    for c in chunks:
        assert h.write(st, c) == len(c)
    h.release(st)


def read(h):
    st = h.open(0)
    return h.read(st, 1 << 20, 0).decode()


def counters(hs):
    return dict(line.split("=", 1) for line in read(hs["kernel/debug/damon/spe_feed_stats"]).splitlines()[1:])


@pytest.mark.parametrize("parse", PARSERS)
def test_parser_shapes(parse):
    data = (b"0x820db801\n2179348481\n0100\n+0x10 7\n0x20\t3 \r\n0\n0x0\n\n  0x123\n820db8123\n"
            b"0x1000\\n\n08\n0x\n0x10000000000000000\n0x10 0\n0x10 -1\n0xffffffffffffffff 18446744073709551615\n42")
    p = parse(data)
    counts = p.counts if p.counts is not None else np.ones(len(p.pfns), np.uint64)
    assert list(zip(p.pfns.tolist(), counts.tolist())) == [
        (0x820db801, 1), (2179348481, 1), (0o100, 1), (0x10, 7), (0x20, 3),
        ((1 << 64) - 1, (1 << 64) - 1), (42, 1)]
    assert (p.zero, p.malformed) == (2, 9)


@pytest.mark.skipif(F._feedparse is None, reason="compiled parser not built")
def test_compiled_equals_fallback_on_random_lines():
    rng = np.random.default_rng(3)
    alphabet = np.frombuffer(b"0123456789abcdefxX+ \t\n\r-g", np.uint8)
    for _ in range(50):
        data = alphabet[rng.integers(0, len(alphabet), 400)].tobytes()
        a, b = F.parse_c(data), F.parse_py(data)
        ca = a.counts if a.counts is not None else np.ones(len(a.pfns), np.uint64)
        cb = b.counts if b.counts is not None else np.ones(len(b.pfns), np.uint64)
        assert (a.pfns.tolist(), ca.tolist(), a.malformed, a.zero) == (b.pfns.tolist(), cb.tolist(), b.malformed, b.zero)
        ing = [F.Ingest(PfnTree(VirtualClock(), capacity=1 << 12), compiled=c, max_rows=5) for c in (True, False)]
        r = [i.lines([memoryview(data)]) for i in ing]
        assert r[0] == r[1] and r[0][:3] == (len(b.pfns), b.malformed, b.zero)
        assert ing[0].tree.stats_text() == ing[1].tree.stats_text()


def test_methodology_feed_in_one_cat_write():
    system, hs = files()
    text = "".join(f"{0x100000 + i:#x}\n" for i in range(128)) + "".join(f"{0x200000 + i:#x}\n" for i in range(256))
    write_all(hs["kernel/debug/damon/spe_feed"], [text.encode()])
    assert read(hs["kernel/debug/damon/spe_stats"]) == (
        "nr_entries=2 total_accesses=384\n"
        "  pfn=0x100000 pid=0 total=128 hot_pages=128/512\n"
        "  pfn=0x200000 pid=0 total=256 hot_pages=256/512\n")
    c = counters(hs)
    assert (c["lines"], c["recorded"], c["malformed"], c["dropped_full"]) == ("384", "384", "0", "0")


def test_lines_split_across_writes_and_last_line_at_close():
    system, hs = files()
    write_all(hs["kernel/debug/damon/spe_feed"], [b"0x10", b"00 5\n0x2", b"000", b"\n0x3000 2"])
    assert read(hs["kernel/debug/damon/spe_stats"]) == (
        "nr_entries=3 total_accesses=8\n"
        "  pfn=0x1000 pid=0 total=5 hot_pages=1/512\n"
        "  pfn=0x2000 pid=0 total=1 hot_pages=1/512\n"
        "  pfn=0x3000 pid=0 total=2 hot_pages=1/512\n")
    assert counters(hs)["writes"] == "4"


def test_malformed_and_dropped_are_counted_and_write_never_fails():
    system, hs = files(capacity=1)
    write_all(hs["kernel/debug/damon/spe_feed"], [b"0x1000\nbogus\n0\n0x2000 4\n0x1001\n", b"x" * 5000, b"\n0x1002\n"])
    c = counters(hs)
    assert {k: c[k] for k in ("lines", "recorded", "recorded_accesses", "malformed", "zero_pfn",
                              "dropped_full", "dropped_accesses")} == {
        "lines": "7", "recorded": "3", "recorded_accesses": "3", "malformed": "3", "zero_pfn": "1",
        "dropped_full": "1", "dropped_accesses": "4"}
    assert system.spe.stats_text() == "nr_entries=1 total_accesses=3\n  pfn=0x1000 pid=0 total=3 hot_pages=3/512\n"


def test_rfc_mode_one_pfn_per_write():
    system, hs = files(feed="rfc")
    h = hs["kernel/debug/damon/spe_feed"]
    write_all(h, [b"0x1000\n", b"0x1001", b"0x2000\n0x2001\n", b"0\n", b"  0x123\n"])
    write_all(h, [("".join(f"{0x3000 + i:#x}\n" for i in range(100))).encode()])   # a bulk cat: nothing
    assert system.spe.stats_text() == "nr_entries=1 total_accesses=2\n  pfn=0x1000 pid=0 total=2 hot_pages=2/512\n"
    c = counters(hs)
    assert (c["writes"], c["recorded"], c["malformed"], c["zero_pfn"], c["truncated_writes"]) == ("6", "2", "4", "1", "1")
    assert read(hs["kernel/debug/damon/spe_feed_stats"]).startswith("mode=rfc ")


def test_modes():
    _, hs = files()
    assert [hs[k].mode for k in ("kernel/debug/damon/spe_feed", "kernel/debug/damon/spe_stats",
                                 "kernel/debug/damon/spe_feed_stats", "damond/spe_record")] == [0o200, 0o400, 0o400, 0o600]


def _entries(tree):
    return [(e.pfn, e.pid, e.total, e.last_us, e.counts.tolist()) for e in tree.entries_in(0, 1 << 64)]


def _random_feed(rng, n_lines, n_thp):
    """Lines over n_thp THPs, some with counts, some in other bases, some bad."""
    thp = rng.integers(0x40, 0x40 + n_thp, n_lines) * 512
    sub = rng.integers(0, 512, n_lines)
    out = []
    for t, s, kind in zip(thp.tolist(), sub.tolist(), rng.integers(0, 20, n_lines).tolist()):
        p = t + s
        if kind == 0:
            out.append(b"zz\n")
        elif kind == 1:
            out.append(b"0\n")
        elif kind == 2:
            out.append(b"%d %d\n" % (p, rng.integers(1, 1 << 40)))
        elif kind == 3:
            out.append(b"0%o\n" % p)
        elif kind == 4:
            out.append(b"0x%x 18446744073709551615\n" % p)       # counts wrap modulo 2**64
        else:
            out.append(b"0x%x\n" % p)
    return b"".join(out)


@pytest.mark.skipif(F._feedparse is None, reason="compiled parser not built")
@pytest.mark.parametrize("seed", range(6))
def test_compiled_ingest_equals_fallback(seed):
    """The C hot path (direct adds, key->slot map, undo, row-buffer splits) leaves the tree,
    its lifetime stats and spe_feed_stats exactly as the pure parser + record_many path,
    through prunes at capacity, TTL expiry, drops and external prune() calls (odd seeds:
    24 THPs for 8 entries, mostly the general path; even seeds: 6, mostly direct adds)."""
    rng = np.random.default_rng(seed)
    clocks = [VirtualClock(), VirtualClock()]
    trees = [PfnTree(clocks[0], capacity=8, ttl_s=2), PfnTree(clocks[1], capacity=8, ttl_s=2)]
    from damond.fs.spe_files import SpeFeed
    feeds = [SpeFeed(trees[0], compiled=True, max_rows=int(rng.integers(3, 40))), SpeFeed(trees[1], compiled=False)]
    sts = [f.open(0o1) for f in feeds]
    for step in range(40):
        data = _random_feed(rng, int(rng.integers(1, 120)), 24 if seed % 2 else 6)
        cuts = sorted(rng.integers(0, len(data), int(rng.integers(0, 4))).tolist())
        pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
        for f, st in zip(feeds, sts):
            for piece in pieces:
                assert f.write(st, piece) == len(piece)
            f.drain()                  # writes are recorded by the worker thread
        if rng.random() < 0.3:
            dt = int(rng.integers(0, 3_000_000))
            for c in clocks:
                c.sleep_us(dt)
        if rng.random() < 0.1:
            assert trees[0].prune() == trees[1].prune()
        assert _entries(trees[0]) == _entries(trees[1]), step
        assert trees[0].stats == trees[1].stats
        assert feeds[0].counters == feeds[1].counters
    for f, st in zip(feeds, sts):
        f.release(st)
    assert _entries(trees[0]) == _entries(trees[1])
    assert feeds[0].counters == feeds[1].counters
    c = feeds[0].counters
    assert c.lines == c.recorded + c.malformed + c.dropped_full and c.recorded and c.malformed
    if seed % 2:
        assert c.dropped_full and trees[0].stats.pruned


def _hex_line(rng, alphabet):
    n = int(rng.integers(1, 19))
    digits = bytes(rng.choice(np.frombuffer(b"0123456789abcdefABCDEF", np.uint8), n))
    line = b"0" + (b"x" if rng.random() < 0.8 else b"X") + digits
    if rng.random() < 0.3:
        line += b" " * int(rng.integers(1, 3)) + b"%d" % int(rng.integers(0, 1 << 62))
    if rng.random() < 0.2:          # a stray byte right after the digits (incl. non-ASCII, control)
        line += bytes([int(rng.choice(alphabet))])
    return line


@pytest.mark.skipif(F._feedparse is None, reason="compiled parser not built")
def test_compiled_hex_lines_of_every_length_equal_fallback():
    """The 8-bytes-at-a-time hex path (1..18 digits, mixed case, stray bytes such as 0x10-0x19
    or 0xb0 that look like digits to naive bit tricks) parses exactly as the regex parser."""
    rng = np.random.default_rng(11)
    stray = np.frombuffer(b"gG:@`/ \t\r+xX\x10\x19\x00\xb0\xc6\xe6", np.uint8)
    for _ in range(300):
        data = b"\n".join(_hex_line(rng, stray) for _ in range(int(rng.integers(1, 40)))) + b"\n"
        a, b = F.parse_c(data), F.parse_py(data)
        ca = a.counts if a.counts is not None else np.ones(len(a.pfns), np.uint64)
        cb = b.counts if b.counts is not None else np.ones(len(b.pfns), np.uint64)
        assert (a.pfns.tolist(), ca.tolist(), a.malformed, a.zero) == \
            (b.pfns.tolist(), cb.tolist(), b.malformed, b.zero), data


@pytest.mark.skipif(F._feedparse is None, reason="compiled parser not built")
def test_compiled_deltas_fold_exactly():
    """Thousands of lines on a few subpages between reads (the compiled path's small per-slot
    deltas fold many times, big histogram counts bypass them) give the fallback's counters."""
    from damond.fs.spe_files import SpeFeed
    trees = [PfnTree(VirtualClock(), capacity=4), PfnTree(VirtualClock(), capacity=4)]
    feeds = [SpeFeed(trees[0], compiled=True), SpeFeed(trees[1], compiled=False)]
    rng = np.random.default_rng(7)
    lines = [b"0x%x\n" % (0x10000 + int(rng.integers(0, 3)) * 512 + int(rng.integers(0, 4)))
             for _ in range(6000)]
    lines += [b"0x10001 300\n", b"0x10002 255\n", b"0x10200 18446744073709551615\n"]
    data = b"".join(lines)
    for f in feeds:
        st = f.open(0o1)
        for k in range(0, len(data), 4096):       # unaligned pieces: lines split across writes
            f.write(st, data[k:k + 4096])
        f.release(st)
    assert trees[0].stats_text() == trees[1].stats_text()
    assert _entries(trees[0]) == _entries(trees[1])
    assert feeds[0].counters == feeds[1].counters
    e = trees[0].get(0x10000)
    assert int(e.counts.sum()) == e.total and int(e.counts[4:].sum()) == 0 and e.counts[1] > 300


@pytest.mark.skipif(F._feedparse is None, reason="compiled parser not built")
def test_compiled_deltas_fold_past_their_width():
    """More lines on one THP between reads than its per-slot deltas hold (the compiled path
    folds the slot by itself, mid-write), with counts at the deltas' limit: the fallback's
    counters, exactly."""
    from damond.fs.spe_files import SpeFeed
    trees = [PfnTree(VirtualClock(), capacity=4), PfnTree(VirtualClock(), capacity=4)]
    feeds = [SpeFeed(trees[0], compiled=True), SpeFeed(trees[1], compiled=False)]
    data = b"0x10000\n" + b"0x10001\n" * 70_000 + b"0x10002 65535\n0x10003 65536\n" + b"0x10001\n" * 70_000
    for f in feeds:
        st = f.open(0o1)
        for k in range(0, len(data), 131072):
            f.write(st, data[k:k + 131072])
        f.release(st)
    assert _entries(trees[0]) == _entries(trees[1])
    assert feeds[0].counters == feeds[1].counters
    e = trees[0].get(0x10000)
    assert e.counts[:4].tolist() == [1, 140_000, 65535, 65536] and e.total == 1 + 140_000 + 65535 + 65536


@pytest.mark.skipif(F._feedparse is None, reason="compiled parser not built")
def test_compiled_keys_sharing_a_cache_entry_equal_fallback():
    """THPs whose keys share the compiled path's direct-mapped key cache entry (keys 1024 THPs
    apart), fed over and over with direct adds: the fallback's tree and counters."""
    from damond.fs.spe_files import SpeFeed
    trees = [PfnTree(VirtualClock(), capacity=64), PfnTree(VirtualClock(), capacity=64)]
    feeds = [SpeFeed(trees[0], compiled=True), SpeFeed(trees[1], compiled=False)]
    rng = np.random.default_rng(3)
    sts = [f.open(0o1) for f in feeds]
    for _ in range(6):
        thp = (0x40000 + rng.integers(0, 40, 3000) * 1024) * 512
        data = b"".join(b"0x%x\n" % p for p in (thp + rng.integers(0, 512, 3000)).tolist())
        for f, st in zip(feeds, sts):
            f.write(st, data)
            f.drain()
        assert _entries(trees[0]) == _entries(trees[1])
    for f, st in zip(feeds, sts):
        f.release(st)
    assert feeds[0].counters == feeds[1].counters and feeds[0].counters.recorded == 18_000


def test_writes_are_recorded_before_stats_reads():
    """A write returns before its lines are recorded (the worker thread does it); spe_stats
    and spe_feed_stats reads wait for them, and so does close."""
    system, hs = files()
    feed = hs["kernel/debug/damon/spe_feed"]
    st = feed.open(0o1)
    data = b"".join(b"0x%x\n" % (0x40000 + i) for i in range(20000))
    for k in range(0, len(data), 1000):
        feed.write(st, data[k:k + 1000])
    assert read(hs["kernel/debug/damon/spe_stats"]).splitlines()[0] == "nr_entries=40 total_accesses=20000"
    assert counters(hs)["recorded"] == "20000"
    feed.write(st, b"0x1 5")            # unterminated: taken at close
    feed.release(st)
    assert system.spe.get(0).total == 5
    assert counters(hs)["lines"] == "20001"
