"""Memory tiering through a real mount: a 4 GiB machine with node 0 DRAM and node 1 a
slower CXL-like node. A cold 2 GiB filler fills node 0, the tiering workload's memory lands
on node 1 and its hot window is swept there. A paddr kdamond with migrate_cold
(target_nid 1) and migrate_hot (target_nid 0), written through the sysfs files, demotes
the filler's cold pages (its numa_maps gains N1=) and promotes the hot window (pagemap
PFNs of its pages move into node 0's half of System RAM)."""
from __future__ import annotations

import os
import struct
import time

import pytest

from tests.helpers import DamondProcess, read, write

CONFIG = """
seed = 3
[machine]
memory = "4G"
numa_nodes = 2
node_memory = ["dram", "cxl"]
[thp]
enabled = "always"
[khugepaged]
enabled = false
[[workload]]
kind = "mmap"
comm = "filler"
size = "2G"
populate = true
[[workload]]
kind = "tiering"
size = "1G"
hot_size = "128M"
move_s = 100000
hint = "nohugepage"
start_s = 0.5
[daemon]
time_factor = 2.0
"""
PFN_MASK = (1 << 55) - 1


def _pids(root) -> dict[str, int]:
    out = {}
    for line in (root / "damond/processes").read_text().splitlines():
        pid, comm, kind = line.split()
        out[kind] = int(pid)
    return out


def _nodes(root, pid) -> dict[str, int]:
    """Pages per node of the process's biggest VMA (its numa_maps N<nid>= fields)."""
    best = {}
    for line in (root / f"proc/{pid}/numa_maps").read_text().splitlines():
        f = dict(x.split("=") for x in line.split()[2:] if "=" in x)
        nodes = {k: int(v) for k, v in f.items() if k[0] == "N" and k[1:].isdigit()}
        if sum(nodes.values()) > sum(best.values()):
            best = nodes
    return best


def _hot_on_node0(root, pid, start: int, size: int, ram: tuple[int, int]) -> float:
    """Share of the hot window's pages whose PFN (pagemap) lies in node 0 (the lower half of RAM)."""
    half = (ram[0] + (ram[1] - ram[0] + 1) // 2) >> 12
    fd = os.open(root / f"proc/{pid}/pagemap", os.O_RDONLY)
    try:
        n = size >> 12
        ents = struct.unpack(f"<{n}Q", os.pread(fd, n * 8, (start >> 12) * 8))
    finally:
        os.close(fd)
    pfns = [e & PFN_MASK for e in ents if e >> 63]
    return sum(p < half for p in pfns) / max(len(pfns), 1)


def _scheme(s, action: str, lo: int, hi: int, min_age: int, nid: int) -> None:
    write(s / "action", action)
    write(s / "access_pattern/nr_accesses/min", str(lo))
    write(s / "access_pattern/nr_accesses/max", str(hi))
    write(s / "access_pattern/sz/max", str(1 << 62))                   # the kernel's defaults are 0..0
    write(s / "access_pattern/age/min", str(min_age))
    write(s / "access_pattern/age/max", "4294967295")
    write(s / "target_nid", str(nid))


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="needs root and /dev/fuse")
def test_migrate_cold_demotes_and_migrate_hot_promotes_across_nodes(tmp_path):
    cfg = tmp_path / "tier.toml"
    cfg.write_text(CONFIG)
    with DamondProcess(tmp_path / "sys", config=cfg) as d:
        root = d.root
        deadline = time.monotonic() + 30
        while "tiering" not in _pids(root) or sum(_nodes(root, _pids(root)["tiering"]).values()) < (1 << 18):
            assert time.monotonic() < deadline, "the workloads did not populate"
            time.sleep(0.2)
        pids = _pids(root)
        filler, tier = pids["mmap"], pids["tiering"]
        assert _nodes(root, filler) == {"N0": 1 << 19}                 # 2 GiB: all of node 0
        assert _nodes(root, tier) == {"N1": 1 << 18}                   # 1 GiB: on the CXL node
        vma = max(((int(a, 16), int(b, 16)) for a, b in (ln.split()[0].split("-") for ln in
                   (root / f"proc/{tier}/maps").read_text().splitlines())), key=lambda r: r[1] - r[0])
        iomem = read(root / "proc/iomem").splitlines()[0]
        ram = tuple(int(x, 16) for x in iomem.split(" : ")[0].split("-"))
        assert iomem.endswith(" : System RAM") and ram[1] - ram[0] + 1 == 4 << 30   # both nodes, one range
        hot = vma[0]                                                   # window 0: the area's first 128 MiB
        assert _hot_on_node0(root, tier, hot, 128 << 20, ram) == 0.0

        k = d.admin / "kdamonds"
        write(k / "nr_kdamonds", "1")
        c = k / "0/contexts"
        write(c / "nr_contexts", "1")
        write(c / "0/operations", "paddr")
        write(c / "0/targets/nr_targets", "1")
        write(c / "0/targets/0/regions/nr_regions", "1")
        write(c / "0/targets/0/regions/0/start", str(ram[0]))
        write(c / "0/targets/0/regions/0/end", str(ram[1] + 1))
        write(c / "0/schemes/nr_schemes", "2")
        _scheme(c / "0/schemes/0", "migrate_cold", 0, 0, 10, 1)
        _scheme(c / "0/schemes/1", "migrate_hot", 1, 4294967295, 0, 0)
        write(k / "0/state", "on")

        deadline = time.monotonic() + 90
        while True:
            demoted = _nodes(root, filler).get("N1", 0)
            share = _hot_on_node0(root, tier, hot, 128 << 20, ram)
            if demoted > 0 and share >= 0.9:
                break
            assert time.monotonic() < deadline, f"filler on N1: {demoted} pages, hot window on node 0: {share:.2f}"
            time.sleep(0.5)
        write(k / "0/state", "update_schemes_stats")
        assert int(read(c / "0/schemes/0/stats/sz_applied")) > 0
        assert int(read(c / "0/schemes/1/stats/sz_applied")) > 0
        assert _nodes(root, tier).get("N0", 0) >= ((128 << 20) >> 12) * 9 // 10
