"""Real programs in pid_target (damond/host): a gcc-built program of our own, started with
the tracer's environment next to a damond mount, is monitored through its twin: DAMON
reports the pages it keeps touching as accessed and the others not, its twin's
AnonHugePages follows damond's THP policy, a pid with no process gets EINVAL, and the
kdamond stops by itself when the program is reaped."""
from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path

import pytest

from damond.host import tracing
from tests.helpers import DamondProcess, read, write

HERE = Path(__file__).resolve().parent
CONFIG = """seed = 1
[machine]
preset = "kunpeng920"
memory = "4G"
nr_cpus = 2
numa_nodes = 1
[thp]
enabled = "%s"
[khugepaged]
enabled = false
"""
MB = 1 << 20


def _need():
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")
    if tracing.preload_path() is None:
        pytest.skip("tracer not built (pip install -e .)")


@pytest.fixture(scope="module")
def touch(tmp_path_factory):
    exe = tmp_path_factory.mktemp("prog") / "touch"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "touch.c")], check=True)
    return exe


def mount(tmp_path, thp="always"):
    _need()
    cfg = tmp_path / "machine.toml"
    cfg.write_text(CONFIG % thp)
    return DamondProcess(tmp_path / "sys", config=cfg)


class Prog:
    """The touch program started with the tracer's environment for the mount at `root`."""

    def __init__(self, exe, root, size_mb, hot_mb, hint="none", env=None, fork=False):
        e = tracing.child_env(dict(os.environ), str(root)) if env is None else env
        argv = [str(exe), str(size_mb), str(hot_mb), hint, "0"] + (["0", "fork"] if fork else [])
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=e)
        addr, size, pid = self.p.stdout.readline().split()
        self.addr, self.size, self.pid = int(addr, 16), int(size), int(pid)     # the child's pid with fork

    def stop(self):
        if self.pid != self.p.pid:
            try:
                os.kill(self.pid, 9)                     # the forked child; the parent then exits
            except ProcessLookupError:
                pass
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def setup_ctx(admin, pid, ops="vaddr", regions=(), sample_us=5000, aggr_us=100000):
    k = admin / "kdamonds"
    write(k / "nr_kdamonds", "1")
    write(k / "0/contexts/nr_contexts", "1")
    c = k / "0/contexts/0"
    write(c / "operations", ops)
    write(c / "monitoring_attrs/intervals/sample_us", str(sample_us))
    write(c / "monitoring_attrs/intervals/aggr_us", str(aggr_us))
    write(c / "targets/nr_targets", "1")
    write(c / "targets/0/pid_target", str(pid))
    write(c / "targets/0/regions/nr_regions", str(len(regions)))
    for i, (s, e) in enumerate(regions):
        write(c / f"targets/0/regions/{i}/start", str(s))
        write(c / f"targets/0/regions/{i}/end", str(e))
    write(c / "schemes/nr_schemes", "1")                   # a stat scheme: tried_regions report every region
    for f, v in (("sz/max", str(2**64 - 1)), ("nr_accesses/max", "4294967295"), ("age/max", "4294967295")):
        write(c / "schemes/0/access_pattern" / f, v)
    write(c / "schemes/0/action", "stat")
    return c


def tried(admin, c):
    write(admin / "kdamonds/0/state", "update_schemes_tried_regions")
    d = c / "schemes/0/tried_regions"
    out = []
    for r in sorted((x for x in os.listdir(d) if x.isdigit()), key=int):
        out.append(tuple(int(read(d / r / f)) for f in ("start", "end", "nr_accesses")))
    return out


@pytest.mark.parametrize("fork", [False, True], ids=["program", "forked-child"])
def test_touched_pages_are_accessed_others_not(tmp_path, touch, fork):
    """fvaddr over the program's mapping: a hot 8 MiB it keeps writing and a cold 16 MiB
    it wrote once (a 4 MiB gap keeps the two from merging). Over several aggregations the
    hot regions show accesses, the cold ones none. `forked-child`: the program forks after
    writing its memory and the child (traced again through pthread_atfork) is the target."""
    with mount(tmp_path) as d:
        prog = Prog(touch, d.root, 32, 8, fork=fork)
        try:
            a = prog.addr
            c = setup_ctx(d.admin, prog.pid, "fvaddr", [(a, a + 8 * MB), (a + 12 * MB, a + 28 * MB)])
            write(d.admin / "kdamonds/0/state", "on")
            hot_seen = 0
            for _ in range(5):
                time.sleep(0.35)
                regs = tried(d.admin, c)
                hot = [r for r in regs if r[1] <= a + 8 * MB]
                cold = [r for r in regs if r[0] >= a + 12 * MB]
                assert hot and cold and len(hot) + len(cold) == len(regs)
                assert all(r[2] == 0 for r in cold), regs
                hot_seen += all(r[2] > 0 for r in hot)
            assert prog.p.poll() is None, f"the program died: {prog.p.returncode}"
            assert hot_seen >= 3, (regs, [e for e in d.events() if e.get("event", "").startswith("twin")])
            write(d.admin / "kdamonds/0/state", "off")
        finally:
            prog.stop()


def test_unknown_pid_einval(tmp_path):
    with mount(tmp_path) as d:
        p = subprocess.Popen(["true"])
        p.wait()                                         # a pid that surely has no process now
        setup_ctx(d.admin, p.pid)
        with pytest.raises(OSError) as e:
            write(d.admin / "kdamonds/0/state", "on")
        assert e.value.errno == errno.EINVAL
        assert read(d.admin / "kdamonds/0/state") == "off\n"


def test_untraced_process_einval(tmp_path, touch):
    """A real process started without the tracer cannot be observed: refused, not faked."""
    with mount(tmp_path) as d:
        prog = Prog(touch, d.root, 4, 1, env=dict(os.environ))
        try:
            setup_ctx(d.admin, prog.pid)
            with pytest.raises(OSError) as e:
                write(d.admin / "kdamonds/0/state", "on")
            assert e.value.errno == errno.EINVAL
        finally:
            prog.stop()


def test_static_binary_einval(tmp_path):
    """A static binary ignores LD_PRELOAD: nobody can observe it, so it is refused (after
    the wait for its tracer) instead of being monitored as never accessed."""
    exe = tmp_path / "touch-static"
    if subprocess.run(["gcc", "-O2", "-static", "-o", str(exe), str(HERE / "touch.c")]).returncode:
        pytest.skip("no static libc")
    with mount(tmp_path) as d:
        prog = Prog(exe, d.root, 4, 1)
        try:
            setup_ctx(d.admin, prog.pid)
            with pytest.raises(OSError) as e:
                write(d.admin / "kdamonds/0/state", "on")
            assert e.value.errno == errno.EINVAL
        finally:
            prog.stop()


def test_dead_target_stops_kdamond(tmp_path, touch):
    with mount(tmp_path) as d:
        prog = Prog(touch, d.root, 8, 2)
        setup_ctx(d.admin, prog.pid)
        write(d.admin / "kdamonds/0/state", "on")
        assert read(d.admin / "kdamonds/0/state") == "on\n"
        assert (d.root / f"proc/{prog.pid}/maps").exists()
        prog.p.kill()                                    # a zombie: its task (pid) stays until reaped,
        time.sleep(0.5)                                  # so the target stays valid, as on a kernel
        assert read(d.admin / "kdamonds/0/state") == "on\n"
        assert read(d.root / f"proc/{prog.pid}/maps") == ""          # but its memory is gone
        prog.stop()                                      # reaped
        deadline = time.monotonic() + 10
        while read(d.admin / "kdamonds/0/state") == "on\n" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read(d.admin / "kdamonds/0/state") == "off\n"
        assert read(d.admin / "kdamonds/0/pid") == "-1\n"
        assert not (d.root / f"proc/{prog.pid}").exists()


def _anon_huge_kb(root, pid):
    for line in read(root / f"proc/{pid}/smaps_rollup").splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    raise AssertionError("no AnonHugePages line")


@pytest.mark.parametrize("thp,hint,expect_mb", [("always", "none", 32), ("never", "none", 0),
                                                 ("madvise", "huge", 32), ("madvise", "none", 0),
                                                 ("always", "nohuge", 0)])
def test_twin_thp_follows_emulated_policy(tmp_path, touch, thp, hint, expect_mb):
    """The twin's folios are the emulated machine's: AnonHugePages of the program's 32 MiB
    (2 MiB-aligned, fully written) in damond's smaps_rollup follows damond's THP setting
    and the program's madvise hint (VmFlags hg/nh), whatever the host kernel did."""
    with mount(tmp_path, thp) as d:
        prog = Prog(touch, d.root, 32, 1, hint)
        try:
            setup_ctx(d.admin, prog.pid)
            write(d.admin / "kdamonds/0/state", "on")
            kb = _anon_huge_kb(d.root, prog.pid)
            assert expect_mb * 1024 <= kb <= expect_mb * 1024 + 4096     # + a THP-sized libc arena at most
            write(d.admin / "kdamonds/0/state", "off")
        finally:
            prog.stop()


def _rollup_kb(root, pid, field):
    for line in read(root / f"proc/{pid}/smaps_rollup").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} line")


def _real_rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_damos_acts_on_the_twin_only(tmp_path, touch):
    """A pageout scheme for never-accessed regions pages the cold 16 MiB out of the twin
    (damond's smaps_rollup: Swap grows, and stays: the twin's refresh does not fault the
    pages back while the program leaves them alone); the real program's memory is not
    touched (its own VmRSS keeps the 32 MiB)."""
    with mount(tmp_path) as d:
        prog = Prog(touch, d.root, 32, 8)
        try:
            a = prog.addr
            c = setup_ctx(d.admin, prog.pid, "fvaddr", [(a, a + 8 * MB), (a + 12 * MB, a + 28 * MB)])
            write(c / "schemes/0/access_pattern/nr_accesses/max", "0")
            write(c / "schemes/0/access_pattern/age/min", "5")           # cold for 5 aggregations
            write(c / "schemes/0/action", "pageout")
            rss0 = _real_rss_kb(prog.pid)
            write(d.admin / "kdamonds/0/state", "on")
            assert _rollup_kb(d.root, prog.pid, "Swap") == 0             # the twin starts fully resident
            deadline = time.monotonic() + 15
            while _rollup_kb(d.root, prog.pid, "Swap") < 12 * 1024 and time.monotonic() < deadline:
                time.sleep(0.1)
            swapped = _rollup_kb(d.root, prog.pid, "Swap")
            assert swapped >= 12 * 1024                                   # most of the cold 16 MiB
            time.sleep(0.5)                                               # several twin refreshes
            assert _rollup_kb(d.root, prog.pid, "Swap") >= swapped - 2048
            assert _real_rss_kb(prog.pid) >= rss0 - 1024 >= 32 * 1024 - 1024
            write(d.admin / "kdamonds/0/state", "off")
        finally:
            prog.stop()


def test_program_changing_its_mappings_and_doing_io_survives(tmp_path):
    """churn.c maps, mprotects and unmaps memory and reads/writes files straight into its
    own buffer while a kdamond samples the buffer at 1 ms: every call still does what it
    should (read/write finished past our protection), the program exits 0, and DAMON saw
    the buffer accessed (by those syscalls: the kernel's copy counts as an access)."""
    exe = tmp_path / "churn"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "churn.c")], check=True)
    with mount(tmp_path) as d:
        p = subprocess.Popen([str(exe), "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=tracing.child_env(dict(os.environ), str(d.root)))
        try:
            addr, size, pid = p.stdout.readline().split()
            a = int(addr, 16)
            c = setup_ctx(d.admin, int(pid), "fvaddr", [(a, a + int(size))], sample_us=1000, aggr_us=20000)
            write(d.admin / "kdamonds/0/state", "on")
            seen = 0
            for _ in range(5):
                time.sleep(0.3)
                regs = tried(d.admin, c)
                seen += any(r[2] > 0 for r in regs)
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode == 0 and out.startswith("ok "), (p.returncode, out, err)
        assert int(out.split()[1]) > 0
        assert seen >= 2, regs


def test_twin_follows_exec_and_late_mappings(tmp_path, touch):
    """As with `damo start "CMD"`: the pid is adopted while it is still a shell that then
    execs the program, which maps, madvises (MADV_HUGEPAGE) and writes its memory only
    afterwards. The twin follows the exec (the new image connects again), the new mapping,
    its hint and its pages: under THP=madvise the 32 MiB end up PMD-mapped in the twin."""
    with mount(tmp_path, "madvise") as d:
        env = tracing.child_env(dict(os.environ), str(d.root))
        p = subprocess.Popen(["sh", "-c", f"read x; exec {touch} 32 1 huge 0"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
        try:
            setup_ctx(d.admin, p.pid)
            write(d.admin / "kdamonds/0/state", "on")
            assert _anon_huge_kb(d.root, p.pid) == 0                     # a shell so far
            p.stdin.write("go\n")
            p.stdin.flush()
            p.stdout.readline()                                           # mapped, advised, written
            deadline = time.monotonic() + 10
            while _anon_huge_kb(d.root, p.pid) < 32 * 1024 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert 32 * 1024 <= _anon_huge_kb(d.root, p.pid) <= 36 * 1024
            assert read(d.admin / "kdamonds/0/state") == "on\n"
            write(d.admin / "kdamonds/0/state", "off")
        finally:
            p.kill()
            p.wait()


def test_thread_control_block_is_never_protected(tmp_path):
    """A region over the program's own thread control block (the kernel writes its rseq
    area on every return to user space: a protected page there is a SIGSEGV the program
    cannot handle, as the selftests' access_memory got) is sampled every millisecond for
    two seconds: the program runs to its end and exits 0."""
    exe = tmp_path / "tcb"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "tcb.c")], check=True)
    with mount(tmp_path) as d:
        p = subprocess.Popen([str(exe), "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=tracing.child_env(dict(os.environ), str(d.root)))
        try:
            addr, pid = p.stdout.readline().split()
            a = int(addr, 16)
            setup_ctx(d.admin, int(pid), "fvaddr", [(a - 8192, a + 12288)], sample_us=1000, aggr_us=20000)
            write(d.admin / "kdamonds/0/state", "on")
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode == 0 and out.startswith("ok "), (p.returncode, out, err)


def test_tmpfs_file_mapping_is_shmem_as_its_mount_says(tmp_path):
    """A shared mapping of a file on a tmpfs mounted with huge=always (test_damos_split_file.sh's
    setup) is shmem in the twin and PMD-mapped as that mount says: ShmemPmdMapped covers
    the 2 MiB-aligned part (the twin used to take it for a plain file: 0 kB, and DAMOS
    split had nothing to split)."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -m")
    exe = tmp_path / "shmfile"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "shmfile.c")], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mount(tmp_path, "never") as d:
        env = tracing.child_env(dict(os.environ), str(d.root))
        sh = f"mount -t tmpfs -o huge=always,size=64M tmpfs {mnt} && exec {exe} {mnt}/f 16"
        p = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", sh],
                             stdout=subprocess.PIPE, text=True, env=env)
        try:
            addr, size, pid = p.stdout.readline().split()
            setup_ctx(d.admin, int(pid))
            write(d.admin / "kdamonds/0/state", "on")       # adopts the twin
            deadline = time.monotonic() + 10
            while not (d.root / f"proc/{pid}/smaps_rollup").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            kb = _rollup_kb(d.root, int(pid), "ShmemPmdMapped")
            a = int(addr, 16)
            aligned = ((a + int(size)) & ~(2 * MB - 1)) - ((a + 2 * MB - 1) & ~(2 * MB - 1))
            assert kb >= aligned // 1024 >= 14 * 1024
            assert _rollup_kb(d.root, int(pid), "AnonHugePages") == 0
        finally:
            p.kill()
            p.wait()


def _real_anon_huge_kb(pid):
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    raise AssertionError("no AnonHugePages")


@pytest.mark.parametrize("thp,expect", [("always", True), ("never", False)])
def test_armed_pmd_units_are_backed_by_host_thps(tmp_path, touch, thp, expect):
    """A 2 MiB unit the twin maps with a PMD folio (emulated THP=always) and the program has
    populated is collapsed into a host THP before it is protected, so arming it rewrites
    one PMD, not 512 PTEs (bench/twins_speed.py): the real program's own AnonHugePages grows
    while DAMON still sees its hot part accessed and the rest not. Under THP=never the
    units are 4 KiB and the real memory stays as the program made it."""
    with mount(tmp_path, thp) as d:
        prog = Prog(touch, d.root, 16, 8)
        try:
            if _real_anon_huge_kb(prog.pid) > 0:
                pytest.skip("the host backs the program with THPs by itself (host THP=always)")
            a = prog.addr
            c = setup_ctx(d.admin, prog.pid, "fvaddr", [(a, a + 8 * MB), (a + 10 * MB, a + 16 * MB)], sample_us=2000,
                          aggr_us=50000)
            write(d.admin / "kdamonds/0/state", "on")
            deadline = time.monotonic() + (10 if expect else 1.5)
            while _real_anon_huge_kb(prog.pid) < 4096 and time.monotonic() < deadline:
                time.sleep(0.1)
            kb = _real_anon_huge_kb(prog.pid)
            assert (kb >= 4096) == expect, kb
            assert kb <= 16 * 1024 + 4096                    # the program's memory (+ a libc arena), never more
            regs = tried(d.admin, c)
            assert any(r[2] > 0 for r in regs if r[1] <= a + 8 * MB), regs
            assert all(r[2] == 0 for r in regs if r[0] >= a + 10 * MB), regs
            assert prog.p.poll() is None
            write(d.admin / "kdamonds/0/state", "off")
        finally:
            prog.stop()


def _anon_bytes(pid):
    total = 0
    for line in open(f"/proc/{pid}/maps"):
        f = line.split()
        if f[4] == "0" and (len(f) < 6 or f[5].startswith("[anon")):
            s, e = (int(x, 16) for x in f[0].split("-"))
            total += e - s
    return total


def test_tracer_leaves_the_program_layout_alone(tmp_path, touch):
    """The helper's thread must not give the program a malloc arena of its own (a 64 MiB
    reservation next to the program's mappings moved the initial vaddr regions DAMON
    derives from the layout: the selftests' hot region was found a second late). A traced
    program, adopted and sampled, has at most 1 MiB more anonymous mappings than the same
    program untraced (the helper's stack and table)."""
    with mount(tmp_path) as d:
        traced, plain = Prog(touch, d.root, 8, 1), Prog(touch, d.root, 8, 1, env=dict(os.environ))
        try:
            setup_ctx(d.admin, traced.pid)
            write(d.admin / "kdamonds/0/state", "on")
            time.sleep(0.3)
            extra = _anon_bytes(traced.pid) - _anon_bytes(plain.pid)
            assert 0 < extra <= 1 << 20, extra
            write(d.admin / "kdamonds/0/state", "off")
        finally:
            traced.stop()
            plain.stop()
