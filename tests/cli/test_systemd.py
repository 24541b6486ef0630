"""The systemd unit: it verifies cleanly offline, `systemd-analyze security` rates it at
most 4.5 with no mount namespace, and the daemon speaks Type=notify: READY=1 once the tree
is mounted, WATCHDOG=1 while it serves, STOPPING=1 and exit 0 on SIGTERM (what systemctl
start/stop do), tested with a notify socket of our own since systemd is not PID 1 here."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd/damond.service"


def test_unit_verifies_without_warnings(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    exe = tmp_path / "damond"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -m damond \"$@\"\n")
    exe.chmod(0o755)
    unit = tmp_path / "damond.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/damond", str(exe)))
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "" and p.stderr.strip() == "", p.stdout + p.stderr


@contextlib.contextmanager
def notified_daemon(tmp_path, **env):
    """`damond mount --foreground` with a notify socket of ours: yields (socket, process, mountpoint)."""
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")
    sock_path = str(tmp_path / "notify.sock")
    mnt = tmp_path / "sys"
    mnt.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(sock_path)
        sock.settimeout(90)
        env = dict(os.environ, NOTIFY_SOCKET=sock_path, PYTHONPATH=str(REPO), **env)
        proc = subprocess.Popen([sys.executable, "-m", "damond", "mount", "--foreground", str(mnt)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert sock.recv(256) == b"READY=1"
            yield sock, proc, mnt
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    subprocess.run(["fusermount3", "-u", "-z", str(mnt)], stderr=subprocess.DEVNULL)


def test_notify_ready_then_clean_stop(tmp_path):
    with notified_daemon(tmp_path) as (sock, proc, mnt):
        assert (mnt / "kernel/mm/damon/admin/kdamonds/nr_kdamonds").read_text() == "0\n"
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(256) == b"STOPPING=1"
        assert proc.wait(timeout=30) == 0
        assert not os.path.ismount(mnt)


MOUNT_NAMESPACE_OPTIONS = ("PrivateMounts", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
                           "PrivateIPC", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                           "ProtectControlGroups", "ProtectProc", "ProcSubset", "PrivateUsers", "ReadOnlyPaths",
                           "ReadWritePaths", "InaccessiblePaths", "TemporaryFileSystem", "BindPaths",
                           "RootDirectory", "DynamicUser")


def test_unit_exposure_at_most_4_5_without_a_mount_namespace():
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    text = UNIT.read_text()
    set_opts = {ln.split("=", 1)[0].strip() for ln in text.splitlines() if "=" in ln and not ln.startswith("#")}
    assert not set_opts & set(MOUNT_NAMESPACE_OPTIONS), set_opts & set(MOUNT_NAMESPACE_OPTIONS)
    for opt in ("NoNewPrivileges", "CapabilityBoundingSet", "RestrictAddressFamilies", "IPAddressDeny",
                "SystemCallFilter", "LockPersonality", "RestrictRealtime", "RestrictSUIDSGID", "MemoryMax",
                "TasksMax", "UMask", "WatchdogSec", "StateDirectory"):
        assert opt in set_opts, opt
    p = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
                       capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", p.stdout + p.stderr)
    if m is None and "offline" in p.stderr:
        pytest.skip("this systemd-analyze has no --offline")
    assert m, p.stdout + p.stderr
    assert float(m.group(1)) <= 4.5, p.stdout


def test_watchdog_pings_while_serving(tmp_path):
    with notified_daemon(tmp_path, WATCHDOG_USEC="1000000") as (sock, proc, mnt):
        t0 = time.monotonic()
        pings = 0
        while time.monotonic() - t0 < 3:
            msg = sock.recv(256)
            assert msg == b"WATCHDOG=1", msg
            pings += 1
        assert pings >= 3          # every WatchdogSec/2 = 0.5 s: 6 expected, 3 on a loaded box
        proc.send_signal(signal.SIGTERM)
        while (msg := sock.recv(256)) == b"WATCHDOG=1":
            pass
        assert msg == b"STOPPING=1"
        assert proc.wait(timeout=30) == 0


def test_no_watchdog_ping_for_another_pid(tmp_path):
    """WATCHDOG_PID names the process systemd watches (sd_watchdog_enabled): another pid's
    watchdog is not ours to feed."""
    with notified_daemon(tmp_path, WATCHDOG_USEC="500000", WATCHDOG_PID="1") as (sock, proc, mnt):
        sock.settimeout(2)
        with pytest.raises(socket.timeout):
            sock.recv(256)
