"""The engine's tracepoints and the perf shim's text, without FUSE: damon_aggregated is
emitted once per region per aggregation with the regions the kdamond holds,
damos_before_apply once per region a scheme tries; nothing is formatted when nobody
listens; the machine's process observer sees spawns and exits; `perf script` lines are
builtin-script.c's `%16s %7d [%03d] %12s: %*s: %s`."""
from __future__ import annotations

from damond.clock import VirtualClock
from damond.config import Config
from damond.damon import params, trace
from damond.damon.kdamond import Kdamond
from damond.host import perf
from damond.system import System


def _system() -> System:
    cfg = Config.from_text('seed = 3\n[machine]\nmemory = "1G"\n[khugepaged]\nenabled = false\n'
                           '[[workload]]\nkind = "mmap"\nsize = "64M"\npopulate = true\n', "<test>")
    return System.from_config(cfg, VirtualClock())


def test_aggregated_and_before_apply_events_carry_the_engine_state():
    s = _system()
    pid = s.machine.processes()[0].pid
    got: list = []
    k = Kdamond(s, 0)
    s.kdamonds.append(k)
    k.start(params.Ctx(ops=params.OpsId.VADDR, targets=[params.Target(pid=pid)],
                       schemes=[params.Scheme(pattern=params.AccessPattern(
        max_sz_region=1 << 40, max_nr_accesses=1 << 30, max_age_region=1 << 30))]))
    k.run_for(95_000)                                   # before the first aggregation: no listener anyway
    s.trace_listeners.append(got.extend)
    k.run_for(205_000)                                  # aggregations at 100 and 200 ms
    agg = [e for e in got if e.name == "damon_aggregated" and e.t_us == got[0].t_us]   # the first aggregation
    regions = k.ctx.targets[0].regions              # split since: the same span, more regions
    assert {e.pid for e in agg} == {k.pid} and {e.kdamond for e in agg} == {0}
    assert {e.text.split()[1] for e in agg} == {f"nr_regions={len(agg)}"}
    spans = [tuple(int(x) for x in e.text.split()[2][:-1].split("-")) for e in agg]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert spans[0][0] == int(regions.start[0]) and spans[-1][1] == int(regions.end[-1])
    before = [e for e in got if e.name == "damos_before_apply"]
    assert before and before[0].text.startswith("ctx_idx=0 scheme_idx=0 target_idx=0 nr_regions=")
    s.trace_listeners.clear()
    n = len(got)
    k.run_for(200_000)
    assert len(got) == n                                # nobody listens: nothing is emitted
    k.stop()


def test_esz_event_at_each_charge_window():
    s = _system()
    pid = s.machine.processes()[0].pid
    got: list = []
    s.trace_listeners.append(got.extend)
    k = Kdamond(s, 0)
    s.kdamonds.append(k)
    quota = params.Quota(sz=1 << 20, reset_interval=100)
    k.start(params.Ctx(ops=params.OpsId.VADDR, targets=[params.Target(pid=pid)], schemes=[params.Scheme(
        pattern=params.AccessPattern(max_sz_region=1 << 40, max_nr_accesses=1 << 30, max_age_region=1 << 30),
        quota=quota)]))
    k.run_for(450_000)
    esz = [e.text for e in got if e.name == "damos_esz"]
    assert esz and set(esz) == {f"ctx_idx=0 scheme_idx=0 esz={1 << 20}"}
    k.stop()


def test_process_observer_sees_spawn_and_exit():
    s = _system()
    seen: list = []
    s.machine.add_process_observer(lambda ev, p: seen.append((ev, p.pid, p.comm)))
    pid = s.machine.spawn({"kind": "mmap", "size": "4M"})
    s.machine.kill(pid)
    assert [x[:2] for x in seen] == [("spawn", pid), ("exit", pid)]


def test_perf_script_line_is_builtin_script_format():
    # the measured perf 6.1 line (exec-host-facts.md A.2), with perf 6.5+'s 7-wide tid
    line = b"4254658831123 77 1 0 damon_aggregated: target_id=0 nr_regions=1425 4294967296-4297691136: 0 0\n"
    events = ["damon:damon_aggregated", "damon:damon_monitor_intervals_tune"]
    out = perf.format_damon([line], events, perf.TP_DEFAULT, ns=False).decode()
    assert out == ("%16s %7d [%03d] %12s: %*s: %s\n" % ("kdamond.0", 77, 1, "4254.658831", 34,
                                                        "damon:damon_aggregated",
                                                        "target_id=0 nr_regions=1425 4294967296-4297691136: 0 0"))
    only = perf.format_damon([line], events[:1], perf.TP_DEFAULT, ns=False).decode()
    assert " damon:damon_aggregated: target_id" in only and "  damon:damon_aggregated" not in only


def test_perf_refuses_what_it_does_not_serve(capsys, monkeypatch):
    monkeypatch.setenv("DAMOND_ROOT", "/nonexistent")
    assert perf.main(["stat", "true"]) == 1
    assert perf.main(["record", "-e", "cycles", "true"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("perf (damond): 'perf stat' is not served.")
    assert err[1].startswith("perf (damond): event 'cycles' is not served (served: damon:damon_aggregated")
    assert trace.EVENTS == ("damon_aggregated", "damon_monitor_intervals_tune", "damos_before_apply", "damos_esz")
