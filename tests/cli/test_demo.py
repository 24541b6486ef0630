"""`damond demo` end to end: mounts the embedded machine, runs the echo/cat transcript
(stat scheme, SPE pipeline, split), prints DAMON beside ground truth, unmounts."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _size(s: str) -> float:
    n, unit = s.split()
    return float(n) * {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[unit]


def test_demo_reports_thp_inflation_and_the_split(tmp_path):
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")
    p = subprocess.run([sys.executable, "-m", "damond", "demo", "--seconds", "2"], cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=str(REPO)), text=True, capture_output=True, timeout=300)
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    # the RFC's T2: with one AF per 2 MiB the whole 8 GiB looks hot while 16 MiB (+ 8 MiB of the
    # TLB-resident hot_workload, invisible: the blind spot) is touched
    m = re.search(r"THP \(2 MiB, one AF\)\s+(\S+ \S+)\s+(\S+ \S+)", out)
    assert m and m.group(1) == "8.0 GiB" and m.group(2) == "24.0 MiB", out
    # the SPE-guided split: the sparse THPs are gone, the hot_workload's THPs (every 16 KiB chunk hot) kept
    m = re.search(r"AnonHugePages now: sparse_8g (\d+) kB \(split\), hot_workload 32768 kB \(kept", out)
    # all 4096 split; khugepaged may have collapsed a few again (8 PMDs per 10 s)
    assert m and int(m.group(1)) <= 8 * 2048 * 2, out
    applied = int(re.search(r"sz_applied:(\d+)", out).group(1))
    assert applied > 0 and applied % (2 << 20) == 0
    # and DAMON's estimate shrinks by far once each 4 KiB page has its own AF
    after = re.search(r"after SPE-guided split\s+(\S+ \S+)", out).group(1)
    assert _size(after) < _size("8.0 GiB") / 4
    assert "recorded=" in out and "nr_entries=" in out          # the SPE pipeline fed the tree
    root = re.search(r"^# fusermount3 -u (\S+)$", out, re.M).group(1)
    assert f" {root} " not in open("/proc/mounts").read()        # unmounted


def _demo(tmp_path, *args):
    """Run `damond demo` with TMPDIR inside tmp_path; returns (process, leftovers in TMPDIR)."""
    td = tmp_path / "tmpdir"
    td.mkdir()
    p = subprocess.run([sys.executable, "-m", "damond", "demo", *args], cwd=tmp_path, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(td)), text=True, capture_output=True)
    return p, sorted(x.name for x in td.iterdir())


@pytest.mark.parametrize("config,words", [
    ('[machine]\nmemory = "1G"\n[[workload]]\nkind = "uniform"\nsize = "64M"\n',
     ['kind = "sparse-hotspot"', 'kind = "thp-hot"']),
    ('[[workload]]\nkind = "thp-hot"\n', ['kind = "sparse-hotspot"']),
    ('[machine]\nmemory = "lots"\n', ["cfg.toml:2:", "not a size"]),
])
def test_demo_with_another_config_says_in_one_line_why_not(tmp_path, config, words):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(config)
    p, left = _demo(tmp_path, "--config", str(cfg))
    assert p.returncode == 1 and p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("damond demo: "), p.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert left == []


def test_demo_leaves_no_temp_directory(tmp_path):
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")
    p, left = _demo(tmp_path, "--seconds", "1")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    assert left == []
