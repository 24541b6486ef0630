"""[spe] peak_divisor: the two-pass signal filter's 1/10 of the peak as a knob (default 10, the RFC's)."""
from __future__ import annotations

import numpy as np
import pytest

from damond.clock import VirtualClock
from damond.config import Config
from damond.errors import ConfigError
from damond.spe.tree import PfnTree


def tree(extra: str) -> PfnTree:
    return PfnTree.from_config(Config.from_text(f"[spe]\n{extra}", "<t>"), VirtualClock())


def test_peak_divisor_decides_which_chunks_are_hot():
    pfns = np.array([0x1000, 0x1004, 0x1008], dtype=np.uint64)     # three 16 KiB chunks of one THP
    counts = np.array([100, 20, 9], dtype=np.uint64)
    for extra, hot in (("", 2), ("peak_divisor = 10\n", 2), ("peak_divisor = 2\n", 1), ("peak_divisor = 50\n", 3)):
        t = tree(extra)
        t.record_many(pfns, counts)
        assert int(t.heatmap(0x1000, 9, 2).sum()) == hot, extra


def test_bad_peak_divisor_names_the_key():
    for bad in ("0", "-1", "1.5", "true"):
        with pytest.raises(ConfigError, match="peak_divisor"):
            tree(f"peak_divisor = {bad}\n")
