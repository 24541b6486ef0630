"""The namespaces of `damond exec` and what is mounted in them, in the safety order of
fuse-damo-systemd.md §3 (each step aborts exec on failure; nothing runs before the last):

1. `unshare --mount --propagation private --pid --fork --mount-proc` (outer side:
   `unshare_argv`); inside, `check_private` verifies the mount namespace differs.
2. `hide_damon`: a tmpfs over /sys/kernel/mm/damon, FIRST.
3. `private_work`: a tmpfs over exec's work directory: damond's mountpoint, its log, HOME,
   a pristine /proc (`realproc`, for the twins' readers), all gone with the namespace.
4. `cover_kernel_fs`: drops the namespace's copies of the host's debugfs/tracefs mounts
   (a private namespace: the host keeps them), mounts debugfs and tracefs only so that
   /proc/mounts lists them as clients expect, makes them read-only (bind remount: a per
   mount flag) and later covers them entirely with damond's directories: the host's
   debugfs and tracefs (its kdamond's trace events) cannot be reached, and no write could
   reach them even if the cover were unmounted.
5. `sys_readonly`: /sys read-only in this namespace (bind remount; the host keeps rw).
6. the daemon starts (exec_.py) and `bind_all` binds, then `verify` checks that
   /sys/kernel/mm/damon/admin is damond's FUSE directory.
Binds: admin, /sys/kernel/debug (damond's kernel/debug: damon/), /sys/kernel/tracing
(damond's: available_events lists damond's events), /sys/kernel/mm/transparent_hugepage
(damond's, writable: a FUSE mount is not affected by the read-only /sys), /proc/{iomem,
meminfo,vmstat}, and on arm64 machines /sys/bus/event_source/devices (a tmpfs with the real
PMUs' symlinks plus arm_spe_0 -> damond's PMU directory).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

FUSE_SUPER_MAGIC = 0x65735546
HIDE = Path("/sys/kernel/mm/damon")
ADMIN = HIDE / "admin"
DEBUG = Path("/sys/kernel/debug")
TRACING = Path("/sys/kernel/tracing")
THP = Path("/sys/kernel/mm/transparent_hugepage")
PMU_DEVICES = Path("/sys/bus/event_source/devices")
PROC_GLOBAL = ("iomem", "meminfo", "vmstat")
REAL_PROC_ENV = "DAMOND_REAL_PROC"   # the daemon's pristine procfs path (readers of real processes' own maps)
REAL_PID_BASE = 10000        # real processes of the namespace get pids above this; emulated ones below
WORK_SIZE = "256m"


class ExecError(Exception):
    pass


def sh(*argv: str) -> None:
    p = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise ExecError(f"{' '.join(argv)} failed: {p.stdout.strip()}")


def unshare_argv() -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc", "--"]


def check_private(host_ns: str) -> None:
    if os.readlink("/proc/self/ns/mnt") == host_ns:
        raise ExecError("not in a private mount namespace; refusing to touch /sys")
    if os.getpid() != 1:
        raise ExecError("not the init of a private PID namespace")


def hide_damon() -> None:
    if not HIDE.is_dir():
        raise ExecError(f"{HIDE} does not exist on this kernel (no DAMON); nothing to hide")
    sh("mount", "-t", "tmpfs", "-o", "size=64k,mode=755", "damond-hide", str(HIDE))


def private_work(work: Path) -> Path:
    """A tmpfs over `work` and a pristine procfs at work/realproc (no binds on it)."""
    sh("mount", "-t", "tmpfs", "-o", f"size={WORK_SIZE},mode=700", "damond-exec", str(work))
    realproc = work / "realproc"
    realproc.mkdir()
    sh("mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(realproc))
    return realproc


def cover_kernel_fs(debugfs: bool) -> None:
    """tracefs at /sys/kernel/tracing and (if `debugfs`) debugfs at /sys/kernel/debug,
    read-only, as the listed-but-covered lower layers (see the module doc). Without
    `debugfs`, /sys/kernel/debug is a plain tmpfs: the RFC machine's debugfs has damon/
    (spe_feed, spe_stats) without DAMON's removed debugfs interface, and damo 3.4.3 takes
    any `<debugfs>/damon` dir for that interface, probes it and crashes (as it would on the
    RFC kernel with debugfs mounted)."""
    # the host's own debugfs/tracefs mounts (copied into this private namespace) go first, deepest
    # first, so that /proc/mounts lists exactly the layers below and no tracing automount
    with open("/proc/self/mounts") as f:
        old = [ln.split()[1] for ln in f if ln.split()[2] in ("debugfs", "tracefs")]
    for mp in sorted(old, key=len, reverse=True):
        sh("umount", "-l", mp)
    for fstype, path in (("debugfs", DEBUG), ("tracefs", TRACING)):
        if not path.is_dir():
            continue
        if fstype == "debugfs" and not debugfs:
            sh("mount", "-t", "tmpfs", "-o", "size=64k,mode=755", "damond-debug", str(path))
            continue
        sh("mount", "-t", fstype, "-o", "nosuid,nodev,noexec", "nodev", str(path))   # no sb flags changed
        sh("mount", "-o", "remount,bind,ro", str(path))


def sys_readonly() -> None:
    """/sys and every mount below it read-only here (a bind remount is per mount, so the
    host's cgroup, securityfs, bpf ... mounts copied into this namespace would otherwise stay
    writable), but exec's own tmpfs (`damond-*`: the hide layer damond's admin dir is made in)."""
    sh("mount", "-o", "remount,bind,ro", "/sys")
    for mp in sys_submounts(writable_only=True):
        sh("mount", "-o", "remount,bind,ro", mp)


def sys_submounts(writable_only: bool = False) -> list[str]:
    """Mountpoints below /sys in this namespace that are not exec's own (source `damond*`)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            a = line.split()
            src = a[a.index("-") + 2]
            mp = a[4].encode().decode("unicode_escape")          # mountinfo escapes ' ' as \040
            if not mp.startswith("/sys/") or src.startswith("damond"):
                continue
            if writable_only and "rw" not in a[5].split(","):
                continue
            if mp not in out:
                out.append(mp)
    return out


def set_ns_last_pid(n: int) -> None:
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(n))


def _bind(src: Path, dst: Path) -> None:
    sh("mount", "--bind", str(src), str(dst))


def bind_admin(root: Path) -> None:
    ADMIN.mkdir()
    _bind(root / "kernel/mm/damon/admin", ADMIN)


def verify(root: Path) -> None:
    out = subprocess.run(["stat", "-f", "-c", "%t", str(ADMIN)], stdout=subprocess.PIPE, text=True, check=True)
    if int(out.stdout.strip(), 16) != FUSE_SUPER_MAGIC:
        raise ExecError(f"{ADMIN} is not a FUSE mount; refusing to run the client")
    if os.stat(ADMIN).st_ino != os.stat(root / "kernel/mm/damon/admin").st_ino:
        raise ExecError(f"{ADMIN} is not damond's admin directory")
    with open("/proc/self/mountinfo") as f:
        sys_opts = [ln.split()[5] for ln in f if ln.split()[4] == "/sys"]
    if not sys_opts or "ro" not in sys_opts[-1].split(","):
        raise ExecError("/sys is not read-only in this namespace")
    rw = sys_submounts(writable_only=True)
    if rw:
        raise ExecError(f"{rw[0]} is writable in this namespace")


def bind_pmus(root: Path) -> None:
    """A tmpfs over the PMU list holding the real entries' symlinks and arm_spe_0."""
    real = {p.name: os.readlink(p) for p in PMU_DEVICES.iterdir() if p.is_symlink()}
    sh("mount", "-t", "tmpfs", "-o", "size=64k,mode=755", "damond-pmus", str(PMU_DEVICES))
    for name, target in real.items():
        os.symlink(target, PMU_DEVICES / name)
    os.symlink(root / "bus/event_source/devices/arm_spe_0", PMU_DEVICES / "arm_spe_0")
    sh("mount", "-o", "remount,bind,ro", str(PMU_DEVICES))


def bind_all(root: Path) -> None:
    """Everything but admin (bound and verified first)."""
    if DEBUG.is_dir():
        _bind(root / "kernel/debug", DEBUG)
    if TRACING.is_dir():
        _bind(root / "kernel/tracing", TRACING)
    if THP.is_dir():
        _bind(root / "kernel/mm/transparent_hugepage", THP)
    for name in PROC_GLOBAL:
        _bind(root / "proc" / name, Path("/proc") / name)
    if (root / "bus/event_source/devices/arm_spe_0").is_dir() and PMU_DEVICES.is_dir():
        bind_pmus(root)
