"""The RFC's split and collapse on the real emulated Machine (damond.mm), virtual time:
test_damos_split.sh end to end (rfc-damon-spe.md 4.7), T4 "min=0 split breaks the
deadlock" (5.3) and the split/collapse round trip of the VM results (5.4). Expected
numbers are the RFC's: one 2 MiB chunk applied, AnonHugePages -2048 kB, 16 kB nr_anon
+128; 128 PMD THPs invisible at min=1, all split at min=0, then seen."""
from __future__ import annotations

import re

from damond.clock import VirtualClock
from damond.config import Config
from damond.damon import params
from damond.damon.kdamond import Kdamond
from damond.damon.params import AccessPattern, Action, Filter, FilterType, Scheme
from damond.system import System

MiB = 1 << 20
PMD = 2 * MiB
UINT_MAX = (1 << 32) - 1


def system(workload: str, memory: str = "1G") -> System:
    cfg = Config.from_text(f"""
seed = 3
[machine]
memory = "{memory}"
[thp]
enabled = "always"
[khugepaged]
enabled = false
[[workload]]
{workload}
""", "<test>")
    return System.from_config(cfg, VirtualClock())


def run_machine(s: System, us: int) -> None:
    """Let the workloads run with no kdamond: the clock and the machine move together."""
    s.clock.sleep_us(us)
    s.machine.advance_to(s.clock.now_us())


def anon_huge_kb(s: System, pid: int) -> int:
    return int(re.search(r"AnonHugePages:\s+(\d+) kB", s.machine.proc_smaps_rollup(pid)).group(1))


def nr_anon(s: System, kb: int) -> int:
    return s.machine.thp.stats[kb]["nr_anon"]


def area(s: System, pid: int):
    return max(s.machine.process(pid).vmas(), key=lambda v: v.end - v.start)


def pattern(nr_min: int, nr_max: int) -> AccessPattern:
    return AccessPattern(0, 1 << 40, nr_min, nr_max, 0, UINT_MAX)


def start(s: System, pid: int, schemes: list[Scheme], regions=None) -> Kdamond:
    k = Kdamond(s, 0)
    ranges = [params.AddrRange(a, b) for a, b in regions] if regions else []
    k.start(params.Ctx(ops=params.OpsId.VADDR, targets=[params.Target(pid=pid, regions=ranges)],
                       schemes=schemes))
    return k


THP_AREA = 'kind = "mmap"\nsize = "256M"\npopulate = true\nhint = "hugepage"'


def populated_thp_area() -> tuple[System, int]:
    s = system(THP_AREA)
    pid = s.machine.processes()[0].pid
    run_machine(s, 1_000_000)                # the populate pass has touched every page
    assert anon_huge_kb(s, pid) == 256 * 1024 and nr_anon(s, 2048) == 128
    return s, pid


def test_damos_split_sh_splits_exactly_the_filtered_thp():
    """test_damos_split.sh: 256 MiB THP anon, addr filter over the middle 2 MiB,
    target_order 2, nr_accesses 0..0, 10 s: sz_applied 2097152, AnonHugePages -2048 kB."""
    s, pid = populated_thp_area()
    v = area(s, pid)
    lo = (v.start + 128 * MiB) & ~(PMD - 1)
    f = Filter(type=FilterType.ADDR, matching=True, allow=True, addr_start=lo, addr_end=lo + PMD)
    k = start(s, pid, [Scheme(pattern=AccessPattern(0, 1 << 40, 0, 0, 0, 1 << 20), action=Action.SPLIT,
                              target_order=2, core_filters=[f])], regions=[(v.start, v.end)])
    k.run_for(10_000_000)
    st = k.scheme_stats()[0]
    assert (st.nr_applied, st.sz_applied, st.sz_ops_filter_passed) == (1, 2097152, 2097152)
    assert anon_huge_kb(s, pid) == 256 * 1024 - 2048
    assert (nr_anon(s, 16), nr_anon(s, 2048)) == (128, 127)
    assert s.machine.thp.stats[2048]["split"] == 1
    fi = s.machine.folio_walk(pid, lo + 5 * 4096)
    assert (fi.order, fi.level, fi.va) == (2, "pte", lo + 4 * 4096)
    assert s.machine.folio_walk(pid, lo - 4096).order == 9
    assert s.machine.folio_walk(pid, lo + PMD).order == 9


def test_split_then_collapse_target_order_9_restores_anon_huge_pages():
    """The VM round trip (5.4): AnonHugePages 262144 -> 0 -> 262144, 16 kB nr_anon
    0 -> 16384 -> 0, every chunk applied once each way."""
    s, pid = populated_thp_area()
    v = area(s, pid)
    split = Scheme(pattern=pattern(0, UINT_MAX), action=Action.SPLIT, target_order=2)
    k = start(s, pid, [split], regions=[(v.start, v.end)])
    k.run_for(300_000)
    assert anon_huge_kb(s, pid) == 0
    assert (nr_anon(s, 16), nr_anon(s, 2048)) == (16384, 0)
    assert k.scheme_stats()[0].sz_applied == 256 * MiB
    collapse = Scheme(pattern=pattern(0, UINT_MAX), action=Action.COLLAPSE, target_order=9)
    k.commit(params.Ctx(ops=params.OpsId.VADDR, targets=[params.Target(pid=pid, regions=[
        params.AddrRange(v.start, v.end)])], schemes=[collapse]))
    k.run_for(300_000)
    assert anon_huge_kb(s, pid) == 256 * 1024
    assert (nr_anon(s, 16), nr_anon(s, 2048)) == (0, 128)
    st = k.scheme_stats()[0]
    assert st.sz_applied >= 256 * MiB and st.sz_applied % PMD == 0
    assert all(s.machine.folio_walk(pid, a).order == 9 for a in range(v.start, v.end, PMD))


def test_t4_min0_split_breaks_the_tlb_reach_deadlock():
    """T4: 128 busy PMD THPs stay in the 2048-entry TLB, so a min=1 scheme never fires;
    a min=0 split to 16 KiB applies to all of them; then min=1 sees the working set."""
    s = system('kind = "uniform"\nsize = "256M"\nhint = "hugepage"')
    pid = s.machine.processes()[0].pid
    run_machine(s, 1_000_000)
    assert nr_anon(s, 2048) == 128
    seen = Scheme(pattern=pattern(1, UINT_MAX), action=Action.STAT)
    k = start(s, pid, [seen])
    k.run_for(2_000_000)
    assert k.scheme_stats()[0].nr_tried == 0

    def commit(schemes):
        k.commit(params.Ctx(ops=params.OpsId.VADDR, targets=[params.Target(pid=pid)], schemes=schemes))
    commit([seen, Scheme(pattern=pattern(0, UINT_MAX), action=Action.SPLIT, target_order=2)])
    k.run_for(300_000)
    assert k.scheme_stats()[1].sz_applied == 256 * MiB
    assert (nr_anon(s, 2048), nr_anon(s, 16)) == (0, 16384)
    assert anon_huge_kb(s, pid) == 0
    commit([seen])
    tried0 = k.scheme_stats()[0].nr_tried
    k.run_for(2_000_000)
    st = k.scheme_stats()[0]
    assert st.nr_tried - tried0 >= 20 and st.sz_tried > 0
    r = k.ctx.targets[0].regions
    v = area(s, pid)
    inside = (r.start >= v.start) & (r.end <= v.end)
    assert int(r.last_nr_accesses[inside].max()) >= 10
