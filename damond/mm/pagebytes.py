"""One byte per emulated 4 KB page, stored per 2 MB block: shared rows for blocks that are
one folio, a private 512-byte row only for blocks whose pages differ.

Owns the storage of phys.PhysMem's per-page `flags` and `order`. A PMD-mapped THP, a free
block and a block just paged out are "head/tail" blocks: the head page holds one value and
the 511 others another (the AF, PG_idle, PG_young and LRU bits of a folio live on its head).
Every such block points at one shared canonical row per (head, tail) pair; a block gets a
private row (copy on write) only when a write makes its pages differ otherwise (a split,
4 KB faults, per-page AF), and goes back to a shared row when a whole-block write or
`compact()` finds it uniform again. Indexing mirrors a flat numpy uint8 array of
nr_blocks * 512 entries (int, slice and integer-array keys of any shape; reads return
copies, `a[i] |= x` works through __getitem__/__setitem__); block-wise operations (`rows`,
`apply_rows`, `set_rows`, `count`) replace reshape(-1, 512) views. Cost: 9 bytes per block
plus 512 bytes per block with a private row; an instance may name head bytes whose blocks
always keep a private row (phys.flags: 4 KB-mapped memory, per page as the issue asks).
Every write is logged by the pages it names (`wrote`, `written_since`), so a reader can
redo only what changed since it last looked. The per-sample gathers and updates run in
the optional C module damond.mm._pagefast when it is built (same results as the numpy
code kept here).
"""
from __future__ import annotations

import numpy as np

try:                                   # the C loops of the per-sample operations (optional)
    from damond.mm import _pagefast as FAST  # type: ignore[attr-defined]
except ImportError:                    # pragma: no cover - built by setup.py where a compiler exists
    FAST = None

BLOCK_PAGES = 512
SHIFT = 9                      # log2(BLOCK_PAGES)
_OFF = np.int64(BLOCK_PAGES - 1)


_LUTS: dict[tuple[int, bool], np.ndarray] = {}
LOG_ENTRIES = 64               # writes the write log keeps (see written_since) ...
LOG_PAGES = 1 << 16            # ... and the pages they name, at most


def members(sorted_idx: np.ndarray, j: np.ndarray) -> np.ndarray:
    """The values of the int64 array j (in order) found in the sorted int64 array `sorted_idx`."""
    if FAST is not None and len(sorted_idx):
        out = np.empty(len(j), np.int64)
        k = FAST.members(sorted_idx, j, out)
        if k >= 0:
            return out[:k]
    if not len(sorted_idx):
        return j[:0]
    p = np.searchsorted(sorted_idx, j)
    np.minimum(p, len(sorted_idx) - 1, out=p)
    return j[sorted_idx[p] == j]


def members_runs(runs: list[slice], j: np.ndarray, tri: np.ndarray | None = None) -> np.ndarray:
    """members() for the union of strided slices `runs` (tri: their (start, stop, step) rows
    as an int64 array, when the caller keeps one)."""
    if FAST is not None:
        if tri is None:
            tri = run_rows(runs)
        out = np.empty(len(j), np.int64)
        k = FAST.members_runs(tri, j, out)
        if k >= 0:
            return out[:k]
    hit = np.zeros(len(j), bool)
    for r in runs:
        st = r.step or 1
        d = j - r.start
        hit |= (d >= 0) & (j < r.stop) & (d % st == 0)
    return j[hit]


def run_rows(runs: list[slice]) -> np.ndarray:
    """(start, stop, step) per slice, as members_runs takes them."""
    return np.array([(r.start, r.stop, r.step or 1) for r in runs], np.int64).reshape(-1, 3)


def set_lut(bits: int, on: bool) -> np.ndarray:
    """The table set_bits (on) / clear_bits (off) apply for `bits`: x | bits or x & ~bits."""
    t = _LUTS.get((bits, on))
    if t is None:
        x = np.arange(256, dtype=np.uint8)
        t = _LUTS[(bits, on)] = (x | np.uint8(bits)) if on else (x & ~np.uint8(bits))
    return t


_lut = set_lut


class PageBytes:
    def __init__(self, nr_blocks: int, private_mask: int = 0, private_value: int = 1):
        """`private_mask`/`private_value`: a block whose head byte has (head & mask) == value
        keeps a private row even when uniform (phys.flags: blocks of present 4 KB-mapped
        pages, whose per-page bits DAMON's sampling rewrites page by page, so sharing them
        would only buy a copy, and a cache invalidation, on every first sample)."""
        self.private_mask, self.private_value = private_mask, private_value
        self.nr_blocks = nr_blocks
        self.size = nr_blocks * BLOCK_PAGES
        self.base = np.zeros(nr_blocks, np.int64)          # flat offset of each block's row in the pool
        self.bsh = np.ones(nr_blocks, bool)                  # the block's row is a shared one
        self.pool = np.zeros((16, BLOCK_PAGES), np.uint8)   # row 0: the shared all-zero row
        self.flat = self.pool.reshape(-1)
        self.shared = np.zeros(16, bool)
        self.shared[0] = True
        self.canon = np.full(1 << 16, -1, np.int64)         # (head << 8 | tail) -> shared row
        self.canon[0] = 0
        self.nrows = 1
        self._free: list[int] = []
        self._heads: dict[int, tuple[np.ndarray, np.ndarray]] = {}   # id(lut) -> (lut, head map)
        self.gen = 0                   # bumped whenever some block moves to another row (locate())
        self._slices: dict[tuple, tuple[int, np.ndarray, bool]] = {}  # update(): slice -> locate()
        self._stale: dict[tuple, int] = {}   # update(): slice -> calls since located with shared blocks
        self.ver = 0                   # bumped by every write (written_since)
        self._log: list[tuple[int, np.ndarray]] = []   # (ver, pages written) since _log_ver
        self._log_ver = 0
        self._log_pages = 0

    # --- write log -----------------------------------------------------------------------------
    def wrote(self, idx: np.ndarray | None = None) -> None:
        """Note a write of the pages `idx` (int64, not changed afterwards), or of pages not
        named (None: the log restarts). Every writer calls it: the methods below do, and
        whoever writes `flat` in place at located positions (sample.SamplePlan)."""
        v = self.ver = self.ver + 1
        log = self._log
        if idx is None or len(idx) > LOG_PAGES:
            log.clear()
            self._log_ver, self._log_pages = v, 0
            return
        log.append((v, idx))
        self._log_pages += len(idx)
        if len(log) > 2 * LOG_ENTRIES or self._log_pages > LOG_PAGES:
            self._trim()

    def _trim(self) -> None:
        """Forget the oldest writes, down to LOG_ENTRIES and half of LOG_PAGES (at once, so
        a log that nobody reads costs one append per write)."""
        log = self._log
        n = self._log_pages
        i = 0
        while i < len(log) and (len(log) - i > LOG_ENTRIES or n > LOG_PAGES // 2):
            n -= len(log[i][1])
            i += 1
        self._log_ver = log[i - 1][0]
        del log[:i]
        self._log_pages = n

    def _wrote_key(self, key: np.ndarray) -> None:
        """wrote() for an index array passed in by a caller: a copy unless it is read-only."""
        self.wrote(None if len(key) > LOG_PAGES else key if not key.flags.writeable else key.copy())

    def written_since(self, ver: int) -> list[np.ndarray] | None:
        """The page index arrays of every write after version `ver` (empty: none), or None
        when some write after it named no pages or the log dropped it. Only those pages can
        differ from what they were at `ver`."""
        if ver < self._log_ver:
            return None
        log = self._log
        i = len(log)
        while i and log[i - 1][0] > ver:
            i -= 1
        return [e[1] for e in log[i:]]

    # --- rows ----------------------------------------------------------------------------------
    def _grow(self, need: int) -> None:
        cap = len(self.pool)
        if self.nrows + need <= cap:
            return
        new = max(cap * 2, self.nrows + need)
        pool = np.zeros((new, BLOCK_PAGES), np.uint8)
        pool[:self.nrows] = self.pool[:self.nrows]
        shared = np.zeros(new, bool)
        shared[:self.nrows] = self.shared[:self.nrows]
        self.pool, self.shared, self.flat = pool, shared, pool.reshape(-1)

    def _new_rows(self, n: int) -> np.ndarray:
        take = min(n, len(self._free))
        out = self._free[len(self._free) - take:]
        del self._free[len(self._free) - take:]
        if n > take:
            self._grow(n - take)
            out.extend(range(self.nrows, self.nrows + n - take))
            self.nrows += n - take
        return np.asarray(out, np.int64)

    def _canon_rows(self, head: np.ndarray, tail: np.ndarray) -> np.ndarray:
        """The shared row of each (head, tail) pair, created on first use."""
        key = (head.astype(np.int64) << 8) | tail
        r = self.canon[key]
        if (r < 0).any():
            for k in np.unique(key[r < 0]).tolist():
                nr = int(self._new_rows(1)[0])
                self.pool[nr, 0] = k >> 8
                self.pool[nr, 1:] = k & 0xFF
                self.shared[nr] = True
                self.canon[k] = nr
                for _, hm in self._heads.values():      # a reused row id: no longer "private"
                    if nr < len(hm):
                        hm[nr] = -1
            r = self.canon[key]
        return r

    def _head_map(self, rows: np.ndarray, lut: np.ndarray) -> np.ndarray:
        """Per row: the flat offset of the shared row a shared block on it moves to when its
        head byte x := lut[x] (tails unchanged); -2 for private rows. Cached per lut (shared
        rows are never freed or changed, so an entry, once known, stays right; a private
        row's -2 is reset when its id is reused for a shared row)."""
        e = self._heads.get(id(lut))
        if e is None or e[0] is not lut:
            if len(self._heads) >= 32:
                self._heads.clear()
            e = self._heads[id(lut)] = (lut, np.full(len(self.pool), -1, np.int64))
        m = e[1]
        if len(m) < self.nrows:
            m = np.concatenate([m, np.full(len(self.pool) - len(m), -1, np.int64)])
            self._heads[id(lut)] = (lut, m)
        t = m[rows]
        miss = t == -1
        if miss.any():
            mr = np.unique(rows[miss])
            sm = self.shared[mr]
            m[mr[~sm]] = -2                              # private (until the id is reused shared)
            if sm.any():                                 # shared rows not seen yet with this lut
                mr = mr[sm]
                m[mr] = self._canon_rows(lut[self.pool[mr, 0]], self.pool[mr, 1]) << SHIFT
            t = m[rows]
        return t

    def _point(self, blocks: np.ndarray, rows: np.ndarray) -> None:
        if self.private_mask:
            pin = self.shared[rows] & ((self.pool[rows, 0] & self.private_mask) == self.private_value)
            if pin.any():
                rows = np.array(rows, np.int64)
                new = self._new_rows(int(np.count_nonzero(pin)))
                self.pool[new] = self.pool[rows[pin]]
                self.shared[new] = False
                rows[pin] = new
        self.gen += 1
        self.base[blocks] = rows << SHIFT
        self.bsh[blocks] = self.shared[rows]

    def _settle(self, blocks: np.ndarray) -> None:
        """Give blocks whose private row is head/tail uniform their shared row back."""
        blocks = np.asarray(blocks, np.int64)
        blocks = blocks[~self.bsh[blocks]]
        if not len(blocks):
            return
        r = self.base[blocks] >> SHIFT
        rows = self.pool[r]
        uni = (rows[:, 1:] == rows[:, 1:2]).all(axis=1)
        if self.private_mask:
            uni &= (rows[:, 0] & self.private_mask) != self.private_value
        if uni.any():
            self._point(blocks[uni], self._canon_rows(rows[uni, 0], rows[uni, 1]))
            self._free.extend(np.unique(r[uni]).tolist())

    def _privatise(self, blocks: np.ndarray) -> None:
        """Copy-on-write: unique blocks on shared rows get private copies."""
        if not len(blocks):
            return
        old = self.base[blocks] >> SHIFT
        new = self._new_rows(len(blocks))
        self.pool[new] = self.pool[old]
        self.shared[new] = False
        self._point(blocks, new)

    def compact(self) -> None:
        """Return every private row that became head/tail uniform (and so its block) to a shared row."""
        used = np.flatnonzero(~self.bsh)
        if len(used):
            self._settle(used)

    # --- numpy-like indexing -------------------------------------------------------------------
    def __len__(self) -> int:
        return self.size

    def _index(self, key):
        """(flat page indexes, blocks a slice covers whole or None) for a key."""
        if isinstance(key, np.ndarray) and key.dtype == np.int64:
            return key, None
        if isinstance(key, (int, np.integer)):
            return np.array([int(key)], np.int64), None
        if isinstance(key, slice):
            s, e, st = key.indices(self.size)
            whole = None
            if st == 1 and e > s:
                b0, b1 = -(-s >> SHIFT), e >> SHIFT
                if b1 > b0:
                    whole = np.arange(b0, b1, dtype=np.int64)
            return np.arange(s, e, st, dtype=np.int64), whole
        idx = np.asarray(key)
        if idx.dtype == bool:
            raise TypeError("PageBytes takes integer indexes")
        return idx.astype(np.int64), None

    def __getitem__(self, key):
        if type(key) is np.ndarray and key.dtype == np.int64:        # the sample paths: one gather
            return self.flat[self.base[key >> SHIFT] + (key & _OFF)]
        if isinstance(key, (int, np.integer)):
            k = int(key)
            return self.flat[self.base[k >> SHIFT] + (k & (BLOCK_PAGES - 1))]
        if isinstance(key, slice):
            s, e, st = key.indices(self.size)
            if st == 1:
                if e <= s:
                    return np.zeros(0, np.uint8)
                b0, b1 = s >> SHIFT, ((e - 1) >> SHIFT) + 1
                return self.pool[self.base[b0:b1] >> SHIFT].reshape(-1)[s - (b0 << SHIFT):e - (b0 << SHIFT)]
            if st % BLOCK_PAGES == 0 and e > s:                 # one page per block, same offset
                b0, k, n = s >> SHIFT, st >> SHIFT, len(range(s, e, st))
                return self.flat[self.base[b0:b0 + (n - 1) * k + 1:k] + (s & (BLOCK_PAGES - 1))]
        idx, _ = self._index(key)
        return self.flat[self.base[idx >> SHIFT] + (idx & _OFF)]

    def __setitem__(self, key, value) -> None:
        idx, whole = self._index(key)
        vals = value if isinstance(value, np.ndarray) and value.dtype == np.uint8 else np.asarray(value).astype(np.uint8)
        if idx.ndim != 1:
            idx = idx.ravel()
        if vals.ndim:
            vals = vals.reshape(-1) if vals.size == idx.size else np.broadcast_to(vals, idx.shape).ravel()
        if not idx.size:
            return
        self.wrote(idx.copy() if idx.size <= LOG_PAGES else None)
        b = idx >> SHIFT
        off = idx & _OFF
        pos = self.base[b] + off
        changed = self.flat[pos] != vals
        if not changed.any():                               # most AF/COLD writes find the bit set
            if whole is not None:
                self._settle(whole)
            return
        if not changed.all() and (whole is not None or isinstance(key, slice)
                                  or (len(idx) > 1 and (idx[1:] > idx[:-1]).all())):
            # no index repeats: the unchanged ones can go (with repeats the last write must win)
            b, off, pos = b[changed], off[changed], pos[changed]
            vals = vals[changed] if vals.ndim else vals
        sh = self.bsh[b]
        if not sh.any():
            self.flat[pos] = vals
        else:
            if vals.ndim == 0:
                vals = np.broadcast_to(vals, b.shape)
            bad = sh & (off != 0) & (vals != self.flat[pos - off + 1])
            diverged = None
            if bad.any():                                   # pages of a shared block start to differ
                diverged, nr = np.unique(b[bad], return_counts=True)
                self._privatise(diverged)
                sh = self.bsh[b]
                diverged = diverged[nr >= BLOCK_PAGES - 1]  # every tail rewritten: maybe uniform again
            hw = sh & (off == 0)
            if hw.any():                                    # a shared block's head changes
                hb, hv = b[hw], vals[hw]
                if len(hb) > 1 and not (hb[1:] > hb[:-1]).all():   # repeats: the last write wins
                    last = np.unique(hb[::-1], return_index=True)[1]
                    hb, hv = hb[::-1][last], hv[::-1][last]
                self._point(hb, self._canon_rows(hv, self.flat[self.base[hb] + 1]))
            pw = ~sh                                        # tail writes to shared rows keep their value
            if pw.any():
                self.flat[self.base[b[pw]] + off[pw]] = vals[pw]
            if diverged is not None and len(diverged):
                self._settle(diverged)
        if whole is not None:
            self._settle(whole)

    def _update_heads(self, base: np.ndarray, b, lut: np.ndarray) -> bool:
        """Head byte x := lut[x] of the blocks base[b] (`base`: self.base or a view of it)
        when every one is on a shared row: each moves to the shared row of its new (head,
        tail) pair. False (nothing done) when some block is on a private row."""
        t = self._head_map(base[b] >> SHIFT, lut)
        if not (t >= 0).all():
            return False
        base[b] = t
        self.gen += 1
        return True

    def _line_up(self, s: int, st: int, n: int, loc: tuple) -> tuple:
        """A run of one page per block, every block on a private row: give its blocks rows
        in block order at the end of the pool (the old ones go to the free list), so the
        run is a strided slice of `flat` (positions in `loc` for the cache)."""
        blocks = (np.arange(n, dtype=np.int64) * st + s) >> SHIFT
        old = self.base[blocks] >> SHIFT
        if n > 1 and (np.diff(old) == 1).all():
            r0 = int(old[0])
        else:
            self._grow(n + len(self._free))              # room at the end, whatever the free list holds
            r0 = self.nrows
            new = np.arange(r0, r0 + n, dtype=np.int64)
            self.nrows += n
            self.pool[new] = self.pool[old]
            self.shared[new] = False
            self._point(blocks, new)
            self._free.extend(old.tolist())
        p0 = (r0 << SHIFT) + (s & (BLOCK_PAGES - 1))
        return self.gen, slice(p0, p0 + ((n - 1) << SHIFT) + 1, BLOCK_PAGES), True

    def locate(self, idx: np.ndarray) -> tuple[int, np.ndarray, bool]:
        """(gen, flat positions of the pages idx (int64) in `flat`, every one on a private row).
        The positions stay right while `gen` is unchanged; writing `flat` at them is a write
        to those pages when every one is on a private row (DAMON's samples, once each block
        they hit has diverged)."""
        pos = self.base[idx >> SHIFT]
        pos += idx & _OFF
        return self.gen, pos, not self.shared[pos >> SHIFT].any()

    def gather(self, idx: np.ndarray, lut: np.ndarray) -> np.ndarray:
        """lut[a[idx]] (idx int64, lut 256 entries of one byte: uint8 or bool)."""
        if FAST is not None:
            out = np.empty(len(idx), lut.dtype)
            if not FAST.gather(self.flat, self.base, idx, lut, out):
                return out
        return lut.take(self.flat[self.base[idx >> SHIFT] + (idx & _OFF)])

    def update(self, key, lut: np.ndarray) -> None:
        """a[key] = lut[a[key]] (lut: 256 uint8), writing only the bytes that change; repeated
        indexes get equal values, so dropping the unchanged ones is exact."""
        if type(key) is np.ndarray and key.dtype == np.int64 and key.ndim == 1:
            self._wrote_key(key)
            if FAST is not None:
                hm = self._heads.get(id(lut))
                moved = FAST.update(self.flat, self.base, self.bsh, hm[1] if hm is not None and hm[0] is lut else None,
                                    key, lut)
                if moved >= 0:
                    if moved:
                        self.gen += 1
                    return
            if not (key & _OFF).any():                    # block heads: shared ones repoint
                if self._update_heads(self.base, key >> SHIFT, lut):
                    return
            if self._update_fast(key, lut):
                return
        else:
            self.wrote(None)
        if isinstance(key, slice):
            ck = (key.start, key.stop, key.step)
            loc = self._slices.get(ck)
            if loc is not None and loc[0] == self.gen and loc[2]:   # a stream's run, all private
                self.flat[loc[1]] = lut.take(self.flat[loc[1]])
                return
            s, e, st = key.indices(self.size)
            if e <= s:
                return
            if st % BLOCK_PAGES == 0 and not s & _OFF:      # block heads: shared ones repoint
                b0, k, n = s >> SHIFT, st >> SHIFT, len(range(s, e, st))
                if self._update_heads(self.base[b0:b0 + (n - 1) * k + 1:k], slice(None), lut):
                    return
            # (re)locate a run when blocks moved since, and while some of its blocks are still
            # shared, every 16th call only (not on every block of it that diverges)
            if loc is not None and not loc[2] and loc[0] != self.gen:
                n = self._stale[ck] = self._stale.get(ck, 0) + 1
                if n >= 16:
                    loc = None
            if (loc is None or (loc[0] != self.gen and loc[2])) and len(range(s, e, st)) <= 1 << 16:
                loc = self.locate(np.arange(s, e, st, dtype=np.int64))
                if loc[2] and st % BLOCK_PAGES == 0:
                    loc = self._line_up(s, st, len(loc[1]), loc)
                if len(self._slices) >= 64:
                    self._slices.clear()
                    self._stale.clear()
                self._slices[ck] = loc
                self._stale[ck] = 0
                if loc[2]:
                    self.flat[loc[1]] = lut.take(self.flat[loc[1]])
                    return
            if st % BLOCK_PAGES == 0:                     # one page per block, same offset
                b0, k, n = s >> SHIFT, st >> SHIFT, len(range(s, e, st))
                pos = self.base[b0:b0 + (n - 1) * k + 1:k] + (s & (BLOCK_PAGES - 1))
                idx = None
            else:
                idx = np.arange(s, e, st, dtype=np.int64)
        else:
            idx = self._index(key)[0].ravel()
            s = st = 0
        if idx is not None:
            pos = self.base[idx >> SHIFT] + (idx & _OFF)
        cur = self.flat[pos]
        new = lut.take(cur)
        ch = np.flatnonzero(new != cur)
        if not len(ch):
            return
        pos, new = pos[ch], new[ch]
        sh = self.shared[pos >> SHIFT]                   # a position's row is pos >> SHIFT
        if not sh.any():                                 # private rows: write in place
            self.flat[pos] = new
            return
        if sh.all() and not (pos & _OFF).any():          # heads of shared blocks: repoint them
            b = (ch * st + s if idx is None else idx[ch]) >> SHIFT
            key = (new.astype(np.int64) << 8) | self.flat[pos + 1]
            rows = self.canon[key]
            if (rows < 0).any():
                rows = self._canon_rows(new, self.flat[pos + 1])
            self.base[b] = rows << SHIFT
            self.gen += 1
            return
        keys = ch * st + s if idx is None else idx[ch]
        if not self._update_fast(keys, lut):
            self[keys] = new

    def update_runs(self, idx: np.ndarray, lut: np.ndarray, runs: list[slice], tri: np.ndarray) -> None:
        """update() of the pages of `idx` (int64, kept as is by the write log) that lie in
        the strided slices `runs` (tri: run_rows(runs))."""
        if FAST is not None:
            hm = self._heads.get(id(lut))
            r = FAST.update_runs(self.flat, self.base, self.bsh, hm[1] if hm is not None and hm[0] is lut else None,
                                 idx, lut, tri)
            if r != -1:
                if r[1]:
                    self.wrote(idx)                      # the pages written are some of these
                if r[0]:
                    self.gen += 1
                return
        j = members_runs(runs, idx, tri)
        if len(j):
            j.flags.writeable = False                    # ours: the write log may keep it as it is
            self.update(j, lut)

    def _update_fast(self, idx: np.ndarray, lut: np.ndarray) -> bool:
        """update() for the per-sample paths (a 1-D int64 index array of fewer pages than a
        block's tails, so no shared block can become uniform again): private rows are written
        in place, whole arrays at a time (rewriting a byte with its own value changes nothing;
        repeated indexes get equal values); shared blocks whose tail changes get private
        copies first; shared blocks whose head alone changes are repointed at the shared
        row of their new (head, tail) pair. False: nothing written, take the general path."""
        b = idx >> SHIFT
        off = idx & _OFF
        pos = self.base[b]
        pos += off
        cur = self.flat[pos]
        new = lut.take(cur)
        sh = self.bsh[b]
        if not sh.any():                                 # private rows: write in place
            self.flat[pos] = new
            return True
        ch = new != cur
        sh &= ch                                         # shared blocks that see a change
        if not sh.any():
            if ch.any():
                self.flat[pos] = new                     # only private bytes change
            return True
        tail = sh & (off != 0)
        if tail.any():                                   # pages of shared blocks start to differ
            if len(idx) >= BLOCK_PAGES - 1:
                return False
            pb = np.sort(b[tail])
            self._privatise(pb[np.concatenate(([True], pb[1:] != pb[:-1]))])
            pos = self.base[b]
            pos += off
            sh &= self.bsh[b]                            # what is left: changed heads of shared blocks
        if not sh.any():
            self.flat[pos] = new
            return True
        pw = ~self.bsh[b]
        self.flat[pos[pw]] = new[pw]
        hb, hv, hp = b[sh], new[sh], pos[sh]
        rows = self.canon[(hv.astype(np.int64) << 8) | self.flat[hp + 1]]
        if (rows < 0).any():
            rows = self._canon_rows(hv, self.flat[hp + 1])
        self.base[hb] = rows << SHIFT
        self.gen += 1
        return True

    def _run_view(self, key) -> np.ndarray | None:
        """A view of `flat` that is the slice run `key`, when update() has lined it up and
        no block moved since."""
        if isinstance(key, slice):
            loc = self._slices.get((key.start, key.stop, key.step))
            if loc is not None and loc[0] == self.gen and type(loc[1]) is slice:
                return self.flat[loc[1]]
        return None

    def set_bits(self, key, bits: int) -> None:
        """a[key] |= bits."""
        v = self._run_view(key)
        if v is not None:
            self.wrote(None)
            v |= np.uint8(bits)
            return
        self.update(key, set_lut(bits, True))

    def clear_bits(self, key, bits: int) -> None:
        """a[key] &= ~bits."""
        v = self._run_view(key)
        if v is not None:
            self.wrote(None)
            v &= np.uint8(~bits & 0xFF)
            return
        self.update(key, set_lut(bits, False))

    # --- block-wise ----------------------------------------------------------------------------
    def _rows_of(self, blocks) -> np.ndarray:
        return self.base[np.asarray(blocks, np.int64)] >> SHIFT

    def rows(self, blocks) -> np.ndarray:
        """The 512 bytes of each block (a copy, shape (len(blocks), 512))."""
        return self.pool[self._rows_of(blocks)]

    def set_rows(self, blocks, value: int) -> None:
        """Every page of `blocks` := value."""
        self.wrote(None)
        blocks = np.asarray(blocks, np.int64)
        if not len(blocks):
            return
        priv = blocks[~self.bsh[blocks]]
        self._free.extend(np.unique(self.base[priv] >> SHIFT).tolist())
        v = np.full(len(blocks), value, np.uint8)
        self._point(blocks, self._canon_rows(v, v))

    def apply_rows(self, blocks, lut: np.ndarray) -> None:
        """Every page byte x of `blocks` := lut[x] (lut: 256 uint8)."""
        self.wrote(None)
        blocks = np.asarray(blocks, np.int64)
        if not len(blocks):
            return
        sh = self.bsh[blocks]
        if sh.any():
            sb = blocks[sh]
            r = self.base[sb]
            self._point(sb, self._canon_rows(lut[self.flat[r]], lut[self.flat[r + 1]]))
        if not sh.all():
            pb = blocks[~sh]
            pr = np.unique(self.base[pb] >> SHIFT)
            self.pool[pr] = lut[self.pool[pr]]
            self._settle(pb)

    def copy_rows(self, dst, src, lut: np.ndarray) -> None:
        """Every page byte of block dst[i] := lut[the same page's byte of block src[i]]."""
        self.wrote(None)
        dst, src = np.asarray(dst, np.int64), np.asarray(src, np.int64)
        if not len(dst):
            return
        old = dst[~self.bsh[dst]]
        self._free.extend(np.unique(self.base[old] >> SHIFT).tolist())
        sh = self.bsh[src]
        r = self.base[src]
        if sh.any():
            self._point(dst[sh], self._canon_rows(lut[self.flat[r[sh]]], lut[self.flat[r[sh] + 1]]))
        if not sh.all():
            new = self._new_rows(int((~sh).sum()))
            self.pool[new] = lut[self.pool[r[~sh] >> SHIFT]]
            self.shared[new] = False
            self._point(dst[~sh], new)
            self._settle(dst[~sh])

    def count_rows(self, blocks, mask: int, value: int) -> np.ndarray:
        """Per block: pages whose byte & mask == value (counted once per stored row when the
        blocks outnumber the rows, in batches: a 4 TiB machine's blocks never copy at once)."""
        r = self._rows_of(blocks)
        m, batch = np.uint8(mask), 1 << 16
        if len(r) > self.nrows:
            per_row = np.concatenate([np.count_nonzero((self.pool[i:min(i + batch, self.nrows)] & m) == value, axis=1)
                                      for i in range(0, self.nrows, batch)])
            return per_row[r]
        return np.concatenate([np.count_nonzero((self.pool[r[i:i + batch]] & m) == value, axis=1)
                               for i in range(0, len(r), batch)] or [np.zeros(0, np.int64)])

    def any_rows(self, blocks, mask: int) -> np.ndarray:
        """Per block: some page's byte & mask is nonzero."""
        r = self._rows_of(blocks)
        if len(r) * 4 < self.nrows:
            return (self.pool[r] & np.uint8(mask)).any(axis=1)
        return np.asarray((self.pool[:self.nrows] & np.uint8(mask)).any(axis=1))[r]

    def _split_range(self, s: int, e: int):
        """[s, e) as (whole blocks, leftover page indexes at the two ends)."""
        b0, b1 = -(-s >> SHIFT), e >> SHIFT
        if b1 <= b0:
            return np.zeros(0, np.int64), np.arange(s, e, dtype=np.int64)
        ends = np.concatenate([np.arange(s, b0 << SHIFT), np.arange(b1 << SHIFT, e)]).astype(np.int64)
        return np.arange(b0, b1, dtype=np.int64), ends

    def apply_range(self, s: int, e: int, lut: np.ndarray) -> None:
        """Every page byte x in [s, e) := lut[x]."""
        blocks, ends = self._split_range(s, e)
        self.apply_rows(blocks, lut)
        if len(ends):
            self[ends] = lut[self[ends]]

    def count_range(self, s: int, e: int, mask: int, value: int) -> int:
        """Pages in [s, e) whose byte & mask == value."""
        blocks, ends = self._split_range(s, e)
        n = self.count(mask, value, blocks) if len(blocks) else 0
        return n + int(np.count_nonzero((self[ends] & np.uint8(mask)) == value)) if len(ends) else n

    def count(self, mask: int, value: int, blocks=None) -> int:
        """Pages of `blocks` (None: all) whose byte & mask == value."""
        r = self.base >> SHIFT if blocks is None else self._rows_of(blocks)
        if not len(r):
            return 0
        per_row = np.count_nonzero((self.pool[:self.nrows] & np.uint8(mask)) == value, axis=1)
        return int(np.dot(np.bincount(r, minlength=self.nrows), per_row))

    def copy(self) -> np.ndarray:
        """The whole flat array (tests, small machines)."""
        return self.pool[self.base >> SHIFT].reshape(-1)

    @property
    def nbytes(self) -> int:
        """Bytes allocated: the block tables, the row pool (its capacity) and the shared-row table."""
        return self.base.nbytes + self.bsh.nbytes + self.pool.nbytes + self.canon.nbytes + self.shared.nbytes
