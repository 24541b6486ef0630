"""The daemon's lifecycle through real mounts: a live mountpoint is refused, a stale one
(daemon SIGKILLed) is cleared, SIGTERM/SIGINT/unmount end the daemon within a second even
with a tried-regions walk pending (the writer gets ECANCELED, as when a kdamond exits),
and 50 mount/unmount cycles leave no daemon behind."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.fs.test_review_kernel import _vaddr_kdamond
from tests.helpers import READY, REPO, DamondProcess, read, write

EXIT_S = 1.0


@pytest.fixture
def _need_fuse():
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")


pytestmark = pytest.mark.usefixtures("_need_fuse")


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _mount_cmd(mp, *extra):
    return [sys.executable, "-m", "damond", "mount", str(mp), "--foreground", *map(str, extra)]


def _exists(p) -> bool:
    try:
        return p.exists()
    except OSError:         # ENOTCONN until the stale mount is cleared
        return False


def test_live_mountpoint_is_refused_with_one_line(tmp_path):
    with DamondProcess(tmp_path / "sys") as d:
        p = subprocess.run(_mount_cmd(d.root), capture_output=True, text=True, env=_env(), cwd=REPO, timeout=60)
        assert p.returncode == 1
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "already mounted" in lines[0], p.stderr
        assert read(d.admin / "kdamonds/nr_kdamonds") == "0\n"      # the first daemon still serves


def test_stale_mount_after_sigkill_is_cleared(tmp_path):
    mp = tmp_path / "sys"
    first = DamondProcess(mp).__enter__()
    first.proc.kill()
    first.proc.wait()
    first._err.close()
    with pytest.raises(OSError) as e:
        os.stat(mp / "kernel")
    assert e.value.errno == errno.ENOTCONN
    second = subprocess.Popen(_mount_cmd(mp, "--log-file", tmp_path / "second.log"), stdin=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not _exists(mp / READY):
            assert second.poll() is None and time.monotonic() < deadline, second.stderr.read()
            time.sleep(0.02)
        assert read(mp / "kernel/mm/damon/admin/kdamonds/nr_kdamonds") == "0\n"
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=10) == 0
        subprocess.run(["fusermount3", "-u", "-z", str(mp)], capture_output=True)
    err = second.stderr.read().strip().splitlines()
    assert len(err) == 1 and "cleared a stale mount" in err[0], err
    assert not os.path.ismount(mp)


def _pending_walk(d):
    kd, c, s = _vaddr_kdamond(d, apply_interval_us=20_000_000)
    write(kd / "state", "on")
    got: list = []

    def walk():
        try:
            write(kd / "state", "update_schemes_tried_regions")
            got.append(0)
        except OSError as e:
            got.append(e.errno)

    t = threading.Thread(target=walk, daemon=True)
    t.start()
    time.sleep(1.0)
    assert t.is_alive(), f"the walk should wait for the 20 s apply interval: {got}"
    return t, got


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "fusermount3 -u -z"])
def test_exit_within_a_second_with_a_walk_pending(tmp_path, how):
    with DamondProcess(tmp_path / "sys") as d:
        t, got = _pending_walk(d)
        t0 = time.monotonic()
        if how.startswith("SIG"):
            d.proc.send_signal(getattr(signal, how))
        else:
            subprocess.run(how.split() + [str(d.root)], check=True)
        d.proc.wait(timeout=10)
        took = time.monotonic() - t0
        t.join(5)
        assert took < EXIT_S, f"{how}: the daemon took {took:.2f} s to exit"
        assert d.proc.returncode == 0
        assert got == [errno.ECANCELED]
        assert not os.path.ismount(d.root)


def test_sigterm_cancels_a_waiting_damon_call(tmp_path):
    """update_schemes_stats waits for the kdamond's next sample (4 s): SIGTERM ends it with
    ECANCELED (damon_call on a kdamond that exits) and the daemon within a second."""
    from tests.fs.test_locks import _slow_kdamond

    with DamondProcess(tmp_path / "sys") as d:
        kd, _ = _slow_kdamond(d)
        write(kd / "state", "on")
        got: list = []

        def stats():
            try:
                write(kd / "state", "update_schemes_stats")
                got.append(0)
            except OSError as e:
                got.append(e.errno)

        t = threading.Thread(target=stats, daemon=True)
        t.start()
        time.sleep(0.5)
        assert t.is_alive()
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        d.proc.wait(timeout=10)
        took = time.monotonic() - t0
        t.join(5)
        assert took < EXIT_S and d.proc.returncode == 0, took
        assert got == [errno.ECANCELED]


def test_fifty_unmounts_leave_no_daemon(tmp_path):
    mp = tmp_path / "sys"
    mp.mkdir()
    cmd = [sys.executable, "-m", "tests.fs.fakes", str(mp)]
    left = []
    for i in range(50):
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=_env(), cwd=REPO)
        deadline = time.monotonic() + 60
        while not (mp / READY).exists():
            assert p.poll() is None and time.monotonic() < deadline, f"cycle {i}: not ready"
            time.sleep(0.01)
        read(mp / "kernel/mm/damon/admin/kdamonds/nr_kdamonds")
        subprocess.run(["fusermount3", "-u", str(mp)], check=True)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            left.append(p.pid)
            p.kill()
            p.wait()
            subprocess.run(["fusermount3", "-u", "-z", str(mp)], capture_output=True)
    assert left == [], f"daemons still alive after fusermount3 -u: {left}"


def test_watchdog_health_needs_an_answering_loop_and_live_kdamonds(monkeypatch):
    from damond.fs import mount as fsmount

    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    alive = [True]
    life = fsmount.Lifecycle("/nonexistent", lambda: None, lambda: alive[0])
    now = time.monotonic()
    assert not life._healthy(now)                  # not mounted yet
    life.mounted.set()
    life._last_probe = now
    assert life._healthy(now + 0.5)
    assert not life._healthy(now + 1.5)            # the last stat through the mount is too old
    alive[0] = False
    assert not life._healthy(now + 0.1)            # a running kdamond's thread died
