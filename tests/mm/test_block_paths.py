"""The block-by-block paths of the access path (populate chunk by chunk, leaf counting and
sweeps over PMD-mapped THPs, batched migration) leave exactly the state the page-by-page
paths leave: same page flags and folio orders, same block placement on the nodes, same
DAMOS results, on a two-node tiering run under paddr migrate_hot/migrate_cold."""
from __future__ import annotations


from damond.clock import VirtualClock
from damond.config import Config
from damond.damon import params
from damond.damon.kdamond import Kdamond
from damond.damon.params import AccessPattern, Action, Quota, Scheme
from damond.mm.access import Stepper
from damond.system import System

CONFIG = """
seed = 5
[machine]
memory = "1G"
numa_nodes = 2
node_memory = ["dram", "cxl"]
[machine.tlb]
l1_entries = 8
l2_entries = 16
l2_assoc = 0
[thp]
enabled = "always"
[khugepaged]
enabled = false
[[workload]]
kind = "mmap"
size = "400M"
populate = true
[[workload]]
kind = "tiering"
size = "512M"
hot_size = "64M"
move_s = 3
rate = 1000000
start_s = 0.2
"""


def run(block: bool):
    Stepper.block_paths = block
    try:
        s = System.from_config(Config.from_text(CONFIG, "<t>"), VirtualClock())
        m = s.machine
        m.advance_to(1_000_000)
        lo, hi = m.ram_ranges()[0]
        k = Kdamond(s, 0)
        q = Quota(sz=64 << 20, reset_interval=200)
        k.start(params.Ctx(ops=params.OpsId.PADDR, targets=[params.Target(regions=[params.AddrRange(lo, hi)])],
                           schemes=[Scheme(pattern=AccessPattern(0, 1 << 40, 0, 0, 5, 1 << 30),
                                           action=Action.MIGRATE_COLD, target_nid=1, quota=q),
                                    Scheme(pattern=AccessPattern(0, 1 << 40, 1, 1 << 30, 0, 1 << 30),
                                           action=Action.MIGRATE_HOT, target_nid=0, quota=q)]))
        k.run_for(8_000_000)
        rates = [st.rate for p in m.processes() for ph in p.workload.phases for st in ph.streams]
        return (m.phys.flags.copy(), m.phys.order.copy(), m.phys.blk_node.copy(), m.phys.blk_owner.copy(),
                m.phys.node_present.copy(), [(x.nr_tried, x.sz_tried, x.nr_applied, x.sz_applied)
                                             for x in k.scheme_stats()], rates, m.proc_smaps(m.processes()[1].pid))
    finally:
        Stepper.block_paths = True


def test_block_paths_leave_the_page_by_page_state():
    fast, slow = run(True), run(False)
    for a, b in zip(fast[:5], slow[:5]):
        assert (a == b).all()
    assert fast[5] == slow[5] and fast[6] == slow[6] and fast[7] == slow[7]
    assert fast[5][0][3] > 0 and fast[5][1][3] > 0         # both schemes moved memory
    assert (fast[2] == 1).sum() and fast[4][1] > 0          # node 1 holds pages
