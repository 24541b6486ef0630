"""T2, THP hotspot inflation (test_report.md T2, the LKML cover): sparse_8g touches every
page of 8 GB, clears the Access Flags, then touches one 4 KB page per 2 MB (4096 pages,
16 MB) in a loop. A `stat` scheme with nr_accesses >= 1 reports what DAMON calls hot, per
apply interval, beside the pages the machine counted as touched in that interval. With
THP=always one AF covers 2 MB, so all 8 GB is hot; with THP=never each region's one
sampled page is hot with probability 1/512 per sample, so the report is a random few
hundred MB; after splitting the THPs into 16 KB folios (the RFC's split action) it is the
same sampling at 16 KB.
"""
from __future__ import annotations

import statistics

from damond.reproduce.common import GiB, MiB, Options, Result, Row, config, hot_bytes, human, stat_schemes
from damond.reproduce.session import Session

SPARSE = '[[workload]]\nkind = "sparse-hotspot"\nsize = "{size}"\n'
UINT_MAX = (1 << 32) - 1


def sampling_expectation(size: int, hot_pages: int, page: int, samples: int = 20) -> float:
    """E[reported] with one random sampled address per region per sample: a region counts
    when any of its `samples` addresses lands on a touched `page`-sized unit."""
    p = hot_pages * page / size
    return size * (1 - (1 - p) ** samples)


def measure(opts: Options, size: int, thp: str, intervals: int, split: bool = False) -> dict:
    s = Session(config(f"{(size + 2 * GiB) // MiB}M", thp, SPARSE.format(size=size), seed=opts.seed,
                       preset=opts.machine), f"t2-{thp}")
    pid = s.machine.processes()[0].pid
    s.run_until_populated(pid)
    s.run(100_000)                         # the sparse loop is running (phase D/E)
    schemes = stat_schemes(1)
    s.stage([pid], schemes)
    s.state("on")
    out = {}
    if split:
        # the RFC's split action, min=0 (no SPE data: the RFC splits unconditionally)
        s.stage_schemes(schemes + [dict(action="split", target_order=2)])
        s.state("commit")
        s.run(300_000)
        out["anon_huge_kb_after_split"] = s.anon_huge_kb(pid)
        s.stage_schemes(schemes)
        s.state("commit")
    s.run(1_000_000)                       # DAMON's regions settle (one update interval)
    m = hot_bytes(s, pid, len(schemes), intervals)
    s.state("off")
    out.update(m)
    return out


def run(opts: Options) -> Result:
    size = 8 * GiB                  # the RFC's size also when reduced: 2 GB (1024 PMDs) would fit the TLB
    n = 10 if not opts.reduced else 4
    hot_pages = size // (2 * MiB)
    a = measure(opts, size, "always", n)
    opts.progress(0.4)
    nv = measure(opts, size, "never", n)
    opts.progress(0.8)
    sp = measure(opts, size, "always", n, split=True)
    opts.progress(1.0)
    truth = statistics.mean(a["truth"] + nv["truth"] + sp["truth"])
    ra, rn, rs = (statistics.mean(x["reported"]) for x in (a, nv, sp))
    e_never = sampling_expectation(size, hot_pages, 4096)
    gb = size // GiB
    rows = [
        Row(f"THP=always, {gb} GB sparse", f"{gb} GB (200/200 regions, 1024x)", human(ra),
            human(truth), "match" if ra >= 0.95 * size else "differs",
            "" if ra >= 0.95 * size else "part of the THPs were not reported"),
        Row(f"THP=never, {gb} GB sparse", "~245 MB (0~491 MB)",
            f"{human(rn)} ({human(min(nv['reported']))}..{human(max(nv['reported']))})", human(truth),
            "match" if 0.3 * e_never <= rn <= 3 * e_never else "differs",
            f"one sampled page per region: E = {human(e_never)} from 1-(1-1/512)^20; the RFC's figure is one run"),
        Row(f"after split to 16 KB, {gb} GB", "granularity 512 -> 4 pages", human(rs), human(truth),
            "differs" if 0.3 * e_never <= rs <= 3 * e_never else "n/a",
            f"a 16 KB folio is 4 PTEs with their own AF (contpte starts at 64 KB) and DAMON reads the sampled "
            f"PTE: 1-page granularity, the THP=never figure (E = {human(e_never)}); "
            f"{sp['anon_huge_kb_after_split']} kB AnonHugePages left"),
    ]
    res = Result("t2", rows)
    res.json = {"experiment": "t2", "machine": opts.machine, "size_bytes": size,
                "true_hot_bytes": int(truth),
                "reported_hot_bytes_thp_always": int(ra),
                "reported_hot_bytes_thp_never": int(rn),
                "reported_hot_bytes_thp_never_samples": nv["reported"],
                "reported_hot_bytes_after_split": int(rs),
                "nr_apply_intervals": n}
    res.plots = {"t2": {"always": a, "never": nv, "split": sp, "size": size}}
    return res
