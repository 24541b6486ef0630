"""Validation of the machine's config sections: [machine], [machine.tlb], [thp], [khugepaged], [[workload]].

Owns turning TOML values into `MachineSpec`, `TlbConfig` and a configured `ThpSettings`,
refusing unknown keys and bad values with `config.error(key, problem)` so the message is
"FILE:LINE: problem" (for [[workload]] tables, the line inside the right table).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from damond.config import Config, parse_size
from damond.errors import ConfigError
from damond.mm.thp import SIZES_KB, ThpSettings
from damond.mm.timing import MEMORY_KINDS
from damond.mm.tlb import PRESETS, TlbConfig
from damond.mm.workload import SpecError, check_spec

MACHINE_KEYS = {"preset", "memory", "nr_cpus", "numa_nodes", "node_memory", "access_rate", "mem_bandwidth", "memcgs",
                "tlb"}
TLB_KEYS = {"model", "flush_on_mkold", "l1_entries", "l1_assoc", "l2_entries", "l2_assoc", "contpte_entries", "hw_af"}
THP_KEYS = {"enabled", "defrag", "shmem_enabled", "use_zero_page", "size_enabled", "size_shmem_enabled"}
# What the machine model can hold on a modest host (the development box has 24 GiB):
# physical memory costs ~40 B per 2 MiB block (rmap, free lists, the per-block page state
# of pagebytes.py) plus 1 KiB per block that is not one folio (split or 4 KiB pages):
# 4 TiB is ~80 MiB when THP-mapped, 2 GiB at most. CPUs: the kernel's arm64 NR_CPUS range
# ends at 4096. The exact TLB model keeps one LRU dict per set per CPU: at most 1M sets.
MAX_MEMORY = 4 << 40
MAX_CPUS = 4096
MAX_TLB_ENTRIES = 1 << 16
MAX_EXACT_TLB_SETS = 1 << 20
KHUGEPAGED_KEYS = {"enabled", "defrag", "pages_to_scan", "scan_sleep_millisecs", "alloc_sleep_millisecs",
                   "max_ptes_none", "max_ptes_swap", "max_ptes_shared", "split_backoff_scans"}


@dataclass
class MachineSpec:
    preset: str = "kunpeng920"
    memory: int = 16 << 30
    nr_cpus: int = 4
    numa_nodes: int = 1
    node_memory: list[str] = field(default_factory=list)   # timing.MEMORY_KINDS per node; [] all "dram"
    access_rate: float | None = None  # fixed page touches per second per process; None: timing model
    mem_bandwidth: float = 10e9       # bytes per second (memset-like sweeps)
    memcgs: list[str] = field(default_factory=lambda: ["/"])
    tlb: TlbConfig = field(default_factory=TlbConfig)
    workloads: list[dict] = field(default_factory=list)
    base_dir: Path | None = None


def _unknown(config: Config, sec: dict, known: set, where: str) -> None:
    for k in sec:
        if k not in known:
            raise config.error(f"{where}.{k}", f"unknown key '{k}' in [{where}] (known: {', '.join(sorted(known))})")


def _posint(config: Config, key: str, v, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise config.error(key, f"{key.split('.')[-1]} must be an integer >= {lo}")
    return v


def workload_line(config: Config, index: int, key: str | None) -> int | None:
    """Line of `key` inside the index-th [[workload]] table (or of its header)."""
    n, header = -1, None
    for no, line in enumerate(config.text.splitlines(), 1):
        s = line.strip()
        if s.startswith("["):
            if re.match(r"\[\[\s*workload\s*\]\]", s):
                n += 1
                if n == index:
                    header = no
                    continue
            if header is not None:
                break
            continue
        if header is not None and key and re.match(rf"{re.escape(key)}\s*=", s):
            return no
    return header


def parse(config: Config) -> MachineSpec:
    m = MachineSpec()
    sec = config.section("machine")
    _unknown(config, sec, MACHINE_KEYS, "machine")
    preset = sec.get("preset", m.preset)
    if preset not in PRESETS:
        raise config.error("machine.preset", f"preset {preset!r} is not one of {', '.join(PRESETS)}")
    m.preset = preset
    try:
        m.memory = parse_size(sec.get("memory", m.memory), "memory")
        bw = sec.get("mem_bandwidth", int(m.mem_bandwidth))
        m.mem_bandwidth = float(parse_size(bw, "mem_bandwidth"))
    except ValueError as e:
        key = "machine.memory" if "memory" in str(e) else "machine.mem_bandwidth"
        raise config.error(key, str(e)) from None
    if m.memory < (4 << 20) or m.memory % (2 << 20):
        raise config.error("machine.memory", "memory must be a multiple of 2M and at least 4M")
    if m.memory > MAX_MEMORY:
        raise config.error("machine.memory", f"memory {m.memory} exceeds the limit of {MAX_MEMORY} (4T): "
                           "damond keeps up to 2 bytes of state per emulated 4K page")
    m.nr_cpus = _posint(config, "machine.nr_cpus", sec.get("nr_cpus", m.nr_cpus))
    if m.nr_cpus > MAX_CPUS:
        raise config.error("machine.nr_cpus", f"nr_cpus {m.nr_cpus} exceeds the limit of {MAX_CPUS} (arm64 NR_CPUS)")
    m.numa_nodes = _posint(config, "machine.numa_nodes", sec.get("numa_nodes", m.numa_nodes))
    if m.numa_nodes > 64 or (m.memory >> 21) < m.numa_nodes:
        raise config.error("machine.numa_nodes", "numa_nodes must be <= 64 and leave each node at least 2M")
    kinds = sec.get("node_memory", ["dram"] * m.numa_nodes)
    if (not isinstance(kinds, list) or len(kinds) != m.numa_nodes
            or not all(isinstance(k, str) and k in MEMORY_KINDS for k in kinds)):
        raise config.error("machine.node_memory", f"node_memory must list one of {', '.join(MEMORY_KINDS)} "
                           f"per node ({m.numa_nodes})")
    m.node_memory = kinds
    if "access_rate" in sec:
        rate = sec["access_rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0:
            raise config.error("machine.access_rate",
                               "access_rate must be a positive number (page touches per second)")
        m.access_rate = float(rate)
    memcgs = sec.get("memcgs", [])
    if not isinstance(memcgs, list) or not all(isinstance(x, str) and x.startswith("/") for x in memcgs):
        raise config.error("machine.memcgs", "memcgs must be a list of paths starting with '/'")
    m.memcgs = ["/"] + [x.rstrip("/") for x in memcgs if x.rstrip("/")]
    tsec = sec.get("tlb", {})
    if not isinstance(tsec, dict):
        raise config.error("machine.tlb", "[machine.tlb] must be a table")
    _unknown(config, tsec, TLB_KEYS, "machine.tlb")
    for b in ("flush_on_mkold", "hw_af"):
        if b in tsec and not isinstance(tsec[b], bool):
            raise config.error(f"machine.tlb.{b}", f"{b} must be true or false")
    for k in ("l1_entries", "l2_entries"):
        v = tsec.get(k)
        if isinstance(v, int) and v > MAX_TLB_ENTRIES:
            raise config.error(f"machine.tlb.{k}", f"{k} {v} exceeds the limit of {MAX_TLB_ENTRIES}")
    tlb = TlbConfig.preset(preset, **tsec)
    problem = tlb.validate()
    if problem:
        key = next((k for k in tsec if k in problem), "model")
        raise config.error(f"machine.tlb.{key}", problem)
    if tlb.model == "exact":
        sets = sum(e // (a or e) for e, a in ((tlb.l1_entries, tlb.l1_assoc), (tlb.l2_entries, tlb.l2_assoc)))
        if sets * m.nr_cpus > MAX_EXACT_TLB_SETS:
            raise config.error("machine.tlb.model", f"the exact TLB model needs {sets} sets x {m.nr_cpus} CPUs, "
                               f"over the limit of {MAX_EXACT_TLB_SETS} sets")
    m.tlb = tlb
    m.base_dir = Path(config.path).parent if not config.path.startswith("<") else None
    wl = config.data.get("workload", [])
    if not isinstance(wl, list):
        raise config.error("workload", "workloads must be [[workload]] tables")
    total = 0
    for i, spec in enumerate(wl):
        try:
            check_spec(spec)
        except SpecError as e:
            raise ConfigError(config.path, e.problem, workload_line(config, i, e.key)) from None
        total += _check_size(config, i, spec, m.memory, total)
        cg = (spec.get("memcg") or "/").rstrip("/") or "/"
        if cg not in m.memcgs:
            m.memcgs.append(cg)
    m.workloads = list(wl)
    return m


def _mapped_size(spec: dict) -> tuple[str | None, int]:
    """(the key that sets it, bytes) a workload maps, with the kinds' defaults; (None, 0)
    when only its owner can tell (masim reads its own file)."""
    kind = spec.get("kind")
    if kind == "sparse-hotspot":
        return "size", parse_size(spec.get("size", "8G"), "size")
    if kind == "thp-hot":
        n = spec.get("nr_thps", 16)
        return "nr_thps", (n if isinstance(n, int) and not isinstance(n, bool) else 0) * (2 << 20)
    if kind in ("access_memory", "access_memory_even"):
        n = spec.get("nr_regions", 0)
        sz = parse_size(spec.get("sz_region", 0), "sz_region")
        return "sz_region", (n if isinstance(n, int) and not isinstance(n, bool) else 0) * sz
    if "size" in spec:
        return "size", parse_size(spec["size"], "size")
    return None, 0


def _check_size(config: Config, i: int, spec: dict, memory: int, total: int) -> int:
    """What a workload maps must fit the machine, and all workloads together too: the
    emulated machine has no swap to overcommit into. Returns this workload's size."""
    try:
        key, size = _mapped_size(spec)
    except ValueError as e:
        raise ConfigError(config.path, str(e), workload_line(config, i, "size")) from None
    if key and (size > memory or total + size > memory):
        what = "maps" if size > memory else "with the workloads before it maps"
        raise ConfigError(config.path, f"workload {spec.get('kind')} {what} {size + (total if size <= memory else 0)} "
                          f"bytes, more than the machine's memory of {memory} bytes (the limit)",
                          workload_line(config, i, key))
    return size


def configure_thp(config: Config, thp: ThpSettings) -> None:
    sec = config.section("thp")
    _unknown(config, sec, THP_KEYS, "thp")
    for key in ("enabled", "defrag", "shmem_enabled", "use_zero_page"):
        if key in sec:
            try:
                setattr(thp, key, sec[key])
            except ValueError as e:
                raise config.error(f"thp.{key}", str(e)) from None
    for key, setter in (("size_enabled", thp.set_size_enabled), ("size_shmem_enabled", thp.set_size_shmem_enabled)):
        tab = sec.get(key, {})
        if not isinstance(tab, dict):
            raise config.error(f"thp.{key}", f"{key} must be a table of size = mode, e.g. {{ 16 = \"always\" }}")
        for k, v in tab.items():
            m = re.fullmatch(r"(\d+)(?:kB|K)?", str(k))
            kb = int(m.group(1)) if m else -1
            if kb not in SIZES_KB:
                raise config.error(f"thp.{key}", f"{key}: size {k!r} is not one of {', '.join(map(str, SIZES_KB))} (kB)")
            try:
                setter(kb, v)
            except ValueError as e:
                raise config.error(f"thp.{key}", str(e)) from None
    ksec = config.section("khugepaged")
    _unknown(config, ksec, KHUGEPAGED_KEYS, "khugepaged")
    k = thp.khugepaged
    if "enabled" in ksec:
        if not isinstance(ksec["enabled"], bool):
            raise config.error("khugepaged.enabled", "enabled must be true or false")
        k.enabled = ksec["enabled"]
    for key in KHUGEPAGED_KEYS - {"enabled"}:
        if key in ksec:
            try:
                setattr(k, key, ksec[key])
            except ValueError as e:
                raise config.error(f"khugepaged.{key}", str(e)) from None
