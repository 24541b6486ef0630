"""damond's /proc files through a real mount: pagemap in the kernel's binary format (PFNs
of the emulated RAM, present/exclusive bits, u64 alignment), numa_maps, statm, and the
machine-wide iomem, meminfo and vmstat of the emulated machine."""
from __future__ import annotations

import errno
import os
import struct

import pytest

PRESENT, EXCL, PFN_MASK = 1 << 63, 1 << 56, (1 << 55) - 1


def _sparse_pid(root) -> int:
    for line in (root / "damond/processes").read_text().splitlines():
        pid, comm, kind = line.split()
        if kind == "sparse-hotspot":
            return int(pid)
    raise AssertionError("no sparse-hotspot process")


def _big_vma(root, pid) -> tuple[int, int]:
    best = (0, 0)
    for line in (root / f"proc/{pid}/maps").read_text().splitlines():
        s, e = (int(x, 16) for x in line.split()[0].split("-"))
        if e - s > best[1] - best[0]:
            best = (s, e)
    return best


def test_pagemap_maps_populated_pages_to_emulated_ram_pfns(damond):
    pid = _sparse_pid(damond.root)
    start, end = _big_vma(damond.root, pid)
    iomem = (damond.root / "proc/iomem").read_text().splitlines()
    lo, hi = (int(x, 16) for x in iomem[0].split(" : ")[0].split("-"))
    assert iomem[0].endswith(" : System RAM") and lo == 0x40000000 and hi == lo + (16 << 30) - 1
    fd = os.open(damond.root / f"proc/{pid}/pagemap", os.O_RDONLY)
    try:
        n = 1024                                            # 4 MiB of the 8 GiB sparse VMA: populated
        buf = os.pread(fd, n * 8, (start >> 12) * 8)
        ents = struct.unpack(f"<{n}Q", buf)
        assert all(e & PRESENT and e & EXCL for e in ents)
        pfns = [e & PFN_MASK for e in ents]
        assert all(lo >> 12 <= p <= hi >> 12 for p in pfns)
        assert pfns[1] == pfns[0] + 1 and pfns[0] % 512 == 0     # a THP: contiguous, 2 MiB-aligned
        assert os.pread(fd, 8, 0) == b"\0" * 8                    # page 0: nothing mapped
        with pytest.raises(OSError) as e:
            os.pread(fd, 8, (start >> 12) * 8 + 4)
        assert e.value.errno == errno.EINVAL
    finally:
        os.close(fd)


def test_numa_maps_statm_meminfo_vmstat(damond):
    pid = _sparse_pid(damond.root)
    start, end = _big_vma(damond.root, pid)
    numa = (damond.root / f"proc/{pid}/numa_maps").read_text().splitlines()
    big = next(x for x in numa if x.startswith(f"{start:08x} default"))
    fields = dict(f.split("=") for f in big.split()[2:] if "=" in f)
    anon = int(fields["anon"])
    assert 0 < anon <= (end - start) >> 12 and fields["kernelpagesize_kB"] == "4"
    assert sum(int(v) for k, v in fields.items() if k[0] == "N" and k[1:].isdigit()) == anon
    assert any(x.endswith(" stack") or " stack " in x for x in numa)
    size, resident, *_ = (int(x) for x in (damond.root / f"proc/{pid}/statm").read_text().split())
    assert size >= (end - start) >> 12 and resident >= anon
    mem = {ln.split(":")[0]: ln.split()[1] for ln in (damond.root / "proc/meminfo").read_text().splitlines()}
    assert int(mem["MemTotal"]) == 16 << 20
    assert int(mem["MemFree"]) <= (16 << 20) - anon * 4           # the workload's pages are resident
    assert int(mem["AnonHugePages"]) > 0                            # THP=always: PMD-mapped folios
    vm = dict(ln.split() for ln in (damond.root / "proc/vmstat").read_text().splitlines())
    assert int(vm["nr_anon_transparent_hugepages"]) > 0
    assert int(vm["thp_fault_alloc"]) > 0
    line = (damond.root / "proc/meminfo").read_text().splitlines()[0]
    assert line == f"{'MemTotal:':<16}{16 << 20:>8} kB"
