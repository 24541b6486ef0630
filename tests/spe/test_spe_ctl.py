"""`damond spe-ctl` through a real mount at feature level 7.0: a known histogram in, the
right `addr` filters on a `split` scheme, only those THPs split, and `max_nr_snapshots`
stopping the scheme after the asked number of applications."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, DamondProcess, read, write

CONFIG = """\
seed = 5
[machine]
memory = "256M"
[thp]
enabled = "always"
[khugepaged]
enabled = false
[[workload]]
kind = "mmap"
size = "32M"
populate = true
"""
PMD = 2 << 20
S = "kernel/mm/damon/admin/kdamonds/0/contexts/0/schemes/0"


def _need_fuse():
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")


def _blocks(root, pid: int) -> list[tuple[int, int]]:
    """(VA, PFN) of every 2 MiB-aligned block of the workload's mapping, from maps and pagemap."""
    vmas = []
    for ln in read(root / f"proc/{pid}/maps").splitlines():
        a, b = (int(x, 16) for x in ln.split()[0].split("-"))
        vmas.append((a, b))
    a, b = max(vmas, key=lambda v: v[1] - v[0])
    out = []
    fd = os.open(root / f"proc/{pid}/pagemap", os.O_RDONLY)
    try:
        va = (a + PMD - 1) & ~(PMD - 1)
        while va + PMD <= b:
            (e,) = struct.unpack("<Q", os.pread(fd, 8, va // 4096 * 8))
            assert e >> 63, f"{va:#x} not present"
            out.append((va, e & ((1 << 55) - 1)))
            va += PMD
    finally:
        os.close(fd)
    return out


def _anon_huge_kb(root, pid: int) -> int:
    for ln in read(root / f"proc/{pid}/smaps_rollup").splitlines():
        if ln.startswith("AnonHugePages:"):
            return int(ln.split()[1])
    raise AssertionError("no AnonHugePages line")


def _stat(root, name: str) -> int:
    write(root / "kernel/mm/damon/admin/kdamonds/0/state", "update_schemes_stats")
    return int(read(root / S / "stats" / name))


def _spe_ctl(root, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "damond", "spe-ctl", "--mount", str(root), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_spe_ctl_filters_split_and_snapshot_limit(tmp_path):
    _need_fuse()
    cfg = tmp_path / "m.toml"
    cfg.write_text(CONFIG)
    with DamondProcess(tmp_path / "sys", config=cfg, feature_level="7.0+rfc") as d:
        root = d.root
        pid = int(read(root / "damond/processes").split()[0])
        blocks = _blocks(root, pid)
        assert len(blocks) >= 10 and _anon_huge_kb(root, pid) == 32 << 10
        sparse, dense = [blocks[2], blocks[5]], blocks[8]
        lines = []
        for _, pfn in sparse:                       # 3 of 512 subpages sampled: hot fraction 0 %
            lines += [f"{pfn + k:#x} 7" for k in (0, 100, 200)]
        lines += [f"{dense[1] + k:#x} 3" for k in range(512)]   # every subpage: 100 %
        lines += ["0x1fe00 9"]                       # a THP no page of the pid maps
        hist = tmp_path / "hist.txt"
        hist.write_text("\n".join(lines) + "\n")

        r = _spe_ctl(root, "--pid", str(pid), "--input", str(hist))
        assert r.returncode == 0, r.stderr
        assert "round 0: 3 sparse THPs, 2 addr filters (1 not mapped" in r.stdout, r.stdout
        assert "max_nr_snapshots=5" in r.stdout and r.stdout.rstrip().endswith(
            f"{sparse[1][0]:#x} {sparse[1][0] + PMD:#x}"), r.stdout

        f = root / S / "core_filters"
        assert read(f / "nr_filters").strip() == "2"
        got = [(read(f / f"{i}/type").strip(), read(f / f"{i}/allow").strip(), int(read(f / f"{i}/addr_start")),
                int(read(f / f"{i}/addr_end"))) for i in range(2)]
        assert got == [("addr", "Y", va, va + PMD) for va, _ in sparse]
        assert read(root / S / "action").strip() == "split"
        assert read(root / "kernel/mm/damon/admin/kdamonds/0/state").strip() == "on"

        deadline = time.monotonic() + 30
        while _stat(root, "nr_snapshots") < 5:     # auto: two passes per filter and one more
            assert time.monotonic() < deadline, "the scheme did not apply 5 times in 30 s"
            time.sleep(0.1)
        # exactly the two sparse THPs split, to 16 KiB folios
        assert _stat(root, "sz_applied") == 2 * PMD
        assert _anon_huge_kb(root, pid) == (32 - 4) << 10
        assert int(read(root / "kernel/mm/transparent_hugepage/hugepages-16kB/stats/nr_anon")) == 2 * 128
        # max_nr_snapshots reached: the scheme is deactivated while the kdamond keeps running
        tried = _stat(root, "nr_tried")
        time.sleep(0.6)
        assert _stat(root, "nr_snapshots") == 5 and _stat(root, "nr_tried") == tried
        assert read(root / "kernel/mm/damon/admin/kdamonds/0/state").strip() == "on"
        assert int(read(root / S / "stats/max_nr_snapshots")) == 5

        # the next round re-arms it for one more application (commit, not off/on)
        r = _spe_ctl(root, "--pid", str(pid), "--input", str(hist), "--snapshots", "1")
        assert r.returncode == 0 and "max_nr_snapshots=6" in r.stdout and r.stdout.split("\n")[0].endswith(
            "commit"), r.stdout
        deadline = time.monotonic() + 30
        while _stat(root, "nr_snapshots") < 6:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.4)
        assert _stat(root, "nr_snapshots") == 6 and _stat(root, "sz_applied") == 2 * PMD   # already split


def test_spe_ctl_refuses_a_tree_that_is_not_damond(tmp_path):
    (tmp_path / "kernel/mm/damon/admin").mkdir(parents=True)
    r = subprocess.run([sys.executable, "-m", "damond", "spe-ctl", "--mount", str(tmp_path), "--pid", "1",
                        "--input", "-"], cwd=REPO, capture_output=True, text=True, input="", timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"damond spe-ctl: {tmp_path} is not a damond tree (no damond/ beside "
                                f"kernel/mm/damon/admin); refusing to write")


HOT_CONFIG = """\
seed = 5
[machine]
memory = "256M"
[thp]
enabled = "always"
[khugepaged]
enabled = false
[[workload]]
kind = "thp-hot"
nr_thps = 4
hot_pct = 5
duration_s = 0
"""


def test_spe_ctl_records_from_the_mount(tmp_path):
    """--record: samples from damond/spe_record; hot_workload at 5 % makes every THP sparse."""
    _need_fuse()
    cfg = tmp_path / "m.toml"
    cfg.write_text(HOT_CONFIG)
    with DamondProcess(tmp_path / "sys", config=cfg, feature_level="7.0+rfc") as d:
        root = d.root
        pid = int(read(root / "damond/processes").split()[0])
        time.sleep(0.5)
        r = _spe_ctl(root, "--pid", str(pid), "--record", "1", "--dry-run")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("4 sparse THPs; would install 1 addr filters:"), r.stdout
        assert read(root / "kernel/mm/damon/admin/kdamonds/nr_kdamonds").strip() == "0"     # dry run: nothing written
        r = _spe_ctl(root, "--pid", str(pid), "--record", "1")
        assert r.returncode == 0 and "round 0: 4 sparse THPs, 1 addr filters" in r.stdout, r.stdout + r.stderr
        deadline = time.monotonic() + 30
        while _anon_huge_kb(root, pid):
            assert time.monotonic() < deadline, "the 4 THPs were not split in 30 s"
            time.sleep(0.1)
        assert _stat(root, "sz_applied") == 4 * PMD
