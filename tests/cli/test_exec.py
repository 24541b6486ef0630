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


def _exec(script: str, *opts: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "damond", "exec", *opts, "--", "sh", "-c", script],
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


# start kdamond 0 on vaddr pid $P ($A: the kdamonds directory)
START_P = ("echo 1 > $A/nr_kdamonds; echo 1 > $A/0/contexts/nr_contexts; echo vaddr > $A/0/contexts/0/operations; "
           "echo 1 > $A/0/contexts/0/targets/nr_targets; echo $P > $A/0/contexts/0/targets/0/pid_target; "
           "echo on > $A/0/state; ")


def _host_files() -> dict[str, str]:
    """The host's writable THP/KSM settings and DAMON admin top level, as read now."""
    out = {}
    for base in ("/sys/kernel/mm/transparent_hugepage", "/sys/kernel/mm/ksm"):
        for name in sorted(os.listdir(base)):
            p = Path(base, name)
            if p.is_file() and os.stat(p).st_mode & 0o200:
                out[str(p)] = p.read_text()
    out["nr_kdamonds"] = _host_state()[0]
    return out


def test_no_write_reaches_the_host_sys(need_ns):
    """Every writable file under /sys/kernel/mm and /sys/kernel/debug inside exec is either
    damond's or a read-only sysfs file that refuses the open; the host's files stay as they were."""
    before_files, before = _host_files(), _host_state()
    script = REPO / "tests/host/sys_writes.py"
    p = _exec(f"{sys.executable} {script}")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    counts = dict(x.split() for x in lines[:2])
    assert int(counts["sysfs"]) >= 10            # the host's ksm, swap, numa, hugepages ... refused
    assert int(counts["damond"]) >= 20           # damond's THP controls, admin tree, debugfs damon/
    assert [x for x in lines if x.startswith("BAD")] == []
    assert lines[-1] == "thp always madvise [never]"     # the write landed in damond
    assert _host_files() == before_files and _host_state() == before
    with open("/proc/self/mounts") as f:             # nothing of exec's mounts leaked to the host's /sys
        assert not [ln for ln in f if ln.split()[1].startswith("/sys")
                    and (ln.startswith("damond") or ln.split()[2].startswith("fuse"))]


def test_missing_command_is_one_line_and_127(need_ns, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp_path))
    for cmd in (["/nonexistent"], ["no-such-command-xyz", "arg"]):
        p = subprocess.run([sys.executable, "-m", "damond", "exec", "--", *cmd], env=env, text=True,
                           capture_output=True, timeout=120)
        assert p.returncode == 127
        assert p.stderr.strip() == f"damond exec: {cmd[0]}: command not found"
    assert os.listdir(tmp_path) == []            # no work directory survives exec


def test_emulated_processes_have_same_pid_standins(need_ns):
    script = (
        "A=/sys/kernel/mm/damon/admin/kdamonds; P=$(awk '/sparse/{print $1}' $DAMOND_ROOT/damond/processes); "
        "echo $P; cat /proc/$P/comm; tr '\\0' ' ' < /proc/$P/cmdline; echo; grep ^Name: /proc/$P/status; "
        "ls /proc/$P/task | wc -l; kill -0 $P && echo alive; ps -p $P -o comm=; "
        "cmp /proc/$P/maps $DAMOND_ROOT/proc/$P/maps && echo maps-damond; "
        + START_P + "K=$(cat $A/0/pid); sleep 0.3; ps -p $K -o comm=; "
        "kill $P; sleep 0.5; grep -c sparse $DAMOND_ROOT/damond/processes; kill -0 $P 2>/dev/null || echo gone; "
        "sleep 1; cat $A/0/state; "
        "echo 'mmap size=4M' > $DAMOND_ROOT/damond/spawn; Q=$(cat $DAMOND_ROOT/damond/spawn); sleep 0.5; "
        "cat /proc/$Q/comm; echo $Q > $DAMOND_ROOT/damond/kill; sleep 0.5; kill -0 $Q 2>/dev/null || echo q-gone")
    p = _exec(script)
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    pid = out[0]
    assert int(pid) > 1000
    assert out[1:9] == ["sparse_8g", "/usr/bin/sparse_8g ", "Name:\tsparse_8g", "1", "alive", "sparse_8g",
                        "maps-damond", "kdamond.0"]
    assert out[9:12] == ["0", "gone", "off"]      # killing the stand-in ended the process; the kdamond stopped
    assert out[12:] == ["mmap_idle", "q-gone"]    # a spawned process gets one; its exit ends it


def test_proc_and_sys_are_the_emulated_machines(need_ns):
    script = ("head -1 /proc/iomem; head -1 /proc/meminfo; grep -c thp_ /proc/vmstat; "
              "cat /sys/kernel/mm/transparent_hugepage/enabled; grep -E ' (debugfs|tracefs) ' /proc/mounts | wc -l; "
              "cat /sys/kernel/tracing/available_events; ls /sys/kernel/debug/damon; "
              "cat /sys/bus/event_source/devices/arm_spe_0/format/pa_enable; which perf")
    p = _exec(script)
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    assert out[0] == "40000000-43fffffff : System RAM"           # 16 GiB at 1 GiB
    assert out[1] == "MemTotal:       16777216 kB"
    assert int(out[2]) >= 5
    assert out[3] == "[always] madvise never"
    assert out[4] == "1"                 # tracefs listed (for damo); the RFC machine lists no debugfs (see namespace.py)
    assert out[5:9] == ["damon:damon_aggregated", "damon:damon_monitor_intervals_tune", "damon:damos_before_apply",
                        "damon:damos_esz"]
    assert {"spe_feed", "spe_stats"} <= set(out[9:-2])
    assert out[-2] == "config:1"
    assert out[-1] == str(REPO / "damond/host/bin/perf")
    p = _exec("head -1 /proc/iomem; cat /sys/kernel/mm/transparent_hugepage/enabled; "
              "grep -E ' (debugfs|tracefs) ' /proc/mounts | wc -l; ls /sys/kernel/debug | wc -l; "
              "ls /sys/bus/event_source/devices | grep -c arm_spe", "--machine", "x86-vm")
    assert p.stdout.splitlines() == ["40000000-13fffffff : System RAM", "always [madvise] never", "2", "0", "0"]


def test_perf_records_damond_events(need_ns):
    script = (
        "cd $HOME; A=/sys/kernel/mm/damon/admin/kdamonds; P=$(awk '/sparse/{print $1}' $DAMOND_ROOT/damond/processes); "
        + START_P +
        "perf record -a -o p.data -e damon:damon_aggregated -e damon:damon_monitor_intervals_tune -- sleep 1; "
        "perf script --force -i p.data; "
        "perf record -e arm_spe_0/ts_enable=1,pa_enable=1/ -p $P -o s.data -- sleep 0.3 2>/dev/null; "
        "perf script -i s.data -F phys_addr | head -1; perf stat true; echo rc=$?")
    p = _exec(script)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    agg = [x for x in lines if "damon:damon_aggregated:" in x]
    assert len(agg) >= 5
    import re
    pat = re.compile(r"^ {7}kdamond\.0 +(\d+) \[\d{3}\] +\d+\.\d{6}: +damon:damon_aggregated: "
                     r"target_id=0 nr_regions=(\d+) (\d+)-(\d+): (\d+) (\d+)$")
    assert all(pat.match(x) for x in agg), agg[:2]
    # perf's column: the event name right-aligned to the longest name of the session (34 chars)
    assert agg[0].index("damon:damon_aggregated:") + len("damon:damon_aggregated") == agg[0].index(": target") \
        and agg[0][agg[0].index("damon:damon_aggregated:") - 12:].startswith(" " * 12)
    pa = [x for x in lines if re.fullmatch(r" *[0-9a-f]+", x)]
    assert pa and 0x40000000 <= int(pa[0], 16) < 0x440000000
    assert "perf (damond): 'perf stat' is not served" in p.stderr and lines[-1] == "rc=1"


def test_host_debugfs_and_tracefs_mounts_are_replaced(need_ns):
    """On a host that has debugfs and tracefs mounted (simulated in a throwaway private mount
    namespace around exec), exec's /proc/mounts still lists only its own read-only layers:
    damo's first `tracefs` line is /sys/kernel/tracing (damond's events), and the RFC machine
    lists no debugfs (damo would take damon/ for the removed debugfs interface)."""
    inner = [sys.executable, "-m", "damond", "exec", "--", "sh", "-c",
             "grep -E ' (debugfs|tracefs) ' /proc/mounts | cut -d' ' -f2,3,4 | cut -d, -f1; "
             "cat /sys/kernel/tracing/available_events | head -1"]
    wrapper = ("mount -t debugfs nodev /sys/kernel/debug && mount -t tracefs nodev /sys/kernel/tracing && "
               "ls /sys/kernel/debug/tracing >/dev/null && exec \"$@\"")
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", wrapper, "sh", *inner],
                       env=dict(os.environ, PYTHONPATH=str(REPO)), text=True, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["/sys/kernel/tracing tracefs ro", "damon:damon_aggregated"]


def test_log_file_keeps_the_daemons_log(need_ns, tmp_path):
    """`damond exec --log-file F --log-format json`: the daemon's log lands in F (outside the
    namespace's tmpfs, so it survives exec) as JSON lines, with the kdamond it started."""
    log = tmp_path / "exec.log"
    p = _exec("A=/sys/kernel/mm/damon/admin/kdamonds; echo 1 > $A/nr_kdamonds; "
              "echo 1 > $A/0/contexts/nr_contexts; echo paddr > $A/0/contexts/0/operations; "
              "echo on > $A/0/state; cat $A/0/state",
              "--log-file", str(log), "--log-format", "json", "--log-level", "debug")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["on"]
    import json
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(e.get("event") == "kdamond_started" for e in events), events[-5:]
