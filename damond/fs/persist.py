"""Restart without loss (`damond mount --state-dir DIR`): the committed admin tree and the
PFN tree, saved atomically after each `on`, `commit` and `off`, restored at start.

One file, DIR/state.npz: `tree` (JSON: every writable attribute's value, each numbered
directory's items, the indices of the kdamonds that run) and the PFN tree's arrays
(`PfnTree.dump`). Saved as the kernel would want a config file saved: write a temporary
file, fsync it, rename it over the old one, fsync the directory, so a SIGKILL leaves
either the old or the new state. Restored before the mount is served: values are set
as they were written (no re-parse), then every kdamond that ran is started again with
`on`, from the same staged values. The emulated machine itself restarts from its config
and seed (the same processes, pids and layout, at time 0), so a kdamond whose target pid
does not exist after the restart (a process spawned through damond/spawn) is not started:
one log line, its staged values kept, as a kernel would refuse `on` for a gone pid.
Not saved: tried regions and stats (the kernel rebuilds them on the next update command),
spe_feed_stats and spawned processes.
"""
from __future__ import annotations

import errno
import io
import json
import os
from typing import Any

import numpy as np

from damond.errors import ErrnoError
from damond.fs.tree import ADMIN_PATH, AttrNode, DirNode, IndexedNode, NrNode
from damond.log import get_logger

FILE = "state.npz"
VERSION = 1
ITEMS = "#items"
SKIP_ROLES = ("state", "pid")

log = get_logger("damond.fs.persist")


def _enc(v: Any) -> Any:
    if isinstance(v, bool) or isinstance(v, int):
        return v
    if isinstance(v, (bytes, bytearray)):
        return {"b": bytes(v).decode("latin-1")}
    if hasattr(v, "value"):
        return {"k": v.value}
    if isinstance(v, str):
        return {"s": v}
    raise TypeError(f"cannot save a {type(v).__name__}")


def _dec(node: AttrNode, v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    if "b" in v:
        return v["b"].encode("latin-1")
    if "s" in v:
        return v["s"]
    words = node.spec.choices or tuple(node.spec.keywords or ())
    for w in words:
        if getattr(w, "value", w) == v["k"]:
            return w
    raise ValueError(f"{node.path}: {v['k']!r} is not a keyword of this file")


def dump_dir(d: DirNode) -> dict:
    """The writable values below `d` and the items of every numbered directory."""
    out: dict[str, Any] = {}
    for name, n in d.children.items():
        if isinstance(n, AttrNode):
            if n.mode & 0o200 and n.spec.role not in SKIP_ROLES:
                out[name] = _enc(n.value)
        elif isinstance(n, NrNode):
            continue
        elif isinstance(n, DirNode):
            sub = dump_dir(n)
            if isinstance(n, IndexedNode) and n.spec.nr:
                sub[ITEMS] = [dump_dir(i) for i in n.items]
            if sub:
                out[name] = sub
    return out


def load_dir(tree, d: DirNode, data: dict, missing: list[str]) -> None:
    """Recreate the items and set the values of `dump_dir`'s output below `d`."""
    if ITEMS in data and isinstance(d, IndexedNode):
        tree.set_nr(d, len(data[ITEMS]))
        for item, sub in zip(d.items, data[ITEMS]):
            load_dir(tree, item, sub, missing)
    for name, v in data.items():
        if name == ITEMS:
            continue
        n = d.children.get(name)
        if isinstance(n, AttrNode):
            try:
                n.value = _dec(n, v)
            except (ValueError, KeyError, TypeError):
                missing.append(n.path)
        elif isinstance(n, DirNode) and isinstance(v, dict):
            load_dir(tree, n, v, missing)
        else:
            missing.append(f"{d.path}/{name}")


class StateDir:
    """Saves and restores one served tree (and its System's PFN tree) in `path`."""

    def __init__(self, path: str, served, system):
        self.path = os.path.abspath(path)
        self.file = os.path.join(self.path, FILE)
        self.served, self.system = served, system
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        served.state.after_command = self._after_command

    def _kdamonds_dir(self) -> Any:
        return self.served.tree.nodes[ADMIN_PATH + "/kdamonds"]

    # ---- save
    def _after_command(self, cmd: str) -> None:
        if cmd in ("on", "commit", "off"):
            self.save(cmd)

    def save(self, why: str) -> None:
        """Write the state file atomically (caller holds damon_sysfs_lock)."""
        admin = self.served.tree.nodes[ADMIN_PATH]
        kds = self._kdamonds_dir()
        on = [d.index for d in kds.items if d.obj is not None and d.obj.running]
        doc = {"version": VERSION, "level": self.served.tree.level, "admin": dump_dir(admin), "on": on}
        arrays = {"tree": np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)}
        spe = getattr(self.system, "spe", None)
        if spe is not None and hasattr(spe, "dump"):
            arrays.update(spe.dump())
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        tmp = self.file + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, buf.getbuffer())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.file)
        dfd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        log.debug("state_saved", file=self.file, after=why, kdamonds_on=on, bytes=buf.tell())

    # ---- restore
    def restore(self) -> list[int]:
        """Load the state file into the tree and the PFN tree; returns the kdamond indices
        to start again (`restart`). A missing file is a first start."""
        if not os.path.exists(self.file):
            log.info("state_new", file=self.file)
            return []
        with np.load(self.file, allow_pickle=False) as z:
            doc = json.loads(z["tree"].tobytes())
            arrays = {k: z[k] for k in z.files if k.startswith("pfn_")}
        if doc.get("version") != VERSION:
            raise ValueError(f"{self.file}: state version {doc.get('version')} (this damond reads {VERSION})")
        missing: list[str] = []
        load_dir(self.served.tree, self.served.tree.nodes[ADMIN_PATH], doc["admin"], missing)
        if missing:
            log.warning("state_files_missing", level=self.served.tree.level, saved_level=doc.get("level"),
                        nr=len(missing), first=missing[0])
        n = 0
        spe = getattr(self.system, "spe", None)
        if arrays and spe is not None and hasattr(spe, "load"):
            n = spe.load(arrays)
        log.info("state_restored", file=self.file, kdamonds_on=doc["on"], pfn_entries=n)
        return list(doc["on"])

    def restart(self, indices: list[int]) -> None:
        """`on` for each kdamond that ran; one line for each that the kernel would refuse."""
        kds = self._kdamonds_dir()
        state = self.served.state
        for i in indices:
            if i >= len(kds.items):
                continue
            kd_dir = kds.items[i]
            try:
                state.store_state(kd_dir.node("state"), b"on")
            except ErrnoError as e:
                log.warning("kdamond_not_restarted", kdamond=i, errno=errno.errorcode.get(e.errno, e.errno),
                            reason=e.msg, kept="staged values")
