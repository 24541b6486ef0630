"""The RFC's end-to-end SPE feedback test (test_report.md Part 2): two THPs get, through
debugfs spe_feed, 460 accesses on 90 % of their subpages ("hot") and 128 accesses on
25 % ("cold"); the split action (target_order=2) reads the heatmap from the PFN tree,
keeps the hot THP and splits the cold one into 128 x 16 KB folios. The RFC's test ran the
80 %-keep generation of the rule; here that is hot_threshold=80.
"""
from __future__ import annotations

from damond.reproduce.common import MiB, Options, Result, Row, config, workload_vma
from damond.reproduce.session import Session

TWO_THPS = '[[workload]]\nkind = "mmap"\nsize = "4M"\npopulate = true\nhint = "hugepage"\n'


def run(opts: Options) -> Result:
    s = Session(config("256M", "always", TWO_THPS, seed=opts.seed, preset=opts.machine), "e2e")
    pid = s.machine.processes()[0].pid
    s.run(100_000)
    v = workload_vma(s, pid)
    base = (v.start + 2 * MiB - 1) & ~(2 * MiB - 1)
    thps = [s.machine.folio_walk(pid, base + i * 2 * MiB) for i in range(2)]
    assert all(f is not None and f.order == 9 for f in thps), "the workload's two THPs were not mapped"
    # one PFN per subpage, the first 460 / 128 subpages (the RFC fed synthetic PFNs)
    lines = [f"{thps[0].pfn + i:#x}\n" for i in range(460)] + [f"{thps[1].pfn + i:#x}\n" for i in range(128)]
    s.write_file("kernel/debug/damon/spe_feed", "".join(lines).encode())
    s.stage([pid], [dict(action="split", target_order=2, hot_threshold=80)], ops="fvaddr",
            regions={pid: [(base, base + 4 * MiB)]})
    s.state("on")
    s.run(1_000_000)
    st = s.stats(0)
    s.state("off")
    kept = s.machine.folio_walk(pid, base)
    cold = [s.machine.folio_walk(pid, base + 2 * MiB + a) for a in range(0, 2 * MiB, 16384)]
    kept_hot = kept is not None and kept.order == 9
    into = sum(1 for f in cold if f is not None and f.order == 2 and f.level == "pte")
    split_whole = into == 128 and all(f.order == 2 for f in cold)
    opts.progress(1.0)
    rows = [
        Row("THP-0: 460 PFNs fed (90 %)", "preserved (hot_pct ~90)", "preserved" if kept_hot else
            f"order {kept.order if kept else '-'}", "460/512 subpages fed", "match" if kept_hot else "differs",
            "" if kept_hot else "the hot THP was split"),
        Row("THP-1: 128 PFNs fed (25 %)", "128 x 16 KB mTHP", f"{into} x 16 KB", "128/512 subpages fed",
            "match" if split_whole else "differs", "" if split_whole else "the cold THP was not split whole"),
    ]
    res = Result("e2e", rows)
    res.json = {"experiment": "e2e", "machine": opts.machine, "kept_hot_thp": kept_hot, "split_cold_thp_into": into,
                "split_stats": st}
    return res
