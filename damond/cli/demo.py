"""`damond demo`: mount the embedded default machine in a temporary directory, drive it
with echo/cat exactly as a user would (a stat scheme on the RFC's sparse workload, the
SPE pipeline into spe_feed, a split), print what DAMON reports beside the ground truth,
and unmount.

Every step is a shell command run with `sh -c` and shown before its output, so the
transcript can be replayed by hand against any damond mount.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from damond.cli.mount import add_log_arguments, log_argv, spawn_daemon, wait_ready

MiB = 1 << 20


def set_argparser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="machine config (TOML); default: the embedded machine")
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="how long each monitoring phase runs (wall seconds, default 4)")
    parser.add_argument("--keep", action="store_true", help="leave the mount in place at the end")
    add_log_arguments(parser)


class Shell:
    """Runs and shows commands as a user at a root prompt would type them."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env = root, env

    def run(self, cmd: str, show: bool = True, check: bool = True) -> str:
        if show:
            print(f"# {cmd}")
        p = subprocess.run(["sh", "-c", cmd], cwd=self.root, env=self.env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = p.stdout
        if show and out:
            print(out.rstrip("\n"))
        if check and p.returncode != 0:
            raise RuntimeError(f"command failed ({p.returncode}): {cmd}\n{out}")
        return out

    def cat(self, rel: str, show: bool = True) -> str:
        return self.run(f"cat {rel}", show=show).strip()


def _human(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def _truth(sh: Shell, pids: list[int]) -> int:
    """Bytes the workloads really touched in the last 100 ms, as the machine counted them
    page by page (damond/truth; counting started with its first read)."""
    out = sh.cat("damond/truth", show=False)
    total, seen = 0, set()
    for line in out.splitlines():
        m = re.search(r"\bpid=(\d+)\b.*\bwss_100ms=(\d+)", line)
        if m and int(m.group(1)) in pids:
            total += int(m.group(2))
            seen.add(int(m.group(1)))
    if seen != set(pids):
        raise RuntimeError(f"no ground truth for pids {sorted(set(pids) - seen)} in damond/truth:\n{out}")
    return total


def _anon_huge_kb(sh: Shell, pid: int) -> int:
    out = sh.cat(f"proc/{pid}/smaps_rollup", show=False)
    m = re.search(r"AnonHugePages:\s+(\d+) kB", out)
    return int(m.group(1)) if m else 0


def _wait_populated(sh: Shell, pid: int, timeout: float = 60.0) -> None:
    """sparse_8g first touches all of its memory (phase A), as the RFC's binary does before it
    prints its PID: wait until its AnonHugePages stops growing."""
    print(f"# (waiting until pid {pid} has populated its memory: AnonHugePages in proc/{pid}/smaps_rollup)")
    last, t_end = -1, time.monotonic() + timeout
    while time.monotonic() < t_end:
        kb = _anon_huge_kb(sh, pid)
        if kb == last and kb > 0:
            return
        last = kb
        time.sleep(1.0)


def _compare(sh: Shell, k: str, pids: list[int], label: str, snapshots: int = 10) -> tuple[int, int]:
    """Average `snapshots` tried-regions snapshots of scheme 0 (one apply interval each),
    as the kernel's WSS selftest does, beside the ground truth of the same moments."""
    tb = f"{k}/contexts/0/schemes/0/tried_regions/total_bytes"
    sh.run(f"echo update_schemes_tried_regions > {k}/state; cat {tb}")
    print(f"# (again {snapshots - 1} times, quietly)")
    reported, truth = [], []
    for i in range(snapshots):
        if i:
            sh.run(f"echo update_schemes_tried_regions > {k}/state", show=False)
        reported.append(int(sh.cat(tb, show=False)))
        truth.append(_truth(sh, pids))
    rep, tru = sum(reported) // snapshots, sum(truth) // snapshots
    ratio = f"{rep / tru:.0f}x" if tru else "n/a"
    print(f"\n  {label}:\n  DAMON reports {_human(rep)} hot on average over {snapshots} snapshots"
          f" (min {_human(min(reported))}, max {_human(max(reported))});"
          f" really accessed: {_human(tru)} -> {ratio}\n")
    return rep, tru


def _stage_schemes(sh: Shell, k: str, split: bool) -> None:
    """Scheme 0: stat, 'hot' = nr_accesses >= 1. Scheme 1 (split): the RFC's split to
    16 KiB folios for every THP whose SPE hot fraction is below 30 %."""
    s = f"{k}/contexts/0/schemes"
    cmds = [f"echo {2 if split else 1} > {s}/nr_schemes",
            f"echo stat > {s}/0/action",
            f"echo 18446744073709551615 > {s}/0/access_pattern/sz/max",
            f"echo 1 > {s}/0/access_pattern/nr_accesses/min",
            f"echo 4294967295 > {s}/0/access_pattern/nr_accesses/max",
            f"echo 4294967295 > {s}/0/access_pattern/age/max"]
    if split:
        cmds += [f"echo split > {s}/1/action",
                 f"echo 2 > {s}/1/target_order",
                 f"echo 30 > {s}/1/hot_threshold",
                 f"echo 18446744073709551615 > {s}/1/access_pattern/sz/max",
                 f"echo 4294967295 > {s}/1/access_pattern/nr_accesses/max",
                 f"echo 4294967295 > {s}/1/access_pattern/age/max"]
    for cmd in cmds:
        sh.run(cmd)


def run_demo(root: Path, sh: Shell, seconds: float) -> None:
    k = "kernel/mm/damon/admin/kdamonds/0"
    print("== The machine: an arm64 box (Kunpeng 920 TLBs), THP=always, the RFC's workloads ==")
    sh.cat("kernel/mm/transparent_hugepage/enabled")
    procs = sh.cat("damond/processes")
    sparse = next(int(line.split()[0]) for line in procs.splitlines() if "sparse" in line)
    hot = next(int(line.split()[0]) for line in procs.splitlines() if "thp-hot" in line)
    pids = [sparse, hot]
    _wait_populated(sh, sparse)
    print("# (the first read of damond/truth starts counting which pages the workloads touch)")
    sh.run("cat damond/truth")
    print(f"\n  sparse_8g (pid {sparse}): 8 GiB of THPs, one 4 KiB page of each touched;"
          f" AnonHugePages {_anon_huge_kb(sh, sparse)} kB")
    print(f"  hot_workload (pid {hot}): 16 THPs, a quarter of every THP's pages touched;"
          f" AnonHugePages {_anon_huge_kb(sh, hot)} kB\n")

    print("== 1. A DAMOS `stat` scheme on both (nr_accesses >= 1 = 'hot') ==")
    for cmd in (
        "echo 1 > kernel/mm/damon/admin/kdamonds/nr_kdamonds",
        f"echo 1 > {k}/contexts/nr_contexts",
        f"echo vaddr > {k}/contexts/0/operations",
        f"echo 2 > {k}/contexts/0/targets/nr_targets",
        f"echo {sparse} > {k}/contexts/0/targets/0/pid_target",
        f"echo {hot} > {k}/contexts/0/targets/1/pid_target",
    ):
        sh.run(cmd)
    _stage_schemes(sh, k, split=False)
    sh.run(f"echo on > {k}/state")
    sh.cat(f"{k}/state")
    time.sleep(seconds)
    before, truth = _compare(sh, k, pids, "THP-mapped (one Access Flag per 2 MiB)")

    print("== 2. SPE: record emulated arm_spe samples, histogram them, feed the PFN tree ==")
    dbg = "kernel/debug/damon"
    sh.run(f"damond spe-record --mount . --duration {max(1.0, seconds / 2):g} -F +phys_addr "
           f"| damond spe-hist --feed > {dbg}/spe_feed")
    sh.run(f"cat {dbg}/spe_feed_stats")
    sh.run(f"head -n 3 {dbg}/spe_stats; grep -v 'hot_pages=1/512' {dbg}/spe_stats | sed -n '2,4p'")
    print("\n  (the tree holds 1024 THPs, as the RFC's: the hottest were fed first, the rest dropped and"
          " counted; a THP without SPE data is split unconditionally, as the RFC does)")

    print("\n== 3. Split the THPs the SPE data calls sparse (hot fraction < hot_threshold) ==")
    _stage_schemes(sh, k, split=True)     # nr_schemes recreates both schemes with defaults
    sh.run(f"echo commit > {k}/state")
    time.sleep(seconds)
    sh.run(f"echo update_schemes_stats > {k}/state")
    sh.run(f"cd {k}/contexts/0/schemes/1/stats && grep . nr_tried sz_tried nr_applied sz_applied")
    left = _anon_huge_kb(sh, sparse)
    print(f"\n  AnonHugePages now: sparse_8g {left} kB (split),"
          f" hot_workload {_anon_huge_kb(sh, hot)} kB (kept: every 16 KiB chunk is hot)")
    if left:
        print("  (what is left of sparse_8g as THPs was collapsed again by khugepaged, 8 PMDs every 10 s:"
              " the split/collapse ping-pong the RFC warns about. khugepaged/defrag=0, the RFC's suggestion,"
              " only stops compaction; `echo never > kernel/mm/transparent_hugepage/enabled` stops khugepaged)")
    sh.run("grep -H . kernel/mm/transparent_hugepage/hugepages-16kB/stats/nr_anon "
           "kernel/mm/transparent_hugepage/hugepages-2048kB/stats/nr_anon")
    print("\n  (the split scheme stays in place; give DAMON a few aggregations at 16 KiB granularity)")
    time.sleep(seconds)
    after, truth2 = _compare(sh, k, pids, "after the split (16 KiB folios, one AF per 4 KiB PTE)")

    print("== Summary: DAMON vs ground truth ==")
    print(f"  {'':32} {'DAMON reports':>14} {'really hot':>12}")
    print(f"  {'THP (2 MiB, one AF)':32} {_human(before):>14} {_human(truth):>12}")
    print(f"  {'after SPE-guided split':32} {_human(after):>14} {_human(truth2):>12}")
    sh.run(f"echo off > {k}/state")


def _damond_bin(tmp: Path) -> Path:
    """A directory whose `damond` runs this very installation (the shell steps call it)."""
    d = tmp / "bin"
    d.mkdir(exist_ok=True)
    w = d / "damond"
    pkg_parent = shlex.quote(str(Path(__file__).resolve().parents[2]))
    # -P and PYTHONPATH: the mount has a `damond/` directory that must not shadow the package
    w.write_text(f"#!/bin/sh\nPYTHONPATH={pkg_parent}${{PYTHONPATH:+:$PYTHONPATH}} "
                 f"exec {shlex.quote(sys.executable)} -P -m damond \"$@\"\n")
    w.chmod(0o755)
    return d


NEEDS = {"sparse-hotspot": "the RFC's sparse_8g", "thp-hot": "the RFC's hot_workload"}


def check_config(path: str | None) -> str | None:
    """Why the demo cannot run on this config (one line), or None. The demo compares
    DAMON with the ground truth on the RFC's two workloads, so it needs both kinds."""
    from damond.config import Config, validate
    from damond.errors import ConfigError
    try:
        config = Config.load(path)
        validate(config)
    except ConfigError as e:
        return str(e)
    kinds = {w.get("kind") for w in config.data.get("workload", [])}
    missing = [f'kind = "{k}" ({what})' for k, what in NEEDS.items() if k not in kinds]
    if missing:
        return (f"{config.path}: the demo needs a [[workload]] with " + " and one with ".join(missing)
                + "; the embedded default config has both")
    return None


def main(args: argparse.Namespace) -> int:
    why = check_config(args.config)
    if why:
        print(f"damond demo: {why}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="damond-demo-") as td:
        return _run(args, Path(td))


def _run(args: argparse.Namespace, tmp: Path) -> int:
    root = tmp / "sys"
    root.mkdir()
    log = open(tmp / "damond.log", "w+")
    print(f"# damond mount {root}" + (f" --config {args.config}" if args.config else ""))
    proc = spawn_daemon(str(root), args.config, None, log, extra=tuple(log_argv(args)))
    env = dict(os.environ)
    env["PATH"] = f"{_damond_bin(tmp)}{os.pathsep}{env.get('PATH', '')}"
    rc = 0
    try:
        if not wait_ready(str(root), proc, timeout=60):
            raise RuntimeError("damond did not become ready")
        print(f"# cd {root}")
        run_demo(root, Shell(root, env), args.seconds)
    except RuntimeError as e:
        print(f"damond demo: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        log.flush()
        log.seek(0)
        tail = [ln for ln in log.read().splitlines() if ln.strip()][-5:]
        for ln in tail:
            print(f"damond demo: daemon log: {ln[:300]}", file=sys.stderr)
        rc = 1
    finally:
        if args.keep:
            print(f"# (left mounted: {root}; the daemon logs to {tmp / 'damond.log'})")
        else:
            subprocess.run(["fusermount3", "-u", str(root)], stderr=subprocess.DEVNULL)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            print(f"# fusermount3 -u {root}")
        log.close()
    return rc
