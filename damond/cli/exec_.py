"""`damond exec [--machine NAME | --config F] -- CMD...`: run CMD on a host that looks like
the emulated machine: damond serves /sys/kernel/mm/damon/admin, /sys/kernel/debug,
/sys/kernel/tracing, the THP controls, the emulated processes' /proc entries (same-pid
stand-ins) and /proc/{iomem,meminfo,vmstat}; a `perf` first on PATH serves damond's events.
The host's tree is never touched: the namespaces, the safety order and every mount are in
damond/host/namespace.py; this module only sequences them and runs CMD.

Exit status: CMD's; 127 (one line) when CMD does not exist, 126 when it cannot be run;
1 with one line when exec refuses or damond does not come up; 2 for usage errors.
Nothing survives exec: its work directory is a tmpfs in the private mount namespace and
the empty mountpoint is removed by the outer process.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from damond.cli.mount import add_log_arguments, log_argv, spawn_daemon, wait_ready
from damond.host import namespace as ns
from damond.host.env import child_env
from damond.host.namespace import ExecError

INSIDE_ENV = "DAMOND_EXEC_HOST_NS"
WORK_ENV = "DAMOND_EXEC_WORK"
STANDIN_TIMEOUT_S = 30


def set_argparser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="machine config (TOML); default: the embedded machine")
    parser.add_argument("--machine", metavar="NAME", help="a shipped machine profile (kunpeng920-rfc, x86-vm)")
    parser.add_argument("--feature-level", help="kernel feature level of the served tree")
    parser.add_argument("--keep-home", action="store_true", help="use the caller's HOME instead of a fresh one")
    add_log_arguments(parser)
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="command to run (after --)")


def _wait_standins(root: Path, daemon) -> None:
    """Until every emulated process's /proc/PID/maps is damond's (the stand-ins exist)."""
    dev = os.stat(root).st_dev
    deadline = time.monotonic() + STANDIN_TIMEOUT_S
    while time.monotonic() < deadline:
        pids = [ln.split()[0] for ln in (root / "damond/processes").read_text().splitlines()]
        missing = [p for p in pids if not (os.path.exists(f"/proc/{p}/maps") and os.stat(f"/proc/{p}/maps").st_dev == dev)]
        if not missing:
            return
        if daemon.poll() is not None:
            break
        time.sleep(0.05)
    def who(p: str) -> str:
        try:
            st = dict(ln.split(":\t", 1) for ln in Path(f"/proc/{p}/status").read_text().splitlines() if ":\t" in ln)
            return f"{st['Name']} ppid={st['PPid']} state={st['State']} wchan={Path(f'/proc/{p}/wchan').read_text()}"
        except OSError:
            return "-"
    seen = {p: who(p) for p in missing}
    raise ExecError(f"the stand-ins of emulated processes {seen} did not appear in /proc")


def _run_as_init(argv: list[str], env: dict[str, str]) -> int:
    """Run CMD as pid 1's child; reap every orphan of the namespace until CMD exits."""
    try:
        child = subprocess.Popen(argv, env=env)
    except FileNotFoundError:
        print(f"damond exec: {argv[0]}: command not found", file=sys.stderr)
        return 127
    except PermissionError:
        print(f"damond exec: {argv[0]}: permission denied", file=sys.stderr)
        return 126
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):     # pass on, as a shell would
        signal.signal(sig, lambda s, f: child.send_signal(s))
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return child.returncode if child.returncode is not None else 1
        except InterruptedError:
            continue
        if pid == child.pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            rc = child.returncode
            return 128 - rc if rc < 0 else rc


def _arch(args: argparse.Namespace) -> str:
    """The emulated machine's architecture (its preset's)."""
    from damond.cli.mount import _load
    from damond.mm.tlb import PRESETS

    preset = _load(args).section("machine").get("preset", "kunpeng920")
    return PRESETS.get(preset, {}).get("arch", "arm64")


def _inside(args: argparse.Namespace) -> int:
    host_ns = os.environ.pop(INSIDE_ENV)
    work = Path(os.environ.pop(WORK_ENV))
    ns.check_private(host_ns)                        # 1. private mount + PID namespace
    ns.hide_damon()                                  # 2. hide the real tree FIRST
    os.environ[ns.REAL_PROC_ENV] = str(ns.private_work(work))   # 3. all exec writes die with the namespace
    ns.cover_kernel_fs(debugfs=_arch(args) != "arm64")   # 4. listed, ro, covered below (no RFC debugfs on x86)
    ns.sys_readonly()                                # 5. /sys read-only here
    root = work / "sys"
    root.mkdir()
    ns.set_ns_last_pid(ns.REAL_PID_BASE)             # real processes above, emulated pids below
    log = open(work / "damond.log", "w")
    daemon = spawn_daemon(str(root), args.config, args.feature_level, log, args.machine,
                          extra=("--standins", str(work), *log_argv(args)))
    try:
        if not wait_ready(str(root), daemon, timeout=60):
            tail = Path(args.log_file or work / "damond.log").read_text().strip().splitlines()
            raise ExecError("damond did not come up" + (f": {tail[-1]}" if tail else ""))
        ns.bind_admin(root)                          # 6. bind and verify before anything else
        ns.verify(root)
        ns.bind_all(root)
        _wait_standins(root, daemon)
        env = child_env(dict(os.environ), work, root, args.keep_home)
        return _run_as_init(args.cmd, env)
    finally:
        # SIGTERM: libfuse leaves its loop and unmounts (a lazy unmount would wait for the binds to go);
        # the binds and the work tmpfs vanish with the mount namespace when this init exits
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()


def _outer(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise ExecError("must run as root (mount and PID namespaces, FUSE mounts over /sys)")
    if not shutil.which("unshare"):
        raise ExecError("unshare(1) not found (install util-linux)")
    from damond.cli.mount import _load
    from damond.errors import ConfigError

    try:
        _load(args)                                  # a bad config or profile: one line, before any namespace
    except ConfigError as e:
        raise ExecError(str(e)) from None
    work = tempfile.mkdtemp(prefix="damond-exec-")
    try:
        env = dict(os.environ, **{INSIDE_ENV: os.readlink("/proc/self/ns/mnt"), WORK_ENV: work})
        argv = [sys.executable, "-m", "damond", "exec"]
        for flag, v in (("--config", args.config), ("--machine", args.machine), ("--feature-level", args.feature_level)):
            if v:
                argv += [flag, os.path.abspath(v) if flag == "--config" else v]
        if args.keep_home:
            argv.append("--keep-home")
        argv += log_argv(args)
        argv += ["--", *args.cmd]
        signal.signal(signal.SIGINT, signal.SIG_IGN)        # the namespace's init handles it
        return subprocess.run([*ns.unshare_argv(), *argv], env=env).returncode
    finally:
        try:
            os.rmdir(work)                           # empty here: its contents lived in the namespace's tmpfs
        except OSError:
            shutil.rmtree(work, ignore_errors=True)


def main(args: argparse.Namespace) -> int:
    if args.cmd and args.cmd[0] == "--":
        args.cmd = args.cmd[1:]
    if not args.cmd:
        print("damond exec: no command given (usage: damond exec [--machine NAME] -- CMD ...)", file=sys.stderr)
        return 2
    try:
        if INSIDE_ENV in os.environ:
            return _inside(args)
        return _outer(args)
    except ExecError as e:
        print(f"damond exec: {e}", file=sys.stderr)
        return 1
