"""`damond mount MOUNTPOINT [--config FILE] [--foreground] [--feature-level L]`.

Foreground: build the System from the config, start it, serve the tree until SIGTERM or
`fusermount -u`, exit 0. Background (default): start the foreground daemon as a
detached child and return once `MOUNTPOINT/kernel/mm/damon/admin/kdamonds/nr_kdamonds`
exists. A bad config is one line on stderr and exit 1, before anything is mounted.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from damond.config import Config
from damond.errors import ConfigError

READY_TIMEOUT_S = 120.0
READY_FILE = "kernel/mm/damon/admin/kdamonds/nr_kdamonds"


def set_argparser(p: argparse.ArgumentParser) -> None:
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an empty directory (not under /sys)")
    p.add_argument("--config", metavar="FILE", help="machine config (TOML); default: the embedded one")
    p.add_argument("--foreground", action="store_true", help="serve in this process until unmounted")
    p.add_argument("--feature-level", metavar="L", help="kernel feature level (overrides [daemon] feature_level)")
    p.add_argument("--log-file", metavar="FILE", help="background mode: where the daemon logs (default: discarded)")


def _load(args) -> Config:
    from damond.system import FEATURE_LEVELS, DaemonSettings

    config = Config.load(args.config)
    if args.feature_level:
        if args.feature_level not in FEATURE_LEVELS:
            raise ConfigError("--feature-level", f"{args.feature_level!r} is not one of {', '.join(FEATURE_LEVELS)}")
        daemon = config.data.setdefault("daemon", {})
        if not isinstance(daemon, dict):
            raise config.error("daemon", "[daemon] must be a table")
        daemon["feature_level"] = args.feature_level
    DaemonSettings.from_config(config)
    return config


def main(args) -> int:
    mp = os.path.realpath(args.mountpoint)
    if mp == "/sys" or mp.startswith("/sys/"):
        print(f"damond: refusing to mount under /sys ({mp}); mount in a private directory", file=sys.stderr)
        return 1
    if not os.path.isdir(mp):
        print(f"damond: {args.mountpoint}: not a directory", file=sys.stderr)
        return 1
    try:
        config = _load(args)
    except ConfigError as e:
        print(f"damond: {e}", file=sys.stderr)
        return 1
    if args.foreground:
        return _foreground(config, mp)
    return _background(args, mp)


def _foreground(config: Config, mp: str) -> int:
    from damond import log as dlog
    from damond.fs import mount as fsmount
    from damond.fs.root import build
    from damond.system import System

    dlog.configure()
    try:
        system = System.from_config(config)
    except ConfigError as e:
        print(f"damond: {e}", file=sys.stderr)
        return 1
    from damond.host.twin import Twins
    served = build(system)
    twins = Twins.start(system.machine, mp)          # real pids in pid_target (damond/host)
    system.start()
    try:
        return fsmount.serve(served, mp)
    finally:
        system.stop()
        if twins is not None:
            twins.close()


def spawn_daemon(mp: str, config: str | None, feature_level: str | None, log) -> subprocess.Popen:
    """Start `damond mount MP --foreground` as a child process logging to `log`."""
    cmd = [sys.executable, "-m", "damond", "mount", mp, "--foreground"]
    if config:
        cmd += ["--config", os.path.abspath(config)]
    if feature_level:
        cmd += ["--feature-level", feature_level]
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
    log = open(args.log_file, "ab") if args.log_file else tempfile.TemporaryFile()
    child = spawn_daemon(mp, args.config, args.feature_level, log)
    if wait_ready(mp, child):
        print(child.pid)
        return 0
    if child.poll() is None:
        child.terminate()
        print(f"damond: {mp} not ready after {READY_TIMEOUT_S:.0f} s", file=sys.stderr)
        return 1
    log.seek(0) if not args.log_file else None
    tail = b"" if args.log_file else log.read()
    text = [ln for ln in tail.decode(errors="replace").splitlines() if ln.strip()]
    lines = [ln for ln in text if ln.startswith("damond:")] or [f"damond: {ln}" for ln in text[-1:]]
    print(lines[-1] if lines else f"damond: the daemon exited with status {child.returncode}"
          + (f" (see {args.log_file})" if args.log_file else ""), file=sys.stderr)
    return 1
