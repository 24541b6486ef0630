"""Split/collapse primitives (return codes and counters, rfc-damon-spe.md §2.3-2.5),
khugepaged's rules, smaps counters, pageout/migrate, config and masim errors, seeds."""
from __future__ import annotations

import errno

import numpy as np
import pytest

from damond.errors import ConfigError
from tests.mm.conftest import MB, addrs, big_vma, exact_mmap, machine


def rollup(m, pid, key):
    for line in m.proc_smaps_rollup(pid).splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def populated(size="8M", thp="always", extra="", kh="enabled = false"):
    m = machine(f"""
[machine]
memory = "64M"
[thp]
enabled = "{thp}"
{extra}
[khugepaged]
{kh}
[[workload]]
kind = "mmap"
size = "{size}"
populate = true
""")
    pid = m.processes()[0].pid
    m.advance_to(100_000)
    return m, pid, big_vma(m, pid).start


def test_split_and_collapse_counters():
    m, pid, s = populated()
    assert rollup(m, pid, "AnonHugePages") == 8192 and m.thp.stats[2048]["nr_anon"] == 4
    assert m.split_folio_to_order(pid, s + 2 * MB, 2) == 0
    assert rollup(m, pid, "AnonHugePages") == 6144
    assert m.thp.stats[2048]["nr_anon"] == 3 and m.thp.stats[16]["nr_anon"] == 128
    assert m.thp.stats[2048]["split"] == 1
    assert m.thp.vmstat["thp_split_pmd"] == 1 and m.thp.vmstat["thp_split_page"] == 1
    pfn_before = m.folio_walk(pid, s + 2 * MB).pfn
    assert m.collapse_range(pid, s + 2 * MB, 9) == 0
    f = m.folio_walk(pid, s + 2 * MB)
    assert (f.order, f.level) == (9, "pmd") and f.pfn != pfn_before and f.pfn % 512 == 0
    assert rollup(m, pid, "AnonHugePages") == 8192
    assert m.thp.stats[16]["nr_anon"] == 0 and m.thp.stats[2048]["nr_anon"] == 4
    assert m.thp.vmstat["thp_collapse_alloc"] == 1


def test_split_and_collapse_errors():
    m, pid, s = populated()
    assert m.split_folio_to_order(pid, s, 1) == -errno.EINVAL        # anon order 1
    assert m.split_folio_to_order(pid, s, 9) == -errno.EINVAL        # not smaller
    assert m.collapse_range(pid, s, 4) == -errno.EINVAL              # only PMD order
    assert m.collapse_range(pid, s + 4096, 9) == -errno.EINVAL       # unaligned
    assert m.collapse_range(pid, s, 9) == -errno.EINVAL              # already PMD-mapped
    assert m.split_folio_to_order(pid, s, 0) == 0
    assert m.split_folio_to_order(pid, s, 0) == -errno.EINVAL        # order 0 now
    assert m.collapse_range(pid, s, 9) == 0
    assert m.collapse_range(424242, s, 9) == -errno.ESRCH


def test_shmem_split_lowers_shmem_pmd_mapped():
    m = machine("""
[machine]
memory = "64M"
[khugepaged]
enabled = false
[[workload]]
kind = "mmap"
size = "8M"
shmem = true
huge = "always"
populate = true
""")
    pid = m.processes()[0].pid
    m.advance_to(100_000)
    s = big_vma(m, pid).start
    assert rollup(m, pid, "ShmemPmdMapped") == 8192 and rollup(m, pid, "AnonHugePages") == 0
    assert m.split_folio_to_order(pid, s, 2) == 0
    assert rollup(m, pid, "ShmemPmdMapped") == 6144
    assert m.collapse_range(pid, s, 9) == -errno.EINVAL              # collapse is anon-only


def test_khugepaged_collapses_8_ranges_per_10s_and_needs_a_young_pte():
    kh = "enabled = true"
    m, pid, s = populated("32M", thp="madvise", kh=kh)
    assert m.madvise(pid, s, s + 32 * MB, "hugepage") == 0
    m.advance_to(10_000_001)
    assert m.thp.khugepaged.pages_collapsed == 8
    assert rollup(m, pid, "AnonHugePages") == 8 * 2048
    m.advance_to(20_000_001)
    assert m.thp.khugepaged.pages_collapsed == 16 and m.thp.khugepaged.full_scans == 1
    m2, pid2, s2 = populated("32M", thp="madvise", kh=kh)
    m2.madvise(pid2, s2, s2 + 32 * MB, "hugepage")
    m2.va_mkold(pid2, np.arange(s2, s2 + 32 * MB, 4096, dtype=np.uint64))   # no young PTE left...
    # ...but mkold leaves PG_young on folios it found young (page_idle semantics), like the kernel
    m2.advance_to(10_000_001)
    assert m2.thp.khugepaged.pages_collapsed == 8


def test_khugepaged_max_ptes_none_and_switch():
    m, pid, s = exact_mmap("8M", thp="madvise")
    m.thp.khugepaged.enabled = True
    m.madvise(pid, s, s + 8 * MB, "hugepage")
    m.thp.enabled = "never"
    m.access(pid, addrs(s, s + 2 * MB))                              # one page in each of 2 ranges
    m.thp.enabled = "madvise"
    m.thp.khugepaged.max_ptes_none = 510
    m.advance_to(10_000_001)
    assert m.thp.khugepaged.pages_collapsed == 0                     # 511 none > 510
    m.thp.khugepaged.max_ptes_none = 511
    m.advance_to(20_000_001)
    assert m.thp.khugepaged.pages_collapsed == 2
    m.thp.khugepaged.enabled = False
    m.split_folio_to_order(pid, s, 0)
    m.advance_to(40_000_001)
    assert m.thp.khugepaged.pages_collapsed == 2


def test_mthp_fault_orders_follow_enabled_modes():
    m, pid, s = populated("1M", thp="never", extra='size_enabled = { 64 = "always", 32 = "always" }')
    assert m.folio_walk(pid, s).order == 4
    assert m.thp.stats[64]["nr_anon"] == 16 and m.thp.stats[32]["nr_anon"] == 0
    m2, pid2, s2 = populated("4M", thp="madvise")
    assert m2.folio_walk(pid2, s2).order == 0                       # madvise without the hint


def test_pageout_then_access_faults_back():
    m, pid, s = exact_mmap("4M", thp="never")
    m.access(pid, np.arange(s, s + 1 * MB, 4096, dtype=np.uint64))
    assert rollup(m, pid, "Rss") == 1024
    assert m.pageout_range(pid, s, s + 512 * 1024) == 512 * 1024
    assert rollup(m, pid, "Rss") == 512 and rollup(m, pid, "Swap") == 512
    assert m.folio_walk(pid, s) is None
    assert m.access(pid, addrs(s)).tolist() == [True]
    assert m.folio_walk(pid, s) is not None and rollup(m, pid, "Rss") == 516


def test_migrate_moves_pages_between_nodes():
    m = machine("""
[machine]
memory = "64M"
numa_nodes = 2
[khugepaged]
enabled = false
[[workload]]
kind = "mmap"
size = "8M"
populate = true
node = 0
""")
    pid = m.processes()[0].pid
    m.advance_to(100_000)
    s = big_vma(m, pid).start
    assert m.folio_walk(pid, s).nid == 0
    assert m.node_mem_bp(0, True) == 2500 and m.node_mem_bp(1, True) == 0
    assert m.migrate_range(pid, s, s + 4 * MB, 1) == 4 * MB
    assert m.folio_walk(pid, s).nid == 1
    assert m.node_mem_bp(0, True) == 1250 and m.node_mem_bp(1, True) == 1250
    assert m.free_mem_rate() == 875


def test_paddr_checks_follow_the_rmap():
    m, pid, s = exact_mmap("4M")
    m.access(pid, addrs(s))
    f = m.folio_walk(pid, s)
    pa = np.array([(f.pfn + 7) << 12], np.uint64)
    assert m.pa_young(pa)[0].tolist() == [True] and m.pa_young(pa)[1].tolist() == [2 * MB]
    m.pa_mkold(pa)
    assert m.pa_young(pa)[0].tolist() == [False]
    assert m.va_young(pid, addrs(s))[0].tolist() == [False]
    fa = m.pa_folios(f.pfn << 12, (f.pfn + 512) << 12)
    assert fa.pfn.tolist() == [f.pfn] and fa.order.tolist() == [9]


def test_config_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[machine]\nmemory = "64M"\ncolour = 1\n')
    from damond.config import Config
    from damond.mm.machine import Machine
    with pytest.raises(ConfigError, match=r"bad\.toml:3: unknown key 'colour'"):
        Machine.from_config(Config.load(bad))
    bad.write_text('[machine]\nmemory = "64M"\n[[workload]]\nkind = "uniform"\nsize = "1M"\n'
                   '[[workload]]\nkind = "uniform"\nsize = "lots"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml:8: size 'lots' is not a size"):
        Machine.from_config(Config.load(bad))
    bad.write_text('[machine.tlb]\nmodel = "psychic"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml:2: model 'psychic'"):
        Machine.from_config(Config.load(bad))


def test_masim_config_runs_and_errors_name_the_masim_file(tmp_path):
    cfg = tmp_path / "zigzag.cfg"
    cfg.write_text("#regions\na, 4000000\nb, 4000000\n\n#phases\nlow\n100\na, 0, 4096, 1\n\n"
                   "high\n100\nb, 1, 4096, 1\n")
    conf = tmp_path / "m.toml"
    conf.write_text('[machine]\nmemory = "64M"\n[thp]\nenabled = "never"\n[[workload]]\nkind = "masim"\n'
                    'file = "zigzag.cfg"\n')
    from damond.config import Config
    from damond.mm.machine import Machine
    m = Machine.from_config(Config.load(conf))
    pid = m.processes()[0].pid
    s = big_vma(m, pid).start
    a, b = s, s + 977 * 4096                                         # first pages of regions a and b
    assert m.truth_accessed(pid, a, a + 977 * 4096, 0, 100_000) == 977 * 4096
    assert m.truth_accessed(pid, b, b + 977 * 4096, 0, 100_000) == 0
    assert 0 < m.truth_accessed(pid, b, b + 977 * 4096, 100_000, 200_000) <= 977 * 4096
    m.advance_to(250_000)
    assert m.process(pid) is None                                    # masim exits after its phases
    cfg.write_text("a, 4096\n\nphase\n100\nc, 0, 4096, 1\n")
    with pytest.raises(ConfigError, match=r"zigzag\.cfg:5: unknown region 'c'"):
        Machine.from_config(Config.load(conf))


def test_seed_makes_runs_repeatable():
    def run(seed):
        m = machine(f"""
seed = {seed}
[machine]
memory = "1G"
[thp]
enabled = "never"
[khugepaged]
enabled = false
[[workload]]
kind = "uniform"
size = "256M"
pattern = "random"
""")
        pid = m.processes()[0].pid
        m.advance_to(1_000_000)
        a = np.arange(big_vma(m, pid).start, big_vma(m, pid).end, 1 << 16, dtype=np.uint64)
        m.va_mkold(pid, a)
        m.advance_to(1_000_200)
        return m.va_young(pid, a)[0], m.proc_maps(pid)
    y1, maps1 = run(7)
    y2, maps2 = run(7)
    y3, _ = run(8)
    assert (y1 == y2).all() and maps1 == maps2 and not (y1 == y3).all()


def test_sparse_truth_and_step_observer():
    m = machine("""
[machine]
memory = "2G"
access_rate = 2e7          # the fixed rate this test's counts are computed from
[khugepaged]
enabled = false
[[workload]]
kind = "sparse-hotspot"
size = "1G"
""")
    pid = m.processes()[0].pid
    m.advance_to(1_000_000)
    v = big_vma(m, pid)
    assert m.truth_accessed(pid, v.start, v.end, 1_000_000, 1_005_000) == 512 * 4096
    got = []
    m.add_step_observer(got.append)
    m.advance_to(1_005_000)
    step = got[-1]
    pa = [p for p in step.processes if p.pid == pid][0]
    assert len(pa.vaddrs) == 512 and (pa.vaddrs % (2 << 20) == v.start % (2 << 20)).all()
    assert abs(pa.counts.sum() - 2e7 * 0.005) < 1
    assert (pa.paddrs >> 12 == np.array([m.folio_walk(pid, int(x)).pfn for x in pa.vaddrs])).all()


def test_khugepaged_defrag_off_still_collapses_enabled_never_stops_it():
    """khugepaged/defrag only governs compaction for its allocations (the RFC's suggested
    mitigation does not stop the ping-pong on a kernel with free memory); THP `never`
    leaves khugepaged nothing to do."""
    m, pid, s = populated("32M", thp="madvise", kh="enabled = true")
    m.madvise(pid, s, s + 32 * MB, "hugepage")
    m.thp.khugepaged.defrag = 0
    m.advance_to(10_000_001)
    assert m.thp.khugepaged.pages_collapsed == 8
    m.thp.enabled = "never"
    m.advance_to(20_000_001)
    assert m.thp.khugepaged.pages_collapsed == 8


@pytest.mark.parametrize("size_mode, global_mode, huge, pmd_kb", [
    ("inherit", "never", None, 0),            # anonymous shmem: global never
    ("inherit", "always", None, 8192),        # ... inherits the global always
    ("always", "never", None, 8192),          # per-size always wins over the global
    ("never", "always", None, 0),             # per-size never wins too
    ("never", "never", "always", 8192),       # a tmpfs file follows its mount's huge=
    ("always", "deny", "always", 0),          # global deny overrides everything
    ("never", "force", None, 8192),           # global force too
])
def test_shmem_pmd_follows_size_global_and_mount(size_mode, global_mode, huge, pmd_kb):
    m = machine(f"""
[machine]
memory = "64M"
[thp]
shmem_enabled = "{global_mode}"
size_shmem_enabled = {{ 2048 = "{size_mode}" }}
[khugepaged]
enabled = false
[[workload]]
kind = "mmap"
size = "8M"
shmem = true
{f'huge = "{huge}"' if huge else ''}
populate = true
""")
    pid = m.processes()[0].pid
    m.advance_to(100_000)
    assert rollup(m, pid, "ShmemPmdMapped") == pmd_kb
