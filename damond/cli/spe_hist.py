"""`damond spe-hist`: per-THP 512-bin subpage histograms from `perf script` text on stdin
(real arm64 output or `damond spe-record`), a drop-in for the RFC's spe_hist.c.

Outputs: the default report prints the top THPs with heatmap rows and the hot-fraction
distribution (spe_hist.c's report, the RFC's T5 table); `--threshold N` prints split
candidates (signal-filtered hot percent < N, spe_hist.c's candidate mode); `--feed` prints
`PFN COUNT` lines for spe_feed. spe_hist.c's arguments work: the positional max_lines,
`--threshold N`, and the old damon_spe_ctl.sh's `--pid PID`. Counts and warnings go to
stderr.
"""
from __future__ import annotations

import argparse
import os
import sys

from damond.spe import hist

CHUNK = 8 << 20
C_MAX_THPS = 4096

DESCRIPTION = """\
Reads `perf script` text on stdin (real arm64 output or `damond spe-record`; any -F field
list that prints phys_addr, the last field) and builds per-THP 512-bin histograms of 4 KB
subpage accesses. A drop-in for the RFC's spe_hist.c:

  perf script -F phys_addr | damond spe-hist --threshold 30      # candidates, as spe_hist --threshold 30
  perf script -F phys_addr,ip,event,pid,tid | damond spe-hist --count lines   # spe_hist's report

damon_spe_ctl.sh runs `$SCRIPT_DIR/spe_hist` (it checks -x); put this executable there:
  printf '#!/bin/sh\nexec damond spe-hist "$@"\n' > spe_hist && chmod +x spe_hist

What one count is (--count): one SPE record prints several event lines (l1d, llc, tlb,
memory). `records` (default) counts each record once, by its `memory` line, because one
sampled access is one record. spe_hist.c counts every line (`--count lines`), so its
totals are 3-5x larger and a record weighs what it missed (a hit prints 3 lines, a load
that misses L1, LLC and TLB prints 7). Text without event names
(`-F phys_addr`) cannot tell records apart: there every line counts under both settings,
so the output equals spe_hist.c's (stderr says so).

Where damond differs from spe_hist.c on purpose: a line's PA is its last token (spe_hist.c
takes the last token that parses as nonzero hex, so a line with phys_addr 0 or without it
counts its ip); in the report, hot(>=10%max) keeps a floor of 1 (spe_hist.c's report
counts all 512 subpages hot when max_access < 10; its --threshold mode and the kernel use
the floor); nothing is dropped unless --max-thps asks for it; --pid does not turn into
max_lines."""


def set_argparser(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ("Reads stdin: `perf script -F phys_addr | damond spe-hist --feed`, or "
                     "`damond spe-record --mount M --duration 2 -F +phys_addr | damond spe-hist`. "
                     "Counts of records and skipped lines go to stderr.")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--feed", action="store_true", help="print `PFN COUNT` lines ready for spe_feed, the most accessed THP first")
    g.add_argument("--threshold", type=int, metavar="N",
                   help="print THPs whose hot fraction is below N percent, in order of first appearance "
                        "(spe_hist.c's candidate mode: `PFN 0x.. hot_fraction:P total:T`)")
    parser.add_argument("max_lines", nargs="?", type=int, default=0,
                        help="stop after this many sample lines (headers not counted), as spe_hist.c's "
                             "positional argument; 0 (default) reads all")
    parser.add_argument("--count", choices=hist.COUNTS, default="records",
                        help="what one count is: `records` (default; one per SPE record) or `lines` "
                             "(every event line, spe_hist.c's totals); see above")
    parser.add_argument("--max-thps", type=int, default=0, metavar="N",
                        help=f"keep only the first N THPs to appear and drop the samples of later ones, "
                             f"with a warning (spe_hist.c drops silently beyond {C_MAX_THPS}: "
                             f"`--max-thps {C_MAX_THPS}` mirrors it); 0 (default) keeps all")
    parser.add_argument("--pid", type=int, metavar="PID",
                        help="accepted for the old damon_spe_ctl.sh (`--threshold T --pid PID`); it does not "
                             "filter (`-F phys_addr` prints no pid: record with `perf record -p PID`); "
                             "spe_hist.c took PID as max_lines, damond does not")
    parser.add_argument("--top", type=int, default=10, help="THPs shown in the report (default 10, as spe_hist.c)")


def _read(builder: hist.HistBuilder, stream, max_lines: int = 0) -> None:
    """Feed complete lines in CHUNK-sized reads into one reused buffer (no copies of the
    chunk; an unterminated tail moves to the front for the next read). With max_lines,
    stop after that many sample lines."""
    buf = bytearray(CHUNK + 65536)
    view = memoryview(buf)
    have = 0
    left = max_lines

    def feed(part, end: int) -> bool:
        nonlocal left
        if max_lines:
            end, seen = hist.line_cut(bytes(part[:end]), left)
            left -= seen
        builder.feed(part, end)
        return bool(max_lines) and left == 0

    while True:
        if have == len(buf):                 # one line longer than the buffer: grow
            view.release()
            buf.extend(bytes(len(buf)))
            view = memoryview(buf)
        got = stream.readinto(view[have:])
        if not got:
            break
        end = have + got
        cut = buf.rfind(b"\n", 0, end) + 1
        if cut:
            if feed(buf, cut):
                return
            buf[:end - cut] = view[cut:end]
            have = end - cut
        else:
            have = end
    if have:
        feed(bytes(view[:have]), have)


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


def _err(msg: str) -> None:
    print(f"damond spe-hist: {msg}", file=sys.stderr)


def _write(args: argparse.Namespace, b: hist.HistBuilder, pfns, counts, order) -> None:
    """The chosen output on stdout, spe_hist.c's stderr lines with it."""
    s = b.stats
    out = sys.stdout
    if args.feed:
        out.flush()
        out.buffer.write(hist.feed_bytes(*_hottest_first(pfns, counts)))
    elif args.threshold is not None:
        text, n, total = hist.candidates_text(pfns, counts, args.threshold, order)
        out.write(text)
        print(f"spe_hist: {n}/{total} THPs below {args.threshold}% threshold", file=sys.stderr)
    else:
        print("\n========== SPE Sub-Page Access Heatmap ==========", file=sys.stderr)
        print(f"Total records: {s.records + s.skipped_no_pa}  Skipped(no PA): {s.skipped_no_pa}  "
              f"THPs tracked: {len(order)}", file=sys.stderr)
        print(f"Top {args.top} THP regions by access count:\n", file=sys.stderr)
        out.write(hist.report_text(pfns, counts, args.top, order, *b.loads_stores(order)))
        out.flush()
        print(hist.sparse_summary(pfns, counts), end="", file=sys.stderr)
    out.flush()


def main(args: argparse.Namespace) -> int:
    if args.threshold is not None and not 0 <= args.threshold <= 100:
        _err("--threshold must be 0..100")
        return 2
    for name in ("max_lines", "max_thps", "top"):
        if getattr(args, name) < 0:
            _err(f"{name.replace('_', '-')} must be >= 0")
            return 2
    report = not args.feed and args.threshold is None
    b = hist.HistBuilder(count=args.count, track_order=not args.feed or args.max_thps > 0, track_ldst=report)
    _read(b, sys.stdin.buffer, args.max_lines)
    pfns, counts = b.subpages()
    order = b.thp_order() if b.track_order else None
    if args.max_thps:
        assert order is not None            # track_order is on with --max-thps
        pfns, counts, order, n_thps, n_samples = hist.cap_thps(pfns, counts, order, args.max_thps)
        if n_thps:
            _err(f"--max-thps {args.max_thps}: dropped {n_samples} samples of {n_thps} further THPs "
                 f"(kept the first {args.max_thps} to appear)")
    try:
        _write(args, b, pfns, counts, order)
    except BrokenPipeError:          # the reader went away (| head -80 in spe_test.sh): exit quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    s = b.stats
    what = ("records (one `memory` line each)" if b.mode == "memory" else "samples (one per line)")
    _err(f"{s.lines} lines, {s.records} {what}, {s.duplicate_lines} other event lines, "
         f"{s.skipped_no_pa} skipped (no PA), {s.skipped_header} skipped (header/blank)")
    if b.records_unknown and s.records:
        _err("no `memory` event lines in the input (e.g. -F phys_addr): records cannot be told apart, "
             "every line counted as one sample, as spe_hist.c does; print the event field "
             "(perf script -F ...,event,phys_addr) to count records")
    if args.pid is not None:
        _err(f"--pid {args.pid}: accepted, not a filter (the input carries no pid to match; "
             f"record with perf record -p {args.pid})")
    if s.records == 0 and s.lines:
        _err("no physical addresses found; record with pa_enable=1 and print "
             "phys_addr (perf script -F ...,phys_addr)")
    return 0
