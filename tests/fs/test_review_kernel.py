"""Review against the kernel (kernel-sysfs.md, a live 6.18 tree): behaviours found to
differ by driving a real mount with echo/cat, each checked through the real mount."""
from __future__ import annotations

import errno
import threading

import pytest

from tests.helpers import read, write

THP = "kernel/mm/transparent_hugepage"


def _spawn(root, spec: str) -> int:
    write(root / "damond/spawn", spec + "\n")
    return int(read(root / "damond/spawn"))


def _vaddr_kdamond(damond, apply_interval_us: int):
    """One vaddr kdamond on a fresh access_memory_even process, one all-matching stat scheme."""
    pid = _spawn(damond.root, "access_memory_even nr_regions=2 sz_region=4M")
    k = damond.admin / "kdamonds"
    write(k / "nr_kdamonds", "1")
    write(k / "0/contexts/nr_contexts", "1")
    c = k / "0/contexts/0"
    write(c / "targets/nr_targets", "1")
    write(c / "targets/0/pid_target", str(pid))
    write(c / "schemes/nr_schemes", "1")
    s = c / "schemes/0"
    write(s / "access_pattern/sz/max", str(2**64 - 1))
    write(s / "access_pattern/nr_accesses/max", str(2**32 - 1))
    write(s / "access_pattern/age/max", str(2**32 - 1))
    write(s / "apply_interval_us", str(apply_interval_us))
    return k / "0", c, s


def test_other_files_answer_while_a_tried_regions_walk_waits(damond):
    """state_show/pid_show/nr_* trylock damon_sysfs_lock -> EBUSY while a walk holds it;
    plain attribute files take no lock and answer at once (kernel-sysfs.md 2.6)."""
    kd, c, s = _vaddr_kdamond(damond, apply_interval_us=3_000_000)
    write(kd / "state", "on\n")
    done = threading.Event()
    errs: list = []

    def walk():
        try:
            write(kd / "state", "update_schemes_tried_regions\n")
        except OSError as e:
            errs.append(e)
        done.set()

    t = threading.Thread(target=walk)
    t.start()
    try:
        # the walk holds the lock until the scheme's next apply (3 s after `on`)
        for _ in range(200):
            try:
                read(kd / "state")
            except OSError as e:
                assert e.errno == errno.EBUSY
                break
        else:
            pytest.fail("state never reported EBUSY while the walk was pending")
        assert read(c / "monitoring_attrs/intervals/sample_us") == "5000\n"
        with pytest.raises(OSError) as e:
            read(kd / "pid")
        assert e.value.errno == errno.EBUSY
        with pytest.raises(OSError) as e:
            write(s / "quotas/goals/nr_goals", "1\n")
        assert e.value.errno == errno.EBUSY
        assert not done.is_set()
    finally:
        t.join(30)
    assert not errs and read(kd / "state") == "on\n"
    assert int(read(s / "tried_regions/total_bytes")) > 0
    write(kd / "state", "off\n")
