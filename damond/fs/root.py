"""The mount layout: which trees and files appear under MOUNTPOINT (docs/ARCHITECTURE.md).

`kernel/mm/damon/admin` (fs_layout.admin), `kernel/debug/damon/*` (handlers from
`damond.fs.spe_files.handlers(system)` when that module exists), `kernel/mm/transparent_hugepage`
(fs_layout.thp bound to `machine.thp`), `proc/<pid>/*` and `damond/*`. Owns assembly only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from damond.fs import hostfiles, procfiles, spe_files
from damond.fs.files import ProcFs, control_files, thp_handler
from damond.fs.state import StateFiles
from damond.fs.tree import Tree
from damond.log import get_logger
from fs_layout import thp
from fs_layout.admin import ADMIN

DEBUG_DAMON = "kernel/debug/damon"
THP_DIR = "/kernel/mm/transparent_hugepage"

log = get_logger("damond.fs")


@dataclass
class Served:
    tree: Tree
    state: StateFiles
    procfs: ProcFs | None


def build(system: Any, level: str | None = None, kdamond_factory: Callable | None = None,
          extras: bool = True) -> Served:
    """Build the whole served tree for `system` at a feature level (default: the system's).

    extras=False builds only the admin tree (unit tests without a machine).
    """
    if level is None:
        level = system.settings.feature_level
    tree = Tree(level)
    tree.build(tree.mkdir_p("/kernel/mm/damon"), ADMIN)
    state = StateFiles(tree, system, kdamond_factory)
    procfs = None
    if extras:
        arch = getattr(getattr(system.machine, "tlb_cfg", None), "arch", None)   # None: a machine without a TLB
        arm64 = arch in (None, "arm64")
        tree.mkdir_p("/" + DEBUG_DAMON if arm64 else "/kernel/debug")   # the RFC's SPE files: arm64 only
        for rel, handler in spe_files.handlers(system).items():
            path = rel if "/" in rel else f"{DEBUG_DAMON}/{rel}"
            if arm64 or not path.startswith(DEBUG_DAMON):
                tree.add_file("/" + path.lstrip("/"), handler)
        for f in thp.FILES:
            tree.add_file(f"{THP_DIR}/{f.name}", thp_handler(f, lambda: system.machine.thp))
        procfs = ProcFs(tree.mkdir_p("/proc"), system.machine)
        for name, handler in procfiles.global_handlers(system.machine).items():   # iomem, meminfo, vmstat
            tree.add_file(f"/proc/{name}", handler)
        for name, handler in control_files(system.machine, log).items():
            tree.add_file(f"/damond/{name}", handler)
        for name, handler in hostfiles.tracing_handlers(system).items():      # damond exec's host view
            tree.add_file(f"/kernel/tracing/{name}", handler)
        tree.add_file("/damond/trace_pipe", hostfiles.TracePipe(system))
        if arch == "arm64":
            for rel, handler in hostfiles.pmu_handlers(system).items():
                tree.add_file(f"/{hostfiles.PMU_DIR}/{rel}", handler)
    return Served(tree, state, procfs)
