"""`damond reproduce designs`: the JSON contract, counted truth independent of the design,
design none against T2, refusal of a listed design that is not in the tree, the local pool
against a Dask cluster, and the guest-db workload kind. Short runs (a few virtual seconds)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from damond.reproduce.designs import command, runner
from damond.reproduce.designs.runner import TIMING_KEYS, Task, run_task, run_tasks

REPO = Path(__file__).resolve().parents[2]
MINE = ("rfc-v3", "user-input-goal", "age", "none")


def damond(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "damond", "reproduce", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_json_has_every_metric_for_every_run_and_the_doc_is_written(tmp_path):
    doc = tmp_path / "designs.md"
    p = damond("designs", "--design", "age", "--design", "none", "--workload", "hot_workload", "--workload",
               "uniform", "--seeds", "1", "--jobs", "1", "--duration", "2", "--json", "--doc", str(doc))
    assert p.returncode == 0, p.stderr
    obj = json.loads(p.stdout)
    assert obj["experiment"] == "designs"
    runs = obj["runs"]
    # 2 designs x 2 workloads with khugepaged on, and age's runs on hot_workload in the other modes
    assert sorted((r["design"], r["workload"], r["khugepaged"]) for r in runs) == sorted(
        [(d, w, "on") for d in ("age", "none") for w in ("hot_workload", "uniform")]
        + [("age", "hot_workload", m) for m in runner.KHUGEPAGED if m != "on"])
    for r in runs:
        assert r["seed"] == 1
        for k in command.METRICS:
            assert k in r, k
        assert r["true_hot_bytes"] > 0 and r["walk_ns_added"] is not None
        assert r["control_cpu_s"] >= 0
    base = [r for r in runs if r["design"] == "none"]
    assert all(r["walk_ns_added"] == 0 and r["split_precision"] is None for r in base)   # nothing split
    text = doc.read_text()
    assert text.startswith("# The RFC's design") and "## age" in text and "## khugepaged" in text
    assert "Not measured in this run: design `v2-addr-filter`" in text


def test_counted_truth_is_the_same_for_every_design_until_an_action():
    # guest-db draws its lookups at random: the case where a design could perturb the workload
    rows = [run_task(Task(d, "guest-db", 3, duration_s=1)) for d in MINE if runner.available(d)]
    digests = [r["truth_digests"] for r in rows]
    n = min(len(d) for d in digests)
    assert n >= 1, digests
    assert all(d[:n] == digests[0][:n] for d in digests), digests
    # and the digest does see the workload: another seed scatters the buffer cache elsewhere
    other = run_task(Task("none", "guest-db", 4, duration_s=1))["truth_digests"]
    assert other[0] != digests[0][0]


def test_design_none_on_sparse_8g_reports_the_t2_always_figure():
    from damond.reproduce import t2
    from damond.reproduce.common import GiB, Options
    t2_always = np.mean(t2.measure(Options(), 8 * GiB, "always", 4)["reported"])
    r = run_task(Task("none", "sparse_8g", 1, duration_s=2))
    assert abs(r["reported_hot_bytes"] - t2_always) <= 0.1 * t2_always
    assert r["true_hot_bytes"] == 16 << 20 and r["nr_truly_sparse"] == 4096


def test_a_listed_design_missing_from_the_tree_is_refused_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(command, "available", lambda name: name != "perf-event")
    args = argparse.Namespace(design=["perf-event", "none"], workload=None, seeds=1, jobs=1, cluster=None,
                              duration=1.0, doc="", json=True, plots=None)
    assert command.main(args) == 2
    out = capsys.readouterr()
    assert out.out == ""                                    # no rows at all
    assert out.err.count("\n") == 1 and "design perf-event is listed but" in out.err
    with pytest.raises(runner.DesignUnavailable):
        monkeypatch.setattr(runner, "available", lambda name: False)
        runner.load_design("perf-event")


def test_dask_cluster_gives_the_local_pool_s_rows():
    pytest.importorskip("distributed")
    from distributed import LocalCluster
    tasks = [Task("none", "hot_workload", 1, duration_s=1), Task("age", "hot_workload", 2, duration_s=1),
             Task("none", "hot_workload", 2, duration_s=1)]
    pool = run_tasks(tasks, jobs=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
        dist = run_tasks(tasks, cluster=lc.scheduler_address)

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]
    assert strip(dist) == strip(pool)


def test_cluster_without_dask_is_one_line(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_dask(name, *a, **kw):
        if name.startswith(("dask", "distributed")):
            raise ImportError(name)
        return real(name, *a, **kw)
    monkeypatch.setattr(builtins, "__import__", no_dask)
    with pytest.raises(RuntimeError, match=r"--cluster needs Dask distributed: pip install 'damond\[cluster\]'"):
        run_tasks([Task("none", "uniform", 1)], cluster="tcp://127.0.0.1:1")


def test_guest_db_kind_is_seeded_and_validated():
    from damond.config import Config
    from damond.clock import VirtualClock
    from damond.mm.machine import Machine
    from damond.errors import ConfigError
    from damond.mm.workload import zipf_tier_shares

    def streams(seed):
        cfg = Config.from_text(f'seed = 1\n[machine]\nmemory = "512M"\n[[workload]]\nkind = "guest-db"\n'
                               f'size = "256M"\nshmem = true\nhuge = "always"\nrate = 1e4\nseed = {seed}\n', "<t>")
        m = Machine.from_config(cfg, VirtualClock())
        w = m.processes()[0].workload
        assert [p.name for p in w.phases[:3]] == ["populate", "oltp", "scan"]
        return [(s.start, s.n, s.s_out, s.cyclic) for s in w.phases[1].streams]
    a, b = streams(1), streams(2)
    assert a == streams(1) and a != b
    assert len(a) == 5 and a[0][3] and not any(s[3] for s in a[1:])     # the index swept, lookups random
    sh = zipf_tier_shares(1 << 16)
    assert abs(sum(sh) - 1) < 1e-9 and sh[0] > sh[1] and sh[0] > 0.3    # top 1/1024 of blocks: ~40 % of lookups
    with pytest.raises(ConfigError, match=r"<t>:5: guest-db size must be at least 64M"):
        streams_bad = Config.from_text('[machine]\nmemory = "512M"\n[[workload]]\nkind = "guest-db"\n'
                                       'size = "8M"\n', "<t>")
        Machine.from_config(streams_bad, VirtualClock())
