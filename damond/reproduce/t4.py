"""T4, "min=0 split breaks the deadlock" (test_report.md T4): 256 MB of busy THPs (128
PMDs) stay in the TLB, so a `stat` scheme with nr_accesses >= 1 sees nothing; the RFC's
split action with nr_accesses/min=0 and target_order=2 splits every THP into 16 KB
folios (4 PTEs each, 65536 translations: more than the TLB holds), and the same
`stat` scheme then sees the working set. Records regions and tried regions per apply
interval for the regions-over-time plot.
"""
from __future__ import annotations

from damond.reproduce.common import MiB, Options, Result, Row, config, human, stat_schemes, workload_vma
from damond.reproduce.session import Session


def run(opts: Options) -> Result:
    size = 256 * MiB
    s = Session(config("1G", "always", f'[[workload]]\nkind = "uniform"\nsize = "{size}"\n', seed=opts.seed,
                       preset=opts.machine), "t4")
    pid = s.machine.processes()[0].pid
    s.run_until_populated(pid)
    v = workload_vma(s, pid)
    s.machine.truth_start()
    stat = stat_schemes(1)
    s.stage([pid], stat, ops="fvaddr", regions={pid: [(v.start, v.end)]})
    s.state("on")
    n = 10 if not opts.reduced else 4
    series = []                                   # (t_ms, phase, nr_tried, nr_regions, truth bytes)

    def record(phase: str, k: int, nr_schemes: int) -> list[int]:
        tried = []
        for _ in range(k):
            t0 = s.now_us()
            tr = s.tried(nr_schemes)
            tried.append(len(tr[0]))
            series.append((s.now_us() / 1000, phase, len(tr[0]), len(tr[nr_schemes - 1]),
                           s.machine.truth_counted(pid, v.start, v.end, t0)))
        return tried

    before = record("before", n, 2)
    huge_before = s.anon_huge_kb(pid)
    s.stage_schemes(stat + [dict(action="split", target_order=2)])
    s.state("commit")
    record("split", 3, 3)
    sp = s.stats(2)
    folios = s.nr_anon(16)
    s.stage_schemes(stat)
    s.state("commit")
    after = record("after", n, 2)
    s.state("off")
    opts.progress(1.0)
    truth = min(x[4] for x in series)
    regions_after = [x[3] for x in series if x[1] == "after"]
    all_seen = after == regions_after
    rows = [
        Row("256 MB THP, before split", "0 (2 MB x 128, TLB cached)", f"{max(before)} (max over {n})",
            f"{human(truth)} / 100 ms", "match" if max(before) == 0 else "differs",
            "" if max(before) == 0 else "regions seen although 128 PMDs fit the TLB"),
        Row("split, min=0, target_order=2", "16 KB mTHP x 16384", f"16 KB x {folios} "
            f"({human(sp['sz_applied'])} applied)", f"AnonHugePages {huge_before} -> {s.anon_huge_kb(pid)} kB",
            "match" if folios == 16384 else "differs", "" if folios == 16384 else "not every THP was split"),
        Row("256 MB after split", "20", f"{after[-1]}/{regions_after[-1]} (min {min(after)} over {n})",
            f"{human(truth)} / 100 ms", "match" if all_seen else "differs",
            "every region is seen; the RFC's 20 is its region count" if all_seen
            else "part of the working set is still invisible"),
    ]
    res = Result("t4", rows)
    res.json = {"experiment": "t4", "machine": opts.machine, "nr_tried_before": max(before),
                "folios_16k_after": folios, "nr_tried_after": after[-1],
                "nr_regions_after": regions_after[-1],
                "nr_tried_after_per_interval": after, "nr_tried_before_per_interval": before}
    res.plots = {"t4": series}
    return res
