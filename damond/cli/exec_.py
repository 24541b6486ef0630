"""`damond exec -- CMD...`: run CMD with damond serving /sys/kernel/mm/damon/admin (and
/sys/kernel/debug/damon), so unmodified clients (damo, the kernel selftests, the RFC's
scripts) find it at the real paths, without ever touching the host's tree.

Safety recipe (fuse-damo-systemd.md §3), in this order, aborting on any failure:
1. re-exec inside `unshare --mount --propagation private` and check that the mount
   namespace really differs from the caller's;
2. hide the real DAMON tree with a tmpfs over /sys/kernel/mm/damon FIRST;
3. make this namespace's /sys mount read-only (bind remount: the host keeps rw);
4. start damond on a private directory, wait until it is ready;
5. bind its admin (and debug) directories over the hidden paths;
6. verify that /sys/kernel/mm/damon/admin is a FUSE mount served by that damond;
only then run CMD, with an isolated HOME (damo caches sysinfo there).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from damond.cli.mount import spawn_daemon, wait_ready
from damond.host import tracing

FUSE_SUPER_MAGIC = 0x65735546
ADMIN = Path("/sys/kernel/mm/damon/admin")
HIDE = Path("/sys/kernel/mm/damon")
DEBUG = Path("/sys/kernel/debug")
INSIDE_ENV = "DAMOND_EXEC_HOST_NS"


def set_argparser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="machine config (TOML); default: the embedded machine")
    parser.add_argument("--feature-level", help="kernel feature level of the served tree")
    parser.add_argument("--keep-home", action="store_true", help="use the caller's HOME instead of a fresh one")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="command to run (after --)")


class ExecError(Exception):
    pass


def _sh(*argv: str) -> None:
    p = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise ExecError(f"{' '.join(argv)} failed: {p.stdout.strip()}")


def _fs_magic(path: Path) -> int:
    out = subprocess.run(["stat", "-f", "-c", "%t", str(path)], stdout=subprocess.PIPE, text=True, check=True)
    return int(out.stdout.strip(), 16)


def _inside(args: argparse.Namespace) -> int:
    host_ns = os.environ.pop(INSIDE_ENV)
    if os.readlink("/proc/self/ns/mnt") == host_ns:
        raise ExecError("not in a private mount namespace; refusing to touch /sys")
    if not HIDE.is_dir():
        raise ExecError(f"{HIDE} does not exist on this kernel (no DAMON); nothing to hide")
    _sh("mount", "-t", "tmpfs", "-o", "size=64k,mode=755", "damond-hide", str(HIDE))       # 2. hide first
    with open("/proc/self/mounts") as f:
        has_tracefs = any(line.split()[2] == "tracefs" for line in f)
    if not has_tracefs and Path("/sys/kernel/tracing").is_dir():                       # damo needs tracefs
        subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"], stderr=subprocess.DEVNULL)
    _sh("mount", "-o", "remount,bind,ro", "/sys")                                         # 3. sysfs ro here
    work = Path(tempfile.mkdtemp(prefix="damond-exec-"))
    root = work / "sys"
    root.mkdir()
    log = open(work / "damond.log", "w")
    daemon = spawn_daemon(str(root), args.config, args.feature_level, log)               # 4. daemon in the ns
    try:
        if not wait_ready(str(root), daemon, timeout=60):
            raise ExecError(f"damond did not come up; see {work / 'damond.log'}")
        ADMIN.mkdir()                                                                      # 5. bind (in the tmpfs)
        _sh("mount", "--bind", str(root / "kernel/mm/damon/admin"), str(ADMIN))
        if DEBUG.is_dir():
            _sh("mount", "-t", "tmpfs", "-o", "size=64k,mode=755", "damond-debug", str(DEBUG))
            (DEBUG / "damon").mkdir()
            _sh("mount", "--bind", str(root / "kernel/debug/damon"), str(DEBUG / "damon"))
        if _fs_magic(ADMIN) != FUSE_SUPER_MAGIC:                                           # 6. verify
            raise ExecError(f"{ADMIN} is not a FUSE mount; refusing to run the client")
        if os.stat(ADMIN).st_ino != os.stat(root / "kernel/mm/damon/admin").st_ino:
            raise ExecError(f"{ADMIN} is not damond's admin directory")
        env = tracing.child_env(dict(os.environ), str(root))        # real programs get twins (damond/host)
        if not args.keep_home:
            env["HOME"] = str(work / "home")
            os.makedirs(env["HOME"])
        env["DAMOND_ROOT"] = str(root)
        return subprocess.run(args.cmd, env=env).returncode
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(root)], stderr=subprocess.DEVNULL)
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()


def main(args: argparse.Namespace) -> int:
    if args.cmd and args.cmd[0] == "--":
        args.cmd = args.cmd[1:]
    if not args.cmd:
        print("damond exec: no command given (usage: damond exec [--config F] -- CMD ...)", file=sys.stderr)
        return 2
    try:
        if INSIDE_ENV in os.environ:
            return _inside(args)
        if os.geteuid() != 0:
            raise ExecError("must run as root (mount namespaces and FUSE mounts over /sys)")
        if not shutil.which("unshare"):
            raise ExecError("unshare(1) not found (install util-linux)")
        env = dict(os.environ)
        env[INSIDE_ENV] = os.readlink("/proc/self/ns/mnt")
        argv = [sys.executable, "-m", "damond", "exec"]
        if args.config:
            argv += ["--config", args.config]
        if args.feature_level:
            argv += ["--feature-level", args.feature_level]
        if args.keep_home:
            argv.append("--keep-home")
        argv += ["--", *args.cmd]
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "--", *argv], env=env).returncode
    except ExecError as e:
        print(f"damond exec: {e}", file=sys.stderr)
        return 1
