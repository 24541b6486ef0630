"""Kernel behaviours found to differ (issue 10), each through a real mount: pread at an
offset on a fresh fd (seq_file), ENODEV through an fd whose directory an nr_* write
removed (kernfs deactivation), a show capped at a page minus the NUL (sysfs_emit), chmod
and chown by root (kernfs_iop_setattr), symlink EPERM, and --allow-other: the sysfs modes
for every user."""
from __future__ import annotations

import errno
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import DamondProcess, read, write


@pytest.fixture
def kd(damond):
    k = damond.admin / "kdamonds"
    write(k / "nr_kdamonds", "1")
    write(k / "0/contexts/nr_contexts", "1")
    return k / "0"


def test_pread_at_an_offset_on_a_fresh_fd(kd):
    f = kd / "contexts/0/monitoring_attrs/intervals/aggr_us"
    assert read(f) == "100000\n"
    fd = os.open(f, os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 3) == b"000\n"
        assert os.pread(fd, 100, 0) == b"100000\n"
        assert os.pread(fd, 2, 5) == b"0\n"
        assert os.pread(fd, 100, 7) == b""
    finally:
        os.close(fd)
    thp = kd.parents[3] / "transparent_hugepage/enabled"
    fd = os.open(thp, os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 1) == read(thp).encode()[1:]
    finally:
        os.close(fd)


def test_write_through_an_fd_of_a_removed_directory_is_enodev(kd):
    c = kd / "contexts/0"
    write(c / "targets/nr_targets", "1")
    fd = os.open(c / "targets/0/pid_target", os.O_RDWR)
    try:
        write(c / "targets/nr_targets", "1")          # destroys target 0 and makes a new one
        with pytest.raises(OSError) as e:
            os.write(fd, b"42")
        assert e.value.errno == errno.ENODEV
        with pytest.raises(OSError) as e:
            os.pread(fd, 10, 0)
        assert e.value.errno == errno.ENODEV
    finally:
        os.close(fd)
    assert read(c / "targets/0/pid_target") == "0\n"


def test_a_page_long_memcg_path_reads_back_a_page_minus_one(kd):
    c = kd / "contexts/0"
    write(c / "schemes/nr_schemes", "1")
    write(c / "schemes/0/filters/nr_filters", "1")
    f = c / "schemes/0/filters/0/memcg_path"
    path = b"/" + b"m" * 4095
    fd = os.open(f, os.O_WRONLY)
    try:
        assert os.write(fd, path + b"tail") == 4096       # cut to a page
    finally:
        os.close(fd)
    got = f.read_bytes()
    assert got == path[:4095]          # sysfs_emit("%s\n") fills PAGE_SIZE - 1 bytes: no room for "\n"


def test_root_may_chmod_and_chown_and_the_mode_reads_back(kd):
    f = kd / "refresh_ms"
    os.chmod(f, 0o644)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o644
    os.chmod(f, 0o400)
    with pytest.raises(PermissionError):           # kernfs checks the current mode at open
        os.open(f, os.O_WRONLY)
    os.chmod(f, 0o600)
    write(f, "7")
    assert read(f) == "7\n"
    pid = kd / "pid"
    os.chmod(pid, 0o600)                           # the mode, not the file's ops: still no write
    with pytest.raises(PermissionError):
        os.open(pid, os.O_WRONLY)
    os.chown(f, 65534, 65534)
    st = os.stat(f)
    assert (st.st_uid, st.st_gid) == (65534, 65534)


def test_symlink_is_eperm(kd):
    with pytest.raises(OSError) as e:
        os.symlink("state", kd / "link")
    assert e.value.errno == errno.EPERM


NOBODY = """
import os, sys, errno
os.setgid(65534); os.setuid(65534)
out = []
for p in sys.argv[1:]:
    try:
        if p.startswith("w:"):
            fd = os.open(p[2:], os.O_WRONLY); os.close(fd)
        elif os.path.isdir(p):
            os.listdir(p)
        else:
            open(p, "rb").read()
        out.append("ok")
    except OSError as e:
        out.append(errno.errorcode[e.errno])
print(" ".join(out))
"""


def _as_nobody(paths) -> list[str]:
    p = subprocess.run([sys.executable, "-c", NOBODY, *map(str, paths)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def _nobody_paths(root):
    a = root / "kernel/mm/damon/admin/kdamonds"
    return [root, a, a / "nr_kdamonds", root / "kernel/mm/transparent_hugepage/enabled",
            "w:" + str(root / "kernel/mm/transparent_hugepage/enabled"), root / "kernel/debug/damon/spe_stats"]


def test_allow_other_applies_the_sysfs_modes(tmp_path):
    try:
        pwd.getpwuid(65534)
    except KeyError:
        pytest.skip("no nobody user")
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")
    base = Path(tempfile.mkdtemp(prefix="damond-allow-other-"))     # pytest's tmp is 0700: nobody
    os.chmod(base, 0o755)                                             # could not reach a mount there

    class AllowOther(DamondProcess):
        def command(self):
            return super().command() + ["--allow-other"]

    try:
        _allow_other(AllowOther, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _allow_other(AllowOther, base):
    with AllowOther(base / "sys") as d:
        # dirs 0755 and THP 0644 readable, 0600/0400 files and THP writes refused, as on sysfs
        assert _as_nobody(_nobody_paths(d.root)) == ["ok", "ok", "EACCES", "ok", "EACCES", "EACCES"]
    with DamondProcess(base / "sys2") as d:    # default: only root gets in
        assert _as_nobody(_nobody_paths(d.root))[0] == "EACCES"
