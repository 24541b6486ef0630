"""Engine speed: the kdamond loop on the T2 machine (8 GB anon sparse hotspot, 4 KB pages
then THP), 5 ms sampling, 100 ms aggregation, 10..1000 regions.

1. Virtual time: emulated seconds per wall second of `Kdamond.run_for` per case (4 KB pages /
   THP x 10, 100, 1000 regions), median of rounds, side by side with the machine-only
   sampling loop of bench/mm_speed.py. Targets (issue 12): >= 200x at 10 regions, >= 100x
   at 100 and 1000.
2. Wall clock: one kdamond thread with 1000 regions at 5 ms sampling for 30 s on the same
   machine (the daemon's own ticker, System.start); process CPU / wall time (target <= 4 %)
   and the samples taken of those the wall time allows (target >= 99 %).
3. The issue's reference, the kernel's paddr kdamond (about 1 us of CPU per region check):
   the same wall-clock run with paddr over the RAM in 1000 regions, as CPU ns per region
   check (target: beat it by 2x, <= 500 ns).

Run: PYTHONPATH=. python bench/engine_speed.py [--quick] [--no-wall | --only-wall] [--seconds S]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from damond.clock import VirtualClock, WallClock
from damond.config import Config
from damond.damon import params
from damond.damon.kdamond import Kdamond
from damond.log import configure
from damond.system import System

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mm_speed import T2, sampling_loop  # noqa: E402
from report import row  # noqa: E402  (bench/ is the script's directory)

VIRTUAL_TARGET = {10: 200, 100: 100, 1000: 100}     # emulated s per wall s, by number of regions
WALL_CPU_TARGET = 4                                  # % of one core
PADDR_CHECK_NS = 500                                 # CPU per paddr region check: half the kernel's ~1 us (issue 12)


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


def paddr_regions(s: System, n: int) -> params.Ctx:
    """paddr over the machine's RAM cut in n regions, min = max = n so the count holds."""
    lo, hi = s.machine.ram_ranges()[0]
    step = ((hi - lo) // n) & ~4095
    regs = [params.AddrRange(lo + i * step, lo + (i + 1) * step if i < n - 1 else hi) for i in range(n)]
    return params.Ctx(ops=params.OpsId.PADDR,
                      attrs=params.Attrs(sample_interval=5000, aggr_interval=100000,
                                         min_nr_regions=max(n, 3), max_nr_regions=max(n, 3)),
                      targets=[params.Target(pid=None, regions=regs)])


def virtual_ratios(thp: str, n: int, emulated_s: float, rounds: int) -> list[float]:
    """Emulated seconds per wall second of `Kdamond.run_for(emulated_s)`, one per round."""
    s = t2_system(thp, VirtualClock())
    s.machine.advance_to(1_000_000)              # populate, then the sparse loop
    s.clock.advance_to(1_000_000)
    k = Kdamond(s, 0)
    k.start(fixed_regions(s, n))
    k.run_for(100_000)                           # warm-up: first plans, leaf caches
    ratios = []
    for _ in range(rounds):
        t = time.perf_counter()
        k.run_for(int(emulated_s * 1e6))
        ratios.append(emulated_s / (time.perf_counter() - t))
    k.stop()
    return ratios


def machine_ratios(thp: str, n: int, emulated_s: float, rounds: int) -> list[float]:
    """The same sampling loop without the engine (bench/mm_speed.py's mkold -> 5 ms -> young)."""
    s = t2_system(thp, VirtualClock())
    m = s.machine
    m.advance_to(1_000_000)
    return [sampling_loop(m, m.processes()[0].pid, n, emulated_s, repeats=1) for _ in range(rounds)]


def wall_cpu(thp: str, n: int, seconds: float, ctx_of=fixed_regions) -> tuple[float, int, int, int]:
    """One kdamond thread on the wall clock with the daemon's own ticker (System.start)."""
    s = t2_system(thp, WallClock(1.0))
    s.machine.advance_to(s.clock.now_us())
    k = s.new_kdamond()
    s.kdamonds.append(k)
    s.start()
    k.start(ctx_of(s, n))
    c0, w0 = time.process_time(), time.monotonic()
    time.sleep(seconds)
    c1, w1 = time.process_time(), time.monotonic()
    nsamples = k.ctx.passed_sample_intervals
    overruns = k.overruns
    s.stop()
    return (c1 - c0) / (w1 - w0), nsamples, overruns, int((w1 - w0) / 0.005)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="0.5 s emulated x 3 rounds, 5 s wall-clock run")
    ap.add_argument("--rounds", type=int, help="rounds per case (median reported)")
    ap.add_argument("--seconds", type=float, help="wall-clock run length (default 30, quick 5)")
    ap.add_argument("--no-wall", action="store_true", help="skip the wall-clock CPU run")
    ap.add_argument("--only-wall", action="store_true", help="only the wall-clock CPU run")
    args = ap.parse_args()
    configure("warning")
    emu = 0.5 if args.quick else 2.0
    rounds = args.rounds or (3 if args.quick else 5)
    if not args.only_wall:
        print(f"virtual time, T2 (8 GB anon sparse-hotspot), 5 ms sampling, 100 ms aggregation; "
              f"emulated s per wall s, median of {rounds} x {emu:g} s (target >= {VIRTUAL_TARGET})")
        print(f"  {'pages':6s} {'regions':>7s}  {'engine':>7s}  {'min..max':>13s}  {'machine-only':>12s}  verdict")
        for thp, pages in (("never", "4K"), ("always", "THP")):
            for n in (10, 100, 1000):
                e = virtual_ratios(thp, n, emu, rounds)
                mo = statistics.median(machine_ratios(thp, n, emu, rounds))
                me = statistics.median(e)
                goal = VIRTUAL_TARGET[n]
                row("engine_speed", f"T2 engine on, virtual time, {pages} pages, {n} regions",
                    f"{me:.1f}x real time ({min(e):.1f}..{max(e):.1f}; machine-only {mo:.1f}x)", me, ">=", goal)
                print(f"  {pages:6s} {n:7d}  {me:6.1f}x  {min(e):5.1f}..{max(e):5.1f}x  {mo:11.1f}x  "
                      f"{'ok' if me >= goal else f'BELOW {goal}x'}", flush=True)
    if not args.no_wall:
        secs = args.seconds or (5.0 if args.quick else 30.0)
        for thp in ("never", "always"):
            frac, nsamples, overruns, ideal = wall_cpu(thp, 1000, secs)
            case = f"kdamond, 1000 regions, 5 ms sampling, wall clock {secs:.0f} s, THP={thp}"
            row("engine_speed", case, f"{frac * 100:.1f} % of one core; {nsamples} of {ideal} samples",
                frac * 100, "<=", WALL_CPU_TARGET)
            row("engine_speed", case + ": samples taken", f"{nsamples} of {ideal} samples "
                f"({100 * nsamples / ideal:.2f} %), {overruns} overruns", 100 * nsamples / ideal, ">=", 99)
            print(f"wall clock, T2 THP={thp:6s} 1000 regions, 5 ms sampling, {secs:.0f} s: "
                  f"process CPU {frac * 100:5.1f} % of one core (target <= {WALL_CPU_TARGET} %), {nsamples} samples "
                  f"(ideal {ideal}), {overruns} overruns", flush=True)
        # the reference: the kernel's paddr kdamond, ~1 us of CPU per region check
        frac, nsamples, overruns, ideal = wall_cpu("always", 1000, secs, paddr_regions)
        ns = frac * 5e6 / 1000                  # CPU ns per region check: share of a core x 5 ms / 1000 regions
        row("engine_speed", f"kdamond paddr, 1000 regions, 5 ms sampling, wall clock {secs:.0f} s, THP=always: "
            "CPU per region check (the kernel's paddr kdamond: about 1 us)",
            f"{ns:.0f} ns ({frac * 100:.1f} % of one core; {nsamples} of {ideal} samples)", ns, "<=", PADDR_CHECK_NS)
        print(f"wall clock, T2 THP=always paddr 1000 regions, 5 ms sampling, {secs:.0f} s: process CPU "
              f"{frac * 100:5.1f} % of one core = {ns:.0f} ns per region check (target <= {PADDR_CHECK_NS} ns, "
              f"half the kernel's), {nsamples} samples (ideal {ideal})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
