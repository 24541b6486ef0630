"""The daemon's log options through real mounts: --log-file/--log-level/--log-format,
rejected writes at debug level and rate-limited, a background mount logging to a real
file, and no libfuse "Ignoring invalid max threads value" line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import READY, REPO, DamondProcess, write


@pytest.fixture(autouse=True)
def _need_fuse():
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")


class Logged(DamondProcess):
    def __init__(self, mountpoint, *opts):
        super().__init__(mountpoint)
        self.opts = list(map(str, opts))

    def command(self):
        return super().command() + self.opts


def _reject(admin, n):
    for _ in range(n):
        try:
            write(admin / "kdamonds/nr_kdamonds", "x")
        except OSError:
            pass


def test_rejected_writes_are_debug_and_rate_limited(tmp_path):
    log = tmp_path / "d.log"
    with Logged(tmp_path / "sys", "--log-file", log, "--log-level", "debug", "--log-format", "json") as d:
        _reject(d.admin, 200)
    events = [json.loads(ln) for ln in log.read_text().splitlines()]
    rejected = [e for e in events if e["event"] == "write_rejected"]
    assert rejected and all(e["level"] == "debug" for e in rejected)
    assert len(rejected) <= 10 * 2           # 10 per 5 s; the 200 writes take well under 10 s
    assert "Ignoring invalid max threads" not in log.read_text() + d.log_text()


def test_default_level_logs_no_rejected_write_and_console_format(tmp_path):
    log = tmp_path / "d.log"
    with Logged(tmp_path / "sys", "--log-file", log, "--log-format", "console") as d:
        _reject(d.admin, 50)
        assert "Ignoring invalid max threads" not in d.log_text()
    text = log.read_text()
    assert "write_rejected" not in text and "mounted" in text
    assert not text.lstrip().startswith("{")         # console lines, not JSON


def test_background_mount_logs_to_the_named_file(tmp_path):
    mp, log = tmp_path / "sys", tmp_path / "bg.log"
    mp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "damond", "mount", str(mp), "--log-file", str(log)],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    pid = int(p.stdout.strip())
    try:
        assert (mp / READY).exists()
        assert any(json.loads(ln)["event"] == "mounted" for ln in log.read_text().splitlines())
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while os.path.ismount(mp) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not os.path.ismount(mp)
    assert "Ignoring invalid max threads" not in log.read_text()


def test_background_mount_without_log_file_leaves_nothing_in_tmp(tmp_path):
    """Without --log-file a background mount logs to a damond-*.log of its own in the temp
    directory; a clean exit (SIGTERM) removes it."""
    mp, tmp = tmp_path / "sys", tmp_path / "tmp"
    mp.mkdir()
    tmp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp))
    p = subprocess.run([sys.executable, "-m", "damond", "mount", str(mp)],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    pid = int(p.stdout.strip())
    assert [f.name for f in tmp.iterdir() if f.name.startswith("damond-")], "the daemon logs to its own file"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    assert not os.path.ismount(mp)
    assert list(tmp.iterdir()) == []
