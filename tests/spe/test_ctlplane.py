"""The v2 control plane (damond/spe/ctlplane.py) on a reproduce Session: histogram formats,
PFN -> VA through pagemap, the exact THPs split, max_nr_snapshots per round, the design."""
from __future__ import annotations

import numpy as np

from damond.reproduce.designs import design
from damond.reproduce.session import Session
from damond.spe import ctlplane
from damond.spe.sampler import Sampler, SpeConfig

PMD = 2 << 20
S = "kernel/mm/damon/admin/kdamonds/0/contexts/0/schemes/0"


def session(level: str, workload: str = 'kind = "mmap"\nsize = "32M"\npopulate = true') -> tuple[Session, int]:
    s = Session(f"""seed = 2
[machine]
memory = "256M"
[thp]
enabled = "always"
[khugepaged]
enabled = false
[daemon]
feature_level = "{level}"
[[workload]]
{workload}
""")
    pid = s.machine.processes()[0].pid
    s.run(200_000)
    return s, pid


def blocks(s: Session, pid: int) -> list[tuple[int, int]]:
    """(VA, THP PFN) of the mapping's 2 MiB blocks, from the machine (not from pagemap)."""
    v = max(s.machine.process(pid).vmas(), key=lambda v: v.end - v.start)
    va = (v.start + PMD - 1) & ~(PMD - 1)
    out = []
    while va + PMD <= v.end:
        fi = s.machine.folio_walk(pid, va)
        out.append((va, int(fi.pfn)))
        va += PMD
    return out


def orders(s: Session, pid: int, bl) -> list[int]:
    return [int(s.machine.folio_walk(pid, va).order) for va, _ in bl]


def sparse_hist(pfns: list[int], dense: list[int]) -> tuple[np.ndarray, np.ndarray]:
    p = [x + k for x in pfns for k in (0, 9, 300)] + [x + k for x in dense for k in range(512)]
    return np.array(p, np.uint64), np.full(len(p), 4, np.uint64)


def test_parse_histogram_reads_spe_hist_outputs_and_perf_script():
    feed = ctlplane.parse_histogram("0x40000 3\n0x40001 2\n0x40000 1\n")
    assert [a.tolist() for a in feed] == [[0x40000, 0x40001], [4, 2]]
    cand = ctlplane.parse_histogram("PFN 0x40200 hot_fraction:0 total:12\nPFN 0x40600 hot_fraction:5 total:40\n")
    assert cand == [0x40200, 0x40600]
    perf = ctlplane.parse_histogram("# header\n  40000010\n  40000ff8\n  40001000\n")
    assert [a.tolist() for a in perf] == [[0x40000, 0x40001], [2, 1]]


def test_sparse_thps_is_spe_hist_threshold_choice():
    pfns, counts = sparse_hist([0x80000], [0x80200])
    assert ctlplane.sparse_thps(pfns, counts, 30) == [0x80000]
    assert ctlplane.sparse_thps(pfns, counts, 0) == []
    assert ctlplane.hot_bytes(pfns, counts) == (3 + 512) * 4096


def test_round_splits_exactly_the_chosen_thps_and_snapshots_bound_it():
    s, pid = session("7.0+rfc")
    bl = blocks(s, pid)
    files = ctlplane.SessionFiles(s)
    p = ctlplane.Params(pid=pid)
    assert ctlplane.pfn_to_va(files, pid, [bl[3][1], bl[1][1]]) == [(bl[1][0], bl[1][0] + PMD),
                                                                    (bl[3][0], bl[3][0] + PMD)]
    r = ctlplane.control_round(files, p, sparse_hist([bl[1][1], bl[2][1], bl[6][1]], [bl[4][1]]))
    assert r.started and r.candidates == 3 and r.unresolved == 0 and r.max_nr_snapshots == 5   # auto: 2 x 2 + 1
    assert r.ranges == [(bl[1][0], bl[3][0]), (bl[6][0], bl[6][0] + PMD)]      # 1 and 2 merged
    s.run(2_000_000)
    assert orders(s, pid, bl) == [2 if i in (1, 2, 6) else 9 for i in range(len(bl))]
    st = s.stats(0)
    assert st["sz_applied"] == 3 * PMD
    assert s.read_int(f"{S}/stats/nr_snapshots") == 5          # applied 5 times, then deactivated
    # a second round re-arms it: the new range splits, nothing else
    r = ctlplane.control_round(files, p, sparse_hist([bl[9][1]], []))
    assert not r.started and r.max_nr_snapshots == 5 + 3 and r.ranges == [(bl[9][0], bl[9][0] + PMD)]
    s.run(2_000_000)
    s.state("update_schemes_stats")
    assert s.read_int(f"{S}/stats/nr_snapshots") == 8
    assert orders(s, pid, bl) == [2 if i in (1, 2, 6, 9) else 9 for i in range(len(bl))]


def test_no_candidate_installs_a_filter_that_passes_nothing():
    s, pid = session("7.0+rfc")
    bl = blocks(s, pid)
    files = ctlplane.SessionFiles(s)
    r = ctlplane.control_round(files, ctlplane.Params(pid=pid, snapshots=0), sparse_hist([], [bl[0][1]]))
    assert r.candidates == 0 and r.ranges == [] and r.max_nr_snapshots == 0
    s.run(1_000_000)
    assert s.stats(0)["sz_applied"] == 0 and set(orders(s, pid, bl)) == {9}


def test_level_without_max_nr_snapshots_still_splits():
    s, pid = session("6.19+rfc")
    bl = blocks(s, pid)
    files = ctlplane.SessionFiles(s)
    p = ctlplane.Params(pid=pid)
    assert not ctlplane.has_snapshot_limit(files, p)
    r = ctlplane.control_round(files, p, sparse_hist([bl[0][1]], []))
    assert r.max_nr_snapshots == 0 and r.ranges == [(bl[0][0], bl[0][0] + PMD)]
    s.run(1_000_000)
    assert orders(s, pid, bl)[:2] == [2, 9]


def test_v2_design_splits_the_sparse_thps_of_hot_workload():
    s, pid = session("7.0+rfc", 'kind = "thp-hot"\nnr_thps = 8\nhot_pct = 5\nduration_s = 0')
    s.run_until_populated(pid)
    d = design("v2-addr-filter")()
    assert d.uses_spe
    sampler = Sampler(SpeConfig.parse("period=1024 pa_enable=1 seed=2"), 4)    # as the runner feeds it
    sampler.start(s.machine)
    d.setup(s, pid)
    d.control(s, pid)
    assert d.rounds == []                       # nothing fed yet: no round
    for _ in range(2):
        s.run(d.control_period_us)
        recs = sampler.drain()
        d.feed_spe(s, pid, *ctlplane.records_histogram(recs["pa"]))
        d.control(s, pid)
    s.run(1_000_000)
    assert d.rounds[0].candidates == 8 and len(d.rounds[0].ranges) == 1     # 8 adjacent THPs, one filter
    assert s.anon_huge_kb(pid) == 0
    # hot_workload touches 25 of each THP's 512 pages: the histogram's hot subpages
    assert 0 < d.reported_hot_bytes(s, pid) <= 8 * 25 * 4096


def test_one_pass_per_round_at_the_aggregation_interval_misses_ranges():
    """Why spe-ctl allows 2 passes per filter at the sampling interval: a filter start inside a
    region cuts it and the pass skips the new piece (damon_for_each_region_safe); at one
    pass per aggregation the merge rejoins the pieces before the next pass."""
    def split_after(snapshots: int, apply_us: int) -> int:
        s, pid = session("7.0+rfc", 'kind = "mmap"\nsize = "64M"\npopulate = true')
        bl = blocks(s, pid)
        want = list(range(3, 30, 4))
        p = ctlplane.Params(pid=pid, snapshots=snapshots, apply_interval_us=apply_us)
        ctlplane.control_round(ctlplane.SessionFiles(s), p, sparse_hist([bl[i][1] for i in want], []))
        s.run(1_000_000)
        o = orders(s, pid, bl)
        return sum(o[i] == 2 for i in want)

    assert split_after(1, 0) < 7
    assert split_after(ctlplane.AUTO, 5000) == 7
