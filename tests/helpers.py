"""Test helpers shared by every room: `DamondProcess` runs the daemon as a subprocess on
a temporary mountpoint, waits until the tree is ready, and on exit unmounts, checks the
mount is gone and that the daemon logged no error. Helpers take the root as a parameter.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READY = "kernel/mm/damon/admin/kdamonds/nr_kdamonds"
ADMIN = "kernel/mm/damon/admin"


class DamondError(AssertionError):
    pass


class DamondProcess:
    """`with DamondProcess(tmp_path / "sys") as d: d.root / d.admin ...`

    Args:
        mountpoint: a directory to create and mount on (must be under a temp dir).
        config: path of a TOML config (None: the embedded default).
        feature_level: passed as --feature-level.
        fake: serve the real front over tests/fs/fakes.py instead of the real System.
        allow_errors: do not fail on error-level log events.
    """

    def __init__(self, mountpoint, config=None, feature_level: str | None = None, fake: bool = False,
                 timeout: float = 60.0, allow_errors: bool = False):
        self.root = Path(mountpoint)
        self.admin = self.root / ADMIN
        self.config, self.feature_level, self.fake = config, feature_level, fake
        self.timeout, self.allow_errors = timeout, allow_errors
        self.proc: subprocess.Popen | None = None
        self.stderr_path = self.root.parent / (self.root.name + ".log")

    def command(self) -> list[str]:
        if self.fake:
            return [sys.executable, "-m", "tests.fs.fakes", str(self.root)] + (
                [self.feature_level] if self.feature_level else [])
        cmd = [sys.executable, "-m", "damond", "mount", str(self.root), "--foreground"]
        if self.config:
            cmd += ["--config", str(self.config)]
        if self.feature_level:
            cmd += ["--feature-level", self.feature_level]
        return cmd

    def __enter__(self) -> "DamondProcess":
        assert not str(self.root.resolve()).startswith("/sys"), "never mount over the host's /sys"
        self.root.mkdir(parents=True, exist_ok=True)
        self._err = open(self.stderr_path, "wb")
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._err, stderr=self._err,
                                     cwd=REPO, env=env)
        deadline = time.monotonic() + self.timeout
        while not (self.root / READY).exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._kill()
                raise DamondError(f"damond not ready (rc={self.proc.returncode}):\n{self.log_text()}\n"
                                  f"mounts:\n{_fuse_mounts()}")
            time.sleep(0.02)
        return self

    def log_text(self) -> str:
        if not self._err.closed:
            self._err.flush()
        return self.stderr_path.read_text(errors="replace")

    def events(self) -> list[dict]:
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        subprocess.run(["fusermount", "-u", "-z", str(self.root)], capture_output=True)

    def stop(self) -> int:
        """SIGTERM, wait, verify unmounted; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._kill()
                raise DamondError("damond did not exit on SIGTERM")
        deadline = time.monotonic() + 10
        while os.path.ismount(self.root):
            if time.monotonic() > deadline:
                self._kill()
                raise DamondError(f"{self.root} still mounted after exit")
            time.sleep(0.05)
        return self.proc.returncode

    def __exit__(self, et, ev, tb) -> None:
        rc = self.stop()
        self._err.close()
        if et is not None:
            return
        if rc != 0:
            raise DamondError(f"damond exited {rc}:\n{self.log_text()}")
        errors = [e for e in self.events() if e.get("level") in ("error", "critical")]
        if errors and not self.allow_errors:
            raise DamondError(f"damond logged errors: {errors}")


def _fuse_mounts() -> str:
    try:
        return "".join(ln for ln in open("/proc/mounts") if "fuse" in ln)
    except OSError:
        return ""


def sh(cmd: str, cwd=None, shell: str = "sh") -> subprocess.CompletedProcess:
    """Run a shell snippet (as sysfs.sh does); returns the completed process.
    Use shell="bash" to see the errno text ("write error: Invalid argument")."""
    return subprocess.run([shell, "-c", cmd], cwd=cwd, capture_output=True, text=True)


def write(path, value) -> None:
    """One write() of `value` (bytes or str) through os.write; raises OSError with the errno."""
    data = value.encode() if isinstance(value, str) else value
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read(path) -> str:
    with open(path) as f:
        return f.read()


def populate(admin: Path, nr: int = 1) -> None:
    """Set every nr_* file of the admin tree to `nr` (nr_contexts 1), top-down."""
    k = admin / "kdamonds"
    write(k / "nr_kdamonds", str(nr))
    for kd in sorted(p for p in k.iterdir() if p.is_dir()):
        write(kd / "contexts/nr_contexts", "1")
        c = kd / "contexts/0"
        for sub, nr_name in (("targets", "nr_targets"), ("schemes", "nr_schemes")):
            write(c / sub / nr_name, str(nr))
        for t in sorted(p for p in (c / "targets").iterdir() if p.is_dir()):
            write(t / "regions/nr_regions", str(nr))
        for s in sorted(p for p in (c / "schemes").iterdir() if p.is_dir()):
            for d, n in (("quotas/goals", "nr_goals"), ("filters", "nr_filters"), ("core_filters", "nr_filters"),
                         ("ops_filters", "nr_filters"), ("dests", "nr_dests")):
                write(s / d / n, str(nr))
