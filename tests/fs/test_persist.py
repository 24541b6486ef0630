"""Restart without loss through real mounts: a daemon with --state-dir is SIGKILLed while
a kdamond monitors; restarted with the same --state-dir it serves the same tree (every
written value, nr_*), runs the same kdamonds with the same parameters, and spe_stats reads
the same. A kdamond whose target was a spawned process (gone after the restart: the
machine restarts from its config and seed) stays off, with its staged values and one
log line."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.helpers import DamondProcess, read, write

DBG = "kernel/debug/damon"


class StatefulDamond(DamondProcess):
    def __init__(self, mountpoint, state_dir, **kw):
        super().__init__(mountpoint, **kw)
        self.state_dir = state_dir

    def command(self):
        return super().command() + ["--state-dir", str(self.state_dir)]


@pytest.fixture(autouse=True)
def _need_fuse():
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")


def snapshot(admin: Path) -> dict[str, bytes]:
    """Every readable file below admin/kdamonds except what the kdamond fills on its own
    (pid, stats, effective quotas via refresh_ms, tried regions)."""
    out = {}
    for dirpath, dirs, files in os.walk(admin):
        dirs.sort()
        for f in sorted(files):
            p = Path(dirpath) / f
            rel = str(p.relative_to(admin))
            if f in ("pid", "effective_bytes") or "/stats/" in rel or "tried_regions" in rel or \
                    not os.stat(p).st_mode & 0o400:
                continue
            out[rel] = p.read_bytes()
    return out


def _setup(admin: Path, pid_target: int) -> None:
    k = admin / "kdamonds"
    write(k / "nr_kdamonds", "2")
    write(k / "1/contexts/nr_contexts", "1")
    write(k / "1/contexts/0/monitoring_attrs/intervals/sample_us", "7000")
    write(k / "0/contexts/nr_contexts", "1")
    c = k / "0/contexts/0"
    write(c / "monitoring_attrs/intervals/sample_us", "10000")
    write(c / "monitoring_attrs/intervals/aggr_us", "200000")
    write(c / "monitoring_attrs/nr_regions/min", "12")
    write(c / "targets/nr_targets", "1")
    write(c / "targets/0/pid_target", str(pid_target))
    write(c / "schemes/nr_schemes", "2")
    s = c / "schemes/1"
    write(s / "action", "hugepage")
    write(s / "access_pattern/nr_accesses/min", "3")
    write(s / "quotas/ms", "17")
    write(s / "filters/nr_filters", "1")
    write(s / "filters/0/type", "anon")
    write(s / "filters/0/memcg_path", b"/a\xffb\n")
    write(s / "filters/0/matching", "Y")
    write(k / "0/refresh_ms", "250")


def test_sigkill_then_restart_keeps_tree_kdamonds_and_pfn_tree(tmp_path):
    state = tmp_path / "state"
    d = StatefulDamond(tmp_path / "sys", state).__enter__()
    try:
        pid = int(read(d.root / "damond/processes").split()[0])       # a config process
        _setup(d.admin, pid)
        text = "".join(f"{0x100000 + i:#x}\n" for i in range(128)) + "".join(f"{0x200200 + i:#x} 3\n" for i in range(64))
        write(d.root / DBG / "spe_feed", text)
        write(d.admin / "kdamonds/0/state", "on")
        write(d.admin / "kdamonds/0/contexts/0/schemes/0/quotas/bytes", "4096")
        write(d.admin / "kdamonds/0/state", "commit")
        before, spe = snapshot(d.admin), read(d.root / DBG / "spe_stats")
        assert before["kdamonds/0/state"] == b"on\n" and "nr_entries=2 " in spe
        d.proc.kill()
        d.proc.wait()
    finally:
        d._kill()
        d._err.close()
    with StatefulDamond(tmp_path / "sys", state) as e:
        after = snapshot(e.admin)
        assert after == before
        assert read(e.root / DBG / "spe_stats") == spe
        assert int(read(e.admin / "kdamonds/0/pid")) > 0
        write(e.admin / "kdamonds/0/state", "update_tuned_intervals")     # the running parameters
        assert read(e.admin / "kdamonds/0/contexts/0/monitoring_attrs/intervals/sample_us") == "10000\n"
        write(e.admin / "kdamonds/0/state", "update_schemes_stats")
        assert any(ev.get("event") == "state_restored" and ev.get("kdamonds_on") == [0] for ev in e.events())
        write(e.admin / "kdamonds/0/state", "off")


def test_a_gone_target_is_not_restarted(tmp_path):
    state = tmp_path / "state"
    d = StatefulDamond(tmp_path / "sys", state).__enter__()
    try:
        write(d.root / "damond/spawn", "access_memory_even nr_regions=2 sz_region=4M\n")
        pid = int(read(d.root / "damond/spawn"))
        _setup(d.admin, pid)
        write(d.admin / "kdamonds/0/state", "on")
        d.proc.kill()
        d.proc.wait()
    finally:
        d._kill()
        d._err.close()
    with StatefulDamond(tmp_path / "sys", state) as e:
        assert read(e.admin / "kdamonds/0/state") == "off\n"
        assert read(e.admin / "kdamonds/0/contexts/0/targets/0/pid_target") == f"{pid}\n"
        lines = [ev for ev in e.events() if ev.get("event") == "kdamond_not_restarted"]
        assert len(lines) == 1 and lines[0]["errno"] == errno.errorcode[errno.EINVAL], lines


def test_a_corrupt_state_file_is_one_line_and_exit_1(tmp_path):
    import subprocess
    import sys

    from tests.helpers import REPO

    state = tmp_path / "state"
    state.mkdir()
    (state / "state.npz").write_bytes(b"PK\x03\x04 not a zip")
    mp = tmp_path / "sys"
    mp.mkdir()
    p = subprocess.run([sys.executable, "-m", "damond", "mount", str(mp), "--foreground", "--state-dir", str(state),
                        "--log-file", str(tmp_path / "d.log")],
                       capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("damond: --state-dir "), p.stderr
    assert not os.path.ismount(mp)
