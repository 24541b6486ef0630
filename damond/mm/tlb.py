"""The TLB models: presets, the exact set-associative LRU and the fast characteristic-time model.

Owns what decides whether an access walks the page table (and so sets the leaf's Access
Flag): the per-CPU L1 DTLB + unified L2 TLB of emulator-facts.md §2, entries sized by
the leaf (2 MB block, 64 KB contpte as one entry or 16, 4 KB). `ExactTlb` is the
reference: a set-associative LRU driven by an explicit access trace. `characteristic_time`
is the fast model: the Che approximation of an LRU of C entries over groups of leaves
with known per-leaf access rates; a cyclic (sequential) group occupies min(1, rate*T) and
misses on every access when rate*T < 1, a random (IRM) group occupies 1-exp(-rate*T) and
misses with probability exp(-rate*T). A set of leaves that fits (<= C) never misses once
warm, which is the TLB-reach blind spot (§4) from first principles.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace

# per preset: L1 DTLB entries/assoc (0 = fully associative), L2 entries/assoc
PRESETS: dict[str, dict] = {
    "kunpeng920": dict(l1_entries=48, l1_assoc=0, l2_entries=2048, l2_assoc=8, contpte_entries=1,
                       hw_af=True, arch="arm64"),
    "x86-skylake": dict(l1_entries=64, l1_assoc=4, l2_entries=1536, l2_assoc=6, contpte_entries=16,
                        hw_af=True, arch="x86_64"),
    "x86-zen2": dict(l1_entries=64, l1_assoc=0, l2_entries=2048, l2_assoc=8, contpte_entries=16,
                     hw_af=True, arch="x86_64"),
}
MODELS = ("fast", "exact")


@dataclass(frozen=True)
class TlbConfig:
    """One CPU's TLB. `contpte_entries`: 1 = a 64 KB contpte block is one TLB entry, 16 = splintered."""
    l1_entries: int = 48
    l1_assoc: int = 0
    l2_entries: int = 2048
    l2_assoc: int = 8
    contpte_entries: int = 1
    hw_af: bool = True
    arch: str = "arm64"
    model: str = "fast"
    flush_on_mkold: bool = False

    @classmethod
    def preset(cls, name: str, **overrides) -> "TlbConfig":
        return replace(cls(**PRESETS[name]), **overrides)

    def validate(self) -> str | None:
        """None if consistent, else the problem (one line)."""
        for name in ("l1_entries", "l2_entries"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                return f"{name} must be a positive integer"
        for name, entries in (("l1_assoc", self.l1_entries), ("l2_assoc", self.l2_entries)):
            a = getattr(self, name)
            if not isinstance(a, int) or isinstance(a, bool) or a < 0:
                return f"{name} must be a non-negative integer (0 = fully associative)"
            if a and entries % a:
                return f"{name} {a} does not divide the {entries} entries"
        if self.contpte_entries not in (1, 16):
            return "contpte_entries must be 1 (one entry per 64 KB block) or 16"
        if self.model not in MODELS:
            return f"model {self.model!r} is not one of {', '.join(MODELS)}"
        return None


class _Level:
    """One set-associative LRU level; keys are hashable leaf ids, `index` picks the set."""

    def __init__(self, entries: int, assoc: int):
        self.ways = assoc or entries
        self.nr_sets = entries // self.ways
        self.sets = [OrderedDict() for _ in range(self.nr_sets)]

    def lookup(self, key, index: int) -> bool:
        s = self.sets[index % self.nr_sets]
        if key in s:
            s.move_to_end(key)
            return True
        return False

    def fill(self, key, index: int) -> None:
        s = self.sets[index % self.nr_sets]
        s[key] = True
        s.move_to_end(key)
        if len(s) > self.ways:
            s.popitem(last=False)

    def invalidate(self, pred) -> int:
        n = 0
        for s in self.sets:
            dead = [k for k in s if pred(k)]
            for k in dead:
                del s[k]
            n += len(dead)
        return n

    def __len__(self) -> int:
        return sum(len(s) for s in self.sets)


class ExactTlb:
    """Reference model of one CPU: L1 then L2, LRU in each set, fill both on a walk.

    Leaf keys are (asid, leaf_base_vaddr, leaf_shift); the set index is leaf_base >> leaf_shift.
    """

    def __init__(self, cfg: TlbConfig):
        self.cfg = cfg
        self.l1 = _Level(cfg.l1_entries, cfg.l1_assoc)
        self.l2 = _Level(cfg.l2_entries, cfg.l2_assoc)
        self.walks = 0
        self.accesses = 0

    def access(self, asid: int, base: int, shift: int) -> bool:
        """One access; True if it walked the page table (missed both levels)."""
        key = (asid, base, shift)
        idx = base >> shift
        self.accesses += 1
        if self.l1.lookup(key, idx):
            return False
        if self.l2.lookup(key, idx):
            self.l1.fill(key, idx)
            return False
        self.walks += 1
        self.l2.fill(key, idx)
        self.l1.fill(key, idx)
        return True

    def invalidate(self, asid: int, start: int, end: int) -> int:
        """Drop every entry of `asid` overlapping [start, end) (TLBI by VA range)."""
        def hit(k):
            return k[0] == asid and k[1] < end and k[1] + (1 << k[2]) > start
        return self.l1.invalidate(hit) + self.l2.invalidate(hit)

    def flush_asid(self, asid: int) -> int:
        return self.l1.invalidate(lambda k: k[0] == asid) + self.l2.invalidate(lambda k: k[0] == asid)


def characteristic_time(groups: list[tuple[float, float, bool]], capacity: int) -> float:
    """Che's characteristic time T of an LRU with `capacity` entries.

    Args:
        groups: (nr_leaves, per-leaf access rate per second, cyclic) per access stream.
        capacity: TLB entries.
    Returns:
        T in seconds; math.inf when every leaf fits (then nothing misses once warm).
    """
    live = [(n, r, c) for n, r, c in groups if n > 0 and r > 0]
    if sum(n for n, _, _ in live) <= capacity:
        return math.inf

    def occupancy(t: float) -> float:
        return sum(n * (min(1.0, r * t) if c else -math.expm1(-r * t)) for n, r, c in live)

    lo, hi = 0.0, 1e-9
    while occupancy(hi) < capacity:
        lo, hi = hi, hi * 4
        if hi > 1e9:
            return math.inf
    for _ in range(60):
        mid = (lo + hi) / 2
        if occupancy(mid) < capacity:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def miss_probability(rate: float, t_char: float, cyclic: bool) -> float:
    """Fraction of a warm leaf's accesses that miss every TLB level and walk."""
    if math.isinf(t_char) or rate <= 0:
        return 0.0
    if cyclic:
        return 1.0 if rate * t_char < 1.0 else 0.0
    return math.exp(-rate * t_char)
