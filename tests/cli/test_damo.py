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


def _damo_exec(script: str, *opts: str) -> subprocess.CompletedProcess:
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not Path("/sys/kernel/mm/damon").is_dir():
        pytest.skip("needs root, /dev/fuse and a /sys/kernel/mm/damon to hide")
    damo = shutil.which("damo") or (Path(sys.executable).parent / "damo" if (Path(sys.executable).parent / "damo").exists()
                                     else None)
    if not damo:
        pytest.skip("damo is not installed (pip install damo==3.4.3)")
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=f"{Path(damo).parent}:{os.environ.get('PATH', '')}")
    return subprocess.run([sys.executable, "-m", "damond", "exec", *opts, "--", "bash", "-c", script],
                          env=env, text=True, capture_output=True, timeout=300)


def test_damo_record_perf_mode_then_report_wss_heatmap_and_snapshot():
    """damo record (perf mode, through damond's perf) on an emulated pid, then report wss and
    heatmap from the record file; record --snapshot reads tried regions through sysfs."""
    script = (
        "set -e; cd $HOME; P=$(awk '/sparse/{print $1}' $DAMOND_ROOT/damond/processes); "
        "damo record $P >/dev/null 2>&1 & D=$!; "              # record 3 s from when damo's perf runs
        "for i in $(seq 300); do pgrep -f 'host[.]perf record' >/dev/null && break; sleep 0.1; done; "
        "sleep 3; kill -INT $D 2>/dev/null || true; wait $D || true; file -b damon.data; "
        "damo report wss | grep -E '^ *50 '; damo report heatmap --output raw | head -1; "
        "damo report footprints | head -2 | tail -1; "
        "damo record --snapshot 0 1 $P >/dev/null 2>&1; damo report access | grep '^total size'")
    p = _damo_exec(script)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout.splitlines()
    assert out[0] == "zlib compressed data"          # damo parsed perf script text and wrote its record
    wss50 = out[1].split()
    assert wss50[1:3] == ["8.000", "GiB"]            # the sparse workload touches every PMD of its 8 GiB
    assert len(out[2].split()) == 3                  # raw heatmap: time addr temperature
    assert "MiB" in out[3] or "GiB" in out[3]        # footprints from /proc/PID/statm (damond's)
    assert out[4].startswith("total size: 8.")


def test_damo_start_paddr_takes_the_emulated_ram():
    p = _damo_exec("damo start --ops paddr && damo report damon | grep -E 'region|ops'; damo stop",
                   "--machine", "x86-vm")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ops: paddr" in p.stdout
    assert "region [1,073,741,824, 5,368,709,120) (4.000 GiB)" in p.stdout
