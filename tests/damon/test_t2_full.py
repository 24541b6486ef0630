"""The RFC's T2 at full size: sparse_8g, 8 GiB, one 4 KiB page per 2 MiB touched,
monitored by vaddr DAMON in virtual time with the default attributes (5 ms / 100 ms, up to
1000 regions). With THP, one Access Flag per 2 MiB makes all 8 GiB look hot; with 4 KiB
pages DAMON's estimate falls far below it. The long run (slow: `python -m pytest -m slow`)
averages every aggregation of 5 emulated minutes per page size."""
from __future__ import annotations

import numpy as np
import pytest

from damond.clock import VirtualClock
from damond.config import Config
from damond.damon import params
from damond.damon.kdamond import Kdamond
from damond.system import System

GiB, MiB = 1 << 30, 1 << 20


def hot_bytes(thp: str, seconds: float = 5.0, every_aggr: bool = False) -> tuple[int, int]:
    """(bytes with nr_accesses >= 1, total) of the last aggregation, or their averages
    over every aggregation with every_aggr."""
    cfg = Config.from_text(f"""
seed = 1
[machine]
memory = "16G"
[thp]
enabled = "{thp}"
[khugepaged]
enabled = false
[[workload]]
kind = "sparse-hotspot"
size = "8G"
""", "<t2>")
    s = System.from_config(cfg, VirtualClock())
    pid = s.machine.processes()[0].pid
    # past phase A (touch all 8 GiB) into the sparse phase
    for _ in range(100):
        s.clock.sleep_us(1_000_000)
        s.machine.advance_to(s.clock.now_us())
        w = s.machine.process(pid).workload
        if w.phase_at(s.clock.now_us())[0] >= 1:
            break
    k = Kdamond(s, 0)
    k.start(params.Ctx(ops=params.OpsId.VADDR, targets=[params.Target(pid=pid)]))
    hots, totals = [], []
    for _ in range(int(seconds / 0.1) if every_aggr else 1):
        k.run_for(100_000 if every_aggr else int(seconds * 1e6))
        r = k.ctx.targets[0].regions
        sz = r.sizes().astype(np.int64)
        hots.append(int(sz[r.last_nr_accesses >= 1].sum()))
        totals.append(int(sz.sum()))
        assert len(r) <= 1000
    k.stop()
    return sum(hots) // len(hots), min(totals)


def test_t2_thp_makes_the_whole_8g_look_hot():
    hot, total = hot_bytes("always")
    assert total >= 8 * GiB
    assert hot >= 7 * GiB, hot / MiB


def test_t2_4k_pages_show_far_less():
    hot, total = hot_bytes("never")
    assert total >= 8 * GiB
    assert hot <= 4 * GiB, hot / MiB


@pytest.mark.slow
@pytest.mark.parametrize("thp,lo,hi", [("always", 7 * GiB, 9 * GiB), ("never", 16 * MiB, 4 * GiB)])
def test_t2_five_emulated_minutes_averaged_over_every_aggregation(thp, lo, hi):
    hot, total = hot_bytes(thp, seconds=300.0, every_aggr=True)
    assert total >= 8 * GiB
    assert lo <= hot <= hi, hot / MiB
