"""`damond reproduce EXPERIMENT [--json] [--plots DIR] [--seed N] [--machine NAME]`: rerun
the RFC's experiments (t1 t2 t4 t5 e2e methodology x86 age, or all) on the emulated
machine, on virtual time, and print the RFC's figure beside damond's and the counted
truth (or one JSON object per experiment, a list for `all`). A run longer than 2 s shows
a progress bar on stderr when stderr is a terminal.

`damond reproduce designs [--json] [--plots DIR] [--seeds N] [--jobs J] [--cluster ADDRESS]`
measures the RFC's split design beside the reviewer's alternatives and writes
docs/designs.md (damond/reproduce/designs/command.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from damond.reproduce import EXPERIMENTS, experiment


class Progress:
    """A one-line bar on stderr, shown once the run has taken 2 s, only on a terminal."""

    def __init__(self, names: list[str], stream=sys.stderr, after_s: float = 2.0):
        self.names, self.stream, self.after_s = names, stream, after_s
        self.t0 = time.monotonic()
        self.tty = stream.isatty()
        self.i, self.shown = 0, False

    def update(self, frac: float) -> None:
        if not self.tty or time.monotonic() - self.t0 < self.after_s:
            return
        done = (self.i + min(max(frac, 0.0), 1.0)) / len(self.names)
        bar = "#" * int(done * 30)
        self.stream.write(f"\r[{bar:<30}] {done:4.0%} {self.names[self.i]:<12} {time.monotonic() - self.t0:5.1f} s")
        self.stream.flush()
        self.shown = True

    def next(self) -> None:
        self.i += 1

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * 70 + "\r")
            self.stream.flush()


def set_argparser(parser: argparse.ArgumentParser) -> None:
    from damond.reproduce.common import MACHINES
    import os
    parser.add_argument("experiment", choices=EXPERIMENTS + ("all", "designs"), metavar="EXPERIMENT",
                        help=f"one of {' '.join(EXPERIMENTS)} all, or designs")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per experiment, a list for all)")
    parser.add_argument("--plots", metavar="DIR", help="write PNG figures to DIR (needs matplotlib: damond[plots])")
    parser.add_argument("--seed", type=int, default=1, metavar="N", help="seed of every random choice (default 1)")
    parser.add_argument("--machine", choices=MACHINES, default="kunpeng920", metavar="NAME",
                        help=f"[machine] preset: {', '.join(MACHINES)} (default kunpeng920; the x86 experiment "
                             "uses x86-skylake unless an x86 preset is named)")
    g = parser.add_argument_group("designs")
    g.add_argument("--seeds", type=int, default=1, metavar="N", help="designs: seeds 1..N per design x workload")
    g.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="J",
                   help="designs: runs in parallel on a local process pool (default: the cores)")
    g.add_argument("--cluster", metavar="ADDRESS", help="designs: run on the Dask distributed scheduler at "
                   "ADDRESS (tcp://host:8786; needs damond[cluster])")
    g.add_argument("--design", action="append", metavar="NAME", help="designs: only this design (repeatable)")
    g.add_argument("--workload", action="append", metavar="NAME", help="designs: only this workload (repeatable)")
    g.add_argument("--duration", type=float, default=30.0, metavar="S", help="designs: virtual seconds of "
                   "control per run (default 30)")
    g.add_argument("--doc", default="docs/designs.md", metavar="PATH", help="designs: where the generated "
                   "report goes (default docs/designs.md; '' for none)")


def main(args: argparse.Namespace) -> int:
    from damond.log import configure
    from damond.reproduce import plots, table
    from damond.reproduce.common import Options
    configure("warning")
    if args.plots:
        try:
            plots._plt()
        except plots.PlotsUnavailable as e:
            print(f"damond reproduce: {e}", file=sys.stderr)
            return 2
    if args.experiment == "designs":
        from damond.reproduce.designs import command
        bar = Progress(["designs"])
        try:
            return command.main(args, bar.update)
        finally:
            bar.close()
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    bar = Progress(names)
    opts = Options(seed=args.seed, machine=args.machine, progress=bar.update)
    results = []
    try:
        for name in names:
            results.append(experiment(name).run(opts))
            bar.next()
    finally:
        bar.close()
    if args.json:
        objs = [r.json for r in results]
        print(json.dumps(objs if args.experiment == "all" else objs[0], indent=1))
    else:
        sys.stdout.write(table.render(results))
    if args.plots:
        for path in plots.write(results, args.plots):
            print(f"damond reproduce: wrote {path}", file=sys.stderr)
    return 0
