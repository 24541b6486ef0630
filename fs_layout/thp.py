"""`/sys/kernel/mm/transparent_hugepage`: the THP controls as `mm/huge_memory.c` and
`mm/khugepaged.c` declare them, each bound to an attribute of the machine's
`ThpSettings` (`system.machine.thp`, docs/ARCHITECTURE.md "THP controls").

`bind` is the attribute path on `ThpSettings`; `{kb}` is filled per mTHP size.
Kinds: choice (`always [madvise] never`: the current word bracketed, writes matched
with sysfs_streq), `flag` (0/1: kstrtoul base 10, its errno, >1 EINVAL, as
single_hugepage_flag_store), `u32` (khugepaged's stores: kstrtouint base 10, every error
EINVAL; `lo`/`hi` bound the value, also EINVAL), ro numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

# mTHP sizes an arm64 kernel with 4K pages offers (orders 2..9): hugepages-<kb>kB
MTHP_SIZES_KB = (16, 32, 64, 128, 256, 512, 1024, 2048)

# per-size stats files (mm/huge_memory.c thp_stats_attrs), read from thp.stats[kb][name]
MTHP_STATS = (
    "anon_fault_alloc", "anon_fault_fallback", "anon_fault_fallback_charge", "zswpout",
    "swpin", "swpin_fallback", "swpin_fallback_charge", "swpout", "swpout_fallback",
    "shmem_alloc", "shmem_fallback", "shmem_fallback_charge", "split", "split_failed",
    "split_deferred", "nr_anon", "nr_anon_partially_mapped",
)


@dataclass(frozen=True)
class ThpFile:
    name: str          # relative to transparent_hugepage/
    kind: str          # choice | u32 | u64 | flag | ro
    bind: str          # ThpSettings attribute path ("khugepaged.pages_to_scan", "size_enabled[{kb}]")
    mode: int = 0o644
    choices: tuple = ()
    lo: int = 0
    hi: int = (1 << 32) - 1


ENABLED = ("always", "madvise", "never")
DEFRAG = ("always", "defer", "defer+madvise", "madvise", "never")
SHMEM_ENABLED = ("always", "within_size", "advise", "never", "deny", "force")
SIZE_ENABLED = ("always", "inherit", "madvise", "never")
SIZE_SHMEM_ENABLED = ("always", "inherit", "within_size", "advise", "never")
HPAGE_PMD_NR = 512

FILES: tuple[ThpFile, ...] = (
    ThpFile("enabled", "choice", "enabled", choices=ENABLED),
    ThpFile("defrag", "choice", "defrag", choices=DEFRAG),
    ThpFile("shmem_enabled", "choice", "shmem_enabled", choices=SHMEM_ENABLED),
    ThpFile("use_zero_page", "flag", "use_zero_page"),
    ThpFile("hpage_pmd_size", "ro", "hpage_pmd_size", mode=0o444),
    ThpFile("khugepaged/defrag", "flag", "khugepaged.defrag"),
    ThpFile("khugepaged/pages_to_scan", "u32", "khugepaged.pages_to_scan", lo=1),
    ThpFile("khugepaged/scan_sleep_millisecs", "u32", "khugepaged.scan_sleep_millisecs"),
    ThpFile("khugepaged/alloc_sleep_millisecs", "u32", "khugepaged.alloc_sleep_millisecs"),
    ThpFile("khugepaged/max_ptes_none", "u32", "khugepaged.max_ptes_none", hi=HPAGE_PMD_NR - 1),
    ThpFile("khugepaged/max_ptes_swap", "u32", "khugepaged.max_ptes_swap", hi=HPAGE_PMD_NR - 1),
    ThpFile("khugepaged/max_ptes_shared", "u32", "khugepaged.max_ptes_shared", hi=HPAGE_PMD_NR - 1),
    ThpFile("khugepaged/pages_collapsed", "ro", "khugepaged.pages_collapsed", mode=0o444),
    ThpFile("khugepaged/full_scans", "ro", "khugepaged.full_scans", mode=0o444),
) + tuple(
    ThpFile(f"hugepages-{kb}kB/enabled", "choice", f"size_enabled[{kb}]", choices=SIZE_ENABLED)
    for kb in MTHP_SIZES_KB
) + tuple(
    ThpFile(f"hugepages-{kb}kB/shmem_enabled", "choice", f"size_shmem_enabled[{kb}]", choices=SIZE_SHMEM_ENABLED)
    for kb in MTHP_SIZES_KB
) + tuple(
    ThpFile(f"hugepages-{kb}kB/stats/{s}", "ro", f"stats[{kb}][{s}]", mode=0o444)
    for kb in MTHP_SIZES_KB for s in MTHP_STATS
)
