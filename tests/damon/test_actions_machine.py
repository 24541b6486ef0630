"""DAMOS actions, ops filters and quotas on the real emulated Machine (damond.mm), virtual
time: what each action does to memory (pageout and fault-back, willneed, cold, the
hugepage hints, migrate_hot over weighted dests on two nodes), paddr pageout and stat
with the anon / young / hugepage_size / unmapped filters, and size/time quota charging."""
from __future__ import annotations

import re

import numpy as np

from damond.clock import VirtualClock
from damond.config import Config
from damond.damon import params
from damond.damon.kdamond import Kdamond
from damond.damon.params import AccessPattern, Action, Dest, Filter, FilterType, Quota, Scheme
from damond.system import System

MiB = 1 << 20
PAGE = 4096
UINT_MAX = (1 << 32) - 1
ALL = AccessPattern(0, 1 << 40, 0, UINT_MAX, 0, UINT_MAX)
IDLE = AccessPattern(0, 1 << 40, 0, 0, 5, UINT_MAX)
HOT = AccessPattern(0, 1 << 40, 10, UINT_MAX, 0, UINT_MAX)


def system(*workloads: str, thp: str = "never", nodes: int = 1) -> System:
    wl = "".join(f"[[workload]]\n{w}\n" for w in workloads)
    cfg = Config.from_text(f"""
seed = 5
[machine]
memory = "1G"
numa_nodes = {nodes}
[thp]
enabled = "{thp}"
[khugepaged]
enabled = false
{wl}""", "<test>")
    s = System.from_config(cfg, VirtualClock())
    run_machine(s, 1_000_000)
    return s


def run_machine(s: System, us: int) -> None:
    """Let the workloads run with no kdamond: the clock and the machine move together."""
    s.clock.sleep_us(us)
    s.machine.advance_to(s.clock.now_us())


def rollup_kb(s: System, pid: int, key: str) -> int:
    return int(re.search(rf"^{key}:\s+(\d+) kB", s.machine.proc_smaps_rollup(pid), re.M).group(1))


def area(s: System, pid: int):
    return max(s.machine.process(pid).vmas(), key=lambda v: v.end - v.start)


def pids(s: System) -> list[int]:
    return [p.pid for p in s.machine.processes()]


def vaddr(s: System, pid: int, *schemes: Scheme) -> Kdamond:
    k = Kdamond(s, 0)
    k.start(params.Ctx(ops=params.OpsId.VADDR, targets=[params.Target(pid=pid)], schemes=list(schemes)))
    return k


def paddr(s: System, *schemes: Scheme) -> Kdamond:
    lo, hi = max(s.machine.ram_ranges(), key=lambda r: r[1] - r[0])
    k = Kdamond(s, 0)
    k.start(params.Ctx(ops=params.OpsId.PADDR, targets=[params.Target(regions=[params.AddrRange(lo, hi)])],
                       schemes=list(schemes)))
    return k


def present(s: System, pid: int, start: int, end: int, step: int = 64 * PAGE) -> np.ndarray:
    return np.array([s.machine.folio_walk(pid, a) is not None for a in range(start, end, step)])


UNIFORM = 'kind = "uniform"\nsize = "64M"\nhot_size = "16M"'


def test_vaddr_pageout_reclaims_the_idle_part_and_an_access_faults_it_back():
    s = system(UNIFORM)
    pid = pids(s)[0]
    v = area(s, pid)
    k = vaddr(s, pid, Scheme(pattern=IDLE, action=Action.PAGEOUT))
    k.run_for(3_000_000)
    st = k.scheme_stats()[0]
    assert st.sz_applied >= 40 * MiB and st.sz_applied % PAGE == 0
    assert rollup_kb(s, pid, "Swap") * 1024 >= 40 * MiB
    assert present(s, pid, v.start, v.start + 16 * MiB).all()          # the hot 16 MiB stays
    assert not present(s, pid, v.start + 24 * MiB, v.end).any()
    swap = rollup_kb(s, pid, "Swap")
    addrs = np.arange(v.start + 32 * MiB, v.start + 33 * MiB, PAGE, dtype=np.uint64)
    s.machine.access(pid, addrs)
    assert present(s, pid, v.start + 32 * MiB, v.start + 33 * MiB, PAGE).all()
    assert rollup_kb(s, pid, "Swap") == swap - 1024


def test_willneed_brings_paged_out_memory_back():
    s = system('kind = "mmap"\nsize = "32M"\npopulate = true')
    pid = pids(s)[0]
    v = area(s, pid)
    assert s.machine.pageout_range(pid, v.start, v.end) == 32 * MiB
    k = vaddr(s, pid, Scheme(pattern=ALL, action=Action.WILLNEED))
    k.run_for(300_000)
    assert rollup_kb(s, pid, "Swap") == 0 and rollup_kb(s, pid, "Rss") == 32 * 1024
    assert present(s, pid, v.start, v.end, PAGE).all()
    assert k.scheme_stats()[0].sz_applied >= 32 * MiB


def test_cold_clears_accessed_bits_and_deactivates():
    s = system('kind = "mmap"\nsize = "32M"\npopulate = true')
    pid = pids(s)[0]
    v = area(s, pid)
    lo, hi = max(s.machine.ram_ranges(), key=lambda r: r[1] - r[0])
    s.machine.lru_prio(lo, hi, True)
    assert s.machine.active_mem_bp(True) == 10000
    assert s.machine.folio_walk(pid, v.start).young
    k = vaddr(s, pid, Scheme(pattern=ALL, action=Action.COLD))
    k.run_for(300_000)
    assert s.machine.active_mem_bp(True) == 0
    assert not any(s.machine.folio_walk(pid, a).young for a in range(v.start, v.end, 256 * PAGE))
    assert rollup_kb(s, pid, "Rss") == 32 * 1024          # cold is a hint: nothing reclaimed


def test_hugepage_and_nohugepage_set_the_vma_hint_used_by_thp_madvise_mode():
    s = system('kind = "mmap"\nsize = "32M"', thp="madvise")
    pid = pids(s)[0]
    v = area(s, pid)
    k = vaddr(s, pid, Scheme(pattern=ALL, action=Action.HUGEPAGE))
    k.run_for(300_000)
    assert area(s, pid).hugepage_hint == "hugepage"
    s.machine.access(pid, np.array([v.start + 4 * MiB], dtype=np.uint64))
    assert s.machine.folio_walk(pid, v.start + 4 * MiB).order == 9      # faulted in as a THP
    k.commit(params.Ctx(ops=params.OpsId.VADDR, targets=[params.Target(pid=pid)],
                        schemes=[Scheme(pattern=ALL, action=Action.NOHUGEPAGE)]))
    k.run_for(300_000)
    assert area(s, pid).hugepage_hint == "nohugepage"
    s.machine.access(pid, np.array([v.start + 8 * MiB], dtype=np.uint64))
    assert s.machine.folio_walk(pid, v.start + 8 * MiB).order == 0


def test_migrate_hot_spreads_thps_over_weighted_dests_on_two_nodes():
    """Weighted interleave by the folio's interleave index: weights 1:1 alternate the hot
    PMD THPs between node 0 and node 1; cold memory stays where it was."""
    s = system('kind = "uniform"\nsize = "64M"\nhot_size = "16M"\nnode = 0\nhint = "hugepage"',
               thp="always", nodes=2)
    pid = pids(s)[0]
    v = area(s, pid)
    k = vaddr(s, pid, Scheme(pattern=AccessPattern(0, 1 << 40, 0, UINT_MAX, 0, UINT_MAX),
                             action=Action.MIGRATE_HOT, dests=[Dest(0, 1), Dest(1, 1)]))
    k.run_for(300_000)
    base = (v.start + (2 * MiB) - 1) & ~(2 * MiB - 1)
    nids = [s.machine.folio_walk(pid, a).nid for a in range(base, base + 64 * MiB - 2 * MiB, 2 * MiB)]
    assert sorted(set(nids)) == [0, 1] and abs(nids.count(1) - nids.count(0)) <= 1, nids
    assert all(nids[i] != nids[i + 1] for i in range(len(nids) - 1)), nids
    moved = k.scheme_stats()[0].sz_applied
    k.run_for(300_000)
    assert k.scheme_stats()[0].sz_applied == moved          # stable: nothing moves twice


def test_migrate_hot_with_target_nid_moves_only_hot_memory():
    s = system(UNIFORM + '\nnode = 0', nodes=2)
    pid = pids(s)[0]
    v = area(s, pid)
    k = vaddr(s, pid, Scheme(pattern=HOT, action=Action.MIGRATE_HOT, target_nid=1))
    k.run_for(2_000_000)
    assert {s.machine.folio_walk(pid, a).nid for a in range(v.start, v.start + 14 * MiB, 64 * PAGE)} == {1}
    assert {s.machine.folio_walk(pid, a).nid for a in range(v.start + 24 * MiB, v.end, 64 * PAGE)} == {0}


def test_paddr_pageout_keeps_young_pages_by_default():
    """damon_pa_pageout(): without a young filter, young folios are not reclaimed."""
    s = system(UNIFORM)
    pid = pids(s)[0]
    v = area(s, pid)
    k = paddr(s, Scheme(pattern=ALL, action=Action.PAGEOUT))
    k.run_for(300_000)
    assert present(s, pid, v.start, v.start + 16 * MiB).mean() >= 0.9
    assert rollup_kb(s, pid, "Swap") * 1024 >= 40 * MiB


def test_paddr_pageout_anon_filter_spares_shmem():
    s = system('kind = "mmap"\nsize = "16M"\npopulate = true',
               'kind = "mmap"\nsize = "16M"\npopulate = true\nshmem = true')
    anon_pid, shm_pid = pids(s)
    run_machine(s, 1_000_000)                # both populated; nothing touched since
    k = paddr(s, Scheme(pattern=ALL, action=Action.PAGEOUT,
                        ops_filters=[Filter(type=FilterType.ANON, matching=True, allow=True)]))
    k.run_for(300_000)
    assert rollup_kb(s, anon_pid, "Rss") == 0
    assert rollup_kb(s, shm_pid, "Rss") == 16 * 1024


def test_paddr_stat_hugepage_size_filter_passes_only_pmd_folios():
    s = system('kind = "mmap"\nsize = "16M"\npopulate = true\nhint = "hugepage"',
               'kind = "mmap"\nsize = "8M"\npopulate = true\nhint = "nohugepage"', thp="madvise")
    f = Filter(type=FilterType.HUGEPAGE_SIZE, matching=True, allow=True, sz_min=2 * MiB, sz_max=2 * MiB)
    k = paddr(s, Scheme(pattern=ALL, action=Action.STAT, ops_filters=[f]))
    k.run_for(100_000)
    st = k.scheme_stats()[0]
    assert st.nr_snapshots >= 1 and st.sz_ops_filter_passed == 16 * MiB * st.nr_snapshots


def test_paddr_stat_unmapped_and_anon_filters():
    s = system('kind = "mmap"\nsize = "8M"\npopulate = true')
    unmapped = Filter(type=FilterType.UNMAPPED, matching=True, allow=True)
    anon = Filter(type=FilterType.ANON, matching=True, allow=True)
    k = paddr(s, Scheme(pattern=ALL, action=Action.STAT, ops_filters=[unmapped]),
              Scheme(pattern=ALL, action=Action.STAT, ops_filters=[anon]))
    k.run_for(100_000)
    a, b = k.scheme_stats()
    assert a.sz_ops_filter_passed == 0              # every resident folio is mapped
    assert b.sz_ops_filter_passed == 8 * MiB * b.nr_snapshots


def test_size_quota_bounds_each_window_on_the_real_machine():
    s = system('kind = "mmap"\nsize = "64M"\npopulate = true')
    pid = pids(s)[0]
    k = vaddr(s, pid, Scheme(pattern=ALL, action=Action.PAGEOUT,
                             quota=Quota(sz=4 * MiB, reset_interval=100)))
    applied = []
    for _ in range(8):
        before = k.scheme_stats()[0].sz_applied
        k.run_for(100_000)
        applied.append(k.scheme_stats()[0].sz_applied - before)
    assert all(a <= 4 * MiB for a in applied) and sum(applied) >= 24 * MiB, applied
    assert k.scheme_stats()[0].qt_exceeds >= 6
    assert rollup_kb(s, pid, "Swap") * 1024 == k.scheme_stats()[0].sz_applied


def test_time_quota_charges_the_emulated_cost():
    """ms quota: esz = throughput x ms, with throughput from the charged emulated cost."""
    s = system('kind = "mmap"\nsize = "64M"\npopulate = true')
    pid = pids(s)[0]
    k = vaddr(s, pid, Scheme(pattern=ALL, action=Action.PAGEOUT, quota=Quota(ms=1, reset_interval=100)))
    k.run_for(1_000_000)
    q = k.ctx.schemes[0].quota
    # per page: 2580 ns to page out a resident page, 80 ns to scan a paged-out one
    assert q.total_charged_ns > 0 and PAGE * 1_000_000 // 2580 <= q.esz <= PAGE * 1_000_000 // 80
    before = k.scheme_stats()[0].sz_tried
    k.run_for(100_000)
    assert 0 < k.scheme_stats()[0].sz_tried - before <= q.esz
