"""The `state`, `pid` and `refresh_ms` files of each kdamond: every state command with
the kernel's errnos, dispatched to the engine through the `Kdamond` contract
(docs/ARCHITECTURE.md), as `damon_sysfs_handle_cmd()` in `mm/damon/sysfs.c`.

Owns the global trylock discipline for state/pid/nr/path files, the lazily created
`Kdamond` behind each `kdamonds/<K>` directory (kept in `system.kdamonds`), and the
copy-back of engine results into the files. Builds contexts via commit*.py.
"""
from __future__ import annotations

import errno
import threading
from typing import Any, Callable

import fs_layout
from damond.errors import DamonError
from damond.fs import commit, commit_schemes
from damond.fs.parse import sysfs_streq
from damond.fs.tree import AttrNode, DirNode, FsError, IndexedNode, Tree, format_value, parse_value
from damond.log import get_logger
from fs_layout.admin import STATE_COMMANDS

WALK_TIMEOUT_S = 10.0

log = get_logger("damond.fs.state")


class StateFiles:
    """Installs itself as the tree's `state`, `pid`, `refresh_ms`, `locked` roles."""

    def __init__(self, tree: Tree, system: Any, kdamond_factory: Callable[[Any, int], Any] | None = None):
        self.tree, self.system = tree, system
        self._factory = kdamond_factory
        self.commands = {c for c, since in STATE_COMMANDS.items() if fs_layout.present(since, tree.level)}
        tree.roles.update(state=_Role(self.show_state, self.store_state), pid=_Role(self.show_pid, None),
                          refresh_ms=_Role(None, self.store_refresh), locked=_Role(self.show_locked,
                                                                                   self.store_locked))
        tree.roles["busy_if_running"] = self.any_running
        tree.on_destroy.append(self._destroyed)
        self.after_command: Callable[[str], None] | None = None    # persist.py: save after on/commit/off

    # ---- kdamond objects
    def _kdamond(self, kd_dir: DirNode, create: bool) -> Any:
        if kd_dir.obj is None and create:
            factory = self._factory
            if factory is None:
                from damond.damon.kdamond import Kdamond
                factory = Kdamond
            kd_dir.obj = factory(self.system, kd_dir.index)
            self.system.kdamonds.append(kd_dir.obj)
        return kd_dir.obj

    def _destroyed(self, d: DirNode) -> None:
        if d.role == "kdamond" and d.obj is not None:
            if d.obj in self.system.kdamonds:
                self.system.kdamonds.remove(d.obj)
            d.obj = None

    def any_running(self, holder: IndexedNode) -> bool:
        return any(d.obj is not None and d.obj.running for d in holder.items)

    # ---- state
    def show_state(self, node: AttrNode) -> bytes:
        self.tree.trylock()
        try:
            kd = node.parent.obj
            return b"on\n" if kd is not None and kd.running else b"off\n"
        finally:
            self.tree.unlock()

    def show_pid(self, node: AttrNode) -> bytes:
        self.tree.trylock()
        try:
            kd = node.parent.obj
            return b"%d\n" % (kd.pid if kd is not None and kd.running else -1)
        finally:
            self.tree.unlock()

    def store_state(self, node: AttrNode, s: bytes) -> None:
        cmd = next((c for c in self.commands if sysfs_streq(s, c.encode())), None)
        if cmd is None:
            raise FsError(errno.EINVAL, "unknown state command")
        self.tree.trylock()
        try:
            kd_dir = node.parent
            contexts = kd_dir.node("contexts")
            if cmd != "off" and len(contexts.items) != 1:
                raise FsError(errno.EINVAL, "nr_contexts is not 1")
            ctx_dir = contexts.items[0] if contexts.items else None
            try:
                getattr(self, "cmd_" + cmd)(kd_dir, ctx_dir)
            except DamonError as e:
                raise FsError(e.errno, e.msg) from None
            except commit.ErrnoError as e:
                raise FsError(e.errno, e.msg) from None
            if self.after_command is not None:
                try:
                    self.after_command(cmd)
                except OSError as e:
                    log.error("state_save_failed", command=cmd, error=str(e))
        finally:
            self.tree.unlock()

    def _wait(self, fn: Callable, *args) -> Any:
        """Call `fn`, which waits for the kdamond, with the FUSE op lock released: only
        damon_sysfs_lock (still held) keeps other ops out, as on a kernel."""
        with self.tree.ops_released():
            return fn(*args)

    def _running(self, kd_dir: DirNode) -> Any:
        kd = kd_dir.obj
        if kd is None or not kd.running:
            raise FsError(errno.EINVAL, "kdamond is not running")
        return kd

    def cmd_on(self, kd_dir: DirNode, c: DirNode) -> None:
        kd = kd_dir.obj
        if kd is not None and kd.running:
            raise FsError(errno.EBUSY, "kdamond is running")
        ctx = commit.mk_ctx(c, self.system.machine, log)
        kd = self._kdamond(kd_dir, create=True)
        kd.start(ctx)
        self._set_refresh(kd_dir, kd)
        log.info("state_changed", kdamond=kd_dir.index, old="off", new="on", pid=kd.pid,
                 ops=ctx.ops.value, nr_targets=len(ctx.targets), nr_schemes=len(ctx.schemes))

    def cmd_off(self, kd_dir: DirNode, c: DirNode | None) -> None:
        kd = kd_dir.obj
        if kd is None:
            raise FsError(errno.EINVAL, "kdamond was never started")
        if not kd.running:
            raise FsError(errno.EPERM, "kdamond is not running")
        self._wait(kd.stop)
        log.info("state_changed", kdamond=kd_dir.index, old="on", new="off")

    def cmd_commit(self, kd_dir: DirNode, c: DirNode) -> None:
        kd = self._running(kd_dir)
        ctx = commit.mk_ctx(c, self.system.machine, log)
        self._wait(kd.commit, ctx)
        log.info("committed", kdamond=kd_dir.index)

    def cmd_commit_schemes_quota_goals(self, kd_dir: DirNode, c: DirNode) -> None:
        kd = self._running(kd_dir)
        self._wait(kd.commit_quota_goals, commit_schemes.mk_all_goals(c, self.system.machine))

    def cmd_update_schemes_stats(self, kd_dir: DirNode, c: DirNode) -> None:
        commit_schemes.update_stats(c, self._wait(self._running(kd_dir).scheme_stats))

    def cmd_update_schemes_effective_quotas(self, kd_dir: DirNode, c: DirNode) -> None:
        commit_schemes.update_effective_quotas(c, self._wait(self._running(kd_dir).effective_quotas))

    def cmd_update_tuned_intervals(self, kd_dir: DirNode, c: DirNode) -> None:
        commit_schemes.update_tuned_intervals(c, *self._wait(self._running(kd_dir).tuned_intervals))

    def cmd_update_schemes_quota_goals(self, kd_dir: DirNode, c: DirNode) -> None:
        commit_schemes.update_goal_values(c, self._wait(self._running(kd_dir).quota_goal_values))

    def cmd_clear_schemes_tried_regions(self, kd_dir: DirNode, c: DirNode) -> None:
        commit_schemes.clear_tried_regions(self.tree, c)

    def _walk(self, kd_dir: DirNode, c: DirNode, total_only: bool) -> None:
        kd = self._running(kd_dir)
        commit_schemes.clear_tried_regions(self.tree, c)
        with self.tree.ops_released():
            result = kd.walk_tried_regions(self._walk_timeout(c))
        commit_schemes.update_tried_regions(self.tree, c, result, total_only)

    def cmd_update_schemes_tried_regions(self, kd_dir: DirNode, c: DirNode) -> None:
        self._walk(kd_dir, c, total_only=False)

    def cmd_update_schemes_tried_bytes(self, kd_dir: DirNode, c: DirNode) -> None:
        self._walk(kd_dir, c, total_only=True)

    def _walk_timeout(self, c: DirNode) -> float:
        """Wall seconds to wait for every scheme's next apply interval (twice, plus slack)."""
        aggr = c.get("monitoring_attrs/intervals/aggr_us")
        longest = max([s.get("apply_interval_us") or aggr for s in c.node("schemes").items] or [aggr])
        factor = getattr(getattr(self.system, "settings", None), "time_factor", 1.0) or 1.0
        # the kernel's damos_walk() waits without a limit; an interval near 2^64 us must not
        # overflow the wait (time_t) and leave the walk pending
        return min(WALK_TIMEOUT_S + 2 * longest / 1e6 / factor, threading.TIMEOUT_MAX)

    # ---- refresh_ms
    def store_refresh(self, node: AttrNode, s: bytes) -> None:
        node.value = parse_value(node.spec, s, self.tree.level)
        kd = node.parent.obj
        if kd is not None and kd.running:
            self._set_refresh(node.parent, kd)

    def _set_refresh(self, kd_dir: DirNode, kd: Any) -> None:
        ms = kd_dir.get("refresh_ms")
        kd.set_refresh(ms, (lambda: self.refresh(kd_dir)) if ms else None)

    def refresh(self, kd_dir: DirNode) -> None:
        """Called from the kdamond loop every refresh_ms: tuned intervals, stats, quotas."""
        if not self.tree.tree_mutex.acquire(blocking=False):
            return
        try:
            kd = kd_dir.obj
            contexts = kd_dir.children.get("contexts")
            if kd is None or not kd.running or contexts is None or len(contexts.items) != 1:
                return
            c = contexts.items[0]
            commit_schemes.update_tuned_intervals(c, *kd.tuned_intervals())
            commit_schemes.update_stats(c, kd.scheme_stats())
            commit_schemes.update_effective_quotas(c, kd.effective_quotas())
        except DamonError:
            pass
        finally:
            self.tree.tree_mutex.release()

    # ---- memcg_path / path: trylock on read and write
    def show_locked(self, node: AttrNode) -> bytes:
        self.tree.trylock()
        try:
            return format_value(node.spec, node.value, self.tree.level)
        finally:
            self.tree.unlock()

    def store_locked(self, node: AttrNode, s: bytes) -> None:
        self.tree.trylock()
        try:
            node.value = parse_value(node.spec, s, self.tree.level)
        finally:
            self.tree.unlock()


class _Role:
    __slots__ = ("show", "store")

    def __init__(self, show, store):
        self.show, self.store = show, store
