"""PfnTree: spe_stats text, capacity and TTL with a virtual clock, batches equal to
sequential records, range queries, [spe] config validation."""
import numpy as np
import pytest

from damond.clock import VirtualClock
from damond.config import Config
from damond.errors import ConfigError
from damond.spe.tree import PfnTree

S = 1_000_000


def test_empty_stats_text():
    assert PfnTree(VirtualClock()).stats_text() == "nr_entries=0 total_accesses=0\n"


def test_methodology_example_stats_text():
    """TEST_METHODOLOGY 4.2: 0x100000+i for i<128 and 0x200000+i for i<256, one each."""
    t = PfnTree(VirtualClock())
    for i in range(128):
        assert t.record(0x100000 + i)
    for i in range(256):
        assert t.record(0x200000 + i)
    assert t.stats_text() == (
        "nr_entries=2 total_accesses=384\n"
        "  pfn=0x100000 pid=0 total=128 hot_pages=128/512\n"
        "  pfn=0x200000 pid=0 total=256 hot_pages=256/512\n")


def test_stats_ascending_pfn_and_counts():
    t = PfnTree(VirtualClock())
    t.record(0x820db803, 39794, pid=7)
    t.record(0x400, 2)
    t.record(0x401)
    t.record(0x401)
    assert t.stats_text() == (
        "nr_entries=2 total_accesses=39798\n"
        "  pfn=0x400 pid=0 total=4 hot_pages=2/512\n"
        "  pfn=0x820db800 pid=7 total=39794 hot_pages=1/512\n")


def test_capacity_drops_and_ttl_prune_on_insert():
    clk = VirtualClock()
    t = PfnTree(clk, capacity=2, ttl_s=30)
    assert t.record(512 * 1) and t.record(512 * 2)
    assert not t.record(512 * 3, 5)             # full, nothing stale: dropped
    assert (t.stats.dropped, t.stats.dropped_accesses) == (1, 5)
    clk.sleep_us(30 * S)                        # exactly the TTL: not yet stale
    assert not t.record(512 * 3)
    clk.sleep_us(1)
    t.record(512 * 2 + 7)                       # refreshes entry 2 only... after the TTL passed
    assert t.record(512 * 3)                    # insert when full prunes entry 1
    assert [e.pfn for e in t.entries_in(0, 1 << 20)] == [1024, 1536]
    assert t.stats.pruned == 1


def test_prune_frees_stale_entries_only():
    clk = VirtualClock()
    t = PfnTree(clk, ttl_s=30)
    t.record(0x1000)
    clk.sleep_us(20 * S)
    t.record(0x2000)
    clk.sleep_us(11 * S)
    assert t.prune() == 1
    assert t.stats_text().splitlines()[1:] == ["  pfn=0x2000 pid=0 total=1 hot_pages=1/512"]
    assert t.stats_text().startswith("nr_entries=1 ")


def test_stats_read_does_not_prune():
    clk = VirtualClock()
    t = PfnTree(clk, ttl_s=1)
    t.record(0x1000)
    clk.sleep_us(5 * S)
    assert t.stats_text().startswith("nr_entries=1 ")


@pytest.mark.parametrize("seed", range(6))
def test_record_many_equals_sequential(seed):
    rng = np.random.default_rng(seed)
    a_clk, b_clk = VirtualClock(), VirtualClock()
    a = PfnTree(a_clk, capacity=8, ttl_s=1)
    b = PfnTree(b_clk, capacity=8, ttl_s=1)
    for step in range(12):
        pfns = (rng.integers(0, 20, 200) * 512 + rng.integers(0, 512, 200)).astype(np.uint64)
        counts = rng.integers(1, 5, 200).astype(np.uint64) if step % 2 else None
        r = a.record_many(pfns, counts)
        ok = [b.record(int(p), int(c)) for p, c in zip(pfns, counts if counts is not None else [1] * 200)]
        assert r.recorded == sum(ok) and r.dropped == 200 - sum(ok)
        assert a.stats_text() == b.stats_text()
        a_clk.sleep_us(int(rng.integers(0, 700_000)))
        b_clk.advance_to(a_clk.now_us())
    assert a.stats == b.stats


def test_entries_in_overlap():
    t = PfnTree(VirtualClock())
    for p in (0x1000, 0x1200, 0x1400):
        t.record(p + 3, 2)
    assert [e.pfn for e in t.entries_in(0x11ff, 0x1401)] == [0x1000, 0x1200, 0x1400]
    assert [e.pfn for e in t.entries_in(0x1200, 0x1400)] == [0x1200]
    e = t.entries_in(0x1200, 0x1201)[0]
    assert (e.total, e.hot_pages, int(e.counts[3])) == (2, 1, 2)


@pytest.mark.parametrize("text, msg", [
    ("[spe]\ncapacity = 0\n", "capacity 0 must be an integer"),
    ("[spe]\nttl_s = -1\n", "ttl_s -1 must be a non-negative"),
    ("[spe]\nfeed = 'bulk'\n", "feed 'bulk' is not one of lines, rfc"),
    ("[spe]\nsize = 3\n", "unknown key 'size' in [spe]"),
])
def test_config_errors(text, msg):
    with pytest.raises(ConfigError) as ei:
        PfnTree.from_config(Config.from_text(text, "m.toml"), VirtualClock())
    assert str(ei.value).startswith("m.toml:2: ") and msg in str(ei.value)


def test_config_defaults():
    t = PfnTree.from_config(Config.load(None), VirtualClock())
    assert (t.capacity, t.ttl_us, t.feed) == (1024, 30 * S, "lines")
