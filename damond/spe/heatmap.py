"""The split handler's heatmap and hot fraction (`damon_spe_folio_heatmap`,
`damon_spe_hot_fraction` in `mm/damon/spe.c`, RFC v3 two-pass version).

SPE path: chunk i of `1 << target_order` subpages is hot iff its access sum is at least
`max(peak_chunk_sum // 10, 1)`. Without SPE data for the folio (no entry keyed exactly
`folio_pfn`, or an entry with no accesses) the PTE-walk fallback checks the first PTE of
each chunk from the chunk base `addr` and fails with EOPNOTSUPP as soon as it meets a
PMD mapping or a hole, as the RFC does. The engine's split action calls `hot_fraction`.
"""
from __future__ import annotations

import errno

import numpy as np

from damond.errors import ErrnoError

MAX_CHUNKS = 512
PAGE_SIZE = 4096


def check_orders(folio_order: int, target_order: int) -> int:
    """num_chunks for a folio split to target_order, with the kernel's errors.

    Raises:
        ErrnoError: ERANGE when more than 512 chunks, EINVAL when target_order >= folio_order.
    """
    num_chunks = (1 << folio_order) >> target_order if target_order >= 0 else 0
    if num_chunks > MAX_CHUNKS:
        raise ErrnoError(errno.ERANGE, f"{num_chunks} chunks > {MAX_CHUNKS}")
    if target_order < 0 or target_order >= folio_order:
        raise ErrnoError(errno.EINVAL, f"target_order {target_order} >= folio order {folio_order}")
    return num_chunks


def chunk_sums(counts: np.ndarray, num_chunks: int, target_order: int) -> np.ndarray:
    """Per-chunk access sums of a 512-counter histogram (subpages >= 512 count as 0)."""
    spp = 1 << target_order
    padded = np.zeros(num_chunks * spp, dtype=np.uint64)
    n = min(len(counts), len(padded))
    padded[:n] = counts[:n]
    return padded.reshape(num_chunks, spp).sum(axis=1)


def chunk_hot(counts: np.ndarray, num_chunks: int, target_order: int, peak_divisor: int = 10) -> np.ndarray:
    """Two-pass signal filter: hot iff sum >= max(max_sum // peak_divisor, 1) (the RFC: 10)."""
    sums = chunk_sums(counts, num_chunks, target_order)
    sig_thresh = max(int(sums.max()) // peak_divisor, 1) if len(sums) else 1
    return sums >= np.uint64(sig_thresh)


def folio_heatmap(spe, machine, pid: int, folio, addr: int, target_order: int) -> np.ndarray:
    """damon_spe_folio_heatmap: SPE data if any, else the PTE-walk fallback.

    Args:
        spe: the PfnTree.
        machine: the Machine (its `folio_walk` serves the fallback).
        pid: the mapping process.
        folio: a FolioInfo (`pfn`, `order`).
        addr: the address the handler passes (the chunk base, as the RFC).
        target_order: split target order.
    Returns:
        bool[num_chunks] hot bits.
    Raises:
        ErrnoError: EINVAL / ERANGE (orders), EOPNOTSUPP (fallback met a PMD mapping or a hole).
    """
    num_chunks = check_orders(folio.order, target_order)
    hm = spe.heatmap(folio.pfn, folio.order, target_order)
    if hm is not None:
        return hm
    chunk_sz = PAGE_SIZE << target_order
    hot = np.zeros(num_chunks, dtype=bool)
    for i in range(num_chunks):
        fw = machine.folio_walk(pid, addr + i * chunk_sz)
        if fw is None or fw.level == "pmd":
            raise ErrnoError(errno.EOPNOTSUPP, "no SPE data and the folio is not PTE-mapped")
        hot[i] = bool(fw.young)
    return hot


def hot_fraction(spe, machine, pid: int, folio, addr: int, target_order: int) -> int:
    """damon_spe_hot_fraction: hot chunks * 100 // num_chunks (integer percent).

    Raises:
        ErrnoError: as `folio_heatmap`.
    """
    hm = folio_heatmap(spe, machine, pid, folio, addr, target_order)
    return int(np.count_nonzero(hm)) * 100 // len(hm)
