"""perf-script text (exact widths and order), the sampler over a fake machine step, and
spe-hist parsing of every documented line shape: one count per record where the text
tells records apart (`memory` lines), one per line where it cannot (`-F phys_addr`)."""
import numpy as np
import pytest

from damond.mm.access import ProcessAccesses, StepAccesses
from damond.spe import hist, perf_script
from damond.spe import sampler as S

REC = np.array([(8412736510123, 48213, 48213, 17, S.OP_LOAD, 0xffff8a3c2040, 0x820db803040,
                 S.EV_RETIRED | S.EV_L1D_ACCESS | S.EV_TLB_ACCESS, 5, 1, 0xaaaad4c01a2c)], dtype=S.RECORD_DTYPE)
COMMS = {48213: "hot_workload"}


def test_default_fields_three_lines_per_record_width_13():
    text = perf_script.format_records(REC, COMMS, perf_script.DEFAULT_FIELDS, perf_script.itrace_groups(None),
                                      "arm_spe_0//")
    ip = "     aaaad4c01a2c access_loop+0x2c (/usr/local/bin/hot_workload)\n"
    head = "    hot_workload   48213 [017]  8412.736510:          1 "
    assert text == (head + "   l1d-access: " + ip + head + "   tlb-access: " + ip + head + "       memory: " + ip)


def test_F_fields_itrace_M_and_raw_evsel_width():
    fields = perf_script.parse_fields("comm,tid,cpu,time,event,addr,ip,sym,dso,phys_addr")
    raw = "arm_spe_0/ts_enable=1,pa_enable=1,load_filter=1,store_filter=1/"
    text = perf_script.format_records(REC, COMMS, fields, perf_script.itrace_groups("M"), raw)
    assert text == ("    hot_workload   48213 [017]  8412.736510: " + " " * 57 + "memory:     ffff8a3c2040"
                    "     aaaad4c01a2c access_loop (/usr/local/bin/hot_workload)     820db803040\n")
    assert len(raw) == 63


def test_F_phys_addr_only_and_edits():
    text = perf_script.format_records(REC, COMMS, perf_script.parse_fields("phys_addr"),
                                      perf_script.itrace_groups(None), "arm_spe_0//")
    assert text == "     820db803040\n" * 3
    assert perf_script.parse_fields(",-time,+pid") == ("comm", "pid", "tid", "cpu", "period", "event", "ip",
                                                       "sym", "symoff", "dso")
    with pytest.raises(ValueError, match="unknown field 'bogus'"):
        perf_script.parse_fields("bogus")


def test_pid_tid_and_ns_formats():
    text = perf_script.format_records(REC, COMMS, perf_script.parse_fields("pid,tid,time,event"), ["memory"],
                                      "x", ns=True)
    assert text == "  48213/48213    8412.736510123:  memory: \n"


def _step(pages, counts, miss):
    va = np.arange(pages, dtype=np.uint64) * np.uint64(4096) + np.uint64(0xffff00000000)
    pa = np.arange(pages, dtype=np.uint64) * np.uint64(4096) + np.uint64(0x820db800 << 12)
    return StepAccesses(0, 100_000, [ProcessAccesses(7, "w", va, pa, np.asarray(counts, float), np.asarray(miss, float))])


def test_sampler_one_sample_per_period_and_pa():
    s = S.Sampler(S.SpeConfig(period=1000, jitter=0, pa_enable=1), rng=np.random.default_rng(1))
    s.on_step(_step(4, [0, 30_000, 0, 10_000], [0, 1.0, 0, 0.0]))
    r = s.drain()
    assert len(r) == 40 and s.selected == 40
    pages = (r["pa"] >> np.uint64(12)) - np.uint64(0x820db800)
    assert np.bincount(pages.astype(int), minlength=4).tolist() == [0, 30, 0, 10]
    assert ((r["va"] & np.uint64(0xfff)) == (r["pa"] & np.uint64(0xfff))).all()
    tlb_miss = (r["events"] & S.EV_TLB_REFILL) != 0
    assert tlb_miss[pages == 1].all() and not tlb_miss[pages == 3].any()
    assert (np.diff(r["time_ns"].astype(np.int64)) >= 0).all()


def test_sampler_carry_across_steps_and_filters():
    s = S.Sampler(S.SpeConfig(period=1000, jitter=0, store_filter=1), rng=np.random.default_rng(2))
    for _ in range(10):
        s.on_step(_step(1, [450], [0]))          # 4500 ops: 4 selections (carry 500)
    r = s.drain()
    assert s.selected == 4 and len(r) + s.filtered == 4 and (r["op"] == S.OP_STORE).all()
    assert (r["pa"] == 0).all()                   # no pa_enable


def _hist(text: str):
    b = hist.HistBuilder()
    b.feed(text.encode())
    return b


@pytest.mark.parametrize("use_c", [True, False])
def test_hist_dedupes_emulated_default_output(use_c, monkeypatch):
    if not use_c:
        monkeypatch.setattr(hist, "_feedparse", None)
    elif hist._feedparse is None:
        pytest.skip("compiled parser not built")
    s = S.Sampler(S.SpeConfig(period=500, jitter=1, pa_enable=1), rng=np.random.default_rng(5))
    s.on_step(_step(8, [1000] * 8, [0.5] * 8))
    recs = s.drain()
    fields = perf_script.parse_fields(",+phys_addr")
    text = "# captured on: emulated\n" + perf_script.format_records(recs, {7: "w"}, fields,
                                                                  perf_script.itrace_groups(None), "arm_spe_0//")
    b = _hist(text)
    assert b.mode == "memory" and b.stats.records == len(recs) == s.selected
    assert b.stats.skipped_header == 1
    assert b.stats.duplicate_lines == text.count("\n") - 1 - len(recs)
    pfns, counts = b.subpages()
    exp_p, exp_c = np.unique(recs["pa"] >> np.uint64(12), return_counts=True)
    assert pfns.tolist() == exp_p.tolist() and counts.tolist() == exp_c.tolist()


@pytest.mark.parametrize("use_c", [True, False])
def test_hist_phys_addr_only_counts_lines_and_real_shapes(use_c, monkeypatch):
    if not use_c:
        monkeypatch.setattr(hist, "_feedparse", None)
    elif hist._feedparse is None:
        pytest.skip("compiled parser not built")
    text = ("     820db803040\n     820db803040\n     820db804040\n                0\n\n"
            "Warning: Samples for 'arm_spe_0//' event do not have PHYS_ADDR attribute set.\n"
            "              dd    3048 [002]          1    l1d-access:      ffffaa64999c __GI___libc_write+0x3c "
            "(/lib/aarch64-linux-gnu/libc-2.27.so)\n"
            "     820db803040\n")
    b = _hist(text)
    s = b.stats
    assert b.mode == "lines" and b.records_unknown
    assert (s.lines, s.records, s.duplicate_lines, s.skipped_no_pa, s.skipped_header) == (8, 4, 0, 2, 2)
    pfns, counts = b.subpages()
    assert list(zip(pfns.tolist(), counts.tolist())) == [(0x820db803, 3), (0x820db804, 1)]


def _three_samples_of_one_address():
    """Three SPE records of the same load, each printing l1d-access, tlb-access and memory."""
    r = np.repeat(REC, 3)
    r["time_ns"] += np.arange(3, dtype=np.uint64) * np.uint64(1000)
    return r


@pytest.mark.parametrize("use_c", [True, False])
@pytest.mark.parametrize("spec,count,expect", [("phys_addr", "records", 9), ("phys_addr", "lines", 9),
                                               (",+phys_addr", "records", 3), (",+phys_addr", "lines", 9),
                                               ("event,phys_addr", "records", 3)])
def test_repeated_samples_of_one_address_are_never_merged(use_c, spec, count, expect, monkeypatch):
    """A record is a record: consecutive identical addresses of separate records are not
    merged (spe-hist once turned these three samples into one under -F phys_addr). Without
    event names the 9 lines cannot be grouped into records, so each counts."""
    if not use_c:
        monkeypatch.setattr(hist, "_feedparse", None)
    elif hist._feedparse is None:
        pytest.skip("compiled parser not built")
    text = perf_script.format_records(_three_samples_of_one_address(), COMMS, perf_script.parse_fields(spec),
                                      perf_script.itrace_groups(None), "arm_spe_0//")
    assert text.count("\n") == 9
    b = hist.HistBuilder(count=count)
    b.feed(text.encode())
    pfns, counts = b.subpages()
    assert b.stats.records == expect and pfns.tolist() == [0x820db803] and counts.tolist() == [expect]


def test_hist_outputs():
    pfns = np.array([0x820db800 + i for i in (0, 1, 2)] + [0x1000 + i for i in range(100)], dtype=np.uint64)
    counts = np.array([39000, 700, 94] + [1] * 100, dtype=np.uint64)
    assert hist.feed_text(pfns[:2], counts[:2]) == "0x820db800 39000\n0x820db801 700\n"
    rep = hist.report_text(pfns, counts, top=1)
    assert rep.splitlines()[:3] == [
        "PFN 0x820db800  total_accesses=39794  loads=0  stores=0",
        "  heatmap: #" + "." * 63,
        "  4KB pages with access: 3/512  hot(>=10%max): 1  max_access: 39000  hot_fraction: 0%"]
    assert rep.endswith("  0-10% hot: 1 THPs\n  10-20% hot: 1 THPs\n")
    assert hist.sparse_summary(pfns, counts) == "THPs with < 10% of 4KB pages accessed: 1/2 (50%)\n"
    text, n, total = hist.candidates_text(pfns, counts, 15)
    assert text == "PFN 0x820db800 hot_fraction:0 total:39794\n" and (n, total) == (1, 2)


@pytest.mark.parametrize("spec,itrace,ns", [(None, None, False), ("phys_addr", None, False),
                                            ("pid,tid,cpu,time,event,addr,weight,ip,sym,dso,phys_addr", "i", True),
                                            ("comm,pid,time,ip,symoff,phys_addr", "tM", False), ("tid,event", "fmtbaM", False)])
def test_vectorised_printer_equals_per_record_reference(spec, itrace, ns):
    rng = np.random.default_rng(11)
    n = 300
    r = np.zeros(n, S.RECORD_DTYPE)
    r["time_ns"] = np.sort(rng.integers(0, 10 ** 15, n))
    r["pid"] = rng.choice([1, 48213, 9999999], n)
    r["tid"] = r["pid"] + rng.integers(0, 3, n)
    r["cpu"] = rng.integers(0, 1200, n)
    r["op"] = rng.integers(0, 3, n)
    r["va"] = rng.integers(0, 1 << 63, n, dtype=np.uint64) >> rng.integers(0, 60, n).astype(np.uint64)
    r["pa"] = rng.integers(0, 1 << 52, n, dtype=np.uint64)
    r["events"] = rng.integers(0, 1 << 12, n)
    r["lat_tot"] = rng.integers(0, 1 << 31, n)
    r["pc"] = rng.integers(0, 1 << 48, n, dtype=np.uint64)
    comms = {1: "init", 48213: "a much longer comm name"}
    fields, groups = perf_script.parse_fields(spec), perf_script.itrace_groups(itrace)
    raw = "arm_spe_0/ts_enable=1,pa_enable=1/"
    ref = perf_script.format_records_loop(r, comms, fields, groups, raw, ns)
    assert perf_script.format_records(r, comms, fields, groups, raw, ns) == ref and ref


def test_raw_records_round_trip_and_errors():
    rng = np.random.default_rng(2)
    r = np.zeros(500, S.RECORD_DTYPE)
    for k in ("time_ns", "va", "pa", "pc"):
        r[k] = rng.integers(0, 1 << 63, len(r), dtype=np.uint64)
    for k in ("pid", "tid", "cpu", "lat_tot", "lat_xlat"):
        r[k] = rng.integers(0, 1 << 16, len(r))
    r["events"] = rng.integers(0, 1 << 31, len(r))
    r["op"] = rng.integers(0, 2, len(r))
    raw = S.records_bytes(r, {int(r["pid"][0]): "with space"})
    back, comms = S.parse_records(raw + raw)          # two drained batches back to back
    assert (back[:500] == r).all() and (back[500:] == r).all()
    assert comms[int(r["pid"][0])] == "with space" and comms[int(r["pid"][1])] == "-"
    with pytest.raises(ValueError, match="bad record line"):
        S.parse_records(raw.replace(b" L ", b" X ", 1) if b" L " in raw else raw.replace(b" S ", b" X ", 1))
    with pytest.raises(ValueError, match="bad record line"):
        S.parse_records(b"1 2 3\n")
