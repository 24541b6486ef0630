"""The `vaddr_perf` operations set (damond/damon/perf.py): perf-event (SPE) samples as the
access source, behind feature level "next". nr_accesses comes from samples: a region no
sample hits reads 0, the sampled hot part reads > 0; the word is refused below "next"."""
from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from damond.config import Config, validate
from damond.damon import perf
from damond.errors import ConfigError
from damond.damon.regions import Regions
from damond.fs.tree import FsError
from damond.reproduce.designs import design
from damond.reproduce.session import CTX, Session
from tests.helpers import DamondProcess, read, write

MiB = 1 << 20


def session(level: str, extra: str = "") -> Session:
    return Session(f"""seed = 6
[machine]
memory = "512M"
[thp]
enabled = "never"
[khugepaged]
enabled = false
[daemon]
feature_level = "{level}"
{extra}
[[workload]]
kind = "uniform"
size = "64M"
hot_size = "8M"
""")


def test_report_accesses_maps_addresses_to_regions():
    r = Regions.from_ranges([(0x1000, 0x3000), (0x3000, 0x8000), (0x9000, 0xa000)])
    va = np.array([0x1008, 0x2ff8, 0x8800, 0, 1 << 50], dtype=np.uint64)
    assert perf.report_accesses(r, va).tolist() == [True, False, False]


def test_nr_accesses_come_from_samples():
    s = session("next+rfc")
    m = s.machine
    pid = m.processes()[0].pid
    s.run_until_populated(pid)
    vma = max(m.process(pid).vmas(), key=lambda v: v.end - v.start)
    hot_end = vma.start + 8 * MiB
    observers = len(m.observers)
    s.stage([pid], [{"action": "stat"}], ops="vaddr_perf", update_us=100_000_000)
    s.state("on")
    assert s.read(f"{CTX}/operations") == "vaddr_perf\n"
    s.run(3_000_000)
    assert len(m.observers) == observers + 1            # the PMU samples
    (regions,) = s.tried(1)
    hot = [r for r in regions if vma.start <= r[0] and r[1] <= hot_end]
    cold = [r for r in regions if r[0] >= hot_end + 4096]     # the unswept rest of the mapping, stack, ...
    assert hot and cold
    assert all(r[2] > 0 for r in hot), hot
    assert all(r[2] == 0 for r in cold), cold
    # nothing was mkold'ed: the cold part's Access Flags are as the populate sweep left them
    young, _ = m.va_young(pid, np.array([vma.end - 4096], dtype=np.uint64))
    assert bool(young[0])
    s.state("off")
    assert len(m.observers) == observers                # cleanup stopped the sampler


def test_sample_period_comes_from_the_config():
    s = session("next+rfc", "[damon]\nperf_sample_period = 65536")
    pid = s.machine.processes()[0].pid
    s.run_until_populated(pid)
    s.stage([pid], [], ops="vaddr_perf")
    s.state("on")
    s.run(100_000)
    assert s.kdamond.ctx.ops.sampler.cfg.period == 65536
    bad = Config.from_text("[damon]\nperf_sample_period = 0\n", "<bad>")
    with pytest.raises(ConfigError, match="perf_sample_period must be an integer in"):
        validate(bad)


@pytest.mark.parametrize("level", ["6.18+rfc", "7.1+rfc"])
def test_refused_below_next(level):
    s = session(level)
    s.write("kernel/mm/damon/admin/kdamonds/nr_kdamonds", 1)
    s.write("kernel/mm/damon/admin/kdamonds/0/contexts/nr_contexts", 1)
    assert s.read(f"{CTX}/avail_operations") == "vaddr\nfvaddr\npaddr\n"
    with pytest.raises(FsError) as e:
        s.write(f"{CTX}/operations", "vaddr_perf")
    assert e.value.errno == errno.EINVAL


def test_through_a_mount(tmp_path):
    """echo vaddr_perf > operations: EINVAL at 7.1, listed and accepted at next."""
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")
    for level, ok in (("7.1+rfc", False), ("next+rfc", True)):
        with DamondProcess(tmp_path / level, feature_level=level) as d:
            k = d.admin / "kdamonds"
            write(k / "nr_kdamonds", "1")
            write(k / "0/contexts/nr_contexts", "1")
            c = k / "0/contexts/0"
            assert ("vaddr_perf" in read(c / "avail_operations").split()) == ok
            if not ok:
                with pytest.raises(OSError) as e:
                    write(c / "operations", "vaddr_perf\n")
                assert e.value.errno == errno.EINVAL and read(c / "operations") == "vaddr\n"
                continue
            write(c / "operations", "vaddr_perf\n")
            assert read(c / "operations") == "vaddr_perf\n"


@pytest.mark.parametrize("workload, split_all", [('kind = "sparse-hotspot"\nsize = "32M"', True),
                                                 ('kind = "uniform"\nsize = "32M"', False)])
def test_perf_event_design_splits_sparse_not_dense(workload, split_all):
    d = design("perf-event")()
    s = Session(f"""seed = 1
[machine]
memory = "512M"
[thp]
enabled = "always"
[khugepaged]
enabled = false
[daemon]
feature_level = "{d.feature_level}"
{d.config_extra()}
[[workload]]
{workload}
""")
    pid = s.machine.processes()[0].pid
    s.run_until_populated(pid)
    assert s.anon_huge_kb(pid) == 32 << 10
    d.setup(s, pid)
    s.run(4_000_000)
    hot = d.reported_hot_bytes(s, pid)
    if split_all:       # one touched page per 2 MiB: every THP split, a few pages reported hot
        assert s.anon_huge_kb(pid) == 0 and 0 < hot < 1 * MiB
    else:               # the whole 32 MiB swept: nothing split, all of it hot
        assert s.anon_huge_kb(pid) == 32 << 10 and hot >= 31 * MiB
