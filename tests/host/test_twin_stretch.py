"""Host CPU steal (damond/host/twin.Twin._stretch): a sample window in which the program
waited for a host CPU is extended by that wait, capped; a program that slept or ran is not
waited for. sched_sample is replaced by a scripted one (run ns, run_delay ns, runnable)."""
from __future__ import annotations

import time

from damond.host import twin as T


def _twin(monkeypatch, samples, w=0.005):
    tw = T.Twin(None, 1234, None, 0)
    it = iter(samples)
    last = [samples[0]]

    def fake(pid):
        last[0] = next(it, last[0])
        return last[0]
    monkeypatch.setattr(T, "sched_sample", fake)
    tw._window = (time.monotonic() - w, fake(1234))
    return tw


def test_idle_or_running_program_is_not_waited_for(monkeypatch):
    for s in ([(0, 0, False), (0, 0, False)], [(0, 0, True), (5_000_000, 0, True)]):   # asleep; had the CPU
        tw = _twin(monkeypatch, s)
        t0 = time.monotonic()
        tw._stretch()
        assert time.monotonic() - t0 < 0.003 and tw.stretched_s < 0.003


def test_window_grows_by_the_wait_up_to_the_cap(monkeypatch):
    tw = _twin(monkeypatch, [(0, 0, True), (1_000_000, 3_000_000, False)])    # waited 3 of 5 ms, asleep now
    tw._stretch()
    assert 0.0025 <= tw.stretched_s <= 0.006
    tw = _twin(monkeypatch, [(0, 0, True)])                  # runnable, never ran: until the cap
    tw._stretch()
    assert T.STRETCH_MAX_S * 0.4 <= tw.stretched_s <= 0.005 * (T.STRETCH_MAX - 1) + 0.003
