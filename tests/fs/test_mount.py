"""Through a real FUSE mount (the real front over tests/fs/fakes.py): the 6.18 tree
structure against the live kernel's, defaults, kernfs open/write rules, the selftest
sysfs.sh expectations (kernel-sysfs.md 5.2) driven with `sh -c 'echo ...'`, per-parser
errnos, THP/proc/damond files, and unmount on SIGTERM."""
import errno
import os
import re
import stat
from pathlib import Path

import pytest

from tests.helpers import DamondProcess, populate, read, sh, write

LIVE = Path(__file__).resolve().parents[1] / "data" / "live-6.18-admin-tree.txt"   # source noted in the file
RFC_FILES = {"target_order", "hot_threshold"}


@pytest.fixture(scope="module")
def mount(tmp_path_factory):
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")
    with DamondProcess(tmp_path_factory.mktemp("fs") / "sys", fake=True) as d:
        yield d


@pytest.fixture
def admin(mount):
    k = mount.admin / "kdamonds"
    for kd in (p for p in k.iterdir() if p.is_dir()):
        if read(kd / "state") == "on\n":
            write(kd / "state", "off")
    write(k / "nr_kdamonds", "0")
    yield mount.admin
    assert mount.alive()


def tree_listing(root: Path) -> dict[str, tuple[str, str]]:
    out = {".": ("D", "755")}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath) / n
            st = os.lstat(p)
            out["./" + str(p.relative_to(root))] = ("D" if stat.S_ISDIR(st.st_mode) else "F",
                                                    oct(st.st_mode & 0o777)[2:])
    return out


def test_structure_matches_live_618(admin):
    live = {}
    for line in LIVE.read_text().splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"([DF]) (\d+) (\S+)", line)
        live[m.group(3)] = (m.group(1), m.group(2))
    k = admin / "kdamonds"
    write(k / "nr_kdamonds", "1")
    c = k / "0/contexts"
    write(c / "nr_contexts", "1")
    for rel, n in (("0/targets/nr_targets", 1), ("0/targets/0/regions/nr_regions", 1), ("0/schemes/nr_schemes", 1),
                   ("0/schemes/0/ops_filters/nr_filters", 2)):
        write(c / rel, str(n))
    ours = tree_listing(admin)
    extra = {p for p in ours if p not in live}
    assert {Path(p).name for p in extra} == RFC_FILES and all("/schemes/0/" in p for p in extra)
    assert {p: v for p, v in ours.items() if p not in extra} == live
    assert [p for p in ours if Path(p).name in RFC_FILES and ours[p] != ("F", "600")] == []


def test_every_nr_populated_and_defaults(admin):
    populate(admin, 2)
    s = admin / "kdamonds/1/contexts/0/schemes/1"
    filt = {p.name for p in (admin / "kdamonds/0/contexts/0/schemes/0/ops_filters/0").iterdir()}
    for d in ("filters/1", "core_filters/1", "ops_filters/1"):
        assert {p.name for p in (s / d).iterdir()} == filt
    assert {p.name for p in (s / "quotas/goals/1").iterdir()} == {"target_metric", "target_value",
                                                                   "current_value", "nid"}
    assert {p.name for p in (s / "dests/1").iterdir()} == {"id", "weight"}
    expect = {
        "../../state": "off", "../../pid": "-1", "../../refresh_ms": "0", "../../contexts/nr_contexts": "1",
        "../../contexts/0/operations": "vaddr", "../../contexts/0/addr_unit": "1",
        "../../contexts/0/avail_operations": "vaddr\nfvaddr\npaddr",
        "../../contexts/0/monitoring_attrs/intervals/sample_us": "5000",
        "../../contexts/0/monitoring_attrs/intervals/aggr_us": "100000",
        "../../contexts/0/monitoring_attrs/intervals/update_us": "60000000",
        "../../contexts/0/monitoring_attrs/nr_regions/min": "10",
        "../../contexts/0/monitoring_attrs/nr_regions/max": "1000",
        "../../contexts/0/targets/1/pid_target": "0", "../../contexts/0/targets/1/regions/1/end": "0",
        "action": "stat", "target_nid": "-1", "apply_interval_us": "0", "target_order": "0", "hot_threshold": "0",
        "access_pattern/sz/max": "0", "quotas/goals/1/target_metric": "user_input", "quotas/goals/1/nid": "0",
        "watermarks/metric": "none", "filters/1/type": "anon", "core_filters/1/type": "anon",
        "ops_filters/1/matching": "N", "ops_filters/1/allow": "N", "ops_filters/1/memcg_path": "",
        "stats/qt_exceeds": "0", "tried_regions/total_bytes": "0", "quotas/effective_bytes": "0",
        "dests/1/weight": "0",
    }
    base = admin / "kdamonds/1/contexts/0/schemes/1"
    for rel, v in expect.items():
        assert read(_rel(base, rel)) == v + "\n", rel


def _rel(base: Path, rel: str) -> Path:
    """"../../x" names x relative to the kdamond directory (kdamonds/1)."""
    if rel.startswith("../../"):
        return base.parents[3] / rel[6:]
    return base / rel


def test_stat_size_modes_and_kernfs_rules(admin):
    write(admin / "kdamonds/nr_kdamonds", "1")
    kd = admin / "kdamonds/0"
    st = os.stat(kd / "state")
    assert st.st_size == 4096 and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(kd / "pid").st_mode) == 0o400
    with pytest.raises(PermissionError):
        os.open(kd / "pid", os.O_WRONLY)
    with pytest.raises(PermissionError):
        os.open(kd / "pid", os.O_RDWR)
    with pytest.raises(PermissionError):
        open(kd / "newfile", "w")
    for fn, args in ((os.mkdir, (kd / "x",)), (os.rmdir, (kd / "contexts",)), (os.unlink, (kd / "state",)),
                     (os.rename, (kd / "state", kd / "s2")), (os.symlink, ("state", kd / "s3"))):
        with pytest.raises(OSError) as e:
            fn(*args)
        assert e.value.errno == errno.EPERM, fn
    r = kd / "refresh_ms"
    write(r, "5")
    fd = os.open(r, os.O_WRONLY | os.O_TRUNC)       # O_TRUNC does nothing, a zero write does nothing
    assert os.write(fd, b"") == 0
    os.close(fd)
    with open(r, "w") as f:
        f.write("")
    assert read(r) == "5\n"
    fd = os.open(r, os.O_WRONLY)
    assert os.write(fd, b"6\n") == 2
    assert os.write(fd, b"7") == 1                  # each write() its own store; offset ignored
    os.close(fd)
    assert read(r) == "7\n"
    with pytest.raises(OSError) as e:
        write(r, b"1" + b" " * 4200)                # cut to a page: "1" + spaces, EINVAL
    assert e.value.errno == errno.EINVAL and read(r) == "7\n"
    with pytest.raises(OSError) as e:
        write(r, b"8" * 4097)
    assert e.value.errno == errno.ERANGE
    write(r, b"9\x00garbage")                       # the store sees a C string
    assert read(r) == "9\n"


def test_sysfs_sh_expectations(admin):
    """tools/testing/selftests/damon/sysfs.sh (6.18), step by step."""
    def ok(cmd):
        r = sh(cmd)
        assert r.returncode == 0, (cmd, r.stderr)

    def fail(cmd):
        assert sh(cmd).returncode != 0, cmd

    def mode(p, m):
        assert os.path.isfile(p) and oct(stat.S_IMODE(os.stat(p).st_mode))[2:] == m, p

    k = admin / "kdamonds"
    mode(k / "nr_kdamonds", "600")
    ok(f"echo 1 > {k}/nr_kdamonds")
    assert (k / "0").is_dir()
    ok(f"echo 2 > {k}/nr_kdamonds")
    assert (k / "0").is_dir() and (k / "1").is_dir()
    ok(f"echo 0 > {k}/nr_kdamonds")
    assert not (k / "0").exists()
    ok(f"echo 1 > {k}/nr_kdamonds")
    kd = k / "0"
    mode(kd / "state", "600")
    mode(kd / "pid", "400")
    mode(kd / "contexts/nr_contexts", "600")
    ok(f"echo 1 > {kd}/contexts/nr_contexts")
    fail(f"echo 2 > {kd}/contexts/nr_contexts")
    ok(f"echo 0 > {kd}/contexts/nr_contexts")
    assert not (kd / "contexts/0").exists()
    ok(f"echo 1 > {kd}/contexts/nr_contexts")
    c = kd / "contexts/0"
    for f in ("operations", "addr_unit", "monitoring_attrs/intervals/aggr_us", "monitoring_attrs/intervals/sample_us",
              "monitoring_attrs/intervals/update_us", "monitoring_attrs/nr_regions/min",
              "monitoring_attrs/nr_regions/max", "targets/nr_targets", "schemes/nr_schemes"):
        mode(c / f, "600")
    for g in ("access_bp", "aggrs", "min_sample_us", "max_sample_us"):
        mode(c / "monitoring_attrs/intervals/intervals_goal" / g, "600")
    for n in ("1", "2", "0", "1"):
        ok(f"echo {n} > {c}/targets/nr_targets")
    mode(c / "targets/0/pid_target", "600")
    for n in ("1", "2", "0", "1"):
        ok(f"echo {n} > {c}/targets/0/regions/nr_regions")
    mode(c / "targets/0/regions/0/start", "600")
    mode(c / "targets/0/regions/0/end", "600")
    for n in ("1", "2", "0", "1"):
        ok(f"echo {n} > {c}/schemes/nr_schemes")
    s = c / "schemes/0"
    for f in ["action", "apply_interval_us", "quotas/ms", "quotas/bytes", "quotas/reset_interval_ms",
              "quotas/weights/sz_permil", "quotas/weights/nr_accesses_permil", "quotas/weights/age_permil",
              "watermarks/metric", "watermarks/interval_us", "watermarks/high", "watermarks/mid", "watermarks/low"] + \
             [f"access_pattern/{a}/{m}" for a in ("age", "nr_accesses", "sz") for m in ("min", "max")]:
        mode(s / f, "600")
    for n in ("1", "2", "0", "1"):
        ok(f"echo {n} > {s}/quotas/goals/nr_goals")
    mode(s / "quotas/goals/0/target_value", "600")
    mode(s / "quotas/goals/0/current_value", "600")
    for d, good, bad in (("filters", ("anon", "memcg", "addr", "target"), ("foo",)),
                         ("core_filters", ("addr", "target"), ("anon", "memcg", "foo")),
                         ("ops_filters", ("anon", "memcg"), ("addr", "target", "foo"))):
        for n in ("1", "2", "0", "1"):
            ok(f"echo {n} > {s}/{d}/nr_filters")
        f = s / d / "0"
        for g in good:
            ok(f"echo {g} > {f}/type")
        for b in bad:
            fail(f"echo {b} > {f}/type")
        for name in ("type", "matching", "allow", "memcg_path", "addr_start", "addr_end", "damon_target_idx"):
            mode(f / name, "600")
    for name in ("nr_tried", "sz_tried", "nr_applied", "sz_applied", "qt_exceeds", "sz_ops_filter_passed"):
        mode(s / "stats" / name, "400")
    mode(s / "tried_regions/total_bytes", "400")
    for n in ("1", "2", "0", "1"):
        ok(f"echo {n} > {s}/dests/nr_dests")
    mode(s / "dests/0/id", "600")
    mode(s / "dests/0/weight", "600")
    ok(f"echo 0 > {k}/nr_kdamonds")


S = "kdamonds/0/contexts/0/schemes/0"
ERRNO_CASES = [
    # (file, value written by echo, expected errno or None for success, read-back after success)
    ("kdamonds/0/contexts/0/monitoring_attrs/intervals/sample_us", "0x10", None, "16"),
    ("kdamonds/0/contexts/0/monitoring_attrs/intervals/sample_us", "010", None, "8"),
    ("kdamonds/0/contexts/0/monitoring_attrs/intervals/sample_us", " 1", "Invalid argument", None),
    ("kdamonds/0/contexts/0/monitoring_attrs/intervals/sample_us", "18446744073709551616", "Numerical result", None),
    ("kdamonds/0/contexts/0/addr_unit", "0", "Invalid argument", None),
    ("kdamonds/0/contexts/0/targets/0/pid_target", "-1", None, "-1"),
    ("kdamonds/0/contexts/0/targets/0/pid_target", "99999999999", "Invalid argument", None),   # always EINVAL
    (S + "/quotas/ms", "18446744073709551616", "Invalid argument", None),                    # always EINVAL
    (S + "/quotas/weights/sz_permil", "4294967296", "Numerical result", None),
    (S + "/target_nid", "-2147483649", "Numerical result", None),
    (S + "/action", "collapse", None, "collapse"),
    (S + "/action", "split", None, "split"),
    (S + "/action", "mthp_split", None, "mthp_split"),
    (S + "/action", "Pageout", "Invalid argument", None),
    (S + "/ops_filters/0/matching", "True", None, "Y"),
    (S + "/ops_filters/0/matching", "maybe", "Invalid argument", None),
    (S + "/ops_filters/0/memcg_path", "/foo", None, "/foo\n"),
    ("kdamonds/0/contexts/nr_contexts", "-1", "Invalid argument", None),
    ("kdamonds/0/contexts/0/targets/nr_targets", "2147483648", "Numerical result", None),
    ("kdamonds/0/state", "bogus", "Invalid argument", None),
]


@pytest.mark.parametrize("rel,value,err,back", ERRNO_CASES)
def test_errno_per_parser(admin, rel, value, err, back):
    populate(admin, 1)
    r = sh(f"echo '{value}' > {admin / rel}", shell="bash")   # dash prints "I/O error" for any errno
    if err is None:
        assert r.returncode == 0, r.stderr
        assert read(admin / rel) == back + "\n"
    else:
        assert r.returncode != 0 and err in r.stderr


def test_state_on_and_staging_through_mount(admin):
    populate(admin, 1)
    c = admin / "kdamonds/0/contexts/0"
    write(c / "targets/0/pid_target", "100")
    write(c / "targets/0/regions/nr_regions", "0")
    write(admin / "kdamonds/0/state", "on")
    assert read(admin / "kdamonds/0/state") == "on\n" and int(read(admin / "kdamonds/0/pid")) > 0
    write(c / "schemes/0/action", "split")
    write(admin / "kdamonds/0/state", "update_schemes_tried_regions")
    assert read(c / "schemes/0/tried_regions/1/end") == "8192\n"
    assert read(c / "schemes/0/target_order") == "0\n"          # not yet committed
    write(admin / "kdamonds/0/state", "commit")
    assert read(c / "schemes/0/target_order") == "2\n" and read(c / "schemes/0/hot_threshold") == "30\n"
    r = sh(f"echo 0 > {admin}/kdamonds/nr_kdamonds", shell="bash")
    assert "Device or resource busy" in r.stderr
    write(admin / "kdamonds/0/state", "off")
    assert read(admin / "kdamonds/0/pid") == "-1\n"


def test_thp_proc_and_control_files(mount, admin):
    thp = mount.root / "kernel/mm/transparent_hugepage"
    assert read(thp / "enabled") == "[always] madvise never\n"
    assert sh(f"echo sometimes > {thp}/enabled").returncode != 0
    assert sh(f"echo madvise > {thp}/enabled").returncode == 0
    assert read(thp / "enabled") == "always [madvise] never\n"
    assert read(thp / "hugepages-2048kB/enabled") == "always [inherit] madvise never\n"
    assert read(thp / "hpage_pmd_size") == "2097152\n"
    assert read(thp / "khugepaged/max_ptes_none") == "511\n"
    assert read(thp / "hugepages-64kB/stats/split") == "0\n"
    assert stat.S_IMODE(os.stat(thp / "hpage_pmd_size").st_mode) == 0o444
    write(thp / "enabled", "always")
    assert sorted(os.listdir(mount.root / "proc")) == ["100", "101", "iomem", "meminfo", "vmstat"]
    assert read(mount.root / "proc/100/maps").startswith("00400000-00800000")
    d = mount.root / "damond"
    assert read(d / "processes") == "100 sparse fake\n101 hot fake\n"
    assert "pid=100 comm=sparse wss_100ms=2097152 wss_1s=4194304" in read(d / "truth")
    write(d / "spawn", "idle size=1M\n")
    pid = int(read(d / "spawn"))
    assert (mount.root / f"proc/{pid}").is_dir()
    assert sh(f"echo 'nosuchkind' > {d}/spawn").returncode != 0
    write(d / "kill", str(pid))
    assert not (mount.root / f"proc/{pid}").exists()
    with pytest.raises(OSError) as e:
        write(d / "kill", str(pid))
    assert e.value.errno == errno.ESRCH


def test_sigterm_exits_zero(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    d = DamondProcess(tmp_path / "m", fake=True)
    with d:
        pass
    assert d.proc.returncode == 0 and not os.path.ismount(tmp_path / "m")
