"""`damond mount MOUNTPOINT [--config FILE] [--foreground] [--feature-level L]
[--state-dir DIR] [--allow-other] [--log-file FILE] [--log-level L] [--log-format F]`.

A live mountpoint is refused with one line, a stale one (ENOTCONN) cleared with one line.
Foreground: build the System from the config, restore --state-dir, start it, serve the
tree until SIGTERM/SIGINT/SIGHUP or `fusermount -u`, exit 0. Background (default): start the foreground daemon as a
detached child and return once `MOUNTPOINT/kernel/mm/damon/admin/kdamonds/nr_kdamonds`
exists. A bad config is one line on stderr and exit 1, before anything is mounted.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile

from damond.config import Config
from damond.errors import ConfigError

READY_TIMEOUT_S = 120.0
READY_FILE = "kernel/mm/damon/admin/kdamonds/nr_kdamonds"


def set_argparser(p: argparse.ArgumentParser) -> None:
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an empty directory (not under /sys)")
    p.add_argument("--config", metavar="FILE", help="machine config (TOML); default: the embedded one")
    p.add_argument("--machine", metavar="NAME", help="a shipped machine profile (kunpeng920-rfc, x86-vm)")
    p.add_argument("--foreground", action="store_true", help="serve in this process until unmounted")
    p.add_argument("--feature-level", metavar="L", help="kernel feature level (overrides [daemon] feature_level)")
    p.add_argument("--standins", metavar="DIR", help=argparse.SUPPRESS)   # damond exec: same-pid stand-ins
    # background mode's own temp log: the daemon removes it when it exits cleanly (kept, and named, on failure)
    p.add_argument("--log-file-owned", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--state-dir", metavar="DIR",
                   help="save the committed tree and the PFN tree in DIR on each on/commit/off and "
                        "restore them (kdamonds that ran are started again) at start")
    p.add_argument("--allow-other", action="store_true",
                   help="let every user in, with the sysfs modes checked as on sysfs (default: root only)")
    add_log_arguments(p)


def add_log_arguments(p: argparse.ArgumentParser) -> None:
    """--log-file/--log-level/--log-format, shared by every command that runs a daemon."""
    from damond.log import FORMATS, LEVELS

    p.add_argument("--log-file", metavar="FILE",
                   help="append the daemon's log to FILE (default: stderr; in the background a "
                        "damond-*.log file in the temp directory, removed at a clean exit, named on failure)")
    p.add_argument("--log-level", choices=LEVELS, default="info", help="least severe event logged (default: info)")
    p.add_argument("--log-format", choices=FORMATS,
                   help="json lines or console lines (default: console on a terminal, else json)")


def log_argv(args) -> list[str]:
    """The log options of `args` as a daemon command line."""
    out = []
    if getattr(args, "log_file", None):
        out += ["--log-file", os.path.abspath(args.log_file)]
    if getattr(args, "log_level", None):
        out += ["--log-level", args.log_level]
    if getattr(args, "log_format", None):
        out += ["--log-format", args.log_format]
    return out


def _load(args) -> Config:
    from damond.config import validate
    from damond.system import FEATURE_LEVELS

    if args.config and getattr(args, "machine", None):
        raise ConfigError("--machine", "give either --config FILE or --machine NAME, not both")
    config = Config.load_machine(args.machine) if getattr(args, "machine", None) else Config.load(args.config)
    if args.feature_level:
        if args.feature_level not in FEATURE_LEVELS:
            raise ConfigError("--feature-level", f"{args.feature_level!r} is not one of {', '.join(FEATURE_LEVELS)}")
        daemon = config.data.setdefault("daemon", {})
        if not isinstance(daemon, dict):
            raise config.error("daemon", "[daemon] must be a table")
        daemon["feature_level"] = args.feature_level
    validate(config)
    return config


def main(args) -> int:
    if args.foreground:
        _use_malloc()                 # first: the re-exec'd daemon does every check below once
    mp = os.path.realpath(args.mountpoint)
    if mp == "/sys" or mp.startswith("/sys/"):
        print(f"damond: refusing to mount under /sys ({mp}); mount in a private directory", file=sys.stderr)
        return 1
    if not _mountpoint_usable(args.mountpoint, mp):
        return 1
    try:
        config = _load(args)
    except ConfigError as e:
        print(f"damond: {e}", file=sys.stderr)
        return 1
    if args.foreground:
        rc = _foreground(config, mp, args)
        if rc == 0 and args.log_file_owned and args.log_file:
            with contextlib.suppress(OSError):
                os.unlink(args.log_file)
        return rc
    return _background(args, mp)


def _use_malloc() -> None:
    """Run the daemon with PYTHONMALLOC=malloc (re-exec once, same pid, before anything is
    mounted): pymalloc's 256 KiB arenas stay pinned by a few live objects after an nr_*
    write destroys 200k nodes (RSS +1-2 MB per such cycle, without end), where glibc with
    one arena and malloc_trim gives the pages back (flat over 10 cycles)."""
    if os.environ.get("PYTHONMALLOC") == "malloc":
        return
    os.environ["PYTHONMALLOC"] = "malloc"
    try:
        os.execv(sys.executable, [sys.executable, "-m", "damond", *sys.argv[1:]])
    except OSError:
        pass        # keep pymalloc: more memory kept after big nr_* cycles, nothing else changes


def _mountpoint_usable(given: str, mp: str) -> bool:
    """Refuse a live mount (one line); clear a stale one (ENOTCONN: its daemon died)."""
    from damond.fs.mount import clear_stale, probe_mountpoint

    what = probe_mountpoint(mp)
    if what == "live":
        print(f"damond: {given}: a FUSE filesystem is already mounted and answering there "
              f"(stop its daemon or `fusermount3 -u {mp}` first)", file=sys.stderr)
        return False
    if what == "other":
        print(f"damond: {given}: another filesystem is mounted there", file=sys.stderr)
        return False
    if what == "stale":
        if not clear_stale(mp):
            print(f"damond: {given}: a stale FUSE mount is there and `fusermount3 -u -z` did not clear it",
                  file=sys.stderr)
            return False
        print(f"damond: {given}: cleared a stale mount (its daemon had died)", file=sys.stderr)
    if not os.path.isdir(mp):
        print(f"damond: {given}: not a directory", file=sys.stderr)
        return False
    return True


def _configure_log(args) -> None:
    from damond import log as dlog

    stream = dlog.open_log_file(args.log_file) if getattr(args, "log_file", None) else None
    dlog.configure(getattr(args, "log_level", None) or "info", stream=stream,
                   fmt=getattr(args, "log_format", None))


def _foreground(config: Config, mp: str, args) -> int:
    from damond.fs import mount as fsmount
    from damond.fs.root import build
    from damond.system import System

    try:
        _configure_log(args)
    except OSError as e:
        print(f"damond: --log-file: {e.strerror}: {args.log_file}", file=sys.stderr)
        return 1
    try:
        system = System.from_config(config)
    except ConfigError as e:
        print(f"damond: {e}", file=sys.stderr)
        return 1
    from damond.host.twin import Twins
    served = build(system)
    restart: list[int] = []
    if args.state_dir:
        from damond.fs.persist import StateDir

        try:
            sd = StateDir(args.state_dir, served, system)
            restart = sd.restore()
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            print(f"damond: --state-dir {args.state_dir}: {e}", file=sys.stderr)
            return 1
    twins = Twins.start(system.machine, mp)          # real pids in pid_target (damond/host)
    system.start()
    standins = getattr(args, "standins", None)
    if standins:       # inside `damond exec`: emulated processes appear in its /proc (damond/host/standins.py)
        from damond.host.standins import StandIns

        StandIns(system, mp, standins).start()
    try:
        if restart:
            sd.restart(restart)
        return fsmount.serve(served, mp, allow_other=args.allow_other)
    finally:
        system.stop()
        if twins is not None:
            twins.close()


def spawn_daemon(mp: str, config: str | None, feature_level: str | None, log, machine: str | None = None,
                 extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start `damond mount MP --foreground [extra...]` as a child process whose
    stdout/stderr go to `log` (extra: e.g. `log_argv(args)`, --state-dir, --standins)."""
    cmd = [sys.executable, "-m", "damond", "mount", mp, "--foreground"]
    if config:
        cmd += ["--config", os.path.abspath(config)]
    if machine:
        cmd += ["--machine", machine]
    if feature_level:
        cmd += ["--feature-level", feature_level]
    cmd += list(extra)
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


def wait_ready(mp: str, child: subprocess.Popen, timeout: float = READY_TIMEOUT_S) -> bool:
    """True once MP serves the tree; False if the child exited first or time ran out."""
    ready = os.path.join(mp, READY_FILE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(ready):
            return True
        if child.poll() is not None:
            return False
        time.sleep(0.05)
    return os.path.exists(ready)


def _background(args, mp: str) -> int:
    """The daemon logs to --log-file, else to a damond-*.log file of its own: a real file, so
    a daemon that dies can be diagnosed, which the daemon removes when it exits cleanly."""
    path = args.log_file
    owned = path is None
    if owned:
        fd, path = tempfile.mkstemp(prefix="damond-", suffix=".log")
        os.close(fd)
    path = os.path.abspath(path)
    extra = ["--log-file", path, "--log-level", args.log_level] + (["--log-file-owned"] if owned else []) + (
        ["--log-format", args.log_format] if args.log_format else []) + _state_argv(args) + (
        ["--allow-other"] if args.allow_other else [])
    with open(path, "ab") as out:       # what the child prints before its log is set up
        child = spawn_daemon(mp, args.config, args.feature_level, out, args.machine, extra=tuple(extra))
    if wait_ready(mp, child):
        print(child.pid)
        return 0
    if child.poll() is None:
        child.terminate()
        print(f"damond: {mp} not ready after {READY_TIMEOUT_S:.0f} s (log: {path})", file=sys.stderr)
        return 1
    with open(path, "rb") as f:
        text = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    lines = [ln for ln in text if ln.startswith("damond:")] or [f"damond: {ln}" for ln in text[-1:]]
    print(lines[-1] if lines else f"damond: the daemon exited with status {child.returncode} (log: {path})",
          file=sys.stderr)
    return 1


def _state_argv(args) -> list[str]:
    return ["--state-dir", os.path.abspath(args.state_dir)] if getattr(args, "state_dir", None) else []
