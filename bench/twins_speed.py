"""Twin tracing cost: how fast a real program runs while DAMON monitors it through its twin
(page protection, damond/host) compared with the same program untraced.

The program is tests/host/touch.c sweeping 64 MiB of anonymous memory (a write per 4 KiB
page, no sleep). Each round runs two copies side by side for `--seconds`: one started with
the tracer's environment and monitored by a kdamond (fvaddr over its 64 MiB in 10 regions,
min = max = 10, 5 ms sampling, 100 ms aggregation: every sample protects up to 10 units
the program is sure to touch), one plain. Both count their sweeps; the result is the
median over rounds of traced/untraced, in sweeps per wall second and per CPU second of the
program (the second is what the shared host's load does not move). Target: >= 0.90.
With twin THP=always every unit is a 2 MiB PMD folio of the twin, and the tracer backs it by
a host THP (MADV_COLLAPSE) before protecting it; the untraced copy then collapses its memory
too (touch's `collapse` hint), so both run on host THPs and the ratio is the tracing cost
alone, not a TLB gain.

Run: PYTHONPATH=. python bench/twins_speed.py [--rounds N] [--seconds S] [--thp never|always]
     or: pytest -m bench bench/twins_speed.py   (root, /dev/fuse, gcc)
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from damond.host import tracing  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import row  # noqa: E402  (bench/ is the script's directory)
from tests.helpers import DamondProcess, read, write  # noqa: E402

CONFIG = ('seed = 1\n[machine]\nmemory = "4G"\nnr_cpus = 2\nnuma_nodes = 1\n[thp]\nenabled = "{thp}"\n'
          '[khugepaged]\nenabled = false\n')
SIZE_MB, NR_REGIONS = 64, 10


def start(exe: Path, secs: float, env: dict, hint: str = "none") -> tuple[subprocess.Popen, int]:
    """The program, mapped and written once, waiting at its gate."""
    p = subprocess.Popen([str(exe), str(SIZE_MB), str(SIZE_MB), hint, str(secs), "0", "gate"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    return p, int(p.stdout.readline().split()[0], 16)          # "ADDR SIZE PID"


def sweeps(p: subprocess.Popen) -> tuple[int, float]:
    """(sweeps done, process CPU seconds they took)."""
    out, _ = p.communicate(timeout=120)
    f = out.split()
    return int(f[-3]), float(f[-1])


def monitor(admin: Path, pid: int, addr: int) -> None:
    k = admin / "kdamonds"
    write(k / "nr_kdamonds", "1")
    write(k / "0/contexts/nr_contexts", "1")
    c = k / "0/contexts/0"
    write(c / "operations", "fvaddr")
    write(c / "monitoring_attrs/intervals/sample_us", "5000")
    write(c / "monitoring_attrs/intervals/aggr_us", "100000")
    write(c / "monitoring_attrs/nr_regions/min", str(NR_REGIONS))
    write(c / "monitoring_attrs/nr_regions/max", str(NR_REGIONS))
    write(c / "targets/nr_targets", "1")
    write(c / "targets/0/pid_target", str(pid))
    write(c / "targets/0/regions/nr_regions", str(NR_REGIONS))
    step = (SIZE_MB << 20) // NR_REGIONS & ~4095
    for i in range(NR_REGIONS):
        write(c / f"targets/0/regions/{i}/start", str(addr + i * step))
        write(c / f"targets/0/regions/{i}/end", str(addr + (i + 1) * step))
    write(k / "0/state", "on")


def run(rounds: int = 5, seconds: float = 3.0, thp: str = "always") -> dict:
    with tempfile.TemporaryDirectory(prefix="twins-bench-") as td:
        return _run(Path(td), rounds, seconds, thp)


def _run(work: Path, rounds: int, seconds: float, thp: str) -> dict:
    exe = work / "touch"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(REPO / "tests/host/touch.c")], check=True)
    (work / "m.toml").write_text(CONFIG.format(thp=thp))
    ratios, cpu_ratios = [], []
    with DamondProcess(work / "sys", config=work / "m.toml") as d:
        traced_env = tracing.child_env(dict(os.environ), str(d.root))
        for r in range(rounds):
            t, addr = start(exe, seconds, traced_env)
            u, _ = start(exe, seconds, dict(os.environ), "none" if thp == "never" else "collapse")
            monitor(d.admin, t.pid, addr)
            time.sleep(0.2)                              # a few samples armed before the clock starts
            for p in (t, u):
                p.stdin.write("g")
                p.stdin.flush()
            (nt, ct), (nu, cu) = sweeps(t), sweeps(u)
            ratios.append(nt / nu)
            cpu_ratios.append((nt / ct) / (nu / cu))
            print(f"round {r}: traced {nt} sweeps ({ct:.2f} s CPU), untraced {nu} ({cu:.2f} s CPU) in {seconds:.1f} s:"
                  f" wall ratio {ratios[-1]:.3f}, per-CPU-second ratio {cpu_ratios[-1]:.3f}", flush=True)
            deadline = time.monotonic() + 10
            while read(d.admin / "kdamonds/0/state") == "on\n" and time.monotonic() < deadline:
                time.sleep(0.05)
            write(d.admin / "kdamonds/nr_kdamonds", "0")
    med, cmed = statistics.median(ratios), statistics.median(cpu_ratios)
    print(f"THP={thp}: median traced/untraced: wall {med:.3f}, per CPU second {cmed:.3f} (target >= 0.90)")
    unit = "4 KiB units" if thp == "never" else "2 MiB units backed by host THPs (untraced copy collapsed too)"
    row("twins_speed", f"real program traced through its twin vs untraced, side by side, 64 MiB swept, "
        f"10 regions, 5 ms / 100 ms, twin THP={thp}: {unit}",
        f"{cmed:.2f} per CPU second (wall {med:.2f}; median of {rounds})", cmed, ">=", 0.90)
    return {"ratios": ratios, "median": med, "cpu_ratios": cpu_ratios, "cpu_median": cmed}


@pytest.mark.bench
@pytest.mark.parametrize("thp", ["never", "always"])
def test_traced_program_runs_at_90_percent(thp):
    """THP never: the twin maps 4 KiB pages, units are 4 KiB. THP always: the twin maps
    2 MiB folios, every unit is 2 MiB, collapsed into a host THP by the tracer (one PMD per
    mprotect, not 512 PTEs). Per CPU second: the shared host's load cancels out."""
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse") or tracing.preload_path() is None:
        pytest.skip("needs root, /dev/fuse and the built tracer")
    assert run(thp=thp)["cpu_median"] >= 0.90


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--thp", nargs="+", default=["never", "always"],
                    help="the emulated THP policies to run (never: 4 KiB units, always: 2 MiB)")
    a = ap.parse_args()
    for thp in a.thp:
        run(a.rounds, a.seconds, thp)
