"""`damond mount --config FILE` refuses a bad config with one line `damond: FILE:LINE: problem`
and exit status 1, before anything is mounted: unknown keys anywhere, non-UTF-8 text, and
values past the limits the machine model can hold (each message names the limit)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

CASES = [
    # (file bytes, line, words the problem must contain)
    (b"seed = 1\nbogus = 2\n", 2, ["unknown top-level key 'bogus'"]),
    (b"seed = 1\n[extra]\nx = 1\n", 2, ["unknown top-level table 'extra'"]),
    (b"[machine]\nmemory = \"16G\"\nfrobnicate = 1\n", 3, ["unknown key 'frobnicate'", "[machine]"]),
    (b"[machine.tlb]\nl3_entries = 4\n", 2, ["unknown key 'l3_entries'"]),
    (b"[spe]\ncapacity = 16\nttl = 3\n", 3, ["unknown key 'ttl'"]),
    (b"[[workload]]\nkind = \"uniform\"\nsize = \"1G\"\nbogus = 3\n", 4, ["unknown key 'bogus'"]),
    (b"seed = 1\n# caf\xe9\n", 2, ["not UTF-8"]),
    (b"[machine]\nmemory = 1125899906842624\n", 2, ["exceeds the limit of 4398046511104"]),
    (b"[machine]\nnr_cpus = 100000\n", 2, ["exceeds the limit of 4096"]),
    (b"[machine.tlb]\nl2_entries = 100000000\n", 2, ["exceeds the limit of 65536"]),
    (b"[[workload]]\nkind = \"uniform\"\nsize = \"100G\"\n", 3, ["more than the machine's memory", "limit"]),
    (b"[machine]\nmemory = \"4G\"\n[[workload]]\nkind = \"sparse-hotspot\"\n", 3, ["maps 8589934592 bytes"]),
    (b"[machine]\nmemory = \"64M\"\n[[workload]]\nkind = \"thp-hot\"\nnr_thps = 100\n", 5, ["maps 209715200"]),
    (b"[spe]\nttl_s = 1e308\n", 2, ["ttl_s", "1e9"]),
    (b"[machine]\nnuma_nodes = 2\nnode_memory = [\"dram\", \"hbm\"]\n", 3, ["node_memory must list one of dram, cxl"]),
    (b"[[workload]]\nkind = \"tiering\"\nsize = \"1G\"\nhot_size = \"2G\"\n", 4, ["hot_size must"]),
]


@pytest.mark.parametrize("text,line,words", CASES, ids=[c[2][0][:30] for c in CASES])
def test_bad_config_is_one_line_and_exit_1(tmp_path, text, line, words):
    cfg = tmp_path / "bad.toml"
    cfg.write_bytes(text)
    mp = tmp_path / "mp"
    mp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "damond", "mount", str(mp), "--config", str(cfg)],
                       capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"damond: {cfg}:{line}: "), lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    assert not os.path.ismount(mp)
