"""Engine speed: the kdamond loop on the T2 machine (8 GB anon sparse hotspot, 4 KB pages
then THP), 5 ms sampling, 100 ms aggregation, 10..1000 regions.

1. Virtual time: emulated seconds per wall second of `Kdamond.run_for` (target >= 20x),
   medians of 3 runs, side by side with the machine-only sampling loop of bench/mm_speed.py.
2. Wall clock: one kdamond thread with 1000 regions at 5 ms sampling for 30 s on the same
   machine (a ticker advances the workloads); process CPU time / wall time (target <= 25 %).

Run: python bench/engine_speed.py [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time

from damond.clock import VirtualClock, WallClock
from damond.config import Config
from damond.damon import params
from damond.damon.kdamond import Kdamond
from damond.log import configure
from damond.system import System

T2 = """
seed = 1
[machine]
memory = "16G"
[thp]
enabled = "{thp}"
[khugepaged]
enabled = false
[[workload]]
kind = "sparse-hotspot"
size = "8G"
"""


def t2_system(thp: str, clock) -> System:
    return System.from_config(Config.from_text(T2.format(thp=thp), "<bench>"), clock)


def fixed_regions(s: System, n: int) -> params.Ctx:
    """fvaddr over the 8 GB mapping cut in n regions, min = max = n so the count holds."""
    pid = s.machine.processes()[0].pid
    v = max(s.machine.process(pid).vmas(), key=lambda v: v.end - v.start)
    step = ((v.end - v.start) // n) & ~4095
    regs = [params.AddrRange(v.start + i * step, v.start + (i + 1) * step if i < n - 1 else v.end) for i in range(n)]
    return params.Ctx(ops=params.OpsId.FVADDR,
                      attrs=params.Attrs(sample_interval=5000, aggr_interval=100000,
                                         min_nr_regions=max(n, 3), max_nr_regions=max(n, 3)),
                      targets=[params.Target(pid=pid, regions=regs)])


def virtual_ratio(thp: str, n: int, emulated_s: float, repeats: int = 3) -> float:
    s = t2_system(thp, VirtualClock())
    s.machine.advance_to(1_000_000)              # populate, then the sparse loop
    s.clock.advance_to(1_000_000)
    k = Kdamond(s, 0)
    k.start(fixed_regions(s, n))
    ratios = []
    for _ in range(repeats):
        t = time.perf_counter()
        k.run_for(int(emulated_s * 1e6))
        ratios.append(emulated_s / (time.perf_counter() - t))
    k.stop()
    return statistics.median(ratios)


def wall_cpu(thp: str, n: int, seconds: float) -> tuple[float, int, int]:
    s = t2_system(thp, WallClock(1.0))
    s.machine.advance_to(s.clock.now_us())
    stop = threading.Event()

    def ticker():
        while not stop.wait(0.02):
            s.machine.advance_to(s.clock.now_us())

    th = threading.Thread(target=ticker, daemon=True)
    th.start()
    k = Kdamond(s, 0)
    k.start(fixed_regions(s, n))
    c0, w0 = time.process_time(), time.monotonic()
    time.sleep(seconds)
    c1, w1 = time.process_time(), time.monotonic()
    nsamples = k.ctx.passed_sample_intervals
    overruns = k.overruns
    k.stop()
    stop.set()
    th.join()
    return (c1 - c0) / (w1 - w0), nsamples, overruns


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    configure("warning")
    emu = 0.5 if args.quick else 2.0
    for thp in ("never", "always"):
        r = {n: virtual_ratio(thp, n, emu) for n in (10, 100, 1000)}
        print(f"virtual  T2 8G sparse THP={thp:6s} " + "  ".join(f"{n:4d} regions: {x:6.1f}x" for n, x in r.items())
              + "  (target >= 20x)")
    secs = 5.0 if args.quick else 30.0
    for thp in ("never", "always"):
        frac, nsamples, overruns = wall_cpu(thp, 1000, secs)
        print(f"wall     T2 8G sparse THP={thp:6s} 1000 regions, 5 ms sampling, {secs:.0f} s: "
              f"CPU {frac * 100:5.1f} % of one core (target <= 25 %), {nsamples} samples "
              f"(ideal {int(secs / 0.005)}), {overruns} overruns")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
