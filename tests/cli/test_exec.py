"""`damond exec` puts damond over the real paths only inside a private mount namespace:
the client sees damond's tree, the host's live kdamond is untouched."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOST = Path("/sys/kernel/mm/damon/admin/kdamonds")


def _host_state() -> tuple[str, str]:
    nr = (HOST / "nr_kdamonds").read_text() if (HOST / "nr_kdamonds").exists() else ""
    st = (HOST / "0/state").read_text() if (HOST / "0/state").exists() else ""
    return nr, st


@pytest.fixture
def need_ns():
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")
    if not Path("/sys/kernel/mm/damon").is_dir():
        pytest.skip("this kernel has no /sys/kernel/mm/damon to hide")


def _exec(script: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "damond", "exec", "--", "sh", "-c", script],
                          env=env, text=True, capture_output=True, timeout=120)


def test_client_sees_damond_and_host_is_untouched(need_ns):
    before = _host_state()
    p = _exec("A=/sys/kernel/mm/damon/admin/kdamonds; cat $A/nr_kdamonds; echo 1 > $A/nr_kdamonds; "
              "cat $A/nr_kdamonds $A/0/state $A/0/pid; ls /sys/kernel/debug/damon; "
              "stat -f -c %t /sys/kernel/mm/damon/admin; echo $HOME")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split()
    assert lines[:4] == ["0", "1", "off", "-1"]
    assert {"spe_feed", "spe_stats"} <= set(lines[4:])
    assert "65735546" in lines                       # FUSE_SUPER_MAGIC, not sysfs
    assert lines[-1] != os.environ.get("HOME")       # isolated HOME for damo's cache
    assert _host_state() == before


def test_exit_status_is_the_clients(need_ns):
    assert _exec("exit 7").returncode == 7


def test_no_command_is_a_one_line_error():
    p = subprocess.run([sys.executable, "-m", "damond", "exec"], env=dict(os.environ, PYTHONPATH=str(REPO)),
                       text=True, capture_output=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "no command" in p.stderr
