"""`damond spe-hist --feed` orders its lines THP by THP, hottest THP first, so a
capacity-limited PFN tree (1024 THPs in the RFC) keeps the THPs that carry the signal."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_feed_is_hottest_thp_first():
    # `perf script -F phys_addr` text: one record per line, right-aligned %16lx
    pas = [0x200000, 0x400000, 0x401000, 0x402000, 0x400000 + 0x10, 0x201000]
    text = "".join(f"{pa:16x}\n" for pa in pas)
    p = subprocess.run([sys.executable, "-m", "damond", "spe-hist", "--feed"], input=text, text=True,
                       capture_output=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["0x400 2", "0x401 1", "0x402 1", "0x200 1", "0x201 1"]


def test_feed_max_thps_keeps_the_first_thps_to_appear():
    """`--max-thps N` is spe_hist.c's table cap: the first N THPs in input order stay, even
    when a later one is hotter, and stderr says what was dropped."""
    pas = [0x200000, 0x400000, 0x401000, 0x402000, 0x400000 + 0x10, 0x201000]
    text = "".join(f"{pa:16x}\n" for pa in pas)
    p = subprocess.run([sys.executable, "-m", "damond", "spe-hist", "--feed", "--max-thps", "1"], input=text,
                       text=True, capture_output=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["0x200 1", "0x201 1"]
    assert "--max-thps 1: dropped 4 samples of 1 further THPs" in p.stderr


def test_reader_going_away_is_quiet(monkeypatch, capsys):
    """`... | damond spe-hist | head -80` (spe_test.sh): when the reader has gone, spe-hist
    exits 0 without a traceback, as spe_hist.c (killed by SIGPIPE) prints nothing either.
    In-process, stdout a pipe whose read end is closed (writes fail with EPIPE)."""
    import io

    from damond import cli

    text = "".join(f"{(0x80000000 + i * 4096):16x}\n" for i in range(1000))
    for args in (["--feed"], ["--threshold", "30"], []):
        r, w = os.pipe()
        os.close(r)
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.FileIO(w, "w", closefd=False)))
        try:
            parsed = cli._build_parser().parse_args(["spe-hist", *args])
            assert parsed._main(parsed) == 0
        finally:
            os.close(w)
        assert "1000 samples (one per line)" in capsys.readouterr().err


def test_spe_hist_help_says_it_reads_stdin():
    p = subprocess.run([sys.executable, "-m", "damond", "spe-hist", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "stdin" in p.stdout
    p = subprocess.run([sys.executable, "-m", "damond", "--help"], capture_output=True, text=True)
    assert "perf script` text on stdin" in p.stdout
