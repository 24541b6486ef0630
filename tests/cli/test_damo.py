"""Unmodified damo 3.4.3 against damond, through `damond exec` (private namespace):
feature probing, start on an emulated pid, the kernel-side report, an access snapshot,
stop. Skipped when damo is not installed."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_damo_start_report_stop():
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not Path("/sys/kernel/mm/damon").is_dir():
        pytest.skip("needs root, /dev/fuse and a /sys/kernel/mm/damon to hide")
    if not shutil.which("damo"):
        pytest.skip("damo is not installed (pip install damo==3.4.3)")
    script = (
        "set -e; PID=$(awk '/sparse/{print $1}' $DAMOND_ROOT/damond/processes); "
        "damo report sysinfo >/dev/null; damo start $PID; "
        "cat /sys/kernel/mm/damon/admin/kdamonds/0/state; "
        "cat /sys/kernel/mm/damon/admin/kdamonds/0/contexts/0/targets/0/pid_target; "
        "sleep 1; damo report damon --kdamonds_summary; damo report access; damo stop; "
        "cat /sys/kernel/mm/damon/admin/kdamonds/0/state")
    p = subprocess.run([sys.executable, "-m", "damond", "exec", "--", "sh", "-c", script],
                       env=dict(os.environ, PYTHONPATH=str(REPO)), text=True, capture_output=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "on" and lines[1] == "1001"
    assert any("state: on" in x for x in lines)
    assert any(x.startswith("total size:") for x in lines)      # damo report access read tried regions
    assert lines[-1] == "off"
