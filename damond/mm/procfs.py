"""/proc/<pid>/{maps,smaps,smaps_rollup} text for emulated processes, in the kernel's formats.

Mirrors fs/proc/task_mmu.c: show_map_vma (the name padded to column 73),
show_smap/__show_smap ("%-16s%8lu kB" lines: Rss, Pss, AnonHugePages, ShmemPmdMapped,
...), THPeligible, VmFlags, and the [rollup] header of smaps_rollup.
"""
from __future__ import annotations

import numpy as np

from damond.mm import phys as P
from damond.mm.phys import BLOCK_PAGES

FIELDS = ("Rss", "Pss", "Pss_Dirty", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty",
          "Referenced", "Anonymous", "KSM", "LazyFree", "AnonHugePages", "ShmemPmdMapped", "FilePmdMapped",
          "Shared_Hugetlb", "Private_Hugetlb", "Swap", "SwapPss", "Locked")
ROLLUP_EXTRA = ("Pss_Anon", "Pss_File", "Pss_Shmem")


def _header(start: int, end: int, perms: str, name: str, dev: str = "00:00", ino: int = 0) -> str:
    s = f"{start:08x}-{end:08x} {perms} 00000000 {dev} {ino} "
    if name:
        s = s.ljust(73) + name
    return s + "\n"


def _dev(v) -> tuple[str, int]:
    if v.shmem:
        return "00:1a", 1000 + v.uid
    if not v.anon:
        return "fd:00", 131000 + v.uid
    return "00:00", 0


def vma_stats(m, proc, v) -> dict[str, int]:
    """Bytes per smaps field for one VMA."""
    out = dict.fromkeys(FIELDS + ROLLUP_EXTRA, 0)
    blocks = proc.vma_blocks(v)
    blocks = blocks[blocks >= 0]
    if not len(blocks):
        return out
    rows = m.phys.flags.reshape(-1, BLOCK_PAGES)[blocks]
    vstart = (m.phys.blk_vchunk[blocks] << 21)[:, None] + (np.arange(BLOCK_PAGES) << 12)
    inside = (vstart >= v.start) & (vstart < v.end)
    pres = ((rows & P.PRESENT) != 0) & inside
    rss = int(pres.sum()) * 4096
    pmd = ((rows[:, 0] & P.PMD) != 0) & pres[:, 0]
    pmd_young = pmd & ((rows[:, 0] & P.AF) != 0)
    pte = pres & ((rows & P.PMD) == 0)
    ref = int((pte & ((rows & P.AF) != 0)).sum()) * 4096 + int(pmd_young.sum()) * (2 << 20)
    out.update(Rss=rss, Pss=rss, Pss_Dirty=rss if v.anon or v.shmem else 0,
               Private_Dirty=rss if (v.anon or v.shmem) else 0, Private_Clean=0 if (v.anon or v.shmem) else rss,
               Referenced=min(ref, rss), Swap=int((((rows & P.SWAP) != 0) & inside).sum()) * 4096)
    if v.anon:
        out.update(Anonymous=rss, AnonHugePages=int(pmd.sum()) * (2 << 20), Pss_Anon=rss)
    elif v.shmem:
        out.update(ShmemPmdMapped=int(pmd.sum()) * (2 << 20), Pss_Shmem=rss)
    else:
        out.update(Pss_File=rss)
    return out


def _vmflags(m, v) -> str:
    f = ["rd"] + (["wr"] if "w" in v.perms else []) + (["ex"] if "x" in v.perms else [])
    f += (["sh"] if v.shmem else []) + ["mr"] + (["mw"] if "w" in v.perms or v.shmem else []) + ["me"]
    f += ["ms"] if v.shmem else []
    f += ["gd"] if v.name == "[stack]" else []
    f += ["ac"] if v.anon else []
    f += {"hugepage": ["hg"], "nohugepage": ["nh"]}.get(v.hugepage_hint or "", [])
    return "VmFlags: " + "".join(x + " " for x in f) + "\n"


def _eligible(m, v) -> int:
    if v.anon:
        return int(m.thp.pmd_allowed(v.hugepage_hint) and v.end - v.start >= (2 << 20))
    if v.shmem:
        return int(m.thp.shmem_pmd(v.hugepage_hint, v.huge))
    return 0


def maps(m, proc) -> str:
    return "".join(_header(v.start, v.end, v.perms, v.name, *_dev(v)) for v in proc.vmas())


def smaps(m, proc) -> str:
    out = []
    for v in proc.vmas():
        st = vma_stats(m, proc, v)
        out.append(_header(v.start, v.end, v.perms, v.name, *_dev(v)))
        out.append(f"{'Size:':<16}{(v.end - v.start) >> 10:>8} kB\n")
        out.append(f"{'KernelPageSize:':<16}{4:>8} kB\n{'MMUPageSize:':<16}{4:>8} kB\n")
        out.extend(f"{k + ':':<16}{st[k] >> 10:>8} kB\n" for k in FIELDS)
        out.append(f"{'THPeligible:':<16}{_eligible(m, v):>8}\n")
        out.append(_vmflags(m, v))
    return "".join(out)


def smaps_rollup(m, proc) -> str:
    vmas = proc.vmas()
    if not vmas:
        return ""
    tot = dict.fromkeys(FIELDS + ROLLUP_EXTRA, 0)
    for v in vmas:
        for k, x in vma_stats(m, proc, v).items():
            tot[k] += x
    order = ("Rss", "Pss", "Pss_Dirty", "Pss_Anon", "Pss_File", "Pss_Shmem") + FIELDS[3:]
    out = [_header(vmas[0].start, vmas[-1].end, "---p", "[rollup]")]
    out.extend(f"{k + ':':<16}{tot[k] >> 10:>8} kB\n" for k in order)
    return "".join(out)
