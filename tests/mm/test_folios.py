"""Folio queries: `va_folios` (batched) reports exactly the folios, in the same order and
with the same fields, as stepping `folio_walk` through the range; `memcg_id` maps a memcg
path to the id `pa_folios` / `va_folios` report."""
from __future__ import annotations

import numpy as np

from tests.mm.conftest import KB, MB, big_vma, machine

PG = 4096


def mixed_machine():
    """16 MB of PMD THPs, then folios of orders 9, 5, 4, 2 and 0, holes and mixed AFs."""
    m = machine("""
seed = 3
[machine]
memory = "128M"
[thp]
enabled = "always"
[khugepaged]
enabled = false
[[workload]]
kind = "mmap"
size = "16M"
populate = true
memcg = "/jobs/a/"
""")
    m.advance_to(1_000_000)
    pid = m.processes()[0].pid
    s = big_vma(m, pid).start
    assert m.split_folio_to_order(pid, s + 2 * MB, 5) == 0
    assert m.split_folio_to_order(pid, s + 2 * MB + 256 * KB, 4) == 0     # one order-5 folio -> two order-4
    assert m.split_folio_to_order(pid, s + 4 * MB, 2) == 0
    assert m.split_folio_to_order(pid, s + 6 * MB, 0) == 0
    m.va_mkold(pid, np.arange(s, s + 8 * MB, 8 * KB, dtype=np.uint64))    # every other 4 KB page
    assert m.pageout_range(pid, s + 4 * MB + 64 * KB, s + 4 * MB + 96 * KB) == 32 * KB
    assert m.pageout_range(pid, s + 6 * MB + 8 * KB, s + 6 * MB + 12 * KB) == 4 * KB
    m.access(pid, np.array([s + 2 * MB + 40 * KB, s + 4 * MB, s + 6 * MB + 20 * KB, s + 8 * MB], np.uint64))
    return m, pid, s


def walk(m, pid, start, end):
    """The per-folio reference: folio_walk from each VMA's start, jumping folio by folio."""
    out = []
    for v in m.process(pid).vmas():
        a, e = max(start, v.start), min(end, v.end)
        while a < e:
            f = m.folio_walk(pid, a)
            if f is None:
                a += PG
                continue
            out.append((f.pfn, f.order, f.anon, f.young, f.active, f.nid, f.va, a))
            a = f.va + (PG << f.order)
    return out


def batched(m, pid, start, end):
    fa = m.va_folios(pid, start, end)
    cols = (fa.pfn, fa.order, fa.anon, fa.young, fa.active, fa.nid, fa.va, fa.addr)
    return [tuple(c[i].item() for c in cols) for i in range(len(fa.pfn))]


def test_va_folios_equals_the_folio_walk_on_mixed_orders():
    m, pid, s = mixed_machine()
    windows = [(s, s + 16 * MB), (s + 2 * MB + 336 * KB, s + 6 * MB + 52 * KB),    # starts inside a 64 KB folio
               (s + 4 * MB + 68 * KB, s + 4 * MB + 72 * KB), (s + 7 * MB, s + 9 * MB + 4 * KB),
               (0, 1 << 48)]                                                      # every VMA
    for lo, hi in windows:
        ref = walk(m, pid, lo, hi)
        assert batched(m, pid, lo, hi) == ref
    full = walk(m, pid, s, s + 16 * MB)
    orders = [f[1] for f in full]
    assert {9, 5, 4, 2, 0} <= set(orders)
    assert len(full) == 5 + 17 + 126 + 511       # PMDs; 128/64 KB; 16 KB less 2 paged out; 4 KB less 1
    assert {f[3] for f in full} == {True, False}                # some leaves young, some old
    # a folio straddling the start: va is its first vaddr, addr the start
    f0 = batched(m, pid, s + 2 * MB + 336 * KB, s + 3 * MB)[0]
    assert (f0[1], f0[6], f0[7]) == (4, s + 2 * MB + 320 * KB, s + 2 * MB + 336 * KB)


def test_va_folios_of_a_dead_or_unknown_pid_is_empty():
    m, pid, s = mixed_machine()
    assert len(m.va_folios(pid + 99, 0, 1 << 48).pfn) == 0
    m.kill(pid)
    fa = m.va_folios(pid, s, s + 16 * MB)
    assert len(fa.pfn) == len(fa.va) == len(fa.addr) == 0


def test_memcg_id_names_the_memcg_pa_folios_reports():
    m = machine("""
[machine]
memory = "64M"
memcgs = ["/sys/idle"]
[thp]
enabled = "never"
[[workload]]
kind = "mmap"
size = "4M"
populate = true
memcg = "/jobs/a"
[[workload]]
kind = "mmap"
size = "2M"
populate = true
""")
    m.advance_to(1_000_000)
    a, root = [p.pid for p in m.processes()]
    assert [m.memcg_id(p) for p in ("/", "/sys/idle", "/jobs/a", "/jobs/a/", "/jobs/b")] == [1, 2, 3, 3, None]
    lo, hi = m.ram_ranges()[0]
    fa = m.pa_folios(lo, hi)
    by_id = {i: set(fa.pfn[fa.memcg_id == i].tolist()) for i in (1, 2, 3)}
    assert by_id[3] == set(m.va_folios(a, 0, 1 << 48).pfn.tolist()) and len(by_id[3]) == 1024
    assert by_id[1] == set(m.va_folios(root, 0, 1 << 48).pfn.tolist()) and len(by_id[1]) == 512
    assert by_id[2] == set()
    assert (m.va_folios(a, 0, 1 << 48).memcg_id == 3).all()


def test_block_kinds_and_the_uniform_sample_plans_change_no_result():
    """The per-2 MB block summary classifies PMD, all-4 KB and mixed blocks; access checks
    through it give what the page-by-page plan gives."""
    results = []
    for use_kinds in (True, False):
        m, pid, s = mixed_machine()
        m.access(pid, np.array([s + 6 * MB + 8 * KB], np.uint64))    # fault the 4 KB page back: block 3 all 4 KB
        if not use_kinds:
            m.phys.block_kinds = lambda: None
        else:
            assert m.phys.block_kinds() is None                  # first sight of this layout
            kinds = m.phys.block_kinds()
            v = big_vma(m, pid)
            blocks = m.process(pid).vma_blocks(v)
            assert kinds[blocks].tolist() == [1, 0, 0, 2, 1, 1, 1, 1]   # blocks 1, 2: mTHPs (mixed)
        rng = np.random.default_rng(4)
        out = []
        for lo, hi in ((s + 8 * MB, s + 16 * MB), (s, s + 16 * MB), (s + 6 * MB, s + 8 * MB), (s + 2 * MB, s + 4 * MB)):
            for _ in range(3):
                a = np.sort(rng.integers(lo, hi, size=64, dtype=np.uint64))
                m.va_mkold(pid, a)
                m.access(pid, a[::3])
                y, sz = m.va_young(pid, a)
                out.append((y.tolist(), sz.tolist()))
        results.append(out)
    assert results[0] == results[1]
