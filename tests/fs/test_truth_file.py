"""damond/truth through a real mount over the real machine: the first read starts the
counting (windows not yet covered read `-`), later reads give the bytes counted as touched."""
from __future__ import annotations

import os
import re
import time

import pytest

from tests.helpers import DamondProcess, read

CONFIG = """\
seed = 3
[machine]
memory = "256M"
[thp]
enabled = "never"
[khugepaged]
enabled = false
[[workload]]
kind = "uniform"
size = "8M"
[[workload]]
kind = "sparse-hotspot"
size = "64M"
"""


def test_truth_counts_touched_pages_from_the_first_read(tmp_path):
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")
    cfg = tmp_path / "m.toml"
    cfg.write_text(CONFIG)
    with DamondProcess(tmp_path / "sys", config=cfg) as d:
        first = read(d.root / "damond/truth")
        assert re.findall(r"wss_100ms=(\S+) wss_1s=(\S+)", first) == [("-", "-"), ("-", "-")], first
        time.sleep(1.5)
        out = read(d.root / "damond/truth")
        vals = {m.group(1): (int(m.group(2)), int(m.group(3)))
                for m in re.finditer(r"comm=(\S+) wss_100ms=(\d+) wss_1s=(\d+)", out)}
        assert vals["uniform"] == (8 << 20, 8 << 20), out           # the sweep touches all 2048 pages
        assert vals["sparse_8g"] == (32 * 4096, 32 * 4096), out     # one page per 2 MB
