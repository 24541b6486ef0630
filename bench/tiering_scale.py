"""Scale: the 4 TiB two-node machine (`damond/machines/cxl-tiering-4t.toml`: node 0 DRAM,
node 1 CXL-like) running its tiering workload under a paddr kdamond with migrate_hot (to
node 0) and migrate_cold (to node 1): emulated seconds per wall second of the monitored
run, and resident bytes per emulated 4 KiB page (the process's RSS growth from before the
machine is built to the end of the run, and the bytes the per-page state structures hold).

Run: python bench/tiering_scale.py [--quick]
"""
from __future__ import annotations

import argparse
import time
from importlib import resources

import numpy as np

from damond.clock import VirtualClock
from damond.config import Config
from damond.damon import params
from damond.damon.kdamond import Kdamond
from damond.damon.params import AccessPattern, Action, Quota, Scheme
from damond.log import configure
from damond.system import System
from report import row  # noqa: E402  (bench/ is the script's directory)

GiB = 1 << 30


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def schemes(quota: int) -> list[Scheme]:
    """migrate_hot: regions accessed in any sample of an aggregation go to node 0;
    migrate_cold: regions not accessed for 2 s (20 aggregations) go to node 1."""
    q = lambda: Quota(sz=quota, reset_interval=1000)          # noqa: E731
    return [Scheme(pattern=AccessPattern(min_nr_accesses=1, max_nr_accesses=1 << 30, max_sz_region=1 << 62,
                                         max_age_region=1 << 30),
                   action=Action.MIGRATE_HOT, target_nid=0, quota=q()),
            Scheme(pattern=AccessPattern(min_nr_accesses=0, max_nr_accesses=0, min_age_region=20,
                                         max_sz_region=1 << 62, max_age_region=1 << 30),
                   action=Action.MIGRATE_COLD, target_nid=1, quota=q())]


def hot_nodes(m) -> list[float]:
    """Fraction of the current hot window's pages on each node."""
    proc = m.processes()[0]
    _, ps, _ = proc.workload.phase_at(m.now_us)
    i = proc.workload.phase_at(m.now_us)[0]
    s = proc.workload.phases[i].streams[0]
    va = ((s.start + np.arange(0, s.n, 512, dtype=np.int64)) << 12).astype(np.uint64)
    ok, _, pidx = proc.translate(va)
    nodes = np.bincount(m.phys.blk_node[pidx[ok] >> 9], minlength=m.phys.numa_nodes)
    return (nodes / max(nodes.sum(), 1)).round(2).tolist()


def run(run_s: float, text: str) -> dict:
    base = rss()
    t = time.perf_counter()
    s = System.from_config(Config.from_text(text, "<cxl-tiering-4t>"), VirtualClock())
    m = s.machine
    spec = m.processes()[0].workload
    populate_us = spec.phases[0].duration_us
    m.advance_to(populate_us + 1)
    setup_s = time.perf_counter() - t
    lo, hi = m.ram_ranges()[0]
    k = Kdamond(s, 0)
    k.start(params.Ctx(ops=params.OpsId.PADDR, targets=[params.Target(regions=[params.AddrRange(lo, hi)])],
                       schemes=schemes(8 * GiB)))
    before = hot_nodes(m)
    t = time.perf_counter()
    k.run_for(int(run_s * 1e6))
    wall = time.perf_counter() - t
    st = k.scheme_stats()
    pages = m.phys.nr_pages
    out = {"factor": run_s / wall, "setup_s": setup_s, "populate_s": populate_us / 1e6,
           "rss_per_page": (rss() - base) / pages,
           "struct_per_page": (m.phys.flags.nbytes + m.phys.order.nbytes) / pages,
           "hot_before": before, "hot_after": hot_nodes(m),
           "hot_applied": st[0].sz_applied, "cold_applied": st[1].sz_applied,
           "node_gib": (m.phys.node_present * 4096 / GiB).round(1).tolist(), "pages": pages}
    k.stop() if hasattr(k, "stop") else None
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    configure("warning")
    text = resources.files("damond.machines").joinpath("cxl-tiering-4t.toml").read_text()
    r = run(12.0 if args.quick else 60.0, text)
    print(f"4 TiB, 2 nodes (DRAM + CXL), tiering 3.5 TiB populated in {r['populate_s']:.0f} s emulated "
          f"({r['setup_s']:.1f} s wall); paddr migrate_hot/migrate_cold: {r['factor']:.2f}x real time; "
          f"RSS growth {r['rss_per_page']:.3f} B/page, per-page structures {r['struct_per_page']:.3f} B/page; "
          f"hot window on nodes {r['hot_before']} -> {r['hot_after']}; migrated hot {r['hot_applied'] / GiB:.1f} GiB, "
          f"cold {r['cold_applied'] / GiB:.1f} GiB; node resident GiB {r['node_gib']}")
    row("tiering_scale", "4 TiB two nodes (DRAM + CXL), tiering under paddr migrate_hot/migrate_cold",
        f"{r['factor']:.2f}x real time", r["factor"], ">=", 1)
    row("tiering_scale", "4 TiB two nodes: RSS growth per emulated 4 KiB page (whole run)",
        f"{r['rss_per_page']:.3f} B (structures {r['struct_per_page']:.3f} B)", r["rss_per_page"], "<=", 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
