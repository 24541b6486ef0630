"""`damond spe-record`: record emulated ARM SPE samples from a damond mount and print them
as `perf script` does after `perf record -e arm_spe_0/<terms>/ -a -c PERIOD`.

Opens MOUNTPOINT/damond/spe_record, writes the config terms (starting a sampling session
bound to that open file), waits --duration seconds of wall time, drains the raw records
and prints the perf-script lines (several per record, one per synthesized event group).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from damond.spe import perf_script
from damond.spe.sampler import SpeConfig, parse_records


def set_argparser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mount", required=True, metavar="MOUNTPOINT", help="a mounted damond tree")
    parser.add_argument("--duration", type=float, required=True, metavar="SECONDS", help="how long to sample")
    parser.add_argument("--period", type=int, default=1024, help="sample one op every N (perf -c; default 1024)")
    parser.add_argument("-F", "--fields", default=None,
                        help="perf script -F field list; +f/-f edit the defaults (default, as perf: comm,tid,cpu,"
                             "time,period,event,ip,sym,symoff,dso; like perf, phys_addr is printed only when asked: "
                             "use -F +phys_addr before `| damond spe-hist --feed`)")
    parser.add_argument("--itrace", default=None,
                        help="event groups as perf's --itrace letters: f m t b a M i (default: all but i)")
    parser.add_argument("--pid", type=int, default=-1, help="sample only this emulated pid (perf -p)")
    parser.add_argument("--no-pa", action="store_true", help="record without pa_enable (phys_addr prints 0)")
    parser.add_argument("--ns", action="store_true", help="print times with nanoseconds (perf script --ns)")
    parser.add_argument("--filter", default="", help="extra config terms, e.g. 'load_filter=1,min_latency=20'")


class RecordError(Exception):
    """One line saying which step of a recording failed."""


def record(mount: str, terms: str, seconds: float) -> bytes:
    """A sampling session on MOUNT/damond/spe_record: write the config terms, wait `seconds`
    of wall time, drain the raw records (`sampler.parse_records` reads them)."""
    path = os.path.join(mount, "damond", "spe_record")
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        raise RecordError(f"cannot open {path}: {e.strerror}") from None
    chunks = []
    try:
        try:
            os.write(fd, terms.encode())
        except OSError as e:
            raise RecordError(f"{path} refused the config: {e.strerror}") from None
        time.sleep(seconds)
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(fd)
    return b"".join(chunks)


def main(args: argparse.Namespace) -> int:
    try:
        fields = perf_script.parse_fields(args.fields or "")
        terms = f"period={args.period} pa_enable={0 if args.no_pa else 1} ts_enable=1 {args.filter} pid={args.pid}"
        cfg = SpeConfig.parse(terms)
    except ValueError as e:
        print(f"damond spe-record: {e}", file=sys.stderr)
        return 2
    if args.duration < 0:
        print("damond spe-record: --duration must be >= 0", file=sys.stderr)
        return 2
    try:
        data = record(args.mount, terms, args.duration)
    except RecordError as e:
        print(f"damond spe-record: {e}", file=sys.stderr)
        return 1
    recs, comms = parse_records(data)
    groups = perf_script.itrace_groups(args.itrace)
    raw = f"arm_spe_0/{cfg.evsel_terms()}/"
    out = sys.stdout.buffer
    try:
        for i in range(0, len(recs), perf_script.BATCH):
            out.write(perf_script.format_records_bytes(recs[i:i + perf_script.BATCH], comms, fields, groups, raw,
                                                       ns=args.ns))
        out.flush()
    except BrokenPipeError:          # the reader went away (| head): exit quietly, as perf does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    print(f"damond spe-record: {len(recs)} records", file=sys.stderr)
    return 0
