"""exec's guards refuse to run a client where a write could reach the host's /sys. Checked in
the host's own namespace, where every guard must refuse (nothing here writes anything: the
guards only read /proc/self and stat paths). The end-to-end check, every writable file and
mount under /sys inside exec, is tests/host/sys_writes.py (run by tests/cli/test_exec.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from damond.host import namespace as ns


def test_check_private_refuses_the_host_namespace():
    with pytest.raises(ns.ExecError, match="private mount namespace"):
        ns.check_private(os.readlink("/proc/self/ns/mnt"))


def test_verify_refuses_the_real_admin_tree(tmp_path):
    """The host's /sys/kernel/mm/damon/admin is sysfs, not damond's FUSE directory."""
    if not ns.ADMIN.is_dir():
        pytest.skip("this kernel has no DAMON sysfs tree")
    (tmp_path / "kernel/mm/damon/admin").mkdir(parents=True)
    with pytest.raises(ns.ExecError, match="not a FUSE mount"):
        ns.verify(tmp_path)


def test_writable_submounts_are_found():
    """sys_submounts sees every mount below /sys that is not exec's own: the list sys_readonly
    makes read-only and verify refuses if any stayed writable (a bind remount of /sys alone
    leaves cgroup, securityfs, bpf ... mounts writable)."""
    with open("/proc/self/mountinfo") as f:
        below = {ln.split()[4] for ln in f if ln.split()[4].startswith("/sys/")}
    found = ns.sys_submounts()
    assert set(found) == below and len(found) == len(set(found))
    for mp in ns.sys_submounts(writable_only=True):
        assert mp in below and Path(mp).is_dir()
