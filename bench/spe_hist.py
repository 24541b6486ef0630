"""`damond spe-hist --feed` against `awk '{print $NF}'` on the same large perf-script file.

Generates (in a temp dir) the text `perf script -F comm,tid,cpu,time,period,event,ip,sym,
symoff,dso,phys_addr` prints for an arm_spe recording (several event lines per record:
l1d/llc/tlb groups and memory, perf's widths, damond.spe.perf_script), then alternates
for --rounds rounds: spe-hist --feed > /dev/null, awk '{print $NF}' > /dev/null. Prints
per-round and median seconds and the time ratio spe-hist/awk (issue 5 target: <= 1.0).
With --c-tool PATH (the RFC's spe_hist.c, compiled by you: it is not part of damond), each
round also times `damond spe-hist --count lines` (its report, the same output) and PATH
on the same file, and prints their ratio.

    python bench/spe_hist.py [--records N] [--rounds R] [--c-tool PATH]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from damond.spe import perf_script  # noqa: E402
from damond.spe import sampler as S  # noqa: E402
from report import row  # noqa: E402  (bench/ is the script's directory)


def build_file(path: Path, n: int, seed: int = 7) -> int:
    """n records over 4 processes and 2048 THPs; returns the number of lines written."""
    rng = np.random.default_rng(seed)
    fields = perf_script.parse_fields(",+phys_addr")
    groups = perf_script.itrace_groups(None)
    raw = "arm_spe_0/ts_enable=1,pa_enable=1,jitter=1/"
    comms = {1001 + i: name for i, name in enumerate(["hot_workload", "sparse_8g", "redis-server", "memcached"])}
    lines = 0
    with open(path, "wb") as f:
        for lo in range(0, n, 100_000):
            m = min(100_000, n - lo)
            r = np.zeros(m, S.RECORD_DTYPE)
            r["time_ns"] = np.uint64(3_000_000_000) + np.uint64(lo * 5000) + np.sort(
                rng.integers(0, 5000 * m, m)).astype(np.uint64)
            r["pid"] = r["tid"] = rng.integers(1001, 1005, m)
            r["cpu"] = r["pid"] % 4
            r["op"] = (rng.random(m) < 0.3).astype(np.uint8)
            thp = rng.integers(0, 2048, m).astype(np.uint64)
            off = rng.integers(0, 512 * 4096 // 8, m).astype(np.uint64) * np.uint64(8)
            r["pa"] = np.uint64(0x80000000) + thp * np.uint64(2 << 20) + off
            r["va"] = np.uint64(0xffff80000000) + thp * np.uint64(2 << 20) + off
            miss = rng.random(m)
            ev = S.EV_RETIRED | S.EV_L1D_ACCESS | S.EV_TLB_ACCESS
            r["events"] = (ev | np.where(miss < 0.1, S.EV_TLB_REFILL, 0)
                           | np.where(miss < 0.05, S.EV_L1D_REFILL | S.EV_LLC_ACCESS, 0))
            r["pc"] = np.uint64(0xaaaad4c3f900) + r["op"].astype(np.uint64) * np.uint64(8)
            text = perf_script.format_records_bytes(r, comms, fields, groups, raw)
            lines += text.count(b"\n")
            f.write(text)
    return lines


def timed(cmd: str) -> float:
    t = time.perf_counter()
    r = subprocess.run(["sh", "-c", cmd], cwd=REPO, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{cmd!r} failed: {r.stderr}")
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=600_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--c-tool", metavar="PATH", help="a compiled spe_hist.c to time against --count lines")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="damond-bench-") as td:
        src = Path(td) / "perf-script.txt"
        t = time.perf_counter()
        lines = build_file(src, a.records)
        print(f"built {a.records} records, {lines} lines ({src.stat().st_size / 1e6:.0f} MB) "
              f"in {time.perf_counter() - t:.1f}s")
        hist_cmd = f'"{sys.executable}" -m damond spe-hist --feed < "{src}" > /dev/null'
        awk_cmd = f"awk '{{print $NF}}' \"{src}\" > /dev/null"
        subprocess.run(["sh", "-c", f'cat "{src}" > /dev/null'], check=True)      # page cache
        r = subprocess.run(["sh", "-c", f'"{sys.executable}" -m damond spe-hist --feed < "{src}" | wc -l'],
                           cwd=REPO, capture_output=True, text=True)
        print(f"spe-hist: {r.stdout.strip()} feed lines; {r.stderr.strip().splitlines()[-1]}")
        rep_cmd = f'"{sys.executable}" -m damond spe-hist --count lines < "{src}" > /dev/null 2>&1'
        c_cmd = f'"{a.c_tool}" < "{src}" > /dev/null 2>&1' if a.c_tool else None
        hist, awk, rep, c = [], [], [], []
        for i in range(a.rounds):
            hist.append(timed(hist_cmd))
            awk.append(timed(awk_cmd))
            line = f"round {i + 1}: spe-hist {hist[-1]:.2f}s   awk {awk[-1]:.2f}s   ratio {hist[-1] / awk[-1]:.2f}"
            if c_cmd:
                rep.append(timed(rep_cmd))
                c.append(timed(c_cmd))
                line += f"   --count lines {rep[-1]:.2f}s   spe_hist.c {c[-1]:.2f}s   ratio {rep[-1] / c[-1]:.2f}"
            print(line)
        h, w = statistics.median(hist), statistics.median(awk)
        print(f"median: spe-hist --feed {h:.2f}s, awk '{{print $NF}}' {w:.2f}s, time ratio {h / w:.2f} "
              f"(target <= 1.00)")
        if c_cmd:
            r, cc = statistics.median(rep), statistics.median(c)
            print(f"median: spe-hist --count lines {r:.2f}s, spe_hist.c {cc:.2f}s, time ratio {r / cc:.2f}")
        row("spe_hist", f"`damond spe-hist --feed` vs `awk '{{print $NF}}'`, {lines / 1e6:.1f} M perf-script lines",
            f"{h:.2f} s vs {w:.2f} s: time ratio {h / w:.2f} (median of {a.rounds})", h / w, "<=", 1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
