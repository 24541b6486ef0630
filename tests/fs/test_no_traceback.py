"""Inputs that used to raise inside the daemon get the kernel's answer through a real mount,
log no error, and leave the state as it was."""
from __future__ import annotations

import errno
import os
import threading
import time

import pytest

from tests.conftest import _need_fuse
from tests.helpers import DamondProcess, read, write

RAM = 0x40000000


def _paddr_ctx(admin, start: int, end: int):
    k = admin / "kdamonds"
    write(k / "nr_kdamonds", "1")
    kd = k / "0"
    write(kd / "contexts/nr_contexts", "1")
    c = kd / "contexts/0"
    write(c / "operations", "paddr")
    write(c / "targets/nr_targets", "1")
    t = c / "targets/0"
    write(t / "regions/nr_regions", "1")
    write(t / "regions/0/start", str(start))
    write(t / "regions/0/end", str(end))
    return kd, c, t


def _errors(d):
    return [e for e in d.events() if e.get("level") in ("error", "critical")]


@pytest.mark.parametrize("end", [2**64 - 4095, 2**64 - 1])
def test_region_end_that_wraps_on_alignment(damond, end):
    """damon_set_regions() aligns the end with ALIGN() on an unsigned long: an end in
    [2^64-4095, 2^64-1] wraps to 0. damond computes the same wrap and refuses the
    resulting empty range with EINVAL (no OverflowError); nothing starts, and a later
    good commit works."""
    kd, c, t = _paddr_ctx(damond.admin, 2**64 - 8192, end)
    with pytest.raises(OSError) as e:
        write(kd / "state", "on")
    assert e.value.errno == errno.EINVAL
    assert read(kd / "state") == "off\n"
    assert read(t / "regions/0/end") == f"{end}\n"
    write(t / "regions/0/start", str(RAM))
    write(t / "regions/0/end", str(RAM + (64 << 20)))
    write(kd / "state", "on")
    # the same wrap at commit: refused, the running kdamond keeps its regions
    write(t / "regions/0/end", str(end))
    write(t / "regions/0/start", str(2**64 - 8192))
    with pytest.raises(OSError) as e:
        write(kd / "state", "commit")
    assert e.value.errno == errno.EINVAL
    assert read(kd / "state") == "on\n"
    write(kd / "state", "update_schemes_stats")      # not EBUSY: nothing left pending
    write(kd / "state", "off")
    assert not _errors(damond)


def test_walk_with_aggr_interval_near_2_64_blocks_like_the_kernel(tmp_path):
    """aggr_us = 2^64-1 and update_schemes_tried_regions: damos_walk() waits for an apply
    interval that never comes. The write blocks (no time_t overflow, no error), and files
    guarded by damon_sysfs_lock meanwhile get EBUSY, as on a kernel. (A second write to the
    same `state` file would wait in the VFS: FUSE serialises writes to one inode.)"""
    _need_fuse()
    d = DamondProcess(tmp_path / "sys", allow_errors=True)
    d.__enter__()
    try:
        kd, c, _ = _paddr_ctx(d.admin, RAM, RAM + (64 << 20))
        write(c / "schemes/nr_schemes", "1")
        write(kd / "state", "on")
        write(c / "monitoring_attrs/intervals/aggr_us", str(2**64 - 1))
        write(kd / "state", "commit")
        outcome: list = []

        def walk():
            try:
                write(kd / "state", "update_schemes_tried_regions")
                outcome.append("done")
            except OSError as e:
                outcome.append(e.errno)

        th = threading.Thread(target=walk, daemon=True)
        th.start()
        time.sleep(2.0)
        assert th.is_alive() and not outcome, outcome
        with pytest.raises(OSError) as e:
            read(kd / "pid")
        assert e.value.errno == errno.EBUSY
        with pytest.raises(OSError) as e:
            write(d.admin / "kdamonds/nr_kdamonds", "2")
        assert e.value.errno == errno.EBUSY
        assert not _errors(d), _errors(d)
    finally:
        d._kill()
        d._err.close()
    th.join(timeout=10)
    assert not os.path.ismount(tmp_path / "sys")
