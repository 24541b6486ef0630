"""vaddr ops filters on batched folios (`Machine.va_folios`) give exactly what the per-folio
`folio_walk` path gives (stat, filtered migrate, the young filter's mkold), on a machine
with mixed folio orders; the memcg filter on paddr matches exactly the folios of the
processes in that memcg (`Machine.memcg_id`)."""
from __future__ import annotations

import re


from damond.clock import VirtualClock
from damond.config import Config
from damond.damon import params
from damond.damon.kdamond import Kdamond
from damond.damon.params import AccessPattern, Action, Dest, Filter, FilterType, Scheme
from damond.system import System

MiB, KiB = 1 << 20, 1 << 10
UINT_MAX = (1 << 32) - 1
ALL = AccessPattern(0, 1 << 40, 0, UINT_MAX, 0, UINT_MAX)


class PerFolioMachine:
    """The machine without `va_folios`: DAMOS falls back to stepping folio_walk."""

    def __init__(self, m):
        self._m = m

    def __getattr__(self, name):
        if name == "va_folios":
            raise AttributeError(name)
        return getattr(self._m, name)


def system(wl: str, thp: str, nodes: int = 1) -> System:
    cfg = Config.from_text(f"""
seed = 11
[machine]
memory = "256M"
numa_nodes = {nodes}
[thp]
enabled = "{thp}"
[khugepaged]
enabled = false
{wl}""", "<test>")
    s = System.from_config(cfg, VirtualClock())
    s.clock.sleep_us(1_000_000)
    s.machine.advance_to(s.clock.now_us())
    return s


MIXED = """[[workload]]
kind = "uniform"
size = "32M"
hot_size = "6M"
memcg = "/jobs/a"
"""


def mixed(per_folio: bool) -> tuple[System, int]:
    s = system(MIXED, "always", nodes=2)
    m = s.machine
    pid = m.processes()[0].pid
    v = max(m.process(pid).vmas(), key=lambda v: v.end - v.start)
    for off, order in ((0, 4), (2 * MiB, 2), (4 * MiB, 0), (8 * MiB, 5), (12 * MiB, 0)):
        assert m.split_folio_to_order(pid, v.start + off, order) == 0
    assert m.pageout_range(pid, v.start + 12 * MiB, v.start + 12 * MiB + 64 * KiB) == 64 * KiB
    if per_folio:
        s.machine = PerFolioMachine(m)
    return s, pid


def run(per_folio: bool):
    s, pid = mixed(per_folio)
    young = Filter(type=FilterType.YOUNG, matching=True, allow=True)
    small = Filter(type=FilterType.HUGEPAGE_SIZE, matching=True, allow=False, sz_min=16 * KiB, sz_max=64 * KiB)
    memcg = Filter(type=FilterType.MEMCG, matching=True, allow=True, memcg_path="/jobs/a")
    other = Filter(type=FilterType.MEMCG, matching=True, allow=True, memcg_path="/")
    schemes = [Scheme(pattern=ALL, action=Action.MIGRATE_COLD, ops_filters=[small, young],
                      dests=[Dest(id=1, weight=1), Dest(id=0, weight=2)]),
               Scheme(pattern=ALL, action=Action.STAT, ops_filters=[young]),
               Scheme(pattern=ALL, action=Action.STAT, ops_filters=[small, memcg]),
               Scheme(pattern=ALL, action=Action.STAT, ops_filters=[other])]
    k = Kdamond(s, 0)
    k.start(params.Ctx(ops=params.OpsId.VADDR, targets=[params.Target(pid=pid)], schemes=schemes))
    k.run_for(1_000_000)
    stats = [(st.nr_tried, st.sz_tried, st.nr_applied, st.sz_applied, st.sz_ops_filter_passed)
             for st in k.scheme_stats()]
    phys = s.machine.phys
    return stats, phys.flags.copy(), phys.order.copy(), phys.blk_node.copy(), s.machine.proc_smaps(pid)


def test_batched_and_per_folio_paths_agree_on_mixed_orders():
    batched, walked = run(per_folio=False), run(per_folio=True)
    assert batched[0] == walked[0]
    stats = batched[0]
    assert stats[0][3] > 0                                               # migrate moved some
    assert stats[1][4] > 0 and stats[2][4] > 0 and stats[3][4] == 0     # the filters did pass folios
    assert (batched[1] == walked[1]).all() and (batched[2] == walked[2]).all()
    assert (batched[3] == walked[3]).all() and batched[4] == walked[4]


def rss_kb(s: System, pid: int) -> int:
    return int(re.search(r"^Rss:\s+(\d+) kB", s.machine.proc_smaps_rollup(pid), re.M).group(1))


def paddr(s: System, *schemes: Scheme) -> Kdamond:
    lo, hi = s.machine.ram_ranges()[0]
    k = Kdamond(s, 0)
    k.start(params.Ctx(ops=params.OpsId.PADDR, targets=[params.Target(regions=[params.AddrRange(lo, hi)])],
                       schemes=list(schemes)))
    return k


IDLE3 = """[[workload]]
kind = "mmap"
size = "8M"
populate = true
memcg = "/jobs/a"
[[workload]]
kind = "mmap"
size = "4M"
populate = true
memcg = "/jobs/b"
[[workload]]
kind = "mmap"
size = "2M"
populate = true
memcg = "/jobs/a/"
"""


def test_paddr_stat_memcg_filter_passes_exactly_that_memcgs_folios():
    s = system(IDLE3, "never")
    a1, b, a2 = [p.pid for p in s.machine.processes()]
    in_a = sum(len(s.machine.va_folios(p, 0, 1 << 48).pfn) for p in (a1, a2)) * 4 * KiB
    assert in_a == (rss_kb(s, a1) + rss_kb(s, a2)) * KiB == 10 * MiB
    k = paddr(s, Scheme(pattern=ALL, action=Action.STAT,
                        ops_filters=[Filter(type=FilterType.MEMCG, matching=True, allow=True, memcg_path="/jobs/a")]),
              Scheme(pattern=ALL, action=Action.STAT,
                     ops_filters=[Filter(type=FilterType.MEMCG, matching=False, allow=True, memcg_path="/jobs/b")]),
              Scheme(pattern=ALL, action=Action.STAT,
                     ops_filters=[Filter(type=FilterType.MEMCG, matching=True, allow=True, memcg_path="/none")]))
    k.run_for(100_000)
    a, not_b, none = k.scheme_stats()
    assert a.nr_snapshots >= 1 and a.sz_ops_filter_passed == in_a * a.nr_snapshots
    resident = sum(rss_kb(s, p) for p in (a1, b, a2)) * KiB
    assert not_b.sz_ops_filter_passed == (resident - rss_kb(s, b) * KiB) * not_b.nr_snapshots
    assert none.sz_ops_filter_passed == 0


def test_paddr_pageout_memcg_filter_reclaims_only_that_memcg():
    s = system(IDLE3, "never")
    a1, b, a2 = [p.pid for p in s.machine.processes()]
    before_b = rss_kb(s, b)
    k = paddr(s, Scheme(pattern=ALL, action=Action.PAGEOUT,
                        ops_filters=[Filter(type=FilterType.MEMCG, matching=True, allow=True, memcg_path="/jobs/a")]))
    k.run_for(300_000)
    assert rss_kb(s, a1) == 0 and rss_kb(s, a2) == 0
    assert rss_kb(s, b) == before_b and before_b >= 4 * 1024
    assert k.scheme_stats()[0].sz_applied >= 10 * MiB
