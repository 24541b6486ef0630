"""The engine on the real emulated Machine (damond.mm), virtual time: a uniformly hot
range reads near aggr_samples and an idle one 0; the T1 blind spot (16 MB of THPs that
stay in the TLB are never seen accessed); paddr over the RAM the workload uses."""
from __future__ import annotations

import numpy as np

from damond.clock import VirtualClock
from damond.config import Config
from damond.damon import params
from damond.damon.kdamond import Kdamond
from damond.system import System

MB = 1 << 20


def system(workload: str, thp: str = "never", memory: str = "1G", extra: str = "") -> System:
    cfg = Config.from_text(f"""
seed = 3
[machine]
memory = "{memory}"
{extra}
[thp]
enabled = "{thp}"
[khugepaged]
enabled = false
[[workload]]
{workload}
""", "<test>")
    return System.from_config(cfg, VirtualClock())


def start_vaddr(s: System, **attrs) -> Kdamond:
    pid = s.machine.processes()[0].pid
    k = Kdamond(s, 0)
    k.start(params.Ctx(ops=params.OpsId.VADDR, attrs=params.Attrs(**attrs), targets=[params.Target(pid=pid)]))
    return k


def by_level(k: Kdamond) -> tuple[int, int, int]:
    """(bytes read >= 18 of 20, bytes read 0, total) from the last finished aggregation."""
    r = k.ctx.targets[0].regions
    sz = r.sizes().astype(np.int64)
    return int(sz[r.last_nr_accesses >= 18].sum()), int(sz[r.last_nr_accesses == 0].sum()), int(sz.sum())


def test_uniformly_hot_range_reads_near_aggr_samples_and_idle_reads_zero():
    # 64 MB hot of 256 MB, 4 KB pages: 16384 hot pages overflow the TLB, each touched every ~1 ms
    s = system('kind = "uniform"\nsize = "256M"\nhot_size = "64M"')
    k = start_vaddr(s)
    k.run_for(3_000_000)
    assert k.ctx.passed_sample_intervals == 600 and k.ctx.nr_aggregations == 30
    hot, idle, total = by_level(k)
    assert 56 * MB <= hot <= 72 * MB
    assert idle >= total - 72 * MB
    pid = s.machine.processes()[0].pid
    v = max(s.machine.process(pid).vmas(), key=lambda v: v.end - v.start)
    r = k.ctx.targets[0].regions
    inside_hot = (r.start >= v.start) & (r.end <= v.start + 56 * MB)
    assert inside_hot.any() and (r.last_nr_accesses[inside_hot] >= 18).all()


def test_t1_blind_spot_16m_thp_reads_zero():
    # 8 PMD-mapped THPs stay in the 2048-entry L2 TLB after the first touch: the AF is never
    # set again after DAMON's mkold, so the busy 16 MB working set reads as idle.
    s = system('kind = "uniform"\nsize = "16M"', thp="always", memory="64M")
    k = start_vaddr(s)
    k.run_for(2_000_000)
    r = k.ctx.targets[0].regions
    assert k.ctx.nr_aggregations == 20
    assert int(r.last_nr_accesses.max()) == 0 and int(r.nr_accesses_bp.max()) == 0


def test_same_16m_with_4k_pages_is_seen():
    """Control for the blind spot: 4096 PTEs do not fit the TLB, so accesses set AFs."""
    s = system('kind = "uniform"\nsize = "16M"', thp="never", memory="64M")
    k = start_vaddr(s)
    k.run_for(2_000_000)
    r = k.ctx.targets[0].regions
    pid = s.machine.processes()[0].pid
    v = max(s.machine.process(pid).vmas(), key=lambda v: v.end - v.start)
    inside = (r.start >= v.start) & (r.end <= v.end)
    assert inside.any() and int(r.last_nr_accesses[inside].max()) >= 10


def test_paddr_sees_the_hot_ram():
    s = system('kind = "uniform"\nsize = "256M"\nhot_size = "64M"')
    lo, hi = max(s.machine.ram_ranges(), key=lambda r: r[1] - r[0])
    k = Kdamond(s, 0)
    k.start(params.Ctx(ops=params.OpsId.PADDR, targets=[params.Target(regions=[params.AddrRange(lo, hi)])]))
    k.run_for(3_000_000)
    r = k.ctx.targets[0].regions
    sz = r.sizes().astype(np.int64)
    hot = int(sz[r.last_nr_accesses >= 15].sum())
    assert 32 * MB <= hot <= 128 * MB
    assert k.ctx.nr_regions() >= 10
