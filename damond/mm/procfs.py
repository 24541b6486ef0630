"""/proc texts of the emulated machine, in the kernel's formats: per process maps, smaps,
smaps_rollup, numa_maps, statm and the binary pagemap; machine-wide iomem, meminfo, vmstat.

Mirrors fs/proc/task_mmu.c: show_map_vma (the name padded to column 73),
show_smap/__show_smap ("%-16s%8lu kB" lines: Rss, Pss, AnonHugePages, ShmemPmdMapped,
...), THPeligible, VmFlags, the [rollup] header of smaps_rollup, show_numa_map,
pagemap_read (one u64 per page: PFN bits 0-54, exclusive 56, file/shared 61, swapped 62,
present 63; the PFN only for a reader with CAP_SYS_ADMIN); fs/proc/array.c proc_pid_statm;
kernel/resource.c r_show (/proc/iomem, inclusive ends, zeros for non-root);
fs/proc/meminfo.c show_val_kb; mm/vmstat.c ("%s %lu"). Every text lists only what the
machine models (meminfo has no Slab or Swap lines: the machine has neither).
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


def _whole(m, v, blocks: np.ndarray) -> np.ndarray:
    """Blocks whose whole 2 MB chunk lies inside VMA v."""
    vstart = m.phys.blk_vchunk[blocks] << 21
    return (vstart >= v.start) & (vstart + (2 << 20) <= v.end)


def _edge_rows(m, v, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flag rows, page-inside-v mask) of the few blocks a VMA boundary cuts."""
    rows = m.phys.flags.rows(blocks)
    vstart = (m.phys.blk_vchunk[blocks] << 21)[:, None] + (np.arange(BLOCK_PAGES) << 12)
    return rows, (vstart >= v.start) & (vstart < v.end)


def _page_counts(m, v, blocks: np.ndarray, mask: int, value: int) -> np.ndarray:
    """Per block: pages inside v whose flags & mask == value (whole blocks row by row)."""
    out = np.zeros(len(blocks), np.int64)
    whole = _whole(m, v, blocks)
    if whole.any():
        out[whole] = m.phys.flags.count_rows(blocks[whole], mask, value)
    if not whole.all():
        rows, inside = _edge_rows(m, v, blocks[~whole])
        out[~whole] = (((rows & mask) == value) & inside).sum(axis=1)
    return out


def vma_stats(m, proc, v) -> dict[str, int]:
    """Bytes per smaps field for one VMA."""
    out = dict.fromkeys(FIELDS + ROLLUP_EXTRA, 0)
    blocks = proc.vma_blocks(v)
    blocks = blocks[blocks >= 0]
    if not len(blocks):
        return out
    rss = int(_page_counts(m, v, blocks, P.PRESENT, P.PRESENT).sum()) * 4096
    head = m.phys.flags[blocks << 9]
    vhead = m.phys.blk_vchunk[blocks] << 21
    pmd = ((head & (P.PMD | P.PRESENT)) == (P.PMD | P.PRESENT)) & (vhead >= v.start) & (vhead < v.end)
    pmd_young = pmd & ((head & P.AF) != 0)
    pte_young = int(_page_counts(m, v, blocks, P.PRESENT | P.PMD | P.AF, P.PRESENT | P.AF).sum())
    ref = pte_young * 4096 + int(pmd_young.sum()) * (2 << 20)
    swap = int(_page_counts(m, v, blocks, P.SWAP, P.SWAP).sum())
    out.update(Rss=rss, Pss=rss, Pss_Dirty=rss if v.anon or v.shmem else 0,
               Private_Dirty=rss if (v.anon or v.shmem) else 0, Private_Clean=0 if (v.anon or v.shmem) else rss,
               Referenced=min(ref, rss), Swap=swap * 4096)
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


# ---- per process: numa_maps, statm, pagemap

def numa_maps(m, proc) -> str:
    """show_numa_map(): `start policy [file=|heap|stack] anon= dirty= mapped= active= N<nid>= kernelpagesize_kB=`."""
    out = []
    for v in proc.vmas():
        line = f"{v.start:08x} default"
        if not v.anon or v.shmem:
            line += f" file={v.name}" if v.name else ""
        elif v.name == "[heap]":
            line += " heap"
        elif v.name == "[stack]":
            line += " stack"
        blocks = proc.vma_blocks(v)
        bound = blocks >= 0
        if bound.any():
            blks = blocks[bound]
            pres = _page_counts(m, v, blks, P.PRESENT, P.PRESENT)
            pages = int(pres.sum())
            if pages:
                anon = pages if v.anon else 0
                dirty = pages if (v.anon or v.shmem) else 0
                active = int(_page_counts(m, v, blks, P.PRESENT | P.ACTIVE, P.PRESENT | P.ACTIVE).sum())
                line += f" anon={anon}" if anon else ""
                line += f" dirty={dirty}" if dirty else ""
                line += f" mapped={pages}" if pages != anon and pages != dirty else ""
                line += f" active={active}" if active < pages else ""
                per_node = np.bincount(m.phys.blk_node[blks].astype(np.int64), weights=pres,
                                       minlength=m.phys.numa_nodes)
                line += "".join(f" N{n}={int(c)}" for n, c in enumerate(per_node) if c)
                line += " kernelpagesize_kB=4"
        out.append(line + "\n")
    return "".join(out)


def statm(m, proc) -> str:
    """proc_pid_statm(): size resident shared text lib data dt, in pages."""
    size = resident = shared = text = data = 0
    for v in proc.vmas():
        pages = (v.end - v.start) >> 12
        size += pages
        rss = vma_stats(m, proc, v)["Rss"] >> 12
        resident += rss
        if not v.anon or v.shmem:
            shared += rss
        if "x" in v.perms and not v.anon:
            text += pages if not text else 0
        elif "w" in v.perms and not v.shmem:
            data += pages
    return f"{size} {resident} {shared} {text} 0 {data} 0\n"


PM_PRESENT, PM_SWAP, PM_FILE, PM_EXCLUSIVE = 1 << 63, 1 << 62, 1 << 61, 1 << 56
PM_PFN_MASK = (1 << 55) - 1


def pagemap(m, proc, offset: int, size: int, show_pfn: bool) -> bytes:
    """pagemap_read(): the u64 entries of the pages [offset/8, (offset+size)/8). Raises
    ValueError for a misaligned offset or size (the caller returns EINVAL)."""
    if offset % 8 or size % 8:
        raise ValueError("pagemap reads are u64-aligned")
    n = size // 8
    if not n:
        return b""
    first = offset // 8
    addrs = (np.arange(first, first + n, dtype=np.uint64) << np.uint64(12))
    ok, vi, pidx = proc.translate(addrs)
    out = np.zeros(n, np.uint64)
    if ok.any():
        fl = m.phys.flags[pidx[ok]]
        pres = (fl & P.PRESENT) != 0
        swp = (fl & P.SWAP) != 0
        vmas = proc.vmas()
        file_bit = np.array([(not v.anon) or v.shmem for v in vmas], bool)[vi[ok]]
        e = np.zeros(int(ok.sum()), np.uint64)
        e[pres] |= np.uint64(PM_PRESENT)
        e[pres & ~file_bit] |= np.uint64(PM_EXCLUSIVE)
        e[(pres | swp) & file_bit] |= np.uint64(PM_FILE)
        e[swp & ~pres] |= np.uint64(PM_SWAP)
        if show_pfn:
            pfn = (pidx[ok].astype(np.uint64) + np.uint64(m.phys.base_pfn)) & np.uint64(PM_PFN_MASK)
            e[pres] |= pfn[pres]
        out[ok] = e
    return out.astype("<u8").tobytes()


# ---- machine-wide: iomem, meminfo, vmstat

def iomem(m, show_addrs: bool) -> str:
    """r_show() of the System RAM resources: `%08llx-%08llx : System RAM`, end inclusive."""
    out = []
    for start, end in m.ram_ranges():
        s, e = (start, end - 1) if show_addrs else (0, 0)
        out.append(f"{s:08x}-{e:08x} : System RAM\n")
    return "".join(out)


def _kb(label: str, nbytes: int) -> str:
    return f"{label + ':':<16}{nbytes >> 10:>8} kB\n"


def meminfo(m) -> str:
    """show_val_kb() lines for what the machine models: totals, LRU, anon/shmem and THP."""
    ph = m.phys
    fl = ph.flags
    total = ph.nr_pages * 4096
    used = fl.count(P.PRESENT, P.PRESENT) * 4096
    anon = shm = file = anon_thp = shm_thp = 0
    for proc in m.processes():
        for v in proc.vmas():
            st = vma_stats(m, proc, v)
            if v.anon:
                anon += st["Rss"]
                anon_thp += st["AnonHugePages"]
            elif v.shmem:
                shm += st["Rss"]
                shm_thp += st["ShmemPmdMapped"]
            else:
                file += st["Rss"]
    active = fl.count(P.PRESENT | P.ACTIVE, P.PRESENT | P.ACTIVE) * 4096
    free = total - used
    cached = file + shm
    lines = [("MemTotal", total), ("MemFree", free), ("MemAvailable", free + file), ("Buffers", 0),
             ("Cached", cached), ("Active", active), ("Inactive", used - active), ("AnonPages", anon),
             ("Mapped", file + shm), ("Shmem", shm), ("AnonHugePages", anon_thp), ("ShmemHugePages", shm_thp),
             ("ShmemPmdMapped", shm_thp), ("FileHugePages", 0), ("FilePmdMapped", 0)]
    return "".join(_kb(k, v) for k, v in lines) + _kb("Hugepagesize", 2 << 20)


VMSTAT_ORDER = ("nr_anon_transparent_hugepages", "thp_migration_success", "thp_migration_fail",
                "thp_migration_split", "thp_fault_alloc", "thp_fault_fallback", "thp_fault_fallback_charge",
                "thp_collapse_alloc", "thp_collapse_alloc_failed", "thp_file_alloc", "thp_file_fallback",
                "thp_file_fallback_charge", "thp_file_mapped", "thp_split_page", "thp_split_page_failed",
                "thp_deferred_split_page", "thp_underused_split_page", "thp_split_pmd")


def vmstat(m) -> str:
    """mm/vmstat.c: `name value` lines: free pages, nr_anon_transparent_hugepages and the
    thp_* event counters the machine counts, in the kernel's order."""
    ph = m.phys
    nr_thp = sum(vma_stats(m, p, v)["AnonHugePages"] for p in m.processes() for v in p.vmas() if v.anon) >> 21
    vals = {"nr_free_pages": ph.nr_pages - ph.present_pages(), "nr_anon_transparent_hugepages": nr_thp}
    vals.update(m.thp.vmstat)
    out = [f"nr_free_pages {vals['nr_free_pages']}\n"]
    out += [f"{k} {vals[k]}\n" for k in VMSTAT_ORDER if k in vals]
    return "".join(out)
