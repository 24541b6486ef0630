"""Per-THP subpage histograms from `perf script` text: spe_hist.c's outputs, drop-in.

Input is real arm64 or emulated `perf script` text: any field list, as long as phys_addr
is printed (it is the last token of the line; perf prints it `%16lx`, no `0x`). One SPE
record prints several event lines (l1d, llc, tlb groups, memory). What one count is:
- `records` (default): when `memory` event lines are present, only they count, one per
  load/store record. Text without them (`-F phys_addr`, no event field) cannot tell
  where one record ends and the next begins (three samples of one address print the
  same lines as one sample with three events), so every line counts, as `lines` does;
  `records_unknown` says so.
- `lines`: every line with a PA counts, as spe_hist.c does (its totals).
Header lines (`#...`, `Samples for ...`) and blank lines are skipped and counted, as are
lines without a usable PA. Parsing is vectorised per chunk of lines (the compiled
`_feedparse.perf_pa` or `_feed_py`, same results). With `track_order` the builder also
keeps the THPs in the order they first appear (spe_hist.c's table order: its 4096-THP cap,
its candidate list, its ties); with `track_ldst`, spe_hist.c's loads/stores per THP.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

try:
    from damond.spe import _feedparse  # type: ignore[attr-defined]  # the optional C extension
except ImportError:     # not built: see setup.py
    _feedparse = None

THP_PAGES = 512
PAGE_SHIFT = 12
_LUT = np.full(256, -1, dtype=np.int16)
for _i, _c in enumerate(b"0123456789abcdef"):
    _LUT[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _LUT[_c] = 10 + _i
_LUT[0] = -2          # numpy S-dtype padding


def parse_hex_tokens(toks: list[bytes]) -> np.ndarray:
    """strtoul(tok, 16) of each token (optional 0x); 0 for anything that does not parse fully."""
    if not toks:
        return np.zeros(0, dtype=np.uint64)
    arr = np.array(toks, dtype="S17")
    d = _LUT[arr.view(np.uint8).reshape(len(toks), 17)]
    ok = (d[:, 16] == -2) & (d[:, 0] >= 0) & np.all(d != -1, axis=1)
    v = np.zeros(len(toks), dtype=np.uint64)
    for col in range(16):
        c = d[:, col]
        v = np.where(c >= 0, v * np.uint64(16) + c.clip(0).astype(np.uint64), v)
    v[~ok] = 0
    for i in np.flatnonzero(~ok).tolist():         # the rare `0x...` or junk token
        try:
            x = int(toks[i], 16)
            v[i] = x if 0 <= x < 1 << 64 else 0
        except ValueError:
            pass
    return v


def _has(chunk, pat: bytes, end: int | None = None) -> bool:
    """pat occurs in chunk[:end] (bytes, bytearray: a fast find; any other buffer: re)."""
    if isinstance(chunk, (bytes, bytearray)):
        return chunk.find(pat, 0, len(chunk) if end is None else end) >= 0
    return re.search(re.escape(pat), chunk if end is None else memoryview(chunk)[:end]) is not None


def _count(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(keys, return_counts=True), a little faster."""
    s = np.sort(keys)
    first = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    return s[first], np.diff(np.append(first, len(s))).astype(np.uint64)


@dataclass
class HistStats:
    lines: int = 0
    records: int = 0              # counts taken: records, or lines (see the module doc)
    duplicate_lines: int = 0      # other event lines of a record counted by its memory line
    skipped_no_pa: int = 0
    skipped_header: int = 0


COUNTS = ("records", "lines")
THP_SHIFT = PAGE_SHIFT + 9


def _is_header(line: bytes) -> bool:
    """A header or blank line (not a sample): the rule `perf_pa` applies."""
    s = line.lstrip(b" \t\r")
    return not s or line.startswith(b"#") or (s[:1] in (b"S", b"W") and b"Samples for" in s)


def line_cut(chunk: bytes, n: int) -> tuple[int, int]:
    """spe_hist.c's max_lines: the length of the prefix of `chunk` that holds its first `n`
    sample (non-header) lines, and how many it holds (< n when the chunk has fewer)."""
    pos = seen = 0
    while seen < n and pos < len(chunk):
        nl = chunk.find(b"\n", pos)
        end = len(chunk) if nl < 0 else nl + 1
        if not _is_header(chunk[pos:end].rstrip(b"\n")):
            seen += 1
        pos = end
    return pos, seen


@dataclass
class HistBuilder:
    """Feed chunks of complete lines; `subpages()` gives the (PFN, count) table.

    Args:
        count: "records" or "lines" (see the module doc).
        track_order: also keep `thp_order()` (spe_hist.c's table order).
        track_ldst: also keep `loads_stores()` (spe_hist.c's report).
    """
    count: str = "records"
    track_order: bool = False
    track_ldst: bool = False
    stats: HistStats = field(default_factory=HistStats)
    mode: str | None = None                 # "memory" | "lines"
    _parts: list = field(default_factory=list)
    _buf: np.ndarray | None = None
    _raw: np.ndarray | None = None
    _order: list = field(default_factory=list)
    _known: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    _ldst: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.count not in COUNTS:
            raise ValueError(f"count must be one of {', '.join(COUNTS)}, not {self.count!r}")

    @property
    def records_unknown(self) -> bool:
        """Records were asked for but the text has no `memory` lines: lines were counted."""
        return self.count == "records" and self.mode == "lines"

    def feed(self, chunk, end: int | None = None) -> None:
        """Count the samples of `chunk[:end]` (bytes or a buffer of complete lines, e.g. a
        prefix of a reused bytearray; a last line without newline is a line)."""
        st = self.stats
        if self.mode is None:
            self.mode = "memory" if self.count == "records" and _has(chunk, b" memory: ", end) else "lines"
        if end is not None:
            chunk = memoryview(chunk)[:end]
        if _feedparse is not None:
            pa, raw = self._feed_c(chunk)
        else:
            pa, raw = self._feed_py(chunk)
        good = pa != 0
        st.skipped_no_pa += int(len(pa) - np.count_nonzero(good))
        pa = pa[good]
        st.records += len(pa)
        if len(pa):
            part = _count(pa >> np.uint64(PAGE_SHIFT))
            self._parts.append(part)
            if self.track_order:
                self._note_order(pa, part[0])
        if raw is not None and raw[good].any():
            self._note_loads_stores(bytes(chunk))

    def _note_order(self, pa: np.ndarray, pfns: np.ndarray) -> None:
        """Append the THPs of this chunk not seen before, in the order they first appear
        (pfns: the chunk's distinct subpage PFNs, ascending; most chunks add no THP)."""
        thp = pfns >> np.uint64(9)
        thp = thp[np.concatenate([[True], thp[1:] != thp[:-1]])]
        new = thp[~np.isin(thp, self._known, assume_unique=True)]
        if not len(new):
            return
        keys = pa >> np.uint64(THP_SHIFT)
        if len(new) < len(thp):
            keys = keys[np.isin(keys, new)]
        u, first = np.unique(keys, return_index=True)
        self._order.append(u[np.argsort(first, kind="stable")])
        self._known = np.union1d(self._known, u)

    def _note_loads_stores(self, chunk: bytes) -> None:
        """spe_hist.c's loads/stores (process_line): on a counted line, the last token that
        contains `arm_spe_0` is the event; containing `st` (any case) it is a store, else
        containing `load` or `ld` a load. Only raw-event lines carry such a token."""
        for line in chunk.split(b"\n"):
            if b"arm_spe_0" not in line or _is_header(line) or (self.mode == "memory" and b" memory: " not in line):
                continue
            toks = line.split()
            pa = int(parse_hex_tokens([toks[-1]])[0])
            if not pa:
                continue
            ev = [t for t in toks if b"arm_spe_0" in t][-1].lower()
            kind = 1 if b"st" in ev else 0 if (b"load" in ev or b"ld" in ev) else -1
            if kind >= 0:
                self._ldst.setdefault(pa >> THP_SHIFT, [0, 0])[kind] += 1

    def thp_order(self) -> np.ndarray:
        """THP-aligned PFNs in the order they first appeared (needs track_order)."""
        o = np.concatenate(self._order) if self._order else np.zeros(0, np.uint64)
        return o << np.uint64(9)

    def loads_stores(self, thps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """spe_hist.c's loads and stores of each THP-aligned PFN in `thps` (needs track_ldst)."""
        ls = [self._ldst.get(int(t) >> 9, (0, 0)) for t in thps.tolist()]
        return (np.array([x[0] for x in ls], np.uint64).reshape(-1),
                np.array([x[1] for x in ls], np.uint64).reshape(-1))

    def _feed_c(self, chunk) -> tuple[np.ndarray, np.ndarray | None]:
        """PA of each counted line, and with track_ldst whether the line holds `arm_spe_0`."""
        st = self.stats
        if self._buf is None:
            self._buf = np.empty(1 << 20, dtype=np.uint64)
            self._raw = np.empty(1 << 20, dtype=np.uint8)
        parts, raws, view = [], [], memoryview(chunk)
        extra = (self._raw,) if self.track_ldst else ()
        while len(view):
            n_lines, n_hdr, n_other, n, used = _feedparse.perf_pa(view, self.mode == "memory", True, self._buf,
                                                                   *extra)
            st.lines += n_lines
            st.skipped_header += n_hdr
            st.duplicate_lines += n_other
            parts.append(self._buf[:n].copy())
            if extra:
                assert self._raw is not None
                raws.append(self._raw[:n].astype(bool))
            view = view[used:]
        pa = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return pa, (np.concatenate(raws) if extra else None)

    def _feed_py(self, chunk) -> tuple[np.ndarray, np.ndarray | None]:
        lines = bytes(chunk).split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        st = self.stats
        st.lines += len(lines)
        kept = [ln for ln in lines if not _is_header(ln)]
        st.skipped_header += len(lines) - len(kept)
        if self.mode == "memory":
            sel = [ln for ln in kept if b" memory: " in ln]
            st.duplicate_lines += len(kept) - len(sel)
            kept = sel
        raw = np.array([b"arm_spe_0" in ln for ln in kept], dtype=bool) if self.track_ldst else None
        return parse_hex_tokens([ln.split()[-1] for ln in kept]), raw

    def subpages(self) -> tuple[np.ndarray, np.ndarray]:
        """Ascending subpage PFNs and their record counts."""
        if not self._parts:
            return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
        u = np.concatenate([p[0] for p in self._parts])
        c = np.concatenate([p[1] for p in self._parts])
        uu, inv = np.unique(u, return_inverse=True)
        cc = np.bincount(inv, weights=c.astype(np.float64), minlength=len(uu)).astype(np.uint64)
        self._parts = [(uu, cc)]
        return uu, cc


@dataclass
class ThpTable:
    """Per-THP aggregates over the subpage table (ascending THP PFN)."""
    thp: np.ndarray          # THP-aligned PFNs
    total: np.ndarray
    accessed: np.ndarray     # subpages with >= 1 record
    peak: np.ndarray         # max subpage count
    hot: np.ndarray          # subpages with count >= max(peak // 10, 1)
    start: np.ndarray        # row range [start, end) in the subpage table
    end: np.ndarray


def thp_table(pfns: np.ndarray, counts: np.ndarray) -> ThpTable:
    keys = pfns & ~np.uint64(THP_PAGES - 1)
    if len(keys) == 0:
        z = np.zeros(0, np.uint64)
        return ThpTable(z, z, z, z, z, z.astype(np.int64), z.astype(np.int64))
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    ends = np.append(starts[1:], len(keys))
    total = np.add.reduceat(counts, starts)
    peak = np.maximum.reduceat(counts, starts)
    sig = np.maximum(peak // np.uint64(10), np.uint64(1))
    hot_sub = counts >= np.repeat(sig, ends - starts)
    hot = np.add.reduceat(hot_sub.astype(np.int64), starts)
    return ThpTable(keys[starts], total, (ends - starts).astype(np.uint64), peak, hot.astype(np.uint64),
                    starts, ends)


def heatmap_row(pfns: np.ndarray, counts: np.ndarray) -> str:
    """spe_hist.c's 64-character row: 8 subpages per character, `.` 0, `1` <10, `2` <50,
    `3` <100, `4` <500, `#` >= 500."""
    full = np.zeros(THP_PAGES, dtype=np.uint64)
    full[(pfns & np.uint64(THP_PAGES - 1)).astype(np.int64)] = counts
    sums = full.reshape(64, 8).sum(axis=1)
    idx = np.searchsorted(np.array([1, 10, 50, 100, 500], dtype=np.uint64), sums, side="right")
    return "".join(np.array(list(".1234#"))[idx].tolist())


def feed_bytes(pfns: np.ndarray, counts: np.ndarray) -> bytes:
    """`PFN COUNT` lines for spe_feed (`0x%x %d`), ascending PFN, formatted vectorised."""
    from damond.spe import textfmt as T
    n = len(pfns)
    if n == 0:
        return b""
    return T.join([T.const(b"0x", n), T.num(pfns, 0, 16), T.const(b" ", n), T.num(counts), T.const(b"\n", n)])


def feed_text(pfns: np.ndarray, counts: np.ndarray) -> str:
    """`PFN COUNT` lines for spe_feed, ascending PFN."""
    return feed_bytes(pfns, counts).decode()


def cap_thps(pfns: np.ndarray, counts: np.ndarray, order: np.ndarray, max_thps: int):
    """spe_hist.c's MAX_THPS (find_or_create): only the first `max_thps` THPs to appear are
    kept; the samples of later THPs are dropped.

    Returns:
        (pfns, counts, order) of the kept THPs, THPs dropped, samples dropped.
    """
    if not max_thps or len(order) <= max_thps:
        return pfns, counts, order, 0, 0
    kept = np.sort(order[:max_thps])
    keys = pfns & ~np.uint64(THP_PAGES - 1)
    keep = np.isin(keys, kept, assume_unique=False)
    return (pfns[keep], counts[keep], order[:max_thps], len(order) - max_thps,
            int(counts[~keep].sum(dtype=np.uint64)))


def _ranks(thp: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """Position of each THP of `thp` in `order` (first appearance); `thp` itself without."""
    if order is None:
        return thp
    sorter = np.argsort(order, kind="stable")
    return sorter[np.searchsorted(order, thp, sorter=sorter)]


def report_text(pfns: np.ndarray, counts: np.ndarray, top: int = 10, order: np.ndarray | None = None,
                loads: np.ndarray | None = None, stores: np.ndarray | None = None) -> str:
    """spe_hist.c's report on stdout (print_report): the top THPs by total (ties in order
    of first appearance, as its stable qsort of its table; by PFN without `order`), each
    with its heatmap row and subpage stats, then the hot-fraction distribution.

    Args:
        order: THP-aligned PFNs in order of first appearance (HistBuilder.thp_order).
        loads, stores: per THP of `order` (HistBuilder.loads_stores); 0 without.
    """
    t = thp_table(pfns, counts)
    rank = _ranks(t.thp, order)
    out = []
    sel = np.lexsort((rank, -t.total.astype(np.float64)))[:top]
    for i in sel.tolist():
        s, e = int(t.start[i]), int(t.end[i])
        hot, acc = int(t.hot[i]), int(t.accessed[i])
        ld = int(loads[rank[i]]) if loads is not None and order is not None else 0
        sd = int(stores[rank[i]]) if stores is not None and order is not None else 0
        out.append(f"PFN {int(t.thp[i]):#x}  total_accesses={int(t.total[i])}  loads={ld}  stores={sd}\n")
        out.append(f"  heatmap: {heatmap_row(pfns[s:e], counts[s:e])}\n")
        out.append(f"  4KB pages with access: {acc}/{THP_PAGES}  hot(>=10%max): {hot}  "
                   f"max_access: {int(t.peak[i])}  hot_fraction: {hot * 100 // THP_PAGES}%\n\n")
    out.append("=== Hot fraction distribution (hot_fraction = 4KB pages with any access / 512) ===\n")
    buckets = np.minimum((t.accessed * np.uint64(100) // np.uint64(THP_PAGES)) // np.uint64(10), np.uint64(10))
    nb = np.bincount(buckets.astype(np.int64), minlength=11)
    for b in range(11):
        if nb[b]:
            out.append(f"  {b * 10}-{b * 10 + 10}% hot: {int(nb[b])} THPs\n")
    return "".join(out)


def sparse_summary(pfns: np.ndarray, counts: np.ndarray) -> str:
    """The RFC's T5 figure: THPs with < 10% of their 4 KB pages accessed."""
    t = thp_table(pfns, counts)
    n = len(t.thp)
    sparse = int(np.count_nonzero(t.accessed * np.uint64(10) < np.uint64(THP_PAGES)))
    return f"THPs with < 10% of 4KB pages accessed: {sparse}/{n} ({sparse * 100 // n if n else 0}%)\n"


def candidates_text(pfns: np.ndarray, counts: np.ndarray, threshold: int,
                    order: np.ndarray | None = None) -> tuple[str, int, int]:
    """spe_hist --threshold N (print_split_candidates): THPs whose signal-filtered hot
    percent (subpages with count >= max(max_count / 10, 1)) is below N, in order of first
    appearance (its table order; ascending PFN without `order`).

    Returns:
        (stdout text, number of candidates, number of THPs).
    """
    t = thp_table(pfns, counts)
    pct = t.hot * np.uint64(100) // np.uint64(THP_PAGES)
    sel = np.flatnonzero(pct < np.uint64(threshold))
    sel = sel[np.argsort(_ranks(t.thp, order)[sel], kind="stable")]
    text = "".join(f"PFN {int(t.thp[i]):#x} hot_fraction:{int(pct[i])} total:{int(t.total[i])}\n" for i in sel.tolist())
    return text, len(sel), len(t.thp)
