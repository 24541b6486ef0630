"""The RFC's collapse/split handlers (rfc-damon-spe.md section 2) on a fake machine:
outward 2 MiB alignment, accounting in 2 MiB units, the fixed hot/cold decision, the PTE
fallback, and damond's SPE guard on collapse."""
from __future__ import annotations

import pytest

from test_damos_fakes import PMD, FakeCtx, FakeMachine, Vma
from damond.damon.params import AccessPattern, Action, Filter, FilterType, Scheme

ALL = AccessPattern(0, (1 << 64) - 1, 0, (1 << 32) - 1, 0, (1 << 32) - 1)
BASE = 0x40000000


def thp_machine(n: int) -> FakeMachine:
    m = FakeMachine([Vma(BASE, BASE + n * PMD)])
    for i in range(n):
        m.map_thp(BASE + i * PMD, 0x10000 + i * 512)
    return m


def split_scheme(**kw) -> Scheme:
    kw.setdefault("target_order", 2)
    kw.setdefault("hot_threshold", 30)
    return Scheme(pattern=ALL, action=Action.SPLIT, **kw)


def test_split_without_spe_data_of_pmd_thp_splits_unconditionally():
    m = thp_machine(4)
    ctx = FakeCtx([(BASE, BASE + 4 * PMD)], [split_scheme()], machine=m)
    ctx.run_samples(20)
    st = ctx.schemes[0].stat
    assert (st.nr_tried, st.nr_applied, st.sz_applied, st.sz_ops_filter_passed) == (1, 1, 4 * PMD, 4 * PMD)
    assert [c for c in m.calls if c[0] == "split"] == [("split", BASE + i * PMD, 2) for i in range(4)]
    assert {f.order for f in m.folios.values()} == {2}


def test_split_keeps_hot_thps_and_splits_cold_ones_by_spe_fraction():
    m = thp_machine(3)
    ctx = FakeCtx([(BASE, BASE + 3 * PMD)], [split_scheme()], machine=m)
    ctx.spe.fractions = {0x10000: 25, 0x10000 + 512: 40, 0x10000 + 1024: 89}
    ctx.run_samples(20)
    assert [c[1] for c in m.calls if c[0] == "split"] == [BASE]
    assert ctx.schemes[0].stat.sz_applied == PMD
    assert ctx.schemes[0].split_kept == 2


def test_one_addr_filter_over_one_thp_applies_exactly_one_pmd():
    m = thp_machine(8)
    f = Filter(type=FilterType.ADDR, matching=True, allow=True, addr_start=BASE + 3 * PMD,
               addr_end=BASE + 4 * PMD)
    regions = [(BASE + i * PMD, BASE + (i + 1) * PMD) for i in range(8)]
    ctx = FakeCtx(regions, [split_scheme(core_filters=[f])], machine=m)
    ctx.run_samples(20)
    st = ctx.schemes[0].stat
    assert (st.nr_tried, st.sz_tried, st.sz_applied, st.nr_applied) == (1, PMD, 2097152, 1)


def test_split_widens_regions_to_whole_chunks_and_counts_chunks_twice():
    m = thp_machine(2)
    half = PMD // 2
    ctx = FakeCtx([(BASE, BASE + half), (BASE + half, BASE + 2 * PMD)], [split_scheme()], machine=m)
    ctx.run_samples(20)
    st = ctx.schemes[0].stat
    # region 0 splits THP 0; region 1 widens to [BASE, BASE+4M): THP 0 is already order 2
    assert st.sz_applied == 2 * PMD and st.sz_ops_filter_passed == 3 * PMD
    assert st.sz_tried == 2 * PMD


def test_split_pte_fallback_reads_first_pte_young_per_chunk():
    m = FakeMachine([Vma(BASE, BASE + PMD)])
    m.map_thp(BASE, 0x20000)
    m.split_folio_to_order(1, BASE, 4)     # 32 PTE-mapped order-4 folios
    m.calls.clear()
    for i, va in enumerate(sorted(m.folios)):
        m.folios[va].young = i < 16         # first half young
    # folio at the chunk base has order 4 > target 2: fallback walks 4 chunks of 16 KiB
    ctx = FakeCtx([(BASE, BASE + PMD)], [split_scheme()], machine=m)
    ctx.run_samples(20)
    assert ctx.schemes[0].split_kept == 1 and not [c for c in m.calls if c[0] == "split"]


@pytest.mark.parametrize("mode, collapsed", [("spe-guarded", [1, 2]), ("rfc", [0, 1, 2])])
def test_collapse_guard_skips_ranges_whose_spe_hot_fraction_is_low(mode, collapsed):
    m = FakeMachine([Vma(BASE, BASE + 3 * PMD)])
    for i in range(3):                      # PTE-mapped order-2 folios, physically contiguous
        for j in range(128):
            va = BASE + i * PMD + j * 16384
            from test_damos_fakes import Folio
            m.folios[va] = Folio(pfn=0x30000 + i * 512 + j * 4, order=2, level="pte", va=va)
    s = Scheme(pattern=ALL, action=Action.COLLAPSE, target_order=9, hot_threshold=30)
    ctx = FakeCtx([(BASE + 4096, BASE + 3 * PMD - 4096)], [s], machine=m, collapse=mode)
    ctx.spe.fractions = {0x30000: 10, 0x30000 + 512: 50}    # third range: no SPE data
    ctx.run_samples(20)
    assert [(c[1] - BASE) // PMD for c in m.calls if c[0] == "collapse"] == collapsed
    st = ctx.schemes[0].stat
    assert st.sz_applied == len(collapsed) * PMD and st.sz_ops_filter_passed == 3 * PMD


def test_collapse_without_target_order_is_madvise_collapse_of_the_region():
    m = FakeMachine([Vma(BASE, BASE + PMD)])
    ctx = FakeCtx([(BASE, BASE + PMD)], [Scheme(pattern=ALL, action=Action.COLLAPSE)], machine=m)
    ctx.run_samples(20)
    assert m.calls == [("madvise", BASE, BASE + PMD, "collapse")]
    assert ctx.schemes[0].stat.sz_applied == PMD
