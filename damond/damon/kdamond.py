"""The kdamond: one monitoring worker per kdamond directory, its loop and its command queue.

Mirrors `kdamond_fn`, `damon_start`/`damon_stop`, `damon_call` and the `damos_walk`
waiting of `mm/damon/core.c`. Owns the thread (wall-clock mode) or the synchronous
`run_for` (virtual time), the loop order of one sampling interval, self-stop when every
vaddr/fvaddr target has exited, the `refresh_ms` callback, and lag accounting when the
wall clock overruns. Region algorithms are `core.py`'s, access checks the ops sets',
scheme application `damos.py`'s. Front-facing contract: docs/ARCHITECTURE.md.
"""
from __future__ import annotations

import errno
import queue
import threading
from typing import Callable

from damond.clock import VirtualClock
from damond.damon import core, damos, params
from damond.errors import DamonError
from damond.log import get_logger

LAG_REPORT_US = 10_000_000
# Wall clock: how much emulated time of samples may run in one burst after one sleep. The
# access windows stay exact in machine time (mkold at t, young at t + sample); only the
# wall-clock moment they are computed moves, up to this much after the window ended, so
# one wake-up serves several samples. Real programs (twins) are sampled in real time.
WALL_BURST_US = 20_000
# Wall clock, bursts: a machine behind the wall clock by at most this much (a stalled
# iteration) is caught up by sampling its windows back to back, every sample taken; further
# behind (or at the first sample) it jumps to the wall clock first.
WALL_MAX_LAG_US = 100_000


class _Stopped(Exception):
    """`off` (or the daemon's exit) woke the kdamond from its sleep: end the loop now."""


class _Call:
    """A damon_call_control: fn run by the kdamond between samples."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None
        self.canceled = False


class Kdamond:
    """One kdamond: start/stop, damon_call-based commands, virtual-time `run_for`."""

    def __init__(self, system, index: int):
        self.system = system
        self.index = index
        self.ctx: core.Ctx | None = None
        self.running = False
        self.pid = -1
        self.overruns = 0
        self.lag_us = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Lock()     # held while running; released by stop: ends a sleep at once
        self._lock = threading.RLock()
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._refresh_ms = 0
        self._refresh_fn: Callable | None = None
        self._next_refresh_us = 0
        self._lag_window = [0, 0, 0]     # overruns, lag_us, max lag since the last report
        self._next_lag_report_us = 0
        self._resume: tuple[int, int, bool] | None = None   # iteration paused after sampling
        self._deadline_us = 0             # wall clock: when the current sampling interval ends
        self._burst = 1                   # wall clock: samples per wake-up (1: real time)
        self._window_end_us = 0           # wall clock: machine time the current window ends
        self.log = get_logger("damond.damon.kdamond", kdamond=index)
        self._virtual = isinstance(system.clock, VirtualClock)    # a System keeps its clock

    # ------------------------------------------------------------------ lifecycle

    @property
    def virtual(self) -> bool:
        return self._virtual

    def start(self, ctx_params: params.Ctx) -> None:
        """`on`: validate and build the context, then run it (thread or virtual time).

        Raises:
            DamonError: EBUSY if running, EINVAL if the parameters are invalid.
        """
        with self._lock:
            if self.running:
                raise DamonError(errno.EBUSY, f"kdamond {self.index} is already running")
            ctx = core.build_ctx(self.system, ctx_params, self.index)
            self.ctx = ctx
            self._stop.clear()
            self._wake = threading.Lock()
            self._wake.acquire()
            self._resume = None
            self._init_ctx(ctx)
            self.pid = self.system.machine.new_kthread_pid()
            self.running = True
            self.overruns = self.lag_us = 0
            self._deadline_us = 0
            self.log.info("kdamond_started", pid=self.pid, ops=ctx.ops_id.value, nr_targets=len(ctx.targets),
                          nr_schemes=len(ctx.schemes), nr_regions=ctx.nr_regions(),
                          sample_us=ctx.attrs.sample_interval, aggr_us=ctx.attrs.aggr_interval,
                          virtual=self.virtual)
            if not self.virtual:
                self._thread = threading.Thread(target=self._thread_main, name=f"kdamond.{self.index}",
                                                daemon=True)
                self._thread.start()

    def _init_ctx(self, ctx: core.Ctx) -> None:
        """kdamond_fn's prologue: schedule, ops init, DAMOS init, size limit."""
        ctx.init()
        if ctx.ops.init is not None:
            ctx.ops.init(ctx)
        damos.init_schemes(ctx)
        if ctx.apply_min_nr_regions_on:
            ctx.sz_limit_cached = core.apply_min_nr_regions(ctx)
        else:
            ctx.sz_limit_cached = core.region_sz_limit(ctx)
        self._next_refresh_us = self.system.clock.now_us() + self._refresh_ms * 1000
        self._next_lag_report_us = self.system.clock.now_us() + LAG_REPORT_US

    def request_stop(self) -> None:
        """Ask the loop to end without waiting for it (kthread_stop's wake-up half):
        waiting commands and walks end with ECANCELED at once."""
        self._stop.set()
        self._release_wake()

    def stop(self) -> None:
        """`off`. Raises DamonError: EINVAL if never started, EPERM if not running."""
        if self.ctx is None:
            raise DamonError(errno.EINVAL, f"kdamond {self.index} was never started")
        if not self.running:
            raise DamonError(errno.EPERM, f"kdamond {self.index} is not running")
        self._stop.set()
        self._release_wake()
        th = self._thread
        if th is not None and th is not threading.current_thread():
            th.join()
        else:
            with self._lock:
                if self.running:
                    self._finish("stopped")

    def _finish(self, reason: str) -> None:
        """kdamond_fn's epilogue: cancel pending calls and walks, drop the pid."""
        ctx = self.ctx
        self.running = False
        self.pid = -1
        while True:
            try:
                c = self._calls.get_nowait()
            except queue.Empty:
                break
            c.canceled = True
            c.done.set()
        if ctx is not None:
            damos.cancel_walks(ctx)
            if getattr(ctx.ops, "cleanup", None) is not None:
                ctx.ops.cleanup(ctx)
        self._thread = None
        self.log.info("kdamond_stopped", reason=reason,
                      passed_sample_intervals=ctx.passed_sample_intervals if ctx else 0,
                      overruns=self.overruns, lag_us=self.lag_us)

    # ------------------------------------------------------------------ the loop

    def _thread_main(self) -> None:
        reason = "stopped"
        try:
            while not self._stop.is_set():
                if not self._iterate():
                    reason = "targets_exited"
                    break
        except _Stopped:
            pass
        except Exception:
            self.log.exception("kdamond_crashed")
            reason = "crashed"
        finally:
            with self._lock:
                self._finish(reason)

    def run_for(self, us: int) -> None:
        """Virtual time: run the loop synchronously until `us` emulated microseconds passed
        (or the kdamond stopped). Raises DamonError(EINVAL) if not running."""
        if not self.running:
            raise DamonError(errno.EINVAL, f"kdamond {self.index} is not running")
        if not self.virtual:
            raise DamonError(errno.EINVAL, "run_for needs a VirtualClock; this kdamond has a thread")
        clock = self.system.clock
        end = clock.now_us() + int(us)
        while self.running and clock.now_us() < end:
            with self._lock:
                if not self.running:
                    break
                if self._stop.is_set():
                    self._finish("stopped")
                    break
                if not self._iterate():
                    self._finish("targets_exited")
                    break

    def _need_stop(self, ctx: core.Ctx) -> bool:
        """kdamond_need_stop(): every target invalid (ops with target_valid only)."""
        tv = ctx.ops.target_valid
        if tv is None:
            return False
        any_valid = False
        for t in ctx.targets:
            t.valid = tv(ctx, t)
            any_valid |= t.valid
        return not any_valid

    def _iterate(self) -> bool:
        """One sampling interval of kdamond_fn. Returns False when the kdamond must stop."""
        ctx = self.ctx
        clock, machine = self.system.clock, self.system.machine
        if ctx.ops.target_valid is not None and self._need_stop(ctx):
            return False
        t0 = 0 if self._virtual else clock.now_us()
        if self._resume is None and ctx.schemes and not damos.schemes_active(ctx):
            # kdamond_wait_activation: no monitoring while every scheme is deactivated
            waits = [s.params.wmarks.interval for s in ctx.schemes if s.params.wmarks.interval]
            self._sleep(min(waits) if waits else max(ctx.attrs.sample_interval, 1))
            machine.advance_to(clock.now_us())
            self._handle_calls()
            damos.cancel_walks(ctx)
            return True
        if self._resume is None:
            self._resume = self._sample(ctx)
        if ctx.pause and not self._stop.is_set():
            # the kernel's pause loop, one tick per iteration so run_for can return
            damos.cancel_walks(ctx)
            self._sleep(ctx.attrs.sample_interval)
            machine.advance_to(clock.now_us())
            self._handle_calls()
            if ctx.pause:
                return True
        next_aggr, next_update, aggregated = self._resume
        self._resume = None
        if ctx.schemes:
            damos.apply_schemes(ctx)
        else:
            damos.cancel_walks(ctx)
        sample = max(ctx.attrs.sample_interval, 1)
        if aggregated:
            goal = ctx.attrs.intervals_goal
            if goal.aggrs and ctx.passed_sample_intervals >= ctx.next_intervals_tune_sis:
                ctx.next_aggregation_sis = next_aggr
                ctx.next_intervals_tune_sis += ctx.aggr_samples() * goal.aggrs
                core.tune_intervals(ctx)
                sample = max(ctx.attrs.sample_interval, 1)
            ctx.next_aggregation_sis = next_aggr + ctx.attrs.aggr_interval // sample
            core.reset_aggregated(ctx)
            core.split_regions(ctx)
        if ctx.passed_sample_intervals >= next_update:
            ctx.next_ops_update_sis = next_update + ctx.attrs.ops_update_interval // sample
            if ctx.ops.update is not None:
                ctx.ops.update(ctx)
                if not ctx.apply_min_nr_regions_on:
                    ctx.sz_limit_cached = core.region_sz_limit(ctx)
        if not self._virtual:
            t1 = clock.now_us()
            if self._burst > 1:      # late: checked more than a burst after its window ended
                lag = t1 - self._window_end_us - (self._burst - 1) * sample
            else:
                lag = (t1 - t0) - ctx.attrs.sample_interval
            self._account_lag(lag, t1, ctx.attrs.sample_interval)
        return True

    def _sample(self, ctx: core.Ctx) -> tuple[int, int, bool]:
        """First half of an iteration: prepare, sleep, check, merge, damon_call requests."""
        clock, machine = self.system.clock, self.system.machine
        next_aggr = ctx.next_aggregation_sis
        next_update = ctx.next_ops_update_sis
        sample = ctx.attrs.sample_interval
        if self._virtual:
            # the machine first catches up, so what it did before the mkold stays before it
            t_mkold = max(clock.now_us(), machine.now_us)
            if machine.now_us < t_mkold:
                machine.advance_to(t_mkold)
            ctx.ops.prepare_access_checks(ctx)
            clock.sleep_us(sample)
        else:
            t_mkold = self._wall_window_start(sample, ctx.passed_sample_intervals > 0)
            ctx.ops.prepare_access_checks(ctx)
            if self._burst > 1:
                self._wait_window_end(t_mkold + sample, sample)
            else:
                self._sleep_to_deadline(sample)
        # the access window is exactly one sampling interval of machine time, whatever the
        # wall clock did (the ticker leaves the machine to running kdamonds)
        machine.advance_to(t_mkold + sample)
        ctx.passed_sample_intervals += 1
        ctx.ops.check_accesses(ctx)
        aggregated = ctx.passed_sample_intervals >= next_aggr
        if aggregated:
            core.merge_regions(ctx, core.max_nr_accesses(ctx) // 10, ctx.sz_limit_cached)
            if ctx.apply_min_nr_regions_on:
                ctx.sz_limit_cached = core.apply_min_nr_regions(ctx)
        self._handle_calls()
        return next_aggr, next_update, aggregated

    def _wall_window_start(self, sample_us: int, sampling: bool) -> int:
        """Wall clock: the machine time of this sample's mkold. Bursts (emulated programs
        only): the machine's own time while it is at most WALL_MAX_LAG_US behind the wall
        clock, so consecutive windows need no catch-up step and a stall loses no sample;
        else (real time, the first sample, a long stall) the machine first catches up."""
        clock, machine = self.system.clock, self.system.machine
        burst = max(1, WALL_BURST_US // max(sample_us, 1))
        if burst > 1 and not self._sole_driver():
            burst = 1
        self._burst = burst
        now, m_now = clock.now_us(), machine.now_us
        if burst > 1 and sampling and now - m_now <= WALL_MAX_LAG_US:
            t = m_now
        else:
            t = max(now, m_now)
            machine.advance_to(t)
        self._window_end_us = t + sample_us
        return t

    def _sole_driver(self) -> bool:
        """Bursts are exact only while this kdamond alone moves the machine's time: no real
        program (twin: it runs in real time), no other running kdamond (its burst would run
        the machine past this one's open window, stretching it) and no step observer (an
        SPE recording advances the machine to the wall clock when it is read)."""
        machine = self.system.machine
        if getattr(machine, "observers", None):
            return False
        if any(kd is not self and kd.running for kd in self.system.kdamonds):
            return False
        return not any(getattr(p, "twin", None) is not None for p in machine.processes())

    def _wait_window_end(self, end_us: int, sample_us: int) -> None:
        """Burst: nothing to wait for if the window already ended on the wall clock; else
        sleep until it and the next burst - 1 windows have (a damon_call request cuts the
        wait to this window's end, so commands wait at most one sampling interval)."""
        clock = self.system.clock
        if clock.now_us() >= end_us:
            return
        if self._sleep(end_us + (self._burst - 1) * sample_us - clock.now_us(), kickable=True):
            rest = end_us - clock.now_us()
            if rest > 0:
                self._sleep(rest)

    def _sleep_to_deadline(self, sample_us: int) -> None:
        """Wall clock: one sampling interval per period, the loop's own work included (the
        kernel's work per sample is negligible, ours is not). More than one interval late:
        start a new schedule from now rather than rush to catch up."""
        clock = self.system.clock
        now = clock.now_us()
        d = (self._deadline_us or now) + sample_us
        if now > d + sample_us:
            d = now + sample_us
        self._deadline_us = d
        if d > now:
            self._sleep(d - now)

    def _sleep(self, us: int, kickable: bool = False) -> bool:
        """Sleep `us` of emulated time. On the wall clock `off` wakes the sleeper at once
        (kthread_stop() wakes a sleeping kdamond) and the loop ends (_Stopped); a queued
        damon_call request ends a `kickable` sleep early (returns True)."""
        clock = self.system.clock
        if self._virtual:
            clock.sleep_us(us)
            return False
        # a timed acquire of a lock `off` and damon_call release: one C call, where
        # Event.wait runs a Condition in Python every sampling interval
        factor = getattr(clock, "factor", 1.0)
        end = clock.now_us() + us
        while True:
            if self._stop.is_set():
                raise _Stopped()
            if not self._wake.acquire(timeout=min(us / 1e6 / factor, threading.TIMEOUT_MAX)):
                return False
            if self._stop.is_set():
                raise _Stopped()
            if kickable:
                return True
            us = end - clock.now_us()          # a request's wake-up: sleep the rest
            if us <= 0:
                return False

    def _release_wake(self) -> None:
        try:
            self._wake.release()
        except RuntimeError:             # not held: released already, or never started
            pass

    def _account_lag(self, lag: int, t1: int, sample_us: int) -> None:
        """Wall clock: `lag` beyond one sampling interval is an overrun (an iteration
        longer than two intervals; in bursts, a sample checked more than a burst after
        its window ended)."""
        if lag > sample_us:
            self.overruns += 1
            self.lag_us += lag
            w = self._lag_window
            w[0] += 1
            w[1] += lag
            w[2] = max(w[2], lag)
        if t1 >= self._next_lag_report_us:
            w = self._lag_window
            if w[0]:
                self.log.warning("kdamond_lagging", overruns=w[0], lag_us=w[1], max_lag_us=w[2],
                                 window_us=LAG_REPORT_US)
            self._lag_window = [0, 0, 0]
            self._next_lag_report_us = t1 + LAG_REPORT_US

    # ------------------------------------------------------------------ damon_call

    def _handle_calls(self) -> None:
        """kdamond_call(): run every queued request, then the refresh_ms callback."""
        while not self._calls.empty():     # (a request queued later waits for the next sample)
            try:
                c = self._calls.get_nowait()
            except queue.Empty:
                break
            try:
                c.result = c.fn()
            except BaseException as e:       # handed back to the caller
                c.error = e
            c.done.set()
        if self._refresh_ms and self._refresh_fn is not None:
            now = self.system.clock.now_us()
            if now >= self._next_refresh_us:
                self._next_refresh_us = now + self._refresh_ms * 1000
                try:
                    self._refresh_fn()
                except Exception:
                    self.log.exception("refresh_failed")

    def _call(self, fn: Callable, what: str):
        """damon_call(): run fn in the kdamond's context and return its result.

        Raises:
            DamonError: EINVAL if not running, ECANCELED if the kdamond exits first,
            or whatever fn raised.
        """
        if not self.running:
            raise DamonError(errno.EINVAL, f"{what}: kdamond {self.index} is not running")
        th = self._thread
        if th is None or th is threading.current_thread():
            with self._lock:
                if not self.running:
                    raise DamonError(errno.EINVAL, f"{what}: kdamond {self.index} is not running")
                return fn()
        c = _Call(fn)
        self._calls.put(c)
        self._release_wake()               # a kdamond waiting out a burst handles it now
        # blocks as damon_call() does: until the kdamond ran fn or exited (no time limit)
        while not c.done.wait(0.05):
            if (not self.running or self._stop.is_set()) and not c.done.is_set():
                raise DamonError(errno.ECANCELED, f"{what}: kdamond {self.index} exited")
        if c.canceled:
            raise DamonError(errno.ECANCELED, f"{what}: kdamond {self.index} exited")
        if c.error is not None:
            raise c.error
        return c.result

    # ------------------------------------------------------------------ commands

    def commit(self, ctx_params: params.Ctx) -> None:
        """`commit`: validate here, apply between samples (damon_commit_ctx)."""
        if not self.running:
            raise DamonError(errno.EINVAL, f"commit: kdamond {self.index} is not running")
        core.validate(ctx_params, self.system)
        self._call(lambda: core.commit_ctx(self.ctx, ctx_params), "commit")

    def commit_quota_goals(self, goals: list[list[params.QuotaGoal]]) -> None:
        self._call(lambda: damos.commit_quota_goals(self.ctx, goals), "commit_schemes_quota_goals")

    def scheme_stats(self) -> list[params.SchemeStats]:
        import copy
        return self._call(lambda: [copy.copy(s.stat) for s in self.ctx.schemes], "update_schemes_stats")

    def effective_quotas(self) -> list[int]:
        return self._call(lambda: damos.effective_quotas(self.ctx), "update_schemes_effective_quotas")

    def tuned_intervals(self) -> tuple[int, int]:
        return self._call(lambda: (self.ctx.attrs.sample_interval, self.ctx.attrs.aggr_interval),
                          "update_tuned_intervals")

    def quota_goal_values(self) -> list[list[int]]:
        return self._call(lambda: damos.goal_current_values(self.ctx), "update_schemes_quota_goals")

    def walk_tried_regions(self, timeout_s: float | None = None,
                           total_only: bool = False) -> list[list[params.TriedRegion]]:
        """`update_schemes_tried_regions` / `_bytes`: wait for one apply interval of every
        scheme and return the regions each scheme tried. On the wall clock it blocks as
        damos_walk() does, until the walk is done or cancelled; `timeout_s` bounds only
        the virtual-time drive. Raises DamonError: EINVAL if not running, ECANCELED if
        cancelled (no schemes, watermarks, pause, the kdamond exits)."""
        if not self.running:
            raise DamonError(errno.EINVAL, f"walk: kdamond {self.index} is not running")
        walk = damos.request_walk(self.ctx, total_only)
        if self.virtual:
            # nobody else runs the loop: drive it until the walk completes
            longest = max([s.params.apply_interval_us or self.ctx.attrs.aggr_interval
                           for s in self.ctx.schemes] or [self.ctx.attrs.aggr_interval])
            budget = max(int((timeout_s or 0) * 1e6), 3 * longest) + self.ctx.attrs.sample_interval
            end = self.system.clock.now_us() + budget
            while not walk.done.is_set() and self.running and self.system.clock.now_us() < end:
                self.run_for(max(self.ctx.attrs.sample_interval, 1))
            if not walk.done.is_set():
                damos.cancel_walks(self.ctx)
        else:
            while not walk.done.wait(0.05):
                if not self.running or self._stop.is_set():    # _finish cancels it too; do not wait
                    damos.cancel_walks(self.ctx)
        if getattr(walk, "cancelled", False) or not walk.done.is_set():
            raise DamonError(errno.ECANCELED, "walk cancelled")
        return walk.result

    def set_refresh(self, ms: int, fn: Callable) -> None:
        """refresh_ms: call fn() from the loop about every ms milliseconds (0 disables)."""
        self._refresh_ms = int(ms)
        self._refresh_fn = fn
        self._next_refresh_us = self.system.clock.now_us() + self._refresh_ms * 1000
