"""The designs runner: one virtual-time run per design x workload x seed (x khugepaged mode,
x sweep point), every metric measured here the same way for every design.

A run (`run_task`): a fresh Session on the workload's config (the design's feature level
and config_extra, khugepaged on with the RFC's settings or off), wait for populate, then
`design.setup`, then `duration_s` of control periods: the machine runs, the period's
emulated SPE records (arm_spe with PA, period 1024 or the workload's reduced one) go to `design.feed_spe` when the design
uses SPE, then `design.control`; CPU time of both is control_cpu_s. The runner watches
the THPs the workload had at setup (2 MiB ranges of its mapping, PMD-mapped then) and
counts, on a step observer, the accesses that walked the page table (the TLB model's miss
fraction per page x touches).

Metrics (names of the issue's JSON contract, then extras):
- true_hot_bytes: bytes of the mapping touched per 100 ms (DAMON's aggregation
  interval), mean of 4 windows at the end (counted truth);
- reported_hot_bytes: what the design reports hot, right after those windows;
- split_precision / split_recall: against the truly sparse THPs: a THP (2 MiB range of
  the setup-time THPs) is truly sparse when, in the last 10 s (the RFC's SPE interval),
  more than 0 and fewer than 30 % (the RFC's hot_threshold default) of its 512 subpages
  were touched. Untouched THPs are cold, not sparse: their one Access Flag already says
  so. A THP is split when it is not mapped by one order-9 folio at the end. null when
  the denominator is 0 (nothing split / nothing truly sparse);
- walk_ns_added: nanoseconds of page walk per second of run time, in the last 5 s of
  control (WALK_WINDOW_S: the observer that counts walks costs emulation time, so it runs
  only there), minus design `none`'s on the same workload and seed (khugepaged on: none
  splits nothing, so no mode changes it); each = page walks/s x the timing model's walk
  cost at the run's final page-table shape ((c_l2tlb + c_walk0) / f + the latency of a
  leaf line at the leaf-line footprint): more walks and dearer walks both count; filled in
  by `finish` once every run is in;
- recollapses: THPs khugepaged collapsed during the run (every THP was whole at set-up, so
  each is a split range put back; null for shmem mappings, whose khugepaged collapse
  (collapse_file) damond does not model). Modes: khugepaged on (the RFC's settings), off,
  and `backoff` (khugepaged skips a range DAMOS split for BACKOFF_SCANS of its visits,
  `[khugepaged] split_backoff_scans`) where the tree has that key;
- converge_s: virtual time after setup of the last change of the split set (0: it never
  changed); `converged` says whether that was before the last fifth of the run;
- control_cpu_s: process CPU time of design.feed_spe + design.control;
- truth_digests: hashes of the touched set since setup, every 200 ms from setup (at most
  5) while no split or collapse has happened yet (the workload must not depend on the design
  until an action changes memory; tests/reproduce/test_designs.py checks it).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from damond.mm.mconfig import KHUGEPAGED_KEYS
from damond.mm.timing import PRESETS as TIMING
from damond.reproduce.common import workload_vma
from damond.reproduce.designs import DESIGN_MODULES, design as design_class
from damond.reproduce.designs.workloads import MASIM_PHASES, WORKLOADS
from damond.reproduce.session import Session

MiB = 1 << 20
PMD = 2 * MiB
PRESET = "kunpeng920"
SPARSE_BELOW = 0.30          # the RFC's hot_threshold default (30 %)
TRUTH_WINDOW_S = 10          # the RFC's SPE interval (damon_spe_ctl.sh SPE_INTERVAL)
DIGEST_STEPS, DIGEST_US = 5, 200_000
WALK_WINDOW_S = 5            # page walks are counted over the last 5 s of control (steady state)
SPE_EVENT = "pa_enable=1 ts_enable=1"      # period: the workload's spe_period (1024, the RFC's, by default)
# [khugepaged] per mode: the RFC's settings are the kernel defaults with defrag=0 (TEST_METHODOLOGY)
KHUGEPAGED: dict[str, str] = {"on": "enabled = true\ndefrag = 0\n", "off": "enabled = false\n"}
BACKOFF_SCANS = 3
if "split_backoff_scans" in KHUGEPAGED_KEYS:        # damond's back-off, where the tree has it
    KHUGEPAGED["backoff"] = f"enabled = true\ndefrag = 0\nsplit_backoff_scans = {BACKOFF_SCANS}\n"
TIMING_KEYS = ("control_cpu_s", "wall_s", "run_cpu_s")       # measured host time: differs between identical runs


class DesignUnavailable(RuntimeError):
    """A listed design whose module is not in this tree (yet)."""


@dataclass(frozen=True)
class Task:
    design: str
    workload: str
    seed: int
    khugepaged: str = "on"
    params: tuple = ()           # sorted (name, value) pairs of the design's tunables
    duration_s: float = 30.0
    sweep: str = ""              # "" for the main grid, else the swept parameter's name


def available(name: str) -> bool:
    """Whether design `name`'s module is in this tree."""
    import importlib.util
    return importlib.util.find_spec(f"damond.reproduce.designs.{DESIGN_MODULES[name]}") is not None


def load_design(name: str, params: tuple = ()):
    if name not in DESIGN_MODULES:
        raise ValueError(f"unknown design {name!r} (one of {', '.join(DESIGN_MODULES)})")
    if not available(name):
        raise DesignUnavailable(f"design {name} is listed but its module "
                                f"damond/reproduce/designs/{DESIGN_MODULES[name]}.py is not in this tree")
    return design_class(name)(**dict(params))


def config_text(task: Task, d, masim_path: str = "") -> str:
    w = WORKLOADS[task.workload]
    if task.khugepaged not in KHUGEPAGED:
        raise ValueError(f"khugepaged mode {task.khugepaged!r} is not one of {', '.join(KHUGEPAGED)}")
    return f"""seed = {task.seed}
[machine]
preset = "{PRESET}"
memory = "{w.memory}"
nr_cpus = 4
numa_nodes = 1
[thp]
enabled = "always"
[khugepaged]
{KHUGEPAGED[task.khugepaged]}
[daemon]
feature_level = "{d.feature_level}"
{d.config_extra()}
{w.config(task.seed, masim_path)}
"""


# --- what the runner measures -------------------------------------------------------------------
def thp_bases(s: Session, pid: int, vma) -> np.ndarray:
    """2 MiB ranges of the mapping mapped by one order-9 folio now."""
    fa = s.machine.va_folios(pid, vma.start, vma.end)
    va = np.asarray(fa.va, dtype=np.int64)
    keep = (np.asarray(fa.order) == 9) & (va % PMD == 0)
    return np.unique(va[keep])


def intact(s: Session, pid: int, vma, bases: np.ndarray) -> np.ndarray:
    return np.isin(bases, thp_bases(s, pid, vma))


def touched_fraction(s: Session, pid: int, vma, bases: np.ndarray, since_us: int) -> np.ndarray:
    t = s.machine.truth_touched(pid, vma.start, vma.end, since_us)
    off = ((bases - vma.start) // 4096).astype(np.int64)
    idx = off[:, None] + np.arange(512)[None, :]
    return t[idx].mean(axis=1)


def leaves(s: Session, pid: int, vma) -> int:
    """TLB leaves of the mapping: one per PMD-mapped THP, one per PTE otherwise."""
    fa = s.machine.va_folios(pid, vma.start, vma.end)
    o = np.asarray(fa.order, dtype=np.int64)
    return int((o == 9).sum() + (1 << o[o != 9]).sum())


def walk_ns_per_miss(nr_leaves: int) -> float:
    t = TIMING[PRESET]
    return (t.c_l2tlb + t.c_walk0) / t.ghz + t.mem_ns(nr_leaves / 8 * 64)


def ratio(a: int, b: int) -> float | None:
    return a / b if b else None


class Walks:
    """Step observer: accesses of one pid that walked the page table."""

    def __init__(self, pid: int):
        self.pid, self.n = pid, 0.0

    def __call__(self, step) -> None:
        for p in step.processes:
            if p.pid == self.pid and len(p.counts):
                self.n += float(np.dot(np.asarray(p.counts, np.float64), np.asarray(p.miss_frac, np.float64)))


@dataclass
class Run:
    task: Task
    metrics: dict = field(default_factory=dict)

    def row(self) -> dict:
        t = asdict(self.task)
        t["params"] = dict(self.task.params)
        return {**t, **self.metrics}


def run_task(task: Task) -> dict:
    """One run; returns its JSON row (design, workload, seed, ... and every metric)."""
    from damond.log import configure
    configure("error")          # e.g. the RFC tree's "full" warnings: counted in its stats instead
    wall0, cpu0 = time.monotonic(), time.process_time()
    d = load_design(task.design, task.params)
    with tempfile.TemporaryDirectory(prefix="damond-designs-") as tmp:
        masim_path = ""
        if WORKLOADS[task.workload].masim:
            masim_path = os.path.join(tmp, "masim_phases.cfg")
            with open(masim_path, "w") as f:
                f.write(MASIM_PHASES)
        s = Session(config_text(task, d, masim_path), f"designs-{task.design}-{task.workload}")
        m = _measure(s, d, task)
    m["wall_s"] = round(time.monotonic() - wall0, 3)
    m["run_cpu_s"] = round(time.process_time() - cpu0, 3)
    return Run(task, m).row()


def _measure(s: Session, d, task: Task) -> dict:
    from damond.spe.sampler import Sampler, SpeConfig
    mach = s.machine
    pid = mach.processes()[0].pid
    s.run_until_populated(pid, limit_us=int(WORKLOADS[task.workload].populate_limit_s * 1e6))
    s.run(int(WORKLOADS[task.workload].warmup_s * 1e6))
    vma = workload_vma(s, pid)
    bases = thp_bases(s, pid, vma)
    walks = Walks(pid)
    mach.truth_start()
    t_setup = s.now_us()
    k = mach.thp.khugepaged
    split0, coll0 = mach.thp.vmstat["thp_split_pmd"], k.pages_collapsed
    sampler = None
    if d.uses_spe:
        sampler = Sampler(SpeConfig.parse(f"{SPE_EVENT} period={WORKLOADS[task.workload].spe_period} "
                                          f"seed={task.seed}"), mach.spec.nr_cpus)
        sampler.start(mach)
    d.setup(s, pid)
    period = int(d.control_period_us)
    n_periods = max(int(task.duration_s * 1e6 // period), 1)
    cpu = 0.0
    last = np.ones(len(bases), bool)
    last_change_us, digests, acted = 0, [], False
    walk_from = n_periods - max(int(WALK_WINDOW_S * 1e6 // period), 1)
    for i in range(n_periods):
        if i == max(walk_from, 0):
            mach.add_step_observer(walks)
            walk_t0 = s.now_us()
        if not acted and len(digests) < DIGEST_STEPS:
            # the first periods in 200 ms steps: a hash of the touched set at each step that ends
            # before any split or collapse (the step size does not change the kdamond's steps)
            for _ in range(period // DIGEST_US):
                s.run(DIGEST_US)
                acted = acted or mach.thp.vmstat["thp_split_pmd"] != split0 or k.pages_collapsed != coll0
                if acted or len(digests) >= DIGEST_STEPS:
                    break
                t = mach.truth_touched(pid, vma.start, vma.end, t_setup)
                digests.append(hashlib.sha1(np.packbits(t).tobytes()).hexdigest()[:16])
            if t_setup + (i + 1) * period > s.now_us():
                s.run(t_setup + (i + 1) * period - s.now_us())
        else:
            s.run(period)
        c0 = time.process_time()
        if sampler is not None:
            recs = sampler.drain()
            pfns, counts = np.unique(recs["pa"] >> np.uint64(12), return_counts=True)
            d.feed_spe(s, pid, pfns, counts.astype(np.uint64))
        d.control(s, pid)
        cpu += time.process_time() - c0
        now = intact(s, pid, vma, bases)
        if (now != last).any():
            last_change_us, last = s.now_us() - t_setup, now
        acted = acted or mach.thp.vmstat["thp_split_pmd"] != split0 or k.pages_collapsed != coll0 or not now.all()
    if sampler is not None:
        sampler.stop()
    t_end = s.now_us()
    split_pmd = mach.thp.vmstat["thp_split_pmd"] - split0
    recollapses = k.pages_collapsed - coll0
    mach.remove_step_observer(walks)
    walks_per_s = walks.n / max((t_end - walk_t0) / 1e6, 1e-6)
    frac = touched_fraction(s, pid, vma, bases, max(t_end - TRUTH_WINDOW_S * 1_000_000, t_setup))
    # truth and report at the end
    hot = []
    for _ in range(4):
        t0 = s.now_us()
        s.run(100_000)
        hot.append(mach.truth_counted(pid, vma.start, vma.end, t0))
    reported = int(d.reported_hot_bytes(s, pid))
    sparse = (frac > 0) & (frac < SPARSE_BELOW)
    split = ~last
    n_tp = int((split & sparse).sum())
    shmem = not vma.anon
    return dict(
        true_hot_bytes=int(np.mean(hot)),
        reported_hot_bytes=reported,
        split_precision=ratio(n_tp, int(split.sum())),
        split_recall=ratio(n_tp, int(sparse.sum())),
        walk_ns_added=None,                      # filled by finish() against design none
        recollapses=None if shmem and k.enabled else int(recollapses),
        converge_s=last_change_us / 1e6,
        control_cpu_s=round(cpu, 4),
        converged=last_change_us <= 0.8 * (t_end - t_setup),
        nr_thps=int(len(bases)), nr_truly_sparse=int(sparse.sum()), nr_cold=int((frac == 0).sum()),
        nr_split=int(split.sum()), nr_split_cold=int((split & (frac == 0)).sum()),
        thp_split_pmd=int(split_pmd),
        page_walks_per_s=round(walks_per_s, 1), walk_ns_per_miss=round(walk_ns_per_miss(leaves(s, pid, vma)), 2),
        run_s=(t_end - t_setup) / 1e6, truth_digests=digests,
        recollapses_note="khugepaged does not collapse shmem in damond's model" if shmem and k.enabled else "",
    )


def finish(rows: list[dict]) -> list[dict]:
    """walk_ns_added of every run against design none's run of the same workload and seed
    (null when that run is not in `rows`)."""
    base = {(r["workload"], r["seed"]): r["page_walks_per_s"] * r["walk_ns_per_miss"] for r in rows
            if r["design"] == "none" and not r["sweep"] and r["khugepaged"] == "on"}
    for r in rows:
        b = base.get((r["workload"], r["seed"]))
        r["walk_ns_added"] = None if b is None else round(r["page_walks_per_s"] * r["walk_ns_per_miss"] - b, 1)
    return rows


# --- where the runs run -------------------------------------------------------------------------
def run_tasks(tasks: list[Task], jobs: int = 1, cluster: str | None = None, progress=None) -> list[dict]:
    """Every task's row, in task order: in this process (jobs 1), on a local process pool
    (jobs > 1) or on the Dask distributed scheduler at `cluster`."""
    progress = progress or (lambda frac: None)
    if cluster:
        try:
            from dask.distributed import Client, as_completed
        except ImportError:
            raise RuntimeError("--cluster needs Dask distributed: pip install 'damond[cluster]'") from None
        with Client(cluster) as client:
            futs = client.map(run_task, tasks, pure=False)
            done = 0
            for _ in as_completed(futs):
                done += 1
                progress(done / len(tasks))
            return finish(client.gather(futs))
    if jobs <= 1:
        rows = []
        for i, t in enumerate(tasks):
            rows.append(run_task(t))
            progress((i + 1) / len(tasks))
        return finish(rows)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed as cf_completed
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
        futs = [ex.submit(run_task, t) for t in tasks]
        for i, _ in enumerate(cf_completed(futs)):
            progress((i + 1) / len(tasks))
        return finish([f.result() for f in futs])
