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


def test_spe_hist_help_says_it_reads_stdin():
    p = subprocess.run([sys.executable, "-m", "damond", "spe-hist", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "stdin" in p.stdout
    p = subprocess.run([sys.executable, "-m", "damond", "--help"], capture_output=True, text=True)
    assert "perf script` text on stdin" in p.stdout
