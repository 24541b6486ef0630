"""THP policy state: the `transparent_hugepage` controls, khugepaged tunables and counters.

Owns the values behind /sys/kernel/mm/transparent_hugepage (global and per-size
`enabled`, `defrag`, `shmem_enabled`, `use_zero_page`, `hpage_pmd_size`, khugepaged/*,
hugepages-<N>kB/stats/*) and the fault-time order choice of
`thp_vma_allowable_orders()` (include/linux/huge_mm.h, mm/huge_memory.c). Setters
validate and raise ValueError (the front maps it to EINVAL). The machine updates the
counters; nothing here touches page tables.
"""
from __future__ import annotations

PAGE_SHIFT = 12
PMD_ORDER = 9
HPAGE_PMD_SIZE = 2 << 20
ANON_ORDERS = tuple(range(2, PMD_ORDER + 1))           # THP_ORDERS_ALL_ANON on arm64 4K
SIZES_KB = tuple(4 << o for o in ANON_ORDERS)          # 16 .. 2048
ENABLED = ("always", "madvise", "never")
SIZE_ENABLED = ("always", "inherit", "madvise", "never")
DEFRAG = ("always", "defer", "defer+madvise", "madvise", "never")
SHMEM_ENABLED = ("always", "within_size", "advise", "never", "deny", "force")
SIZE_SHMEM_ENABLED = ("always", "inherit", "within_size", "advise", "never")
STAT_NAMES = ("anon_fault_alloc", "anon_fault_fallback", "anon_fault_fallback_charge", "zswpout",
              "swpin", "swpin_fallback", "swpin_fallback_charge", "swpout", "swpout_fallback",
              "shmem_alloc", "shmem_fallback", "shmem_fallback_charge", "split", "split_failed",
              "split_deferred", "nr_anon", "nr_anon_partially_mapped")
VMSTAT_NAMES = ("thp_fault_alloc", "thp_fault_fallback", "thp_collapse_alloc", "thp_collapse_alloc_failed",
                "thp_split_page", "thp_split_page_failed", "thp_deferred_split_page", "thp_split_pmd",
                "thp_underused_split_page", "thp_file_alloc", "thp_file_mapped")


def order_of_kb(kb: int) -> int:
    return (kb // 4).bit_length() - 1


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(allowed)}")
    return value


def _uint(name: str, value, lo: int = 0, hi: int = (1 << 32) - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}]")
    return value


class KhugepagedSettings:
    """transparent_hugepage/khugepaged/*: defaults from mm/khugepaged.c."""

    def __init__(self):
        self.enabled = True            # damond's switch: run the khugepaged thread at all
        self._v = dict(defrag=1, pages_to_scan=4096, scan_sleep_millisecs=10000,
                       alloc_sleep_millisecs=60000, max_ptes_none=511, max_ptes_swap=64, max_ptes_shared=256,
                       split_backoff_scans=0)
        self.pages_collapsed = 0
        self.full_scans = 0
        self.recollapses = 0           # damond's: collapses of a PMD range DAMOS had split (ping-pong)

    def __getattr__(self, name):
        v = self.__dict__.get("_v")
        if v is not None and name in v:
            return v[name]
        raise AttributeError(name)

    def __setattr__(self, name, value):
        if name in ("defrag",):
            value = int(value) if isinstance(value, bool) else value
            self._v[name] = _uint(name, value, 0, 1)
        elif name == "pages_to_scan":
            self._v[name] = _uint(name, value, 1)
        elif name in ("scan_sleep_millisecs", "alloc_sleep_millisecs", "split_backoff_scans"):
            self._v[name] = _uint(name, value)
        elif name in ("max_ptes_none", "max_ptes_swap", "max_ptes_shared"):
            self._v[name] = _uint(name, value, 0, 511)
        else:
            object.__setattr__(self, name, value)


class ThpSettings:
    """transparent_hugepage/*. `size_enabled`/`size_shmem_enabled` are keyed by size in kB."""

    hpage_pmd_size = HPAGE_PMD_SIZE

    def __init__(self):
        self._enabled = "always"
        self._defrag = "madvise"
        self._shmem_enabled = "never"
        self._use_zero_page = 1
        self.size_enabled: dict[int, str] = {kb: ("inherit" if kb == 2048 else "never") for kb in SIZES_KB}
        self.size_shmem_enabled: dict[int, str] = {kb: ("inherit" if kb == 2048 else "never") for kb in SIZES_KB}
        self.khugepaged = KhugepagedSettings()
        self.stats: dict[int, dict[str, int]] = {kb: dict.fromkeys(STAT_NAMES, 0) for kb in SIZES_KB}
        self.vmstat: dict[str, int] = dict.fromkeys(VMSTAT_NAMES, 0)

    enabled = property(lambda s: s._enabled, lambda s, v: setattr(s, "_enabled", _choice("enabled", v, ENABLED)))
    defrag = property(lambda s: s._defrag, lambda s, v: setattr(s, "_defrag", _choice("defrag", v, DEFRAG)))
    shmem_enabled = property(lambda s: s._shmem_enabled,
                             lambda s, v: setattr(s, "_shmem_enabled", _choice("shmem_enabled", v, SHMEM_ENABLED)))

    @property
    def use_zero_page(self) -> int:
        return self._use_zero_page

    @use_zero_page.setter
    def use_zero_page(self, v) -> None:
        self._use_zero_page = _uint("use_zero_page", int(v) if isinstance(v, bool) else v, 0, 1)

    def set_size_enabled(self, kb: int, value: str) -> None:
        if kb not in self.size_enabled:
            raise ValueError(f"no hugepages-{kb}kB size")
        self.size_enabled[kb] = _choice(f"hugepages-{kb}kB/enabled", value, SIZE_ENABLED)

    def set_size_shmem_enabled(self, kb: int, value: str) -> None:
        if kb not in self.size_shmem_enabled:
            raise ValueError(f"no hugepages-{kb}kB size")
        self.size_shmem_enabled[kb] = _choice(f"hugepages-{kb}kB/shmem_enabled", value, SIZE_SHMEM_ENABLED)

    # --- policy -------------------------------------------------------------------------
    def anon_orders(self, hint: str | None) -> list[int]:
        """Orders a fault in an anon VMA may allocate, largest first (thp_vma_allowable_orders)."""
        if hint == "nohugepage":
            return []
        out = []
        for kb in SIZES_KB:
            mode = self.size_enabled[kb]
            if mode == "inherit":
                mode = self._enabled
            if mode == "always" or (mode == "madvise" and hint == "hugepage"):
                out.append(order_of_kb(kb))
        return sorted(out, reverse=True)

    def pmd_allowed(self, hint: str | None) -> bool:
        """PMD-order THP allowed in the VMA (khugepaged's hugepage_vma_check for anon)."""
        return PMD_ORDER in self.anon_orders(hint)

    def shmem_pmd(self, hint: str | None, huge: str | None) -> bool:
        """A shmem fault gets a PMD folio (shmem_allowable_huge_orders): the global `deny`/
        `force` override everything; a tmpfs file (`huge` = its mount's huge= option) follows
        its mount; anonymous shmem follows hugepages-2048kB/shmem_enabled, whose `inherit`
        means the global shmem_enabled."""
        if self._shmem_enabled in ("deny", "force"):
            return self._shmem_enabled == "force"
        if huge is not None:
            mode = huge
        else:
            mode = self.size_shmem_enabled[2048]
            if mode == "inherit":
                mode = self._shmem_enabled
        return mode in ("always", "within_size") or (mode == "advise" and hint == "hugepage")

    def count(self, order: int, stat: str, n: int = 1) -> None:
        if 2 <= order <= PMD_ORDER:
            self.stats[4 << order][stat] += n
