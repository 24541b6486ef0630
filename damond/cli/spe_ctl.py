"""`damond spe-ctl`: the v2 split control plane (damon_spe_ctl.sh's pipeline) against a
damond tree: an SPE histogram in, DAMOS `addr` filters on a `split` scheme out, each round
bounded by `max_nr_snapshots` where the feature level has it. The logic is
`damond/spe/ctlplane.py`; this module reads arguments, the histogram and prints.

Writes only to a damond tree: --mount must hold damond's own `damond/` directory beside
`kernel/mm/damon/admin` (under `damond exec`, $DAMOND_ROOT is the default).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from damond.cli import spe_record
from damond.spe import ctlplane
from damond.spe.sampler import SpeConfig, parse_records


def set_argparser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Split the sparse THPs of one process: read an SPE histogram (perf script text, or "
        "damond spe-hist's --feed or --threshold output) from --input, or record one from the "
        "mount with --record; find the THPs whose hot fraction is below --threshold, map them "
        "to the process's addresses through /proc/PID/pagemap, install them as `addr` filters "
        "of a `split` scheme and commit (stage and `on` when the kdamond is off). With "
        "max_nr_snapshots (feature level 7.0+) each round lets the scheme apply --snapshots "
        "times, then it deactivates until the next round.")
    parser.add_argument("--mount", default=os.environ.get("DAMOND_ROOT"), metavar="MOUNTPOINT",
                        help="a damond mount (default: $DAMOND_ROOT, set by damond exec)")
    parser.add_argument("--proc", default=None, metavar="DIR", help="procfs holding PID/maps and PID/pagemap "
                        "(default: MOUNTPOINT/proc)")
    parser.add_argument("--pid", type=int, required=True, help="target process")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", metavar="FILE", help="histogram text; - for stdin")
    src.add_argument("--record", type=float, metavar="SECONDS",
                     help="record SPE samples of --pid from MOUNTPOINT/damond/spe_record for this long, each round")
    parser.add_argument("--period", type=int, default=1024, help="with --record: one sample every N ops (default 1024)")
    parser.add_argument("--threshold", type=int, default=30, help="split THPs whose hot percent is below N (default 30)")
    parser.add_argument("--order", type=int, default=2, help="split target order (default 2 = 16 KiB)")
    parser.add_argument("--max-filters", type=int, default=256, help="at most N addr filters (default 256)")
    parser.add_argument("--snapshots", type=_snapshots, default=ctlplane.AUTO, metavar="N|auto",
                        help="scheme applications per round through max_nr_snapshots: `auto` (default) allows two "
                             "per filter and one more (an addr filter cuts a region in one pass and is applied in "
                             "the next), 0: no limit")
    parser.add_argument("--apply-interval-us", type=int, default=5000,
                        help="the split scheme's apply_interval_us when spe-ctl stages it (default 5000, the "
                             "sampling interval: the passes of a round fall between two merges)")
    parser.add_argument("--kdamond", type=int, default=0, help="kdamond index (default 0)")
    parser.add_argument("--start", type=lambda x: int(x, 0), default=0, help="monitoring region start (default: vaddr's)")
    parser.add_argument("--end", type=lambda x: int(x, 0), default=0, help="monitoring region end")
    parser.add_argument("--rounds", type=int, default=1, help="with --record: rounds to run (default 1)")
    parser.add_argument("--loop-delay", type=float, default=0.0, help="seconds between rounds (default 0)")
    parser.add_argument("--dry-run", action="store_true", help="print the ranges, write nothing")


def _snapshots(x: str) -> int:
    if x == "auto":
        return ctlplane.AUTO
    n = int(x)
    if n < 0:
        raise ValueError(x)
    return n


def _err(msg: str) -> int:
    print(f"damond spe-ctl: {msg}", file=sys.stderr)
    return 1


def _record(mount: str, pid: int, seconds: float, period: int):
    """`perf record -e arm_spe_0/pa_enable=1/ -p PID` for `seconds`, as a histogram."""
    terms = f"period={period} pa_enable=1 ts_enable=1 pid={pid}"
    SpeConfig.parse(terms)
    recs, _ = parse_records(spe_record.record(mount, terms, seconds))
    return ctlplane.records_histogram(recs["pa"])


def main(args: argparse.Namespace) -> int:
    if not args.mount:
        return _err("--mount is required (no $DAMOND_ROOT: not under damond exec)")
    if not (os.path.isdir(os.path.join(args.mount, "damond"))
            and os.path.isdir(os.path.join(args.mount, ctlplane.ADMIN))):
        return _err(f"{args.mount} is not a damond tree (no damond/ beside {ctlplane.ADMIN}); refusing to write")
    for name in ("threshold", "max_filters", "rounds", "period", "kdamond", "apply_interval_us"):
        if getattr(args, name) < 0:
            return _err(f"--{name.replace('_', '-')} must be >= 0")
    if not 0 <= args.threshold <= 100:
        return _err("--threshold must be 0..100")
    if args.end and args.end <= args.start:
        return _err("--end must be above --start")
    files = ctlplane.MountFiles(args.mount, args.proc)
    p = ctlplane.Params(pid=args.pid, kdamond=args.kdamond, threshold=args.threshold, target_order=args.order,
                        max_filters=args.max_filters, snapshots=args.snapshots, start=args.start, end=args.end,
                        apply_interval_us=args.apply_interval_us)
    rounds = args.rounds if args.record is not None else 1
    for i in range(rounds):
        if i and args.loop_delay:
            time.sleep(args.loop_delay)
        try:
            if args.record is not None:
                h = _record(args.mount, args.pid, args.record, args.period)
            else:
                h = ctlplane.parse_histogram(sys.stdin.read() if args.input == "-" else open(args.input).read())
        except (OSError, ValueError, spe_record.RecordError) as e:
            return _err(f"cannot read the histogram: {e}")
        try:
            if args.dry_run:
                thps = ctlplane.choose(h, p.threshold)
                lo, hi = (p.start, p.end) if p.end > p.start else (0, ctlplane.ULONG_MAX)
                ranges = ctlplane.merge_ranges(ctlplane.pfn_to_va(files, p.pid, thps, lo, hi))
                print(f"{len(thps)} sparse THPs; would install {len(ranges)} addr filters:")
                for a, b in ranges:
                    print(f"  {a:#x} {b:#x} ({(b - a) >> 21} THP)")
                continue
            r = ctlplane.control_round(files, p, h)
        except (OSError, ValueError) as e:
            what = (f"{e.filename or 'write'}: {os.strerror(e.errno)}" if isinstance(e, OSError) and e.errno
                    else str(e))
            return _err(f"round {i}: {what}")
        snap = f", max_nr_snapshots={r.max_nr_snapshots}" if r.max_nr_snapshots else ", no max_nr_snapshots (level < 7.0)"
        print(f"round {i}: {r.candidates} sparse THPs, {len(r.ranges)} addr filters "
              f"({r.unresolved} not mapped by pid {p.pid}, {r.capped} over --max-filters){snap}, "
              f"{'on' if r.started else 'commit'}")
        for a, b in r.ranges:
            print(f"  {a:#x} {b:#x}")
    return 0
