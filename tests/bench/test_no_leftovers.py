"""The benchmarks clean up: nothing left in the temp directory, no mount left (default run:
tiny sizes, no timing asserted)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("bench,args,root", [
    ("spe_hist", ["--records", "2000", "--rounds", "1"], False),
    ("fs_open_read", ["--rounds", "1", "--seconds", "0.2", "--settle", "0"], True),
])
def test_benchmark_leaves_no_temp_directory(tmp_path, bench, args, root):
    if root and (os.geteuid() != 0 or not os.path.exists("/dev/fuse")):
        pytest.skip("needs root and /dev/fuse")
    td = tmp_path / "tmpdir"
    td.mkdir()
    p = subprocess.run([sys.executable, str(REPO / "bench" / f"{bench}.py"), *args], cwd=REPO, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(td)), text=True, capture_output=True)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "@@bench " in p.stdout
    assert sorted(x.name for x in td.iterdir()) == []
    assert str(td) not in open("/proc/mounts").read()
