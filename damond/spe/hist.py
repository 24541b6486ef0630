"""Per-THP subpage histograms from `perf script` text: what `spe_hist.c` does, fixed.

Input is real arm64 or emulated `perf script` text: any field list, as long as phys_addr
is printed (it is the last token of the line; perf prints it `%16lx`, no `0x`). One SPE
record prints several event lines; they are counted once: when `memory` lines are
present only they count (one per load/store record), otherwise consecutive lines with
the same physical address are one record (the only possible rule for `-F phys_addr`).
Header lines (`#...`, `Samples for ...`) and blank lines are skipped and counted, as are
lines without a usable PA. Parsing is vectorised per chunk of lines; nothing is dropped
silently (spe_hist.c's 4096-THP limit is gone).
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


def _has(chunk, pat: bytes) -> bool:
    """pat occurs in chunk (bytes or any buffer, e.g. a memoryview of the read buffer)."""
    if isinstance(chunk, (bytes, bytearray)):
        return pat in chunk
    return re.search(re.escape(pat), chunk) is not None


def _count(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(keys, return_counts=True), a little faster."""
    s = np.sort(keys)
    first = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    return s[first], np.diff(np.append(first, len(s))).astype(np.uint64)


@dataclass
class HistStats:
    lines: int = 0
    records: int = 0
    duplicate_lines: int = 0      # further event lines of an already counted record
    skipped_no_pa: int = 0
    skipped_header: int = 0


@dataclass
class HistBuilder:
    """Feed chunks of complete lines; `subpages()` gives the (PFN, count) table."""
    stats: HistStats = field(default_factory=HistStats)
    mode: str | None = None                 # "memory" | "runs"
    _last_pa: int = -1
    _parts: list = field(default_factory=list)
    _buf: np.ndarray | None = None

    def feed(self, chunk) -> None:
        """Count the records of `chunk` (bytes or a buffer of complete lines; a last line
        without newline is a line)."""
        st = self.stats
        if self.mode is None:
            self.mode = "memory" if _has(chunk, b" memory: ") else "runs"
        if _feedparse is not None:
            pa = self._feed_c(chunk)
        else:
            pa = self._feed_py(chunk)
        if self.mode == "runs" and len(pa):
            prev = np.concatenate([[np.uint64(self._last_pa & ((1 << 64) - 1)) if self._last_pa >= 0 else np.uint64(0)], pa[:-1]])
            dup = pa == prev
            if self._last_pa < 0:
                dup[0] = False
            dup &= pa != 0
            self._last_pa = int(pa[-1])
            st.duplicate_lines += int(np.count_nonzero(dup))
            pa = pa[~dup]
        good = pa != 0
        st.skipped_no_pa += int(len(pa) - np.count_nonzero(good))
        pa = pa[good]
        st.records += len(pa)
        if len(pa):
            self._parts.append(_count(pa >> np.uint64(PAGE_SHIFT)))

    def _feed_c(self, chunk) -> np.ndarray:
        st = self.stats
        if self._buf is None:
            self._buf = np.empty(1 << 20, dtype=np.uint64)
        parts, view = [], memoryview(chunk)
        while len(view):
            n_lines, n_hdr, n_other, n, used = _feedparse.perf_pa(view, self.mode == "memory", True, self._buf)
            st.lines += n_lines
            st.skipped_header += n_hdr
            st.duplicate_lines += n_other
            parts.append(self._buf[:n].copy())
            view = view[used:]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _feed_py(self, chunk) -> np.ndarray:
        lines = bytes(chunk).split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        st = self.stats
        st.lines += len(lines)
        kept = [ln for ln in lines if ln.strip(b" \t\r") and not ln.startswith(b"#")
                and not (ln.lstrip(b" \t\r")[:1] in (b"S", b"W") and b"Samples for" in ln)]
        st.skipped_header += len(lines) - len(kept)
        if self.mode == "memory":
            sel = [ln for ln in kept if b" memory: " in ln]
            st.duplicate_lines += len(kept) - len(sel)
            kept = sel
        return parse_hex_tokens([ln.split()[-1] for ln in kept])

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


def report_text(pfns: np.ndarray, counts: np.ndarray, top: int = 10) -> str:
    """Top THPs by total with heatmap rows, then the hot-fraction distribution (T5 table)."""
    t = thp_table(pfns, counts)
    out = []
    order = np.lexsort((t.thp, -t.total.astype(np.float64)))[:top]
    for i in order.tolist():
        s, e = int(t.start[i]), int(t.end[i])
        hot, acc = int(t.hot[i]), int(t.accessed[i])
        out.append(f"PFN {int(t.thp[i]):#x}  total_accesses={int(t.total[i])}\n")
        out.append(f"  heatmap: {heatmap_row(pfns[s:e], counts[s:e])}\n")
        out.append(f"  4KB pages with access: {acc}/{THP_PAGES}  hot(>=10%max): {hot}  "
                   f"max_access: {int(t.peak[i])}  hot_fraction: {hot * 100 // THP_PAGES}%\n\n")
    out.append("=== Hot fraction distribution (hot_fraction = 4KB pages with any access / 512) ===\n")
    buckets = np.minimum((t.accessed * np.uint64(100) // np.uint64(THP_PAGES)) // np.uint64(10), np.uint64(10))
    nb = np.bincount(buckets.astype(np.int64), minlength=11)
    for b in range(11):
        if nb[b]:
            out.append(f"  {b * 10}-{b * 10 + 10}% hot: {int(nb[b])} THPs\n")
    n = len(t.thp)
    sparse = int(np.count_nonzero(t.accessed * np.uint64(10) < np.uint64(THP_PAGES)))
    out.append(f"THPs with < 10% of 4KB pages accessed: {sparse}/{n} ({sparse * 100 // n if n else 0}%)\n")
    return "".join(out)


def candidates_text(pfns: np.ndarray, counts: np.ndarray, threshold: int) -> tuple[str, int, int]:
    """spe_hist --threshold N: THPs whose signal-filtered hot percent is below N.

    Returns:
        (stdout text, number of candidates, number of THPs).
    """
    t = thp_table(pfns, counts)
    pct = t.hot * np.uint64(100) // np.uint64(THP_PAGES)
    sel = np.flatnonzero(pct < np.uint64(threshold))
    text = "".join(f"PFN {int(t.thp[i]):#x} hot_fraction:{int(pct[i])} total:{int(t.total[i])}\n" for i in sel.tolist())
    return text, len(sel), len(t.thp)
