"""Machine speed: emulated seconds per wall second for the T2 machine (8 GB anon, 4 KB pages
then THP) driven by DAMON's mkold/young sampling loop at 5 ms with 10..1000 regions, and a
256 GB machine with a 1 % hot set (speed and resident bytes per emulated 4 KB page).

Run: python bench/mm_speed.py [--quick]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np

from damond.config import Config
from damond.log import configure
from damond.mm.machine import Machine
from report import row  # noqa: E402  (bench/ is the script's directory)

SAMPLE_US = 5000


def build(toml: str) -> Machine:
    return Machine.from_config(Config.from_text(toml, "<bench>"))


def sampling_loop(m: Machine, pid: int, nr_regions: int, emulated_s: float, repeats: int = 3) -> float:
    """Median emulated-seconds-per-wall-second of mkold -> advance 5 ms -> young."""
    v = max(m.process(pid).vmas(), key=lambda v: v.end - v.start)
    rng = np.random.default_rng(1)
    edges = np.linspace(v.start, v.end, nr_regions + 1).astype(np.uint64)
    ratios = []
    for _ in range(repeats):
        steps = int(emulated_s * 1e6 / SAMPLE_US)
        t = time.perf_counter()
        for _ in range(steps):
            a = (edges[:-1] + (rng.random(nr_regions) * (edges[1:] - edges[:-1])).astype(np.uint64)) & ~np.uint64(4095)
            m.va_mkold(pid, a)
            m.advance_to(m.now_us + SAMPLE_US)
            m.va_young(pid, a)
        ratios.append(emulated_s / (time.perf_counter() - t))
    return statistics.median(ratios)


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


def t2(thp: str, quick: bool) -> dict[int, float]:
    m = build(T2.format(thp=thp))
    pid = m.processes()[0].pid
    m.advance_to(1_000_000)                     # populate + clear_refs, then the sparse loop
    return {n: sampling_loop(m, pid, n, 0.5 if quick else 2.0) for n in (10, 100, 1000)}


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def big(quick: bool) -> tuple[float, float, float, int]:
    base = rss()
    t = time.perf_counter()
    m = build("""
[machine]
memory = "256G"
numa_nodes = 2
[thp]
enabled = "always"
[khugepaged]
enabled = false
[[workload]]
kind = "uniform"
size = "200G"
hot_size = "2560M"
populate = false
""")
    pid = m.processes()[0].pid
    m.advance_to(1_000_000)
    build_s = time.perf_counter() - t
    ratio = sampling_loop(m, pid, 100, 0.5 if quick else 2.0)
    return ratio, build_s, rss() - base, m.phys.flags.nbytes + m.phys.order.nbytes


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    configure("warning")
    big_result = big(args.quick)
    for thp in ("never", "always"):
        r = t2(thp, args.quick)
        for n, x in r.items():
            row("mm_speed", f"T2 machine-only sampling loop, THP={thp}, {n} regions", f"{x:.1f}x real time", x, ">=", 20)
        print(f"T2 8G sparse THP={thp:6s} " + "  ".join(f"{n:4d} regions: {x:7.1f}x" for n, x in r.items())
              + "  (target >= 20x)")
    ratio, build_s, grown, arrays = big_result
    pages = (256 << 30) // 4096
    print(f"256G, 1% hot (2.5 GB THP, 200 GB mapped): {ratio:6.1f}x real time (target >= 1x), setup {build_s:.1f}s")
    row("mm_speed", "256 GiB machine, 1 % hot (2.5 GiB THP in 200 GiB mapped)", f"{ratio:.1f}x real time",
        ratio, ">=", 1)
    row("mm_speed", "256 GiB machine: RSS growth per emulated 4 KiB page (build + run)",
        f"{grown / pages:.3f} B (per-page state structures {arrays / pages:.3f} B)", grown / pages, "<=", 1)
    print(f"  resident growth {grown / 2**20:.0f} MiB = {grown / pages:.3f} B per emulated 4 KB page "
          f"(per-page state structures {arrays / pages:.3f} B; target <= 1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
