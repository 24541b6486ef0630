"""`damond spe-hist`: per-THP 512-bin subpage histograms from `perf script` text on stdin
(real arm64 output or `damond spe-record`), the RFC's spe_hist.c made to work.

Outputs: `--feed` prints `PFN COUNT` lines for spe_feed; the default report prints the
top THPs with heatmap rows and the hot-fraction distribution (the RFC's T5 table);
`--threshold N` prints split candidates (signal-filtered hot percent < N). Line counts
(records, duplicate event lines, skipped lines) go to stderr.
"""
from __future__ import annotations

import argparse
import sys

from damond.spe import hist

CHUNK = 8 << 20


def set_argparser(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Reads stdin: `perf script -F phys_addr | damond spe-hist --feed`, or "
                     "`damond spe-record --mount M --duration 2 -F +phys_addr | damond spe-hist`. "
                     "Counts of records and skipped lines go to stderr.")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--feed", action="store_true", help="print `PFN COUNT` lines ready for spe_feed, the most accessed THP first")
    g.add_argument("--threshold", type=int, metavar="N", help="print THPs whose hot fraction is below N percent")
    parser.add_argument("--top", type=int, default=10, help="THPs shown in the report (default 10)")


def _read(builder: hist.HistBuilder, stream) -> None:
    """Feed complete lines in CHUNK-sized reads into one reused buffer (no copies of the
    chunk; an unterminated tail moves to the front for the next read)."""
    buf = bytearray(CHUNK + 65536)
    view = memoryview(buf)
    have = 0
    while True:
        if have == len(buf):                 # one line longer than the buffer: grow
            buf.extend(bytes(len(buf)))
            view = memoryview(buf)
        got = stream.readinto(view[have:])
        if not got:
            break
        end = have + got
        cut = buf.rfind(b"\n", 0, end) + 1
        if cut:
            builder.feed(view[:cut])
            buf[:end - cut] = view[cut:end]
            have = end - cut
        else:
            have = end
    if have:
        builder.feed(bytes(view[:have]))


def _hottest_first(pfns, counts):
    """Order feed lines THP by THP, the most accessed THP first (subpages ascending within
    one): the kernel's tree holds 1024 THPs and drops what comes after, so it should keep
    the THPs that carry the signal."""
    import numpy as np

    if len(pfns) == 0:
        return pfns, counts
    thp = pfns >> np.uint64(9)
    keys, inv = np.unique(thp, return_inverse=True)
    totals = np.bincount(inv, weights=counts.astype(np.float64), minlength=len(keys))
    order = np.lexsort((pfns, -totals[inv]))
    return pfns[order], counts[order]


def main(args: argparse.Namespace) -> int:
    if args.threshold is not None and not 0 <= args.threshold <= 100:
        print("damond spe-hist: --threshold must be 0..100", file=sys.stderr)
        return 2
    b = hist.HistBuilder()
    _read(b, sys.stdin.buffer)
    pfns, counts = b.subpages()
    s = b.stats
    out = sys.stdout
    if args.feed:
        out.flush()
        out.buffer.write(hist.feed_bytes(*_hottest_first(pfns, counts)))
    elif args.threshold is not None:
        text, n, total = hist.candidates_text(pfns, counts, args.threshold)
        out.write(text)
        print(f"spe_hist: {n}/{total} THPs below {args.threshold}% threshold", file=sys.stderr)
    else:
        nthp = len(hist.thp_table(pfns, counts).thp)
        print("\n========== SPE Sub-Page Access Heatmap ==========", file=sys.stderr)
        print(f"Total records: {s.records}  Skipped(no PA): {s.skipped_no_pa}  THPs tracked: {nthp}", file=sys.stderr)
        print(f"Top {min(args.top, nthp)} THP regions by access count:\n", file=sys.stderr)
        out.write(hist.report_text(pfns, counts, args.top))
    out.flush()
    print(f"damond spe-hist: {s.lines} lines, {s.records} records ({b.mode or 'no'} dedupe), "
          f"{s.duplicate_lines} duplicate event lines, {s.skipped_no_pa} skipped (no PA), "
          f"{s.skipped_header} skipped (header/blank)", file=sys.stderr)
    if s.records == 0 and s.lines:
        print("damond spe-hist: no physical addresses found; record with pa_enable=1 and print "
              "phys_addr (perf script -F ...,phys_addr)", file=sys.stderr)
    return 0
