"""The `damond` command: one module per subcommand, each with `set_argparser(parser)` and
`main(args) -> int` (damo's DamoSubCmd pattern). Library code logs; only this package prints.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "mount": ("damond.cli.mount", "mount the emulated sysfs tree at MOUNTPOINT"),
    "exec": ("damond.cli.exec_", "run a command with damond over /sys/kernel/mm/damon/admin in a private mount namespace"),
    "demo": ("damond.cli.demo", "mount the default machine, drive it with echo/cat, print DAMON beside ground truth"),
    "spe-record": ("damond.cli.spe_record", "record emulated ARM SPE samples and print them as `perf script` does"),
    "spe-hist": ("damond.cli.spe_hist", "read `perf script` text on stdin, print per-THP subpage histograms"),
    "spe-ctl": ("damond.cli.spe_ctl", "split one process's sparse THPs: SPE histogram -> pagemap -> DAMOS addr filters"),
    "reproduce": ("damond.cli.reproduce",
                  "rerun the RFC's experiments on virtual time: its figures beside damond's and the counted truth"),
}


def _build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand's parser; with `only`, import that subcommand's module alone (the
    others keep their one-line help): `damond spe-hist` starts without loading the daemon."""
    p = argparse.ArgumentParser(prog="damond", description="DAMON without the hardware or the patched kernel")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        if only is not None and name != only:
            continue
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name != modname:
                raise
            sp.set_defaults(_missing=name)
            continue
        mod.set_argparser(sp)
        sp.set_defaults(_main=mod.main)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        print(f"damond: command '{args._missing}' is not available in this build", file=sys.stderr)
        return 2
    return args._main(args)
