"""Monitoring regions of one target: parallel numpy arrays, sorted and non-overlapping.

Mirrors the region list of `struct damon_target` (`damon_region`: ar, sampling_addr,
nr_accesses, nr_accesses_bp, last_nr_accesses, age). Arrays, not objects: a target may
hold thousands of regions and the engine walks them every sampling interval.
The core (merge/split), DAMOS (quota and addr-filter splits) and the front (tried
regions) all use this one structure.
"""
from __future__ import annotations

import numpy as np

FIELDS = ("start", "end", "sampling_addr", "nr_accesses", "nr_accesses_bp", "last_nr_accesses", "age")
_DTYPES = {"start": np.uint64, "end": np.uint64, "sampling_addr": np.uint64}


class Regions:
    """Sorted, non-overlapping [start, end) ranges with DAMON's per-region counters."""

    def __init__(self, starts=(), ends=()):
        self.start = np.asarray(starts, dtype=np.uint64).copy()
        self.end = np.asarray(ends, dtype=np.uint64).copy()
        n = len(self.start)
        self.sampling_addr = self.start.copy()
        self.nr_accesses = np.zeros(n, dtype=np.int64)
        self.nr_accesses_bp = np.zeros(n, dtype=np.int64)
        self.last_nr_accesses = np.zeros(n, dtype=np.int64)
        self.age = np.zeros(n, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.start)

    def sizes(self) -> np.ndarray:
        return (self.end - self.start).astype(np.uint64)

    def total_size(self) -> int:
        return int(self.sizes().sum()) if len(self) else 0

    def copy(self) -> "Regions":
        r = Regions.__new__(Regions)
        for f in FIELDS:
            setattr(r, f, getattr(self, f).copy())
        return r

    def split_at(self, i: int, addr: int) -> None:
        """Split region i at addr into [start, addr) and [addr, end); both keep the counters
        (damon_split_region_at)."""
        s, e = int(self.start[i]), int(self.end[i])
        if not s < addr < e:
            raise ValueError(f"split address {addr:#x} outside region [{s:#x}, {e:#x})")
        for f in FIELDS:
            a = getattr(self, f)
            setattr(self, f, np.insert(a, i + 1, a[i]))
        self.end[i] = addr
        self.start[i + 1] = addr
        self.sampling_addr[i + 1] = addr

    def remove(self, idx) -> None:
        """Remove the regions at the given index or indices."""
        for f in FIELDS:
            setattr(self, f, np.delete(getattr(self, f), idx))

    def take(self, keep) -> None:
        """Keep only the regions selected by index array or boolean mask."""
        for f in FIELDS:
            setattr(self, f, getattr(self, f)[keep])

    @classmethod
    def concat(cls, parts: list["Regions"]) -> "Regions":
        r = cls.__new__(cls)
        for f in FIELDS:
            arrs = [getattr(p, f) for p in parts]
            setattr(r, f, np.concatenate(arrs) if arrs else np.zeros(0, dtype=_DTYPES.get(f, np.int64)))
        return r

    @classmethod
    def from_ranges(cls, ranges) -> "Regions":
        """Regions with zeroed counters for an iterable of (start, end) pairs."""
        ranges = list(ranges)
        return cls([int(s) for s, _ in ranges], [int(e) for _, e in ranges])

    def ranges(self) -> list[tuple[int, int]]:
        """[(start, end), ...] as Python ints (for tests, logs and tried-region snapshots)."""
        return list(zip(self.start.tolist(), self.end.tolist()))

    def columns(self) -> dict[str, list[int]]:
        """Every field as a Python list: the form the sequential merge/split walks use."""
        return {f: getattr(self, f).tolist() for f in FIELDS}

    def assign_columns(self, cols: dict[str, list[int]]) -> None:
        """Replace the contents in place from `columns()`-shaped lists (keeps the object's
        identity, so holders of a target's `Regions` see the change)."""
        for f in FIELDS:
            setattr(self, f, np.asarray(cols[f], dtype=_DTYPES.get(f, np.int64)))

    def assign(self, other: "Regions") -> None:
        """Replace the contents in place with (copies of) another Regions' arrays."""
        for f in FIELDS:
            setattr(self, f, getattr(other, f).copy())
