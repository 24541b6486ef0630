"""Wall clock: the kdamond samples emulated programs in bursts (one wake-up for several
sampling intervals) and real programs (twins) in real time. Either way every access
window is exactly one sampling interval of machine time; in bursts the windows follow
each other without a gap and the machine never runs ahead of the wall clock, and a
queued command still gets its answer within about one sampling interval."""
from __future__ import annotations

import time
from types import SimpleNamespace

from damond.clock import WallClock
from damond.damon import kdamond as kd_mod
from damond.damon import params
from damond.damon.kdamond import Kdamond
from tests.damon.conftest import FakeMachine, make_system

G = 1 << 30
HEAP = 0x400000
VMAS = [(HEAP, HEAP + G), (0x7f0000000000, 0x7f0000000000 + 16 * 4096), (0x7ffff0000000, 0x7ffff0000000 + 8 * 4096)]
SAMPLE = 5000


class RecordingMachine(FakeMachine):
    """Records the machine time of every mkold and young, and the wall clock's at young."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock
        self.log: list = []

    def va_mkold(self, pid, addrs):
        self.log.append(("mkold", self.now_us, self.clock.now_us()))
        return super().va_mkold(pid, addrs)

    def va_young(self, pid, addrs):
        self.log.append(("young", self.now_us, self.clock.now_us()))
        return super().va_young(pid, addrs)


def run(twin: bool, seconds: float, monkeypatch, **attrs):
    clock = WallClock(1.0)
    m = RecordingMachine(clock)
    m.add_process(42, VMAS, hot=[(HEAP, HEAP + G // 4)])
    if twin:
        m.procs[42].twin = SimpleNamespace()           # a real program behind the pid
    s = make_system(m)
    s.clock = clock
    sleeps = []
    real_sleep = Kdamond._sleep

    def counting_sleep(self, us, kickable=False):
        sleeps.append(us)
        return real_sleep(self, us, kickable)

    monkeypatch.setattr(Kdamond, "_sleep", counting_sleep)
    k = Kdamond(s, 0)
    k.start(params.Ctx(ops=params.OpsId.VADDR, targets=[params.Target(pid=42)],
                       attrs=params.Attrs(sample_interval=SAMPLE, aggr_interval=100_000, **attrs)))
    time.sleep(seconds)
    k.stop()
    return m.log, sleeps, k


def windows(log):
    """(mkold machine time, young machine time, wall time at young) per completed sample."""
    out = []
    for a, b in zip(log, log[1:]):
        if a[0] == "mkold" and b[0] == "young":
            out.append((a[1], b[1], b[2]))
    return out


def test_bursts_keep_every_window_exact_contiguous_and_behind_the_wall(monkeypatch):
    monkeypatch.setattr(kd_mod, "WALL_MAX_LAG_US", 10_000_000)      # a loaded host's stall: made up, no jump
    log, sleeps, k = run(False, 0.4, monkeypatch)
    w = windows(log)
    assert len(w) >= 40 and len(w) == k.ctx.passed_sample_intervals
    assert all(y - o == SAMPLE for o, y, _ in w)                   # exactly one interval each
    assert all(w[i + 1][0] == w[i][1] for i in range(len(w) - 1))  # no gap, no catch-up step
    assert all(y <= wall for _, y, wall in w)                      # never ahead of the wall clock
    burst = kd_mod.WALL_BURST_US // SAMPLE
    assert burst > 1 and len(sleeps) <= len(w) // 2 + 2            # one wake-up serves a burst


def test_a_real_program_is_sampled_in_real_time(monkeypatch):
    log, sleeps, k = run(True, 0.2, monkeypatch)
    w = windows(log)
    assert len(w) >= 10 and all(y - o == SAMPLE for o, y, _ in w)
    assert len(sleeps) >= len(w) // 2                              # a wake-up per (on-time) sample
    assert k._burst == 1


def test_a_command_cuts_a_burst_short(monkeypatch):
    monkeypatch.setattr(kd_mod, "WALL_BURST_US", 3_000_000)         # a 3 s burst
    clock = WallClock(1.0)
    m = FakeMachine()
    m.add_process(42, VMAS, hot=[(HEAP, HEAP + G // 4)])
    s = make_system(m)
    s.clock = clock
    k = Kdamond(s, 0)
    k.start(params.Ctx(ops=params.OpsId.VADDR, targets=[params.Target(pid=42)],
                       attrs=params.Attrs(sample_interval=SAMPLE, aggr_interval=100_000)))
    try:
        time.sleep(0.1)                  # the kdamond now waits out its burst
        t = time.monotonic()
        assert k.tuned_intervals() == (SAMPLE, 100_000)
        assert time.monotonic() - t < 1.0
    finally:
        k.stop()


def test_two_kdamonds_on_one_machine_sample_in_real_time():
    """A second running kdamond also moves the machine's time: a burst of one would run it
    past the other's open window and stretch that window, so neither bursts while both
    run; the one left alone bursts again."""
    clock = WallClock(1.0)
    m = RecordingMachine(clock)
    m.add_process(42, VMAS, hot=[(HEAP, HEAP + G // 4)])
    s = make_system(m)
    s.clock = clock
    ks = [Kdamond(s, i) for i in range(2)]
    s.kdamonds[:] = ks
    for k in ks:
        k.start(params.Ctx(ops=params.OpsId.VADDR, targets=[params.Target(pid=42)],
                           attrs=params.Attrs(sample_interval=SAMPLE, aggr_interval=100_000)))
    try:
        time.sleep(0.2)
        assert all(k.ctx.passed_sample_intervals >= 10 for k in ks)
        assert [k._burst for k in ks] == [1, 1]
        ks[1].stop()
        time.sleep(0.1)
        assert ks[0]._burst == kd_mod.WALL_BURST_US // SAMPLE
    finally:
        for k in ks:
            if k.running:
                k.stop()
