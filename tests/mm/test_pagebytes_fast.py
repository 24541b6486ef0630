"""PageBytes' per-sample fast paths (update through block heads, cached slice runs, and
positions from locate() kept while `gen` is unchanged) read and write exactly what a flat
uint8 array would, while the same keys come back again and again, as DAMON's samples and
a workload's stream runs do."""
from __future__ import annotations

import numpy as np

from damond.mm.pagebytes import PageBytes, _lut

NB = 8
N = NB * 512
MKOLD = ((np.arange(256) & ~1) | 2 | np.where(np.arange(256) & 1, 4, 0)).astype(np.uint8)


def test_repeated_keys_match_a_flat_array():
    rng = np.random.default_rng(1)
    for _ in range(60):
        ref, pb = np.zeros(N, np.uint8), PageBytes(NB)
        runs = [slice(0, N, 512), slice(3, N, 512), slice(int(rng.integers(0, 512)), N - 5, 512),
                slice(int(rng.integers(0, N // 2)), int(rng.integers(N // 2, N)), 1)]
        heads = np.unique(rng.integers(0, NB, 4)).astype(np.int64) << 9
        for _ in range(60):
            k = int(rng.integers(0, 7))
            if k == 0:                                   # a stream's run: AF on
                r = runs[int(rng.integers(0, len(runs)))]
                ref[r] |= 1
                pb.set_bits(r, 1)
            elif k == 1:                                 # mkold over block heads (THP leaves)
                ref[heads] = MKOLD[ref[heads]]
                pb.update(heads, MKOLD)
            elif k == 2:                                 # mkold over 4 KB pages, kept positions
                idx = rng.integers(0, N, int(rng.integers(1, 20))).astype(np.int64)
                gen, pos, private = pb.locate(idx)
                assert (pb.flat[pos] == ref[idx]).all()
                ref[idx] = MKOLD[ref[idx]]
                if private:
                    pb.flat[pos] = MKOLD.take(pb.flat[pos])
                else:
                    pb.update(idx, MKOLD)
                    if pb.gen == gen:                    # no block moved: positions still right
                        assert (pb.flat[pos] == ref[idx]).all()
            elif k == 3:                                 # whole blocks back to one value
                bl = np.unique(rng.integers(0, NB, 2))
                v = int(rng.integers(0, 4))
                ref.reshape(-1, 512)[bl] = v
                pb.set_rows(bl, v)
            elif k == 4:
                r = runs[int(rng.integers(0, len(runs)))]
                ref[r] &= ~np.uint8(8)
                pb.update(r, _lut(8, False))
            elif k == 5:
                ref[heads] |= 16
                pb.set_bits(heads, 16)
            else:
                pb.compact()
            assert (pb.copy() == ref).all()
            for r in runs:
                assert (pb[r] == ref[r]).all()
