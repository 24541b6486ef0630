"""Mount lifecycle: FUSE options, serving until SIGTERM/SIGINT or `fusermount -u`, and
the clean exit (libfuse3's `RuntimeError(8)` on a signal is a normal exit).

Options (fuse-damo-systemd.md section 1): direct_io (reads past a short value are EOF,
values longer than st_size are not cut), attr/entry/negative timeouts 0 (nr_* writes
are visible at once), the multi-threaded loop with every op serialised on
`tree.op_lock` (released while a tried-regions walk waits for the kdamond, so other files
answer meanwhile and the lock-taking ones get EBUSY, as on a kernel),
fsname=damond (findmnt SOURCE). Owns no tree logic.
"""
from __future__ import annotations

import os

import mfusepy as fuse

from damond.fs.notify import sd_notify
from damond.fs.ops import DamondOps
from damond.fs.root import Served
from damond.log import get_logger

log = get_logger("damond.fs.mount")
READY_FILE = "kernel/mm/damon/admin/kdamonds/nr_kdamonds"


def fuse_options() -> dict:
    opts = dict(foreground=True, nothreads=False, direct_io=True, attr_timeout=0, entry_timeout=0,
                negative_timeout=0, fsname="damond", default_permissions=True)
    if fuse.fuse_version_major == 2:
        opts["big_writes"] = True
    return opts


def serve(served: Served, mountpoint: str) -> int:
    """Serve `served` at `mountpoint` until unmounted or signalled. Returns 0.

    The caller starts and stops the System around this call.
    """
    ops = DamondOps(served, log)
    log.info("mounting", mountpoint=os.path.abspath(mountpoint), level=served.tree.level,
             libfuse=fuse.fuse_version_major)
    try:
        fuse.FUSE(ops, mountpoint, **fuse_options())
    except RuntimeError as e:
        if e.args[:1] != (8,):     # libfuse3 returns 8 after a signal ended the loop
            raise
    sd_notify("STOPPING=1")
    log.info("unmounted", mountpoint=os.path.abspath(mountpoint))
    return 0
