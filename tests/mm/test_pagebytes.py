"""PageBytes (damond/mm/pagebytes.py) reads and writes exactly what a flat uint8 array
would, whatever mix of shared and private rows the blocks end up in, and keeps blocks
that are one folio on shared rows (what the per-page memory cost depends on)."""
from __future__ import annotations

import numpy as np

from damond.mm.pagebytes import PageBytes

NB = 8
N = NB * 512


def test_every_operation_matches_a_flat_array():
    rng = np.random.default_rng(0)
    for _ in range(150):
        ref, pb = np.zeros(N, np.uint8), PageBytes(NB)
        for _ in range(40):
            k = int(rng.integers(0, 10))
            s = int(rng.integers(0, N))
            e = int(rng.integers(s, N + 1))
            idx = rng.integers(0, N, int(rng.integers(1, 50)))
            bl = np.unique(rng.integers(0, NB, 3))
            if k == 0:
                v = int(rng.integers(0, 256))
                ref[s] = v
                pb[s] = v
            elif k == 1:
                v = int(rng.integers(0, 4))
                ref[s:e] = v
                pb[s:e] = v
            elif k == 2:
                v = rng.integers(0, 4, len(idx)).astype(np.uint8)
                ref[idx] = v
                pb[idx] = v
            elif k == 3:
                ref[bl * 512] |= 0x10
                pb[bl * 512] |= 0x10
            elif k == 4:
                v = int(rng.integers(0, 256))
                ref.reshape(-1, 512)[bl] = v
                pb.set_rows(bl, v)
            elif k == 5:
                lut = (np.arange(256) & ~2).astype(np.uint8)
                ref.reshape(-1, 512)[bl] = lut[ref.reshape(-1, 512)[bl]]
                pb.apply_rows(bl, lut)
            elif k == 6:
                st = [1, 7, 512, 1024][int(rng.integers(0, 4))]
                ref[s:e:st] |= 4
                pb.set_bits(slice(s, e, st), 4)
            elif k == 7:
                ref[idx] &= ~np.uint8(1)
                pb.clear_bits(idx, 1)
            elif k == 8:
                lut = np.where(np.arange(256) & 1, np.arange(256) | 8, np.arange(256)).astype(np.uint8)
                assert pb.count_range(s, e, 1, 1) == int(((ref[s:e] & 1) == 1).sum())
                ref[s:e] = lut[ref[s:e]]
                pb.apply_range(s, e, lut)
            else:
                pb.compact()
            assert (pb.copy() == ref).all()
            q = rng.integers(0, N, (3, 5))
            assert (pb[q] == ref[q]).all() and (pb[s:e] == ref[s:e]).all()
            assert (pb[s:e:512] == ref[s:e:512]).all() and int(pb[s]) == int(ref[s])
            assert pb.count(3, 1) == int(((ref & 3) == 1).sum())
            assert (pb.rows(bl) == ref.reshape(-1, 512)[bl]).all()
            assert (pb.any_rows(np.arange(NB), 2) == (ref.reshape(-1, 512) & 2).any(axis=1)).all()


def test_folio_blocks_share_rows_and_split_ones_go_back():
    pb = PageBytes(1024)
    pb.set_rows(np.arange(1000), 0x0B)                      # 1000 PMD-mapped THPs
    pb.set_bits(np.arange(1000) * 512, 0x10)                # PG_idle on each head
    assert pb.nrows <= 3 and (pb.copy().reshape(-1, 512)[:1000, 0] == 0x1B).all()
    pb[5 * 512 + 7] = 1                                     # one page differs: a private row
    assert (~pb.bsh).sum() == 1
    pb[5 * 512:6 * 512] = 0                                 # the block written whole: shared again
    assert pb.bsh.all()
