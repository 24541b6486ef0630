"""Vectorised text formatting: printf-style columns for many rows at once, as byte matrices.

A column is a (matrix, mask) pair: `matrix` is uint8 [n, width], `mask` says which bytes
of each row are printed (a left-aligned variable-width value masks its tail). `join`
concatenates columns row by row and keeps the masked bytes in row-major order, which is
the text `"".join(f"...{a}...{b}...\\n" for ...)` would give, without a Python loop per
row. Used by the perf-script printer and the spe_record raw records (damond/spe).
"""
from __future__ import annotations

import numpy as np

Column = tuple[np.ndarray, np.ndarray]
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_SP, _ZERO = ord(" "), ord("0")


def _digits(v: np.ndarray, base: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-aligned digit matrix (zero padded) and the number of significant digits."""
    v = np.asarray(v, dtype=np.uint64).copy()
    n = len(v)
    mat = np.empty((n, width), np.uint8)
    nd = np.ones(n, np.int64)
    b = np.uint64(base)
    for col in range(width - 1, -1, -1):
        d = (v % b).astype(np.intp)
        mat[:, col] = _HEX[d]
        v //= b
        nd = np.where(v > 0, width - col + 1, nd)
    return mat, np.minimum(nd, width)


def _max_digits(v: np.ndarray, base: int) -> int:
    m = int(np.max(v)) if len(v) else 0
    k = 1
    while m >= base:
        m //= base
        k += 1
    return k


def num(v: np.ndarray, width: int = 0, base: int = 10, pad: str = " ", left: bool = False) -> Column:
    """printf `%{width}d` / `%0{width}d` / `%-{width}d` (base 16: `%x`) of non-negative ints;
    width 0: no padding (`%d`). A value wider than `width` widens only its own row."""
    v = np.asarray(v, dtype=np.uint64)
    w = max(width, _max_digits(v, base))
    mat, nd = _digits(v, base, w)
    cols = np.arange(w)[None, :]
    lead = cols < (w - nd)[:, None]                  # positions left of the digits
    mat[lead] = _ZERO if pad == "0" else _SP
    if width == 0:
        return _left_align(mat, ~lead)
    if left:                                          # digits first, then spaces up to `width`
        mat, mask = _left_align(mat, ~lead)
        mat[~mask] = _SP
        return mat, cols < np.maximum(nd, width)[:, None]
    return mat, cols >= np.minimum(w - nd, w - width)[:, None]


def _left_align(mat: np.ndarray, mask: np.ndarray) -> Column:
    """Move each row's masked bytes to the left (mask becomes a prefix)."""
    n, w = mat.shape
    if n == 0:
        return mat, mask
    shift = (~mask).argmin(axis=1) if w else np.zeros(n, np.int64)
    shift = np.where(mask.any(axis=1), shift, 0)
    idx = (np.arange(w)[None, :] + shift[:, None]) % w
    out = np.take_along_axis(mat, idx, axis=1)
    cnt = mask.sum(axis=1)
    return out, np.arange(w)[None, :] < cnt[:, None]


def const(text: bytes, n: int) -> Column:
    """The same bytes on every row."""
    a = np.frombuffer(text, np.uint8)
    return np.broadcast_to(a, (n, len(a))), np.ones((n, len(a)), bool)


def table(strings: list[bytes], idx: np.ndarray) -> Column:
    """strings[idx[i]] on row i (left-aligned, variable width)."""
    w = max((len(s) for s in strings), default=0)
    mat = np.full((len(strings), w), _SP, np.uint8)
    lens = np.array([len(s) for s in strings], np.int64)
    for i, s in enumerate(strings):
        mat[i, :len(s)] = np.frombuffer(s, np.uint8)
    idx = np.asarray(idx, np.intp)
    return mat[idx], np.arange(w)[None, :] < lens[idx][:, None]


def take(col: Column, idx: np.ndarray) -> Column:
    """Rows idx of a column (for printing one record on several lines)."""
    return col[0][idx], col[1][idx]


def join(cols: list[Column]) -> bytes:
    """Row i of the result is the masked bytes of every column's row i, in column order."""
    cols = [c for c in cols if c[0].shape[1]]
    if not cols or not len(cols[0][0]):
        return b""
    mat = np.concatenate([c[0] for c in cols], axis=1)
    mask = np.concatenate([np.broadcast_to(c[1], c[0].shape) for c in cols], axis=1)
    return mat[mask].tobytes()
