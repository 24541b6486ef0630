"""open/read/close cycles per second on a small file: a trivial mfusepy filesystem
serving one 4-byte file at the same path as damond's `kdamonds/0/state`, same library, same
options (direct_io, timeouts 0, nothreads), in one run; medians of several rounds.
Usage: python bench/fs_open_read.py [--rounds N] [--seconds S] [--config FILE | --fake]"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from report import row  # noqa: E402  (bench/ is the script's directory)

REPO = Path(__file__).resolve().parents[1]
STATE = "kernel/mm/damon/admin/kdamonds/0/state"
sys.path.insert(0, str(REPO))

TRIVIAL = r'''
import errno, stat, sys, mfusepy as fuse
from damond.fs.mount import fuse_options
class Trivial(fuse.Operations):
    use_ns = True
    DATA = b"off\n"
    FILE = "/kernel/mm/damon/admin/kdamonds/0/state"
    def getattr(self, path, fh=None):
        if path == "/" or self.FILE.startswith(path + "/"):
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path == self.FILE:
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": 4096}
        raise fuse.FuseOSError(errno.ENOENT)
    def readdir(self, path, fh):
        return [".", "..", self.FILE[len(path):].strip("/").split("/")[0]]
    def open(self, path, flags):
        return 1
    def read(self, path, size, offset, fh):
        return self.DATA[offset:offset + size]
    def release(self, path, fh):
        return 0
try:
    fuse.FUSE(Trivial(), sys.argv[1], **fuse_options())
except RuntimeError:
    pass
'''


def cycles(path: str, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(50):
            fd = os.open(path, os.O_RDONLY)
            os.read(fd, 4096)
            os.close(fd)
        n += 50
        t = time.perf_counter()
        if t >= end:
            return n / (t - t0)


def wait_for(p: Path, proc) -> None:
    for _ in range(600):
        if p.exists():
            return
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.returncode}")
        time.sleep(0.05)
    raise SystemExit(f"{p} never appeared")


def damond_cmd(a, mp: Path) -> list[str]:
    if a.fake:
        return [sys.executable, "-m", "tests.fs.fakes", str(mp)]
    return [sys.executable, "-m", "damond", "mount", str(mp), "--foreground"] + (
        ["--config", a.config] if a.config else [])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--config", help="damond machine config (default: the embedded machine, workloads running)")
    ap.add_argument("--fake", action="store_true", help="serve the front over tests/fs/fakes.py (no machine)")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds to let the machine start up first")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="damond-bench-") as td:
        return run(a, Path(td))


def run(a, tmp: Path) -> int:
    triv_mp, dam_mp = tmp / "trivial", tmp / "damond"
    triv_mp.mkdir()
    dam_mp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", TRIVIAL, str(triv_mp)], env=env, cwd=REPO,
                              stderr=subprocess.DEVNULL),
             subprocess.Popen(damond_cmd(a, dam_mp), env=env, cwd=REPO, stderr=subprocess.DEVNULL)]
    try:
        wait_for(triv_mp / STATE, procs[0])
        wait_for(dam_mp / "kernel/mm/damon/admin/kdamonds/nr_kdamonds", procs[1])
        with open(dam_mp / "kernel/mm/damon/admin/kdamonds/nr_kdamonds", "w") as f:
            f.write("1")
        time.sleep(a.settle)      # the embedded machine's start-up (sparse_8g populates 8 GiB) is not the front
        target = str(dam_mp / STATE)
        tr, dr = [], []
        for _ in range(a.rounds):
            tr.append(cycles(str(triv_mp / STATE), a.seconds))
            dr.append(cycles(target, a.seconds))
        mt, md = statistics.median(tr), statistics.median(dr)
        what = "front over fakes" if a.fake else f"real daemon, {a.config or 'embedded default machine'}"
        print(f"open/read/close cycles/s (median of {a.rounds} x {a.seconds:.1f}s; both read {STATE}; damond: {what})")
        print(f"  trivial mfusepy fs : {mt:9.0f}   rounds {[round(x) for x in tr]}")
        print(f"  damond             : {md:9.0f}   rounds {[round(x) for x in dr]}")
        print(f"  ratio damond/trivial: {md / mt:.2f} (target >= 0.80)")
        row("fs_open_read", f"open/read/close of kdamonds/0/state, {what}, vs a trivial mfusepy fs",
            f"{md:.0f} vs {mt:.0f} cycles/s: {md / mt:.2f} (median of {a.rounds})", md / mt, ">=", 0.80)
    finally:
        for p in (triv_mp, dam_mp):
            subprocess.run(["fusermount", "-u", str(p)], capture_output=True)
        for pr in procs:
            try:
                pr.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pr.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
