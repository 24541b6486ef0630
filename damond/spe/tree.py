"""The per-folio PFN tree of SPE access counts, as `mm/damon/spe.c` keeps it.

One global mapping keyed by THP-aligned PFN (`pfn & ~511`); each entry holds 512
per-subpage counters, the total, the pid given at insert and the time of the last update
(from the injected clock). Inserting when full first prunes entries older than the TTL and
drops the sample if the tree is still full (no eviction of live entries, as the RFC), but
unlike the RFC every drop is counted. `prune()` is what `kdamond_apply_schemes` calls.
`stats_text()` is `spe_stats`, byte for byte. Counters live in numpy arrays indexed by a
slot number; a `SortedDict` maps key -> slot (the rb-tree), so feeds are vectorised.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
from sortedcontainers import SortedDict

from damond.clock import Clock
from damond.config import Config
from damond.spe.heatmap import check_orders, chunk_hot

MAX_CHUNKS = 512            # DAMON_SPE_MAX_CHUNKS: 4 KiB subpages per PMD THP
THP_MASK = ~(MAX_CHUNKS - 1)
DEFAULT_CAPACITY = 1024     # DAMON_SPE_MAX_ENTRIES
DEFAULT_TTL_S = 30          # DAMON_SPE_ENTRY_TTL / HZ
DEFAULT_PEAK_DIVISOR = 10   # the two-pass signal filter: max_sum / 10
FEED_MODES = ("lines", "rfc")


@dataclass
class Entry:
    """A snapshot of one tree entry (`struct damon_spe_entry`)."""
    pfn: int                 # THP-aligned key
    pid: int                 # set at insert, never updated
    total: int               # total_accesses
    last_us: int             # last update, clock microseconds
    counts: np.ndarray       # uint64[512], a copy

    @property
    def hot_pages(self) -> int:
        """Subpages with any access (spe_stats' `hot_pages`, no signal threshold)."""
        return int(np.count_nonzero(self.counts))


U64 = (1 << 64) - 1          # access sums wrap like the u64 counters they feed


@dataclass
class FeedResult:
    """What one batch did: samples (lines) and the accesses they carried (modulo 2**64)."""
    recorded: int = 0
    dropped: int = 0
    recorded_accesses: int = 0
    dropped_accesses: int = 0

    def __add__(self, o: "FeedResult") -> "FeedResult":
        return FeedResult(self.recorded + o.recorded, self.dropped + o.dropped,
                          (self.recorded_accesses + o.recorded_accesses) & U64,
                          (self.dropped_accesses + o.dropped_accesses) & U64)


@dataclass
class TreeStats:
    """Lifetime counters of the tree (the RFC has none); access sums modulo 2**64."""
    inserted: int = 0
    pruned: int = 0
    recorded: int = 0
    recorded_accesses: int = 0
    dropped: int = 0
    dropped_accesses: int = 0

    def add(self, r: FeedResult) -> None:
        self.recorded += r.recorded
        self.dropped += r.dropped
        self.recorded_accesses = (self.recorded_accesses + r.recorded_accesses) & U64
        self.dropped_accesses = (self.dropped_accesses + r.dropped_accesses) & U64


@dataclass
class Aggregate:
    """A batch of feed lines summed per THP key (keys in first-appearance order) plus the
    per-subpage additions, which `add_into` applies once the tree has a slot per key.

    keys/key_lines/key_acc: THP keys, lines and summed counts per key (uint64);
    pair_key (int64 index into keys), pair_pfn, pair_cnt: one row per distinct PFN.
    Sums wrap modulo 2**64 like the tree's uint64 counters. The compiled spe_feed path
    (damond.spe.feed.Ingest) subclasses this and keeps its rows in C.
    """
    keys: np.ndarray
    key_lines: np.ndarray
    key_acc: np.ndarray
    pair_key: np.ndarray
    pair_pfn: np.ndarray
    pair_cnt: np.ndarray

    def add_into(self, counts: np.ndarray, slots: np.ndarray) -> None:
        """counts[slots[key], subpage] += count for every row whose key has a slot (>= 0)."""
        ps = slots[self.pair_key]
        ok = ps >= 0
        ps, pfn, cnt = (ps, self.pair_pfn, self.pair_cnt) if ok.all() else (
            ps[ok], self.pair_pfn[ok], self.pair_cnt[ok])
        if len(ps):
            fi = ps * MAX_CHUNKS + (pfn & np.uint64(MAX_CHUNKS - 1)).astype(np.int64)
            counts.reshape(-1)[fi] += cnt          # distinct PFNs: no repeated index


def aggregate(pfns: np.ndarray, counts: np.ndarray | None = None) -> Aggregate:
    """Sum a batch of (pfn, count) lines per PFN and per THP key (numpy)."""
    pfns = np.asarray(pfns, dtype=np.uint64)
    n = len(pfns)
    cnt = np.ones(n, np.uint64) if counts is None else np.asarray(counts, dtype=np.uint64)
    if n == 0:
        z = np.zeros(0, np.uint64)
        return Aggregate(z, z, z, np.zeros(0, np.int64), z, z)
    order = np.argsort(pfns, kind="stable")
    sp = pfns[order]
    starts = np.flatnonzero(np.concatenate([[True], sp[1:] != sp[:-1]]))
    upfn = sp[starts]
    ucnt = np.add.reduceat(cnt[order], starts)
    mask = np.uint64(THP_MASK & ((1 << 64) - 1))
    keys = pfns & mask
    ukeys, kfirst, kinv = np.unique(keys, return_index=True, return_inverse=True)
    korder = np.argsort(kfirst, kind="stable")          # first-appearance order
    rank = np.empty(len(ukeys), np.int64)
    rank[korder] = np.arange(len(ukeys))
    klines = np.bincount(kinv, minlength=len(ukeys)).astype(np.uint64)
    ks = np.argsort(kinv, kind="stable")
    kst = np.flatnonzero(np.concatenate([[True], kinv[ks][1:] != kinv[ks][:-1]]))
    kacc = np.add.reduceat(cnt[ks], kst)
    pair_key = rank[np.searchsorted(ukeys, upfn & mask)]
    return Aggregate(ukeys[korder], klines[korder], kacc[korder], pair_key, upfn, ucnt)


class PfnTree:
    """The SPE tree. Thread-safe: the FUSE front feeds it while kdamonds read and prune it.

    Args:
        clock: time source for last-update stamps and the TTL.
        capacity: maximum number of entries (THPs).
        ttl_s: an entry not updated for longer than this is stale.
        feed: "lines" (every line of every write) or "rfc" (one PFN per write), read by spe_feed.
        peak_divisor: a chunk is hot when its sum is >= 1/peak_divisor of the peak chunk's
            (the RFC's two-pass signal filter hard-codes 10; damond makes it a knob so
            `damond reproduce designs` can measure the sensitivity to it).
    """

    def __init__(self, clock: Clock, capacity: int = DEFAULT_CAPACITY, ttl_s: float = DEFAULT_TTL_S,
                 feed: str = "lines", peak_divisor: int = DEFAULT_PEAK_DIVISOR):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        if ttl_s < 0:
            raise ValueError("ttl_s must be >= 0")
        if feed not in FEED_MODES:
            raise ValueError(f"feed must be one of {FEED_MODES}")
        if peak_divisor < 1:
            raise ValueError("peak_divisor must be >= 1")
        self.clock, self.capacity, self.feed = clock, int(capacity), feed
        self.peak_divisor = int(peak_divisor)
        self.ttl_us = int(round(ttl_s * 1_000_000))
        self.stats = TreeStats()
        self._mutex = threading.RLock()
        self._index: SortedDict = SortedDict()      # key pfn -> slot
        n = min(self.capacity, 64)
        self._counts = np.zeros((n, MAX_CHUNKS), dtype=np.uint64)
        self._total = np.zeros(n, dtype=np.uint64)
        self._last = np.zeros(n, dtype=np.int64)
        self._pid = np.zeros(n, dtype=np.int64)
        self._free: list[int] = list(range(n - 1, -1, -1))
        self._cache: tuple[np.ndarray, np.ndarray] | None = None   # sorted keys, slots
        self.layout_gen = 0       # bumped when a key's slot or the counters array changes
        self._settle_hooks: list[Callable[[], None]] = []

    @classmethod
    def from_config(cls, config: Config, clock: Clock) -> "PfnTree":
        """Build from [spe]; raises ConfigError naming the bad key."""
        sec = config.section("spe")
        known = {"capacity", "ttl_s", "feed", "peak_divisor"}
        for k in sec:
            if k not in known:
                raise config.error(f"spe.{k}", f"unknown key '{k}' in [spe] (known: {', '.join(sorted(known))})")
        cap = sec.get("capacity", DEFAULT_CAPACITY)
        if not isinstance(cap, int) or isinstance(cap, bool) or not 1 <= cap <= 1 << 20:
            raise config.error("spe.capacity", f"capacity {cap!r} must be an integer from 1 to {1 << 20}")
        ttl = sec.get("ttl_s", DEFAULT_TTL_S)
        if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or ttl < 0:
            raise config.error("spe.ttl_s", f"ttl_s {ttl!r} must be a non-negative number of seconds")
        if ttl > 1e9:
            raise config.error("spe.ttl_s", f"ttl_s {ttl!r} exceeds the limit of 1e9 seconds")
        feed = sec.get("feed", "lines")
        if feed not in FEED_MODES:
            raise config.error("spe.feed", f"feed {feed!r} is not one of {', '.join(FEED_MODES)}")
        div = sec.get("peak_divisor", DEFAULT_PEAK_DIVISOR)
        if not isinstance(div, int) or isinstance(div, bool) or not 1 <= div <= 1 << 20:
            raise config.error("spe.peak_divisor", f"peak_divisor {div!r} must be an integer from 1 to {1 << 20}")
        return cls(clock, cap, ttl, feed, div)

    # ---- storage -------------------------------------------------------------------------
    def add_settle_hook(self, fn: Callable[[], None]) -> None:
        """Register `fn`, called (under the mutex) before the counters are read, zeroed or
        moved: a feeder that keeps pending additions outside `_counts` (the compiled spe_feed
        path's small per-slot deltas) adds them in there."""
        with self._mutex:
            self._settle_hooks.append(fn)

    def _settle(self) -> None:
        for fn in self._settle_hooks:
            fn()

    def __len__(self) -> int:
        return len(self._index)

    def _grow(self) -> None:
        self._settle()
        old = len(self._total)
        new = min(self.capacity, old * 2)
        self._counts = np.concatenate([self._counts, np.zeros((new - old, MAX_CHUNKS), np.uint64)])
        self._total = np.concatenate([self._total, np.zeros(new - old, np.uint64)])
        self._last = np.concatenate([self._last, np.zeros(new - old, np.int64)])
        self._pid = np.concatenate([self._pid, np.zeros(new - old, np.int64)])
        self._free.extend(range(new - 1, old - 1, -1))
        self.layout_gen += 1

    def _insert(self, key: int, pid: int, now: int) -> int:
        """New zeroed entry, or -1 when full after a prune (damon_spe_insert)."""
        if len(self._index) >= self.capacity:
            self._prune_locked(now)
            if len(self._index) >= self.capacity:
                return -1
        return self._insert_slot(key, pid, now)

    def _insert_slot(self, key: int, pid: int, now: int) -> int:
        self._settle()
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._counts[slot] = 0
        self._total[slot] = 0
        self._last[slot] = now
        self._pid[slot] = pid
        self._index[key] = slot
        self._cache = None
        self.stats.inserted += 1
        return slot

    def _lookup(self) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is None:
            keys = np.fromiter(self._index.keys(), dtype=np.uint64, count=len(self._index))
            slots = np.fromiter(self._index.values(), dtype=np.int64, count=len(self._index))
            self._cache = (keys, slots)
        return self._cache

    # ---- feeding -------------------------------------------------------------------------
    def record(self, pfn: int, count: int = 1, pid: int = 0) -> bool:
        """Count `count` accesses to subpage `pfn` (damon_spe_record_access).

        Returns False when the sample was dropped because the tree is full.
        """
        key, idx = pfn & THP_MASK, pfn & (MAX_CHUNKS - 1)
        with self._mutex:
            now = self.clock.now_us()
            slot = self._index.get(key)
            if slot is None:
                slot = self._insert(key, pid, now)
                if slot < 0:
                    self.stats.add(FeedResult(dropped=1, dropped_accesses=count))
                    return False
            self._counts[slot, idx] += np.uint64(count)
            self._total[slot] += np.uint64(count)
            self._last[slot] = now
            self.stats.add(FeedResult(recorded=1, recorded_accesses=count))
            return True

    def record_many(self, pfns: np.ndarray, counts: np.ndarray | None = None, pid: int = 0) -> FeedResult:
        """Record a batch with exactly the outcome of passing each (pfn, count) to `record`
        in order (new THPs are inserted in order of first appearance; when the tree fills
        up mid-batch, the prune happens where the sequential insert would run it).

        Args:
            pfns: uint64 subpage PFNs.
            counts: accesses per PFN (default 1 each).
            pid: the pid stored in entries this batch inserts.
        Returns:
            FeedResult with recorded / dropped samples and accesses.
        """
        return self.record_aggregate(aggregate(pfns, counts), pid)

    def record_aggregate(self, agg: Aggregate, pid: int = 0) -> FeedResult:
        """Record an aggregated batch with the outcome of `record_many` on the lines it
        came from (the arrays are used during the call only)."""
        if len(agg.keys) == 0:
            return FeedResult()
        with self._mutex:
            now = self.clock.now_us()
            slots = self._resolve(agg.keys, pid, now)
            ok = slots >= 0
            lines, acc = agg.key_lines, agg.key_acc
            if ok.all():
                res = FeedResult(int(lines.sum()), 0, int(acc.sum()), 0)
                ks, kacc = slots, acc
            else:
                res = FeedResult(int(lines[ok].sum()), int(lines[~ok].sum()),
                                 int(acc[ok].sum()), int(acc[~ok].sum()))
                ks, kacc = slots[ok], acc[ok]
            agg.add_into(self._counts, slots)
            self._total[ks] += kacc
            self._last[ks] = now
            self.stats.add(res)
        return res

    def _slots_of(self, keys: np.ndarray) -> np.ndarray:
        skeys, sslots = self._lookup()
        if not len(skeys):
            return np.full(len(keys), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(skeys, keys), len(skeys) - 1)
        return np.where(skeys[pos] == keys, sslots[pos], -1).astype(np.int64)

    def _resolve(self, keys: np.ndarray, pid: int, now: int) -> np.ndarray:
        """The slot of each key (first-appearance order) as sequential records would leave
        it: existing entries are refreshed, new keys inserted in order, the prune runs at
        the first insert that finds the tree full, keys still without room get -1."""
        slots = self._slots_of(keys)
        miss = np.flatnonzero(slots < 0)
        if not len(miss):
            self._last[slots] = now
            return slots
        room = self.capacity - len(self._index)
        if len(miss) > room and self._has_stale(now):
            p = int(miss[room])           # this key's insert finds the tree full: prune there
            self._last[slots[:p][slots[:p] >= 0]] = now
            for i in miss[:room].tolist():
                slots[i] = self._insert_slot(int(keys[i]), pid, now)
            self._prune_locked(now)
            return np.concatenate([slots[:p], self._resolve(keys[p:], pid, now)])
        for i in miss[:room].tolist():
            slots[i] = self._insert_slot(int(keys[i]), pid, now)
        ok = slots >= 0
        self._last[slots[ok]] = now
        return slots

    def _has_stale(self, now: int) -> bool:
        _, slots = self._lookup()
        return bool(len(slots)) and bool((self._last[slots] < now - self.ttl_us).any())

    # ---- pruning -------------------------------------------------------------------------
    def _prune_locked(self, now: int) -> int:
        if not self._index:
            return 0
        self._settle()
        keys, slots = self._lookup()
        stale = self._last[slots] < now - self.ttl_us      # time_before(last, jiffies - TTL)
        if not stale.any():
            return 0
        for k, s in zip(keys[stale].tolist(), slots[stale].tolist()):
            del self._index[k]
            self._free.append(s)
        self._cache = None
        self.layout_gen += 1
        n = int(np.count_nonzero(stale))
        self.stats.pruned += n
        return n

    def prune(self) -> int:
        """Free every entry not updated for longer than the TTL (spe_prune_stale).

        Returns:
            the number of entries freed.
        """
        with self._mutex:
            return self._prune_locked(self.clock.now_us())

    def clear(self) -> None:
        """Drop every entry (not in the RFC; for tests and experiments)."""
        with self._mutex:
            self._settle()
            self._free.extend(self._index.values())
            self._index.clear()
            self._cache = None
            self.layout_gen += 1

    # ---- queries -------------------------------------------------------------------------
    def _entry(self, key: int, slot: int) -> Entry:
        return Entry(key, int(self._pid[slot]), int(self._total[slot]), int(self._last[slot]),
                     self._counts[slot].copy())

    def get(self, pfn: int) -> Entry | None:
        """The entry whose key is exactly `pfn` (the RFC's lookup by folio_pfn), or None."""
        with self._mutex:
            self._settle()
            slot = self._index.get(pfn)
            return None if slot is None else self._entry(pfn, slot)

    def entries_in(self, pfn_lo: int, pfn_hi: int) -> list[Entry]:
        """Entries whose 512 subpages overlap [pfn_lo, pfn_hi), in ascending PFN order."""
        with self._mutex:
            self._settle()
            lo = max(0, pfn_lo - MAX_CHUNKS + 1)
            return [self._entry(k, self._index[k])
                    for k in self._index.irange(lo, pfn_hi, inclusive=(True, False))
                    if k + MAX_CHUNKS > pfn_lo]

    def counts_of(self, folio_pfn: int) -> np.ndarray | None:
        """The 512 counters of the entry keyed exactly `folio_pfn` when it has accesses."""
        with self._mutex:
            self._settle()
            slot = self._index.get(folio_pfn)
            if slot is None or self._total[slot] == 0:
                return None
            return self._counts[slot].copy()

    def heatmap(self, folio_pfn: int, folio_order: int, target_order: int) -> np.ndarray | None:
        """SPE path of damon_spe_folio_heatmap, two-pass version: hot bit per chunk.

        Returns:
            bool[num_chunks], or None when no entry keyed `folio_pfn` with accesses exists
            (the caller then takes the PTE-walk fallback, see damond.spe.heatmap).
        Raises:
            ErrnoError: EINVAL if target_order >= folio_order, ERANGE if > 512 chunks.
        """
        num_chunks = check_orders(folio_order, target_order)
        counts = self.counts_of(folio_pfn)
        if counts is None:
            return None
        return chunk_hot(counts, num_chunks, target_order, self.peak_divisor)

    def hot_fraction(self, folio_pfn: int, folio_order: int, target_order: int) -> int | None:
        """Integer percent of hot chunks (damon_spe_hot_fraction); None without SPE data."""
        hm = self.heatmap(folio_pfn, folio_order, target_order)
        if hm is None:
            return None
        return int(np.count_nonzero(hm)) * 100 // len(hm)

    def totals(self) -> tuple[int, int]:
        """(nr_entries, total_accesses), damon_spe_stats()."""
        with self._mutex:
            _, slots = self._lookup()
            return len(slots), int(self._total[slots].sum()) if len(slots) else 0

    def stats_text(self) -> str:
        """The spe_stats file: header, then every entry in ascending PFN order."""
        with self._mutex:
            self._settle()
            keys, slots = self._lookup()
            total = int(self._total[slots].sum()) if len(slots) else 0
            hot = np.count_nonzero(self._counts[slots], axis=1) if len(slots) else []
            lines = [f"nr_entries={len(slots)} total_accesses={total}\n"]
            for k, s, h in zip(keys.tolist(), slots.tolist(), np.asarray(hot).tolist()):
                lines.append(f"  pfn={k:#x} pid={int(self._pid[s])} total={int(self._total[s])} "
                             f"hot_pages={h}/{MAX_CHUNKS}\n")
            return "".join(lines)

    # ---- restart (damond mount --state-dir) ----------------------------------------------
    def dump(self) -> dict[str, np.ndarray]:
        """Every entry (keys ascending) and the lifetime stats as arrays; `last` is saved
        as an age so a restarted clock keeps each entry's TTL position."""
        with self._mutex:
            self._settle()
            keys, slots = self._lookup()
            now = self.clock.now_us()
            st = self.stats
            return {"pfn_keys": keys.copy(), "pfn_counts": self._counts[slots].copy(),
                    "pfn_total": self._total[slots].copy(), "pfn_age": now - self._last[slots],
                    "pfn_pid": self._pid[slots].copy(),
                    "pfn_stats": np.array([st.inserted, st.pruned, st.recorded, st.recorded_accesses,
                                           st.dropped, st.dropped_accesses], dtype=np.uint64)}

    def load(self, d: dict[str, np.ndarray]) -> int:
        """Replace every entry with those of a `dump()` (up to this tree's capacity) and
        restore the stats. Returns the number of entries loaded."""
        with self._mutex:
            self.clear()
            now = self.clock.now_us()
            keys = d["pfn_keys"][: self.capacity]
            for i, k in enumerate(keys.tolist()):
                slot = self._insert_slot(int(k), int(d["pfn_pid"][i]), now - int(d["pfn_age"][i]))
                self._counts[slot] = d["pfn_counts"][i]
                self._total[slot] = d["pfn_total"][i]
            s = [int(v) for v in d["pfn_stats"].tolist()]
            self.stats = TreeStats(*s)
            self.layout_gen += 1
            return len(keys)
