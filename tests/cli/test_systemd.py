"""The systemd unit: it verifies cleanly offline, and the daemon speaks Type=notify:
READY=1 once the tree is mounted, STOPPING=1 and exit 0 on SIGTERM (what systemctl
start/stop do), tested with a notify socket of our own since systemd is not PID 1 here."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
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


def test_notify_ready_then_clean_stop(tmp_path):
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")
    sock_path = str(tmp_path / "notify.sock")
    mnt = tmp_path / "sys"
    mnt.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(sock_path)
        sock.settimeout(90)
        env = dict(os.environ, NOTIFY_SOCKET=sock_path, PYTHONPATH=str(REPO))
        proc = subprocess.Popen([sys.executable, "-m", "damond", "mount", "--foreground", str(mnt)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert sock.recv(256) == b"READY=1"
            assert (mnt / "kernel/mm/damon/admin/kdamonds/nr_kdamonds").read_text() == "0\n"
            proc.send_signal(signal.SIGTERM)
            assert sock.recv(256) == b"STOPPING=1"
            assert proc.wait(timeout=30) == 0
            assert not os.path.ismount(mnt)
        finally:
            if proc.poll() is None:
                proc.kill()
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)], stderr=subprocess.DEVNULL)
