"""Monitoring regions of one target: parallel numpy arrays, sorted and non-overlapping,
and the region-list algorithms of `mm/damon/core.c` that need no context
(`damon_set_regions`, split/merge of one target, `damon_update_region_access_rate`).

Mirrors the region list of `struct damon_target` (`damon_region`: ar, sampling_addr,
nr_accesses, nr_accesses_bp, last_nr_accesses, age). Arrays, not objects: a target may
hold thousands of regions and the engine walks them every sampling interval.
The core (merge/split), DAMOS (quota and addr-filter splits) and the front (tried
regions) all use this one structure.
"""
from __future__ import annotations

import errno

import numpy as np

from damond.errors import DamonError

FIELDS = ("start", "end", "sampling_addr", "nr_accesses", "nr_accesses_bp", "last_nr_accesses", "age")
_DTYPES = {"start": np.uint64, "end": np.uint64, "sampling_addr": np.uint64}


class Regions:
    """Sorted, non-overlapping [start, end) ranges with DAMON's per-region counters.

    The engine changes a field by replacing its array, never by writing into an array
    the regions already hold (update_access_rate keys a cache on the identity of
    last_nr_accesses, vaddr's sample batch on that of start and end)."""

    _bp_dec: tuple | None = None       # update_access_rate's (last_nr_accesses, window, decrement)

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


# ---------------------------------------------------------------------------
# region-list algorithms of mm/damon/core.c that need no context

def check_ranges(ranges: list[tuple[int, int]], min_sz: int) -> None:
    """The range checks of damon_set_regions(): non-empty after alignment, sorted."""
    last_end = None
    for s, e in ranges:
        s, e = align_down(s, min_sz), align_up(e, min_sz)
        if s >= e:
            wrapped = " (the end wrapped past 2^64 - 1)" if e == 0 and s else ""
            raise DamonError(errno.EINVAL, f"range [{s:#x}, {e:#x}) is empty after alignment to {min_sz}{wrapped}")
        if last_end is not None and last_end > s:
            raise DamonError(errno.EINVAL, f"ranges overlap after alignment to {min_sz} at {s:#x}")
        last_end = e


def set_regions(regions: Regions, ranges: list[tuple[int, int]], min_sz: int) -> None:
    """damon_set_regions(): fit a target's regions to `ranges`, keeping the counters of
    regions that still intersect. Raises DamonError(EINVAL) with regions untouched."""
    check_ranges(ranges, min_sz)
    cols = regions.columns()
    n = len(cols["start"])
    keep = [i for i in range(n)
            if any(not (cols["end"][i] <= rs or re <= cols["start"][i]) for rs, re in ranges)]
    rows = [{f: cols[f][i] for f in cols} for i in keep]
    if not rows:
        regions.assign(Regions.from_ranges((align_down(s, min_sz), align_up(e, min_sz)) for s, e in ranges))
        return

    def new_row(s: int, e: int) -> dict:
        return {"start": s, "end": e, "sampling_addr": s, "nr_accesses": 0, "nr_accesses_bp": 0,
                "last_nr_accesses": 0, "age": 0}

    pos = 0
    for rs, re in ranges:
        first = last = None
        insert_at = None
        while pos < len(rows):
            r = rows[pos]
            if not (r["end"] <= rs or re <= r["start"]):
                if first is None:
                    first = pos
                last = pos
            if r["start"] >= re:
                insert_at = pos
                break
            pos += 1
        if first is None:
            nr = new_row(align_down(rs, min_sz), align_up(re, min_sz))
            if insert_at is not None:
                rows.insert(insert_at, nr)
                pos = insert_at + 1
            else:
                rows.append(nr)
                pos = len(rows)
        else:
            assert last is not None        # set together with first
            rows[first]["start"] = align_down(rs, min_sz)
            rows[last]["end"] = align_up(re, min_sz)
            k = first
            while k < last:
                if rows[k]["end"] != rows[k + 1]["start"]:
                    rows.insert(k + 1, new_row(rows[k]["end"], rows[k + 1]["start"]))
                    last += 1
                    k += 1
                k += 1
            pos = len(rows) if insert_at is None else last + 1
    regions.assign_columns({f: [r[f] for r in rows] for f in cols})


def evenly_split_region(regions: Regions, i: int, nr_pieces: int, min_sz: int) -> None:
    """damon_va_evenly_split_region(): cut region i into nr_pieces equal aligned pieces, the
    last taking the rounding rest. Raises DamonError(EINVAL) (region untouched) if impossible."""
    if nr_pieces <= 0:
        raise DamonError(errno.EINVAL, "nr_pieces must be positive")
    if nr_pieces == 1:
        return
    s, e = int(regions.start[i]), int(regions.end[i])
    sz_piece = align_down((e - s) // nr_pieces, min_sz)
    if not sz_piece:
        raise DamonError(errno.EINVAL, f"region [{s:#x}, {e:#x}) too small for {nr_pieces} pieces")
    starts = [s + k * sz_piece for k in range(nr_pieces)]
    ends = starts[1:] + [e]
    cols = regions.columns()
    for f in cols:
        v = cols[f][i]
        cols[f][i:i + 1] = [v] * len(starts)
    cols["start"][i:i + len(starts)] = starts
    cols["end"][i:i + len(starts)] = ends
    cols["sampling_addr"][i:i + len(starts)] = starts
    regions.assign_columns(cols)


def split_region_at(regions: Regions, i: int, sz_r: int) -> None:
    """damon_split_region_at(): region i keeps its first sz_r bytes; the new right piece
    copies nr_accesses, nr_accesses_bp, last_nr_accesses and age."""
    regions.split_at(i, int(regions.start[i]) + sz_r)


# ---------------------------------------------------------------------------
# per-sample accounting (damon_update_region_access_rate)

def update_access_rate(regions: Regions, accessed: np.ndarray, attrs) -> None:
    """Account one sample for every region: nr_accesses and the nr_accesses_bp moving sum.
    `accessed`: bool per region. The moving sum's decrement (last_nr_accesses * 10000 /
    window) holds for a whole aggregation interval: it is kept with the regions while
    their last_nr_accesses array is the same object (every writer replaces the array,
    none writes into it) and the intervals are the same."""
    last = regions.last_nr_accesses
    dec = regions._bp_dec
    sample, aggr = attrs.sample_interval, attrs.aggr_interval
    if dec is None or dec[0] is not last or dec[1] != sample or dec[2] != aggr:
        len_window = _nr_samples_per_aggr(attrs) if sample else 1
        if 10000 % len_window:
            d = last * _BP
            d //= np.int64(len_window)
        else:                          # exact: last * 10000 is a multiple of len_window
            d = last * np.int64(10000 // len_window)
        dec = regions._bp_dec = (last, sample, aggr, d)
    a = accessed.astype(np.int64)
    bp = a * _BP
    bp += regions.nr_accesses_bp
    bp -= dec[3]
    regions.nr_accesses_bp = bp
    a += regions.nr_accesses
    regions.nr_accesses = a


def max_nr_accesses(regions: Regions) -> int:
    """The largest nr_accesses of the regions (0 without regions)."""
    return int(np.maximum.reduce(regions.nr_accesses)) if len(regions) else 0


# ---------------------------------------------------------------------------
# merge (kdamond_merge_regions)

def merge_two_regions(regions: Regions, i: int) -> None:
    """damon_merge_two_regions(): merge region i+1 into region i with size-weighted averages."""
    cols = regions.columns()
    _merge_two_cols(cols, i)
    regions.assign_columns(cols)


def _merge_two_cols(cols: dict, i: int) -> None:
    s, e = cols["start"], cols["end"]
    sz_l, sz_r = e[i] - s[i], e[i + 1] - s[i + 1]
    nr, age = cols["nr_accesses"], cols["age"]
    nr[i] = (nr[i] * sz_l + nr[i + 1] * sz_r) // (sz_l + sz_r)
    cols["nr_accesses_bp"][i] = nr[i] * 10000
    age[i] = (age[i] * sz_l + age[i + 1] * sz_r) // (sz_l + sz_r)
    e[i] = e[i + 1]
    for f in cols:
        del cols[f][i + 1]


def merge_regions_of(regions: Regions, thres: int, sz_limit: int, count_age: bool = True) -> None:
    """damon_merge_regions_of(): age update, then merge adjacent regions whose nr_accesses
    differ by at most thres from the (merged) previous one while the merged size stays
    within sz_limit. Merged nr_accesses and age are size-weighted averages."""
    n = len(regions)
    if not n:
        return
    nr_a, last_a = regions.nr_accesses, regions.last_nr_accesses
    if count_age:
        reset = (np.abs(nr_a - last_a) > thres) | ((nr_a == 0) != (last_a == 0))
        regions.age = np.where(reset, 0, regions.age + 1)
    if n == 1:
        return
    sz_a = (regions.end - regions.start).astype(np.int64)
    adjacent = np.empty(n, dtype=bool)
    adjacent[0] = False
    adjacent[1:] = regions.start[1:] == regions.end[:-1]
    # candidates: a merge needs adjacency and, against the unmerged neighbour, a small
    # enough size; regions failing both can only start a new group
    if not (adjacent[1:] & (sz_a[1:] + sz_a[:-1] <= sz_limit)).any():
        return
    nr, age, sz, adj = nr_a.tolist(), regions.age.tolist(), sz_a.tolist(), adjacent.tolist()
    group_first = [0]
    g_nr, g_age, g_sz = [nr[0]], [age[0]], [sz[0]]
    cur_nr, cur_age, cur_sz = nr[0], age[0], sz[0]
    for i in range(1, n):
        s_i = sz[i]
        if adj[i] and abs(nr[i] - cur_nr) <= thres and cur_sz + s_i <= sz_limit:
            tot = cur_sz + s_i
            cur_nr = (cur_nr * cur_sz + nr[i] * s_i) // tot
            cur_age = (cur_age * cur_sz + age[i] * s_i) // tot
            cur_sz = tot
            g_nr[-1], g_age[-1], g_sz[-1] = cur_nr, cur_age, cur_sz
        else:
            group_first.append(i)
            cur_nr, cur_age, cur_sz = nr[i], age[i], s_i
            g_nr.append(cur_nr)
            g_age.append(cur_age)
            g_sz.append(cur_sz)
    if len(group_first) == n:
        return
    first = np.asarray(group_first, dtype=np.int64)
    last = np.empty_like(first)
    last[:-1] = first[1:] - 1
    last[-1] = n - 1
    merged = first != last
    new_nr = np.asarray(g_nr, dtype=np.int64)
    regions.end = regions.end[last]
    regions.start = regions.start[first]
    regions.sampling_addr = regions.sampling_addr[first]
    regions.last_nr_accesses = regions.last_nr_accesses[first]
    regions.nr_accesses_bp = np.where(merged, new_nr * 10000, regions.nr_accesses_bp[first])
    regions.nr_accesses = new_nr
    regions.age = np.asarray(g_age, dtype=np.int64)

def split_regions_of(regions: Regions, nr_subs: int, min_sz: int, rng: np.random.Generator) -> None:
    """damon_split_regions_of(): cut each region into up to nr_subs pieces at random points
    between 10 % and 90 % (aligned); later cuts subdivide the left piece."""
    n = len(regions)
    if not n or nr_subs < 2:
        return
    cols = regions.columns()
    draws = rng.integers(1, 10, size=(n, nr_subs - 1)).tolist()
    out = {f: [] for f in cols}
    for i in range(n):
        s, e = cols["start"][i], cols["end"][i]
        cuts = []
        sz_region = e - s
        for k in range(nr_subs - 1):
            if sz_region <= 2 * min_sz:
                break
            sz_sub = align_down(draws[i][k] * sz_region // 10, min_sz)
            if sz_sub == 0 or sz_sub >= sz_region:
                continue
            cuts.append(s + sz_sub)
            sz_region = sz_sub
        bounds = [s] + sorted(cuts) + [e]
        for a, b in zip(bounds[:-1], bounds[1:]):
            for f in cols:
                out[f].append(cols[f][i])
            out["start"][-1], out["end"][-1] = a, b
            if a != s:
                out["sampling_addr"][-1] = a
    regions.assign_columns(out)




ULONG_MASK = (1 << 64) - 1
_BP = np.int64(10000)          # numpy scalar: a Python int operand costs a conversion per call


def align_down(x: int, a: int) -> int:
    """ALIGN_DOWN() on an unsigned long."""
    return x - x % a


def align_up(x: int, a: int) -> int:
    """ALIGN() on an unsigned long: (x + a - 1) & ~(a - 1) wraps past 2^64 - 1, so an end
    in [2^64 - a + 1, 2^64 - 1] becomes 0, as in the kernel."""
    return (-(-x // a) * a) & ULONG_MASK


def _nr_samples_per_aggr(attrs) -> int:
    return max(min(attrs.aggr_interval // max(attrs.sample_interval, 1), (1 << 32) - 1), 1)
