"""TEST_METHODOLOGY.md's VM procedure (rfc-damon-spe.md §4.9, §5.4, §3.3): thp_test maps
64 MB + 2 MB, touches every page and asks for THPs; one kdamond, fvaddr, 5 ms / 100 ms /
1 s, 10..200 regions, one region over the mapping; §2.2 `mthp_split` target_order 2 for
15 s, §2.3 `collapse` target_order 9 for 20 s, reading nr_tried, sz_tried, nr_applied,
sz_applied, AnonHugePages and the 16 kB nr_anon; §4.2 feeds PFNs 0x100000+i (i < 128)
and 0x200000+i (i < 256) to spe_feed, one echo each, and reads spe_stats. thp_test's
read loop (1 byte per 8 pages every 0.5 s) does not matter to these schemes, which
match every nr_accesses; the mapping is what they act on.
"""
from __future__ import annotations

from damond.errors import ErrnoError
from damond.reproduce.common import MiB, Options, Result, Row, config, workload_vma
from damond.reproduce.session import Session

THP_TEST = '[[workload]]\nkind = "mmap"\nsize = "66M"\npopulate = true\nhint = "hugepage"\ncomm = "thp_test"\n'
RFC_FEED = ("nr_entries=2 total_accesses=384\n"
            "  pfn=0x100000 pid=0 total=128 hot_pages=128/512\n"
            "  pfn=0x200000 pid=0 total=256 hot_pages=256/512\n")
MAX16 = 65535


def scheme(action: str, order: int) -> dict:
    return dict(action=action, target_order=order, nr_accesses=(0, MAX16), age=(0, MAX16))


AMR = "[damon]\napply_min_nr_regions = true\n"


def procedure(opts: Options, extra: str = "") -> dict:
    """§2.2 then §2.3 on a fresh machine; `extra` config lines (the [damon] variant)."""
    s = Session(config("4G", "always", THP_TEST, seed=opts.seed, preset=opts.machine, extra=extra), "methodology")
    pid = s.machine.processes()[0].pid
    s.run(1_000_000)
    v = workload_vma(s, pid)
    out = dict(s=s, vma=v, huge0=s.anon_huge_kb(pid), n16_0=s.nr_anon(16))
    s.write("kernel/mm/damon/admin/kdamonds/nr_kdamonds", 0)
    s.run(1_000_000)
    action = "mthp_split"
    try:
        s.stage([pid], [scheme(action, 2)], ops="fvaddr", nr_regions=(10, 200), regions={pid: [(v.start, v.end)]})
    except ErrnoError:                     # a level without the RFC v3 name: the v2 name, as the scripts do
        action = "split"
        s.stage([pid], [scheme(action, 2)], ops="fvaddr", nr_regions=(10, 200), regions={pid: [(v.start, v.end)]})
    s.write("kernel/mm/damon/admin/kdamonds/0/refresh_ms", 1000)
    s.state("on")
    s.run(15_000_000 if not opts.reduced else 2_000_000)
    out["split"] = s.stats(0)
    s.state("off")
    out["action"], out["huge1"], out["n16_1"] = action, s.anon_huge_kb(pid), s.nr_anon(16)
    s.stage_schemes([scheme("collapse", 9)])
    s.state("on")
    s.run(20_000_000 if not opts.reduced else 2_000_000)
    out["coll"] = s.stats(0)
    s.state("off")
    out["huge2"], out["n16_2"] = s.anon_huge_kb(pid), s.nr_anon(16)
    return out


def run(opts: Options) -> Result:
    p = procedure(opts)
    opts.progress(0.4)
    amr = procedure(opts, AMR)
    opts.progress(0.8)
    s, v = p["s"], p["vma"]
    split, coll, action = p["split"], p["coll"], p["action"]
    huge0, huge1, huge2, n16_0, n16_1, n16_2 = (p[k] for k in ("huge0", "huge1", "huge2", "n16_0", "n16_1", "n16_2"))
    for i in range(128):
        s.write("kernel/debug/damon/spe_feed", f"{0x100000 + i:#x}")
    for i in range(256):
        s.write("kernel/debug/damon/spe_feed", f"{0x200000 + i:#x}")
    feed = s.read("kernel/debug/damon/spe_stats")
    opts.progress(1.0)
    nthp = huge0 // 2048
    why_regions = (f"nr_applied counts regions: the one region over the {(v.end - v.start) // MiB} MB mapping is "
                   "applied whole in the first apply pass (6.18 splits regions only at aggregation ends); the "
                   "RFC's VM had 11 / 10 regions")
    split_ok = (split["nr_applied"], split["sz_applied"]) == (11, 73400320)
    coll_ok = (coll["nr_applied"], coll["sz_applied"]) == (10, 69206016)
    rows = [
        Row("§2.2 split: nr_applied, sz_applied", "11, 73400320 (70 MB)", f"{split['nr_applied']}, {split['sz_applied']}",
            f"{nthp} THPs mapped", "match" if split_ok else "differs",
            "" if split_ok else why_regions + f", and 70 MB is 4 MB more than the {nthp} THPs it split: its "
            "region reached past the mapping"),
        Row("§2.2 AnonHugePages, 16 kB nr_anon", "67584 -> 0 kB, 0 -> 4224",
            f"{huge0} -> {huge1} kB, {n16_0} -> {n16_1}", f"{nthp} x 128 = {nthp * 128}",
            "match" if (huge0, huge1, n16_1 - n16_0) == (67584, 0, 4224) else "differs", ""),
        Row("§2.3 collapse: nr_applied, sz_applied", "10, 69206016 (66 MB)", f"{coll['nr_applied']}, {coll['sz_applied']}",
            f"{nthp} PMD ranges", "match" if coll_ok else "differs",
            "" if coll_ok else why_regions + (f"; sz_applied agrees ({nthp} x 2 MB)"
                                              if coll["sz_applied"] == 69206016 else "")),
        Row("§2.3 AnonHugePages, 16 kB nr_anon", "-> 67584 kB, 4224 -> 0", f"-> {huge2} kB, {n16_1} -> {n16_2}",
            "", "match" if (huge2, n16_2 - n16_0) == (67584, 0) else "differs", ""),
        Row("§2.2/2.3 with [damon] apply_min_nr_regions", "11, 73400320 / 10, 69206016",
            f"{amr['split']['nr_applied']}, {amr['split']['sz_applied']} / {amr['coll']['nr_applied']}, "
            f"{amr['coll']['sz_applied']}", f"{nthp} THPs", "match" if (
                (amr["split"]["nr_applied"], amr["split"]["sz_applied"]) == (11, 73400320)
                and (amr["coll"]["nr_applied"], amr["coll"]["sz_applied"]) == (10, 69206016)) else "differs",
            "regions split to the size limit (total / min_nr_regions) before each apply, as 2026 kernels do "
            "(whether the RFC's 7.1-rc5 had it is not verified)"
            + ("; the collapse figures then match" if (amr["coll"]["nr_applied"], amr["coll"]["sz_applied"])
               == (10, 69206016) else "")
            + f"; the split's 70 MB is 4 MB more than the {nthp} THPs of the mapping, which damond splits"),
        Row("§4.2 spe_stats after the feed", "2 entries, 384 accesses (text in §3.3)",
            feed.splitlines()[0] if feed else "(empty)", "", "match" if feed == RFC_FEED else "differs",
            "" if feed == RFC_FEED else "text differs from the RFC's"),
    ]
    res = Result("methodology", rows)
    res.json = {"experiment": "methodology", "machine": opts.machine, "action": action,
                "split": {"nr_applied": split["nr_applied"], "sz_applied": split["sz_applied"],
                          "anon_huge_kb_before": huge0, "anon_huge_kb_after": huge1,
                          "nr_anon_16k_after": n16_1},
                "collapse": {"nr_applied": coll["nr_applied"], "sz_applied": coll["sz_applied"],
                             "anon_huge_kb_after": huge2},
                "with_apply_min_nr_regions": {"split": amr["split"], "collapse": amr["coll"]},
                "feed": feed}
    return res
