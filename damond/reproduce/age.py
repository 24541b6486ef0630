"""SJ's alternative to SPE (review, timing-and-designs-facts.md Part 2): call hot only what
stayed accessed for a while, `nr_accesses >= 1` and `age >= 10` aggregations (1 s at
100 ms), next to the RFC's plain `nr_accesses >= 1` and the counted truth, on the
sparse workload (THP=always and THP=never) and on a skewed pair: 64 MB swept
continuously beside 2 GB touched at random at a fixed 2e6 pages/s (a third of it in
any 100 ms, so every page is touched but none stays hot).

What it can and cannot do follows from how DAMON samples: with one AF per 2 MB every
region of sparse_8g is young every aggregation, so its age only grows and age confirms
the 8 GB; with 4 KB pages the hot 1/512 of each region is hit by a sample only now and
then, so no region stays hot and age drops the noise and the 16 MB together; on the
skewed pair the continuously swept part keeps its age and the random part does not.
"""
from __future__ import annotations

import statistics

from damond.reproduce.common import Options, Result, Row, config, hot_bytes, human
from damond.reproduce.session import Session

AGE_MIN = 10
SKEWED = """[[workload]]
kind = "uniform"
size = "64M"
comm = "hot"
[[workload]]
kind = "uniform"
size = "2G"
pattern = "random"
rate = 2e6
comm = "lukewarm"
"""


def schemes() -> list[dict]:
    big = (1 << 32) - 1
    return [dict(action="stat", nr_accesses=(1, big)), dict(action="stat", nr_accesses=(1, big), age=(AGE_MIN, big)),
            dict(action="stat")]


def measure(opts: Options, thp: str, workload: str, memory: str, intervals: int) -> dict:
    s = Session(config(memory, thp, workload, seed=opts.seed, preset=opts.machine), f"age-{thp}")
    pid = [p.pid for p in s.machine.processes()]
    for p in pid:
        s.run_until_populated(p)
    s.stage(pid, schemes())
    s.state("on")
    s.run(3_000_000 if not opts.reduced else 1_500_000)       # ages past AGE_MIN
    rep = hot_bytes(s, pid, 3, intervals, scheme=0)
    age = hot_bytes(s, pid, 3, intervals, scheme=1)
    s.state("off")
    return dict(true_hot_bytes=int(statistics.mean(rep["truth"] + age["truth"])),
                reported_hot_bytes=int(statistics.mean(rep["reported"])),
                age_estimate_bytes=int(statistics.mean(age["reported"])))


def run(opts: Options) -> Result:
    size = "8G"                     # 2 GB of THPs would fit the TLB: not the RFC's case
    n = 10 if not opts.reduced else 3
    sparse = f'[[workload]]\nkind = "sparse-hotspot"\nsize = "{size}"\n'
    a = measure(opts, "always", sparse, "12G", n)
    opts.progress(0.33)
    nv = measure(opts, "never", sparse, "12G", n)
    opts.progress(0.66)
    sk = measure(opts, "never", SKEWED, "4G", n)
    opts.progress(1.0)
    rows = [
        Row(f"sparse {size}, THP=always", "8 GB (nr_accesses >= 1)",
            f"{human(a['reported_hot_bytes'])}; age >= {AGE_MIN}: {human(a['age_estimate_bytes'])}",
            human(a["true_hot_bytes"]), "n/a", "age cannot help: one AF per 2 MB is young every time, so the "
            "inflated regions are also the oldest"),
        Row(f"sparse {size}, THP=never", "a few hundred MB",
            f"{human(nv['reported_hot_bytes'])}; age >= {AGE_MIN}: {human(nv['age_estimate_bytes'])}",
            human(nv["true_hot_bytes"]), "n/a", "age drops the sampling noise and the truly hot 16 MB with it: "
            "1 page in 512 is hit by a sample too rarely to stay hot"),
        Row("skewed: 64 MB swept + 2 GB random", "n/a",
            f"{human(sk['reported_hot_bytes'])}; age >= {AGE_MIN}: {human(sk['age_estimate_bytes'])}",
            human(sk["true_hot_bytes"]), "n/a",
            f"age picks memory that stays hot ({human(sk['age_estimate_bytes'])}: the swept 64 MB) where "
            f"nr_accesses >= 1 also counts the random part; neither equals the bytes touched per 100 ms"),
    ]
    res = Result("age", rows)
    res.json = {"experiment": "age", "machine": opts.machine, "age_min_aggregations": AGE_MIN,
                "sparse_thp_always": a, "sparse_thp_never": nv, "skewed": sk}
    return res
