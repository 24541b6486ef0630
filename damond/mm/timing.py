"""The timing model: what one page touch of a workload costs on the preset's hardware.

Owns the per-preset latencies and bandwidths of timing-and-designs-facts.md §1 (Kunpeng
920 from Chips and Cheese and lmbench; Skylake-SP and Zen 2 with the fact sheet's
assumed values) and turns "what a workload does per touch" (`Work`) plus the touched
set's shape (pages per sweep, TLB leaves it spans) into page touches per second:

    t_lat  = t_data + p_l1miss * c_l2tlb + p_walk * (c_l2tlb + c_walk0 + t_mem(leaf line))
    touch  = max(t_lat / MLP, ops / issue, lines * 64 B / BW_core if DRAM, p_walk * t_walk / walkers)
             (dependent accesses: t_lat + ops / issue; MLP is the demand MLP, or for a
             constant-stride sweep inside pages larger than its stride the prefetched
             stream's BW_core * DRAM latency / 64 B, since prefetchers stop at page boundaries)
    period = lines * touch + iter_ns / iter_touches + sleep_ns / sleep_every

A cyclic sweep over L leaves and n pages walks L times per sweep once L exceeds the L2
TLB (LRU thrash) and misses the L1 TLB L times when L exceeds it; a random stream misses
with probability 1 - C/L. The cache level holding the data is picked by the footprint of
the touched lines (64 B per touch line) plus the leaf-entry lines (8 entries per line).
The fact sheet's own caveat stands: +-30-50 % per access, +-2x per sweep.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

LINE = 64


@dataclass(frozen=True)
class Timing:
    """One preset's costs (cycles at `ghz` unless named _ns / bytes per second)."""
    ghz: float
    c_l2tlb: float          # an L1-TLB miss that hits the L2 TLB
    c_walk0: float          # fixed part of a walk (upper levels from the walk cache)
    walkers: int            # page walks in flight
    caches: tuple           # ((bytes, cycles), ...) L1, L2, L3 near, L3 far
    dram_ns: float
    bw_core: float          # bytes per second one core streams from DRAM
    mlp: float              # demand misses in flight
    issue: float = 2.0      # memory operations per cycle (2 x 128-bit L1 accesses on TSV110)

    @property
    def mlp_stream(self) -> float:
        """Lines in flight of a prefetched stream, by Little's law on the two sourced anchors
        (one core's STREAM bandwidth x unloaded DRAM latency / 64 B: 18 on Kunpeng 920)."""
        return max(self.mlp, self.bw_core * self.dram_ns * 1e-9 / LINE)

    def mem_ns(self, footprint: float) -> float:
        """Load-to-use latency of a line when `footprint` bytes of lines are in use."""
        for size, cyc in self.caches:
            if footprint <= size:
                return cyc / self.ghz
        return self.dram_ns

    def in_dram(self, footprint: float) -> bool:
        return footprint > self.caches[-1][0]


PRESETS: dict[str, Timing] = {
    # TSV110 @ 2.6 GHz: L1D 64 KiB 4 cyc, L2 512 KiB 10 cyc, L3 36 cyc (near slices, < ~4 MB)
    # rising to 97 cyc near capacity (32 MiB die), DRAM 96 ns, STREAM 1 thread ~12 GB/s
    "kunpeng920": Timing(2.6, 11, 20, 2, ((64 << 10, 4), (512 << 10, 10), (4 << 20, 36), (32 << 20, 97)),
                         96, 12e9, 10),
    # Skylake-SP: L2 1 MiB 14 cyc, L3 1.375 MiB/core 60 cyc (both unsourced), DRAM ~90 ns
    "x86-skylake": Timing(2.4, 9, 20, 2, ((32 << 10, 4), (1 << 20, 14), (22 << 20, 60)), 90, 12e9, 10),
    # Zen 2: L2 512 KiB 12 cyc, L3 16 MiB per CCX ~40 cyc, DRAM ~80 ns (BW unsourced)
    "x86-zen2": Timing(3.0, 7, 20, 2, ((32 << 10, 4), (512 << 10, 12), (16 << 20, 40)), 80, 20e9, 10),
}


ARCH_DEFAULT = {"arm64": "kunpeng920", "x86_64": "x86-skylake"}


@dataclass(frozen=True)
class NodeMemory:
    """What a NUMA node's memory costs next to the preset's local DRAM."""
    extra_ns: float = 0.0     # added load-to-use latency
    bw_frac: float = 1.0      # one core's streaming bandwidth, as a fraction of local DRAM's


# [machine] node_memory names one per node. "cxl": a CXL type-3 memory expander behind one
# host bridge, no switch. INFERRED: timing-and-designs-facts.md has no CXL figures; these
# follow published CXL measurements from memory (load-to-use latency roughly twice local
# DRAM, i.e. about +100-150 ns; one core's bandwidth about half), not a sourced number.
MEMORY_KINDS: dict[str, NodeMemory] = {
    "dram": NodeMemory(),
    "cxl": NodeMemory(extra_ns=120.0, bw_frac=0.5),
}


def on_nodes(t: Timing, kinds: list[NodeMemory], frac: tuple) -> Timing:
    """The preset's costs for data spread over nodes (`frac`: share of the pages per node):
    latency mixed linearly, bandwidth harmonically (time per byte mixed)."""
    lat = sum(f * (t.dram_ns + k.extra_ns) for f, k in zip(frac, kinds))
    per_byte = sum(f / (t.bw_core * k.bw_frac) for f, k in zip(frac, kinds))
    if lat <= 0 or per_byte <= 0:
        return t
    return replace(t, dram_ns=lat, bw_core=1.0 / per_byte)


def for_preset(name: str, arch: str | None = None) -> tuple[str, Timing]:
    """(whose figures, the costs) for a [machine] preset: its own; a variant named after a
    known one (e.g. a "kunpeng920-rfc" TLB profile) has its base's; any other preset those of
    its architecture's reference machine (the caller says so in its log)."""
    if name in PRESETS:
        return name, PRESETS[name]
    base = max((k for k in PRESETS if name.startswith(k)), key=len, default=None)
    if base is None:
        base = ARCH_DEFAULT.get(arch or "")
    if base is None:
        raise ValueError(f"no timing figures for machine preset {name!r} (known: {', '.join(PRESETS)})")
    return base, PRESETS[base]


@dataclass(frozen=True)
class Work:
    """What a workload does per page touch (the RFC's loops, timing-and-designs-facts.md §1.4)."""
    ops: int = 1              # memory operations per touch (loads and stores to the touched lines)
    lines: int = 1            # distinct 64 B lines per page touch
    iter_touches: int = 0     # page touches per loop iteration (0: no per-iteration overhead)
    iter_ns: float = 0.0      # per-iteration overhead (e.g. hot_workload's time())
    sleep_every: int = 0      # page touches between sleeps
    sleep_ns: float = 0.0     # each sleep, timer slack included
    share: float = 1.0        # fraction of the CPU this stream gets (masim's pattern weights)
    dependent: bool = False   # pointer chase: no memory-level parallelism


def touch_ns(t: Timing, l1_entries: int, l2_entries: int, n: int, nr_leaves: int, work: Work,
             cyclic: bool = True) -> float:
    """Time per page touch of a stream of `n` pages spanning `nr_leaves` TLB leaves."""
    n, leaves = max(int(n), 1), max(int(nr_leaves), 1)
    if cyclic:
        p_l1 = min(leaves / n, 1.0) if leaves > l1_entries else 0.0
        p_walk = min(leaves / n, 1.0) if leaves > l2_entries else 0.0
    else:
        p_l1 = 1.0 - l1_entries / leaves if leaves > l1_entries else 0.0
        p_walk = 1.0 - l2_entries / leaves if leaves > l2_entries else 0.0
    data = float(n) * work.lines * LINE
    leaf_lines = (leaves / 8.0) * LINE if p_walk else 0.0
    t_data = t.mem_ns(data + leaf_lines)
    t_walk = (t.c_l2tlb + t.c_walk0) / t.ghz + t.mem_ns(leaf_lines + data)
    t_lat = t_data + p_l1 * t.c_l2tlb / t.ghz + p_walk * t_walk
    t_ops = work.ops / t.issue / t.ghz
    # a constant-stride sweep inside pages bigger than its stride (several touches per leaf, e.g.
    # one line per 4 KB of a THP) is followed by the hardware prefetcher, which stops at page
    # (leaf) boundaries: such a stream keeps the STREAM figure's lines in flight, others the demand MLP
    mlp = t.mlp_stream if cyclic and leaves < n else t.mlp
    if work.dependent:
        per_line = t_lat + t_ops / work.lines
    else:
        per_line = max(t_lat / mlp, t_ops / work.lines, p_walk * t_walk / t.walkers,
                       LINE / t.bw_core * 1e9 if t.in_dram(data) else 0.0)
    per = per_line * work.lines
    if work.iter_touches:
        per += work.iter_ns / work.iter_touches
    if work.sleep_every:
        per += work.sleep_ns / work.sleep_every
    return per


def touch_rate(t: Timing, l1_entries: int, l2_entries: int, n: int, nr_leaves: int, work: Work,
               cyclic: bool = True) -> float:
    """Page touches per second of the stream (its CPU share included)."""
    return work.share * 1e9 / touch_ns(t, l1_entries, l2_entries, n, nr_leaves, work, cyclic)
