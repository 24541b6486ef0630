"""CMD's environment under `damond exec`: built here and nowhere else.

`child_env(base, work, root, keep_home)` returns the environment every command exec runs
gets: an isolated HOME (damo caches sysinfo in $HOME/.damo.sysinfo, keyed on `uname -r`
only, so a cache from the real kernel must never meet the emulator), damond's `bin/`
first on PATH (its `perf`), DAMOND_ROOT (damond's mount) and DAMOND_PYTHON (the
interpreter the shims run with). Additions for traced real programs (LD_PRELOAD and its
settings) go into `child_env` as one call.
"""
from __future__ import annotations

import sys
from pathlib import Path

from damond.host import tracing
from damond.host.namespace import REAL_PROC_ENV

BIN_DIR = Path(__file__).resolve().parent / "bin"


def child_env(base: dict[str, str], work: Path, root: Path, keep_home: bool = False) -> dict[str, str]:
    env = dict(base)
    env.pop(REAL_PROC_ENV, None)          # the daemon's, not CMD's
    if not keep_home:
        home = work / "home"
        home.mkdir(exist_ok=True)
        env["HOME"] = str(home)
    env["PATH"] = f"{BIN_DIR}:{env.get('PATH', '/usr/bin:/bin')}"
    env["DAMOND_ROOT"] = str(root)
    env["DAMOND_PYTHON"] = sys.executable
    return tracing.child_env(env, str(root))    # real programs get twins: LD_PRELOAD + rendezvous
