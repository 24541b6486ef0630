"""`damond spe-hist` as a drop-in for the RFC's spe_hist.c (lianux-mm/damon_spe, bd9149f,
the version with --threshold): its arguments, its totals with `--count lines`, its
4096-THP cap with `--max-thps`, and its per-THP output in both modes.

The expected outputs below are derived by hand from spe_hist.c's source; each says which
of its lines it comes from (line numbers of the bd9149f file). Every test runs the
command in-process with the compiled scanner and with the pure-Python fallback; both
must print the same.
"""
from __future__ import annotations

import io
import sys

import pytest

from damond import cli
from damond.spe import hist

IP = "aaaad4c3f900"
# `perf script -F phys_addr,ip,event,pid,tid` (spe_test.sh): perf's order and widths
HIT = ("l1d-access", "tlb-access", "memory")
MISS = ("l1d-miss", "l1d-access", "llc-miss", "llc-access", "tlb-miss", "tlb-access", "memory")


def rec(pa: int, events=HIT) -> str:
    """The event lines perf prints for one SPE record at physical address pa."""
    return "".join(f"   1001/1001    {ev:>13}:      {IP}{pa:16x}\n" for ev in events)


def pa(pfn: int, sub: int) -> int:
    return (pfn + sub) << 12 | 0x40


@pytest.fixture(params=["c", "python"])
def spe_hist(request, monkeypatch, capsys):
    """Run `damond spe-hist ARGS` on input text: (stdout, stderr), with the compiled
    scanner or the Python fallback."""
    if request.param == "python":
        monkeypatch.setattr(hist, "_feedparse", None)
    elif hist._feedparse is None:
        pytest.skip("compiled parser not built")

    def run(args: list[str], text: str) -> tuple[str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
        parsed = cli._build_parser().parse_args(["spe-hist", *args])
        assert parsed._main(parsed) == 0
        return capsys.readouterr()
    return run


# THP X (PFN 0x80000) appears first, then Y (0x80200), then Z (0x7fe00, a lower PFN).
X, Y, Z = 0x80000, 0x80200, 0x7fe00
REPORT_IN = ("# ========\n# captured on: emulated\n"
             + rec(pa(X, 0)) * 4 + rec(pa(X, 1))                       # X: 15 lines, 5 records
             + "Warning: Samples for 'dummy:u' event do not have IP attribute set.\n"
             + rec(pa(Y, 5), MISS) * 2 + rec(pa(Y, 300))               # Y: 17 lines, 3 records
             + rec(pa(Z, 511)) * 5)                                    # Z: 15 lines, 5 records
# spe_hist.c with this input (its report mode):
# - l.81-82: `#` lines and the `Samples for` line are skipped; l.84: the other 47 lines count;
# - l.86-97: the PA is the last token that parses as nonzero hex (the phys_addr column);
# - l.116-117: every line adds 1 to its subpage and THP: X 15 (subpage 0: 12, 1: 3),
#   Y 17 (5: 14, 300: 3), Z 15 (511: 15);
# - l.144, l.128-136: qsort by total, descending; glibc's qsort is a stable merge sort, so
#   X and Z (15 each) stay in table order, the order of first appearance (l.55-68): X, Z;
# - l.154-155: loads/stores are 0, no token holds `arm_spe_0` (l.88-90, 119-124);
# - l.158-170: 64 columns of 8 subpages: sum 14 or 15 is `2` (< 50), 3 is `1` (< 10);
#   subpage 300 is column 37, subpage 511 column 63;
# - l.175-190: accessed = nonzero subpages; hot = subpages >= max/10 (14/10 = 12/10 =
#   15/10 = 1); hot_fraction = hot * 100 / 512 = 0;
# - l.196-213: distribution by accessed * 100 / 512 / 10: all three in 0-10%.
REPORT_OUT = (
    "PFN 0x80200  total_accesses=17  loads=0  stores=0\n"
    "  heatmap: 2" + "." * 36 + "1" + "." * 26 + "\n"
    "  4KB pages with access: 2/512  hot(>=10%max): 2  max_access: 14  hot_fraction: 0%\n\n"
    "PFN 0x80000  total_accesses=15  loads=0  stores=0\n"
    "  heatmap: 2" + "." * 63 + "\n"
    "  4KB pages with access: 2/512  hot(>=10%max): 2  max_access: 12  hot_fraction: 0%\n\n"
    "PFN 0x7fe00  total_accesses=15  loads=0  stores=0\n"
    "  heatmap: " + "." * 63 + "2\n"
    "  4KB pages with access: 1/512  hot(>=10%max): 1  max_access: 15  hot_fraction: 0%\n\n"
    "=== Hot fraction distribution (hot_fraction = 4KB pages with any access / 512) ===\n"
    "  0-10% hot: 3 THPs\n")


def test_report_count_lines_equals_spe_hist_c(spe_hist):
    out, err = spe_hist(["--count", "lines"], REPORT_IN)
    assert out == REPORT_OUT
    # l.146-149 (stderr): total_records counts every non-header line, top is 10
    assert ("\n========== SPE Sub-Page Access Heatmap ==========\n"
            "Total records: 47  Skipped(no PA): 0  THPs tracked: 3\n"
            "Top 10 THP regions by access count:\n\n") in err


def test_report_default_counts_records(spe_hist):
    """By default one SPE record is one count (its `memory` line): X 5, Z 5, Y 3."""
    out, err = spe_hist([], REPORT_IN)
    assert [ln for ln in out.splitlines() if ln.startswith("PFN")] == [
        "PFN 0x80000  total_accesses=5  loads=0  stores=0",
        "PFN 0x7fe00  total_accesses=5  loads=0  stores=0",
        "PFN 0x80200  total_accesses=3  loads=0  stores=0"]
    assert "50 lines, 13 records (one `memory` line each), 34 other event lines" in err
    assert "Total records: 13  Skipped(no PA): 0  THPs tracked: 3" in err


# -F phys_addr (damon_spe_ctl.sh): W (0x80600) first: 60 subpages once each; then X:
# subpage 0 30 times, 1 3 times, 2 twice; then V (0x7fe00): subpages 0..99, subpage 0 ten times.
W, V = 0x80600, 0x7fe00
PA_ONLY_IN = ("# captured on: emulated\n"
              + "".join(f"{pa(W, i):16x}\n" for i in range(30)) + f"{0:16x}\n"
              + "".join(f"{pa(W, i):16x}\n" for i in range(30, 60))
              + f"{pa(X, 0):16x}\n" * 30 + f"{pa(X, 1):16x}\n" * 3 + f"{pa(X, 2):16x}\n" * 2
              + f"{pa(V, 0):16x}\n" * 9 + "".join(f"{pa(V, i):16x}\n" for i in range(100)))
# print_split_candidates (l.218-249), in table order = first appearance (l.223, l.55-68):
# - W: max 1, sig = max(1/10, 1) = 1 (l.234-235), hot 60, 60*100/512 = 11 (l.240), total 60;
# - X: max 30, sig 3, hot 2 (30 and 3), 0, total 35;
# - V: max 10, sig 1, hot 100, 19, total 109;
# - the `0` line counts as a line (l.84) with no PA (l.95: v > 0; l.102-104).
CANDIDATES = {"W": "PFN 0x80600 hot_fraction:11 total:60\n", "X": "PFN 0x80000 hot_fraction:0 total:35\n",
              "V": "PFN 0x7fe00 hot_fraction:19 total:109\n"}


@pytest.mark.parametrize("count", [[], ["--count", "lines"]])
def test_threshold_mode_equals_spe_hist_c(spe_hist, count):
    """-F phys_addr text has no event names: every line counts under both --count settings."""
    out, err = spe_hist([*count, "--threshold", "20"], PA_ONLY_IN)
    assert out == CANDIDATES["W"] + CANDIDATES["X"] + CANDIDATES["V"]   # not PFN order
    assert "spe_hist: 3/3 THPs below 20% threshold\n" in err           # l.247-248
    out, err = spe_hist([*count, "--threshold", "15"], PA_ONLY_IN)
    assert out == CANDIDATES["W"] + CANDIDATES["X"]                      # l.241: 19 < 15 is false
    assert "spe_hist: 2/3 THPs below 15% threshold\n" in err
    if not count:
        assert "records cannot be told apart, every line counted" in err


def test_positional_max_lines(spe_hist):
    """l.263-264: an argument not starting with `-` is max_lines; l.269-273: reading stops
    once total_records (non-header lines, l.81-84, the `0` line included) reaches it: 30 W
    lines + the `0` line."""
    out, err = spe_hist(["--threshold", "20", "31"], PA_ONLY_IN)
    assert out == "PFN 0x80600 hot_fraction:5 total:30\n"
    assert "spe_hist: 1/1 THPs below 20% threshold" in err
    assert spe_hist(["32", "--threshold", "20"], PA_ONLY_IN)[0] == "PFN 0x80600 hot_fraction:6 total:31\n"


def test_old_ctl_pid_is_accepted_and_not_max_lines(spe_hist):
    """damon_spe_ctl.sh (4ac01aa) runs `spe_hist --threshold T --pid PID`; spe_hist.c
    ignores `--pid` and takes PID as max_lines (l.260-265). damond reads everything."""
    out, err = spe_hist(["--threshold", "20", "--pid", "31"], PA_ONLY_IN)
    assert out == CANDIDATES["W"] + CANDIDATES["X"] + CANDIDATES["V"]
    assert "--pid 31: accepted, not a filter" in err


def test_max_thps_mirrors_the_cap_with_a_warning(spe_hist):
    """l.60-61: once MAX_THPS THPs are in the table, samples of new THPs are dropped (after
    l.84 counted their lines). `--max-thps 2` keeps W and X, drops V's 109 lines."""
    out, err = spe_hist(["--max-thps", "2", "--threshold", "20"], PA_ONLY_IN)
    assert out == CANDIDATES["W"] + CANDIDATES["X"]
    assert "spe_hist: 2/2 THPs below 20% threshold" in err
    assert "--max-thps 2: dropped 109 samples of 1 further THPs" in err
    out, err = spe_hist(["--max-thps", "2"], PA_ONLY_IN)
    assert "Total records: 205  Skipped(no PA): 1  THPs tracked: 2" in err   # l.84, l.102-104, l.147-148
    out, err = spe_hist(["--max-thps", "3", "--threshold", "20"], PA_ONLY_IN)
    assert out.count("PFN") == 3 and "dropped" not in err


def test_loads_stores_of_raw_event_tokens(spe_hist):
    """l.88-90: the last token holding `arm_spe_0` is the event; l.119-124: it is a store
    when it contains `store` or `st` (any case), else a load with `load` or `ld`."""
    text = "".join(f"   1001/1001 arm_spe_0/{terms}/: {IP}{pa(X, 0):16x}\n"
                   for terms in ("ts_enable=1,store_filter=1", "load_filter=1", "ts_enable=1,pa_enable=1"))
    out, _ = spe_hist([], text)
    assert out.startswith("PFN 0x80000  total_accesses=3  loads=1  stores=1\n")


def test_report_hot_keeps_a_floor_of_one(spe_hist):
    """Deliberate difference: with max_access < 10, spe_hist.c's report counts every
    subpage hot (l.183-186: count >= max/10 = 0, so 512 and 100%); damond keeps the floor
    of 1 that spe_hist.c's own --threshold mode (l.234-235) and the kernel use."""
    out, _ = spe_hist([], f"{pa(X, 7):16x}\n" * 3)
    assert "  4KB pages with access: 1/512  hot(>=10%max): 1  max_access: 3  hot_fraction: 0%\n" in out


def test_help_says_stdin(capsys):
    with pytest.raises(SystemExit):
        cli._build_parser().parse_args(["spe-hist", "--help"])
    out = capsys.readouterr().out
    assert "Reads `perf script` text on stdin" in out
    for opt in ("max_lines", "--count {records,lines}", "--max-thps N", "--pid PID", "--threshold N"):
        assert opt in out
