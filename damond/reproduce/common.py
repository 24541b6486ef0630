"""What every experiment shares: options, result rows, machine configs and the hot-bytes
measurement (DAMON's tried bytes beside the counted truth of the same windows).

Owns the table row (case, the RFC's figure, damond's figure, counted truth, verdict, why)
and `Result` (rows, the --json object, data for the plots).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from damond.mm.tlb import PRESETS
from damond.reproduce.session import Session

MiB, GiB = 1 << 20, 1 << 30
PMD = 2 * MiB
MACHINES = tuple(PRESETS)          # the [machine] presets the config knows


@dataclass
class Options:
    seed: int = 1
    machine: str = "kunpeng920"
    reduced: bool = False           # smaller sizes and fewer intervals (the test suite)
    progress: Callable[[float], None] = field(default=lambda frac: None)


@dataclass
class Row:
    case: str
    rfc: str
    damond: str
    truth: str
    verdict: str                    # "match", "differs", "n/a"
    why: str = ""


@dataclass
class Result:
    experiment: str
    rows: list[Row] = field(default_factory=list)
    json: dict = field(default_factory=dict)
    plots: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def human(n: float) -> str:
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


def config(memory: str, thp: str = "always", workloads: str = "", seed: int = 1, preset: str = "kunpeng920",
           extra_machine: str = "", tlb: str = "", extra: str = "") -> str:
    """A machine as the RFC's runs had it: khugepaged off unless asked (the RFC waits for it
    only in T2's phase B, which the populate-as-THP fault path already gives)."""
    return f"""seed = {seed}
[machine]
preset = "{preset}"
memory = "{memory}"
nr_cpus = 4
numa_nodes = 1
{extra_machine}
[machine.tlb]
{tlb}
[thp]
enabled = "{thp}"
[khugepaged]
enabled = false
{extra}
{workloads}
"""


def workload_vma(s: Session, pid: int):
    """The workload's big mapping (what the RFC's scripts take from smaps)."""
    return max(s.machine.process(pid).vmas(), key=lambda v: v.end - v.start)


def hot_bytes(s: Session, pid: int | list[int], nr_schemes: int, intervals: int, scheme: int = 0) -> dict:
    """Per apply interval (`update_schemes_tried_regions`): scheme `scheme`'s tried bytes and
    regions, the last scheme's region count (a min=0 stat scheme sees every region), and the
    counted truth: bytes of the workloads' mappings touched in that interval."""
    pids = pid if isinstance(pid, list) else [pid]
    vmas = [(p, workload_vma(s, p)) for p in pids]
    s.machine.truth_start()
    rep, truth, tried, regions = [], [], [], []
    for _ in range(intervals):
        t0 = s.now_us()
        tr = s.tried(nr_schemes)
        rep.append(sum(e - st for st, e, _, _ in tr[scheme]))
        tried.append(len(tr[scheme]))
        regions.append(len(tr[-1]))
        truth.append(sum(s.machine.truth_counted(p, v.start, v.end, t0) for p, v in vmas))
    return dict(reported=rep, truth=truth, nr_tried=tried, nr_regions=regions)


def stat_schemes(min_nr: int = 1) -> list[dict]:
    """The RFC's `stat` scheme (nr_accesses >= min_nr) and a min=0 `stat` that tries every region."""
    return [dict(action="stat", nr_accesses=(min_nr, (1 << 32) - 1)), dict(action="stat")]
