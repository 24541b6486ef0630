"""`damond reproduce designs`: the task list (design x workload x seed, the khugepaged-off
runs, rfc-v3's TTL and peak-fraction sweep), the --json object, the table, the generated
docs/designs.md and the plots.

Every number in the table, the doc and the plots is a mean over seeds of the runs' rows
(null metrics are left out of a mean; a mean of nothing prints "-").
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from statistics import mean

from damond.reproduce.common import human
from damond.reproduce.designs import DESIGN_MODULES
from damond.reproduce.designs.runner import KHUGEPAGED, Task, available, run_tasks
from damond.reproduce.designs.workloads import WORKLOADS

DESIGNS = tuple(DESIGN_MODULES)
KH_WORKLOADS = ("hot_workload",)                  # anon THPs few enough for khugepaged to revisit in a run
SWEEP_WORKLOAD = "guest-db"                       # mixed dense/sparse/cold THPs: where rfc-v3's knobs matter
SWEEP = (("ttl_s", (3, 10)), ("peak_divisor", (2, 50)))   # beside the defaults 30 s and 10
METRICS = ("true_hot_bytes", "reported_hot_bytes", "split_precision", "split_recall", "walk_ns_added",
           "recollapses", "converge_s", "control_cpu_s")


def tasks(seeds: int, designs=DESIGNS, workloads=tuple(WORKLOADS), duration_s: float = 30.0,
          sweeps: bool = True) -> list[Task]:
    """Every design on every workload and seed with khugepaged on; the designs that split
    also with khugepaged off (and with the back-off, where the tree has it) on hot_workload,
    whose 40 THPs khugepaged revisits every 50 s (none splits nothing, so its khugepaged-on
    run is every mode's baseline); rfc-v3's sweep on guest-db with seed 1."""
    out = []
    for seed in range(1, seeds + 1):
        for w in workloads:
            out += [Task(d, w, seed, "on", duration_s=duration_s) for d in designs]
        for mode in [m for m in KHUGEPAGED if m != "on"]:
            for w in [w for w in KH_WORKLOADS if w in workloads]:
                out += [Task(d, w, seed, mode, duration_s=duration_s) for d in designs if d != "none"]
    if sweeps and "rfc-v3" in designs and SWEEP_WORKLOAD in workloads:
        for key, values in SWEEP:
            out += [Task("rfc-v3", SWEEP_WORKLOAD, 1, "on", ((key, v),), duration_s, key) for v in values]
    return out


# --- aggregation ----------------------------------------------------------------------------------
def _mean(vals):
    vals = [v for v in vals if v is not None]
    return mean(vals) if vals else None


def agg(rows: list[dict], design: str, workload: str, key: str, khugepaged: str = "on", sweep: str = "",
        params: dict | None = None):
    return _mean([r[key] for r in rows if r["design"] == design and r["workload"] == workload
                  and r["khugepaged"] == khugepaged and r["sweep"] == sweep
                  and (params is None or r["params"] == params)])


def fmt(v, kind: str = "") -> str:
    if v is None:
        return "-"
    if kind == "bytes":
        return human(v)
    if kind == "pct":
        return f"{v:.0%}"
    if kind == "ns/s":
        return f"{v / 1e6:.3g} ms/s"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


COLS = (("reported_hot_bytes", "reported", "bytes"), ("true_hot_bytes", "true/100ms", "bytes"),
        ("split_precision", "prec", "pct"), ("split_recall", "recall", "pct"), ("walk_ns_added", "walk+", "ns/s"),
        ("recollapses", "recoll", ""), ("converge_s", "conv s", ""), ("control_cpu_s", "cpu s", ""))


def table(rows: list[dict]) -> str:
    designs = [d for d in DESIGNS if any(r["design"] == d for r in rows)]
    workloads = [w for w in WORKLOADS if any(r["workload"] == w for r in rows)]
    head = f"{'design':<16} {'workload':<13}" + "".join(f" {c[1]:>11}" for c in COLS)
    out = [head, "-" * len(head)]
    for w in workloads:
        for d in designs:
            out.append(f"{d:<16} {w:<13}" + "".join(f" {fmt(agg(rows, d, w, k), kind):>11}" for k, _, kind in COLS))
    nseeds = len({r["seed"] for r in rows})
    out.append(f"(means over {nseeds} seed(s), khugepaged on; walk+ = page-walk latency added vs none per second "
               "of run: walks overlap, so it can exceed 1000 ms/s)")
    return "\n".join(out) + "\n"


# --- docs/designs.md ------------------------------------------------------------------------------
def _have(rows, d):
    return any(r["design"] == d for r in rows)


def _missing(d: str) -> str:
    return (f"Not measured in this run: design `{d}` was not run (its module "
            f"damond/reproduce/designs/{DESIGN_MODULES[d]}.py is not in this tree, or it was not selected).")


def doc(rows: list[dict], figures: Sequence[str] = ()) -> str:
    """The markdown text; `figures` are paths of the plots relative to the doc's directory."""
    A = lambda d, w, k, **kw: agg(rows, d, w, k, **kw)      # noqa: E731
    nseeds = len({r["seed"] for r in rows})
    P = []
    P.append("# The RFC's design and the reviewer's alternatives, measured side by side\n\n"
             "Generated by `damond reproduce designs` (issue 11); do not edit by hand. Every figure is a "
             f"mean over {nseeds} seed(s) of virtual-time runs on the emulated Kunpeng 920 (30 s of control "
             "after set-up), at the reduced sizes of damond/reproduce/designs/workloads.py. Definitions of every "
             "metric: damond/reproduce/designs/runner.py. A THP is *truly sparse* when more than 0 and fewer than "
             "30 % (the RFC's hot_threshold) of its subpages were touched in the last 10 s (counted truth); "
             "precision and recall are of the set of THPs split at the end against that set.\n")
    P.append("## Table\n\n```\n" + table(rows) + "```\n")
    if figures:
        P.append("\n".join(f"![{os.path.basename(f)[:-4]}]({f})" for f in figures) + "\n")
    # age
    if _have(rows, "age"):
        P.append("## age\n\n"
                 f"Without SPE, `age` (hot = nr_accesses >= 1 for >= 1 s; split = idle for >= 1 s) reports "
                 f"{fmt(A('age', 'sparse_8g', 'reported_hot_bytes'), 'bytes')} hot on sparse_8g against "
                 f"{fmt(A('age', 'sparse_8g', 'true_hot_bytes'), 'bytes')} truly touched per 100 ms (none: "
                 f"{fmt(A('none', 'sparse_8g', 'reported_hot_bytes'), 'bytes')}), and splits with recall "
                 f"{fmt(A('age', 'sparse_8g', 'split_recall'), 'pct')} there: one Access Flag per 2 MiB is young at "
                 f"every sample, so the inflated THPs are also the oldest hot ones. On hot_workload (fits the TLB, "
                 f"never seen accessed) it splits with precision {fmt(A('age', 'hot_workload', 'split_precision'), 'pct')}"
                 f" / recall {fmt(A('age', 'hot_workload', 'split_recall'), 'pct')}, on guest-db "
                 f"{fmt(A('age', 'guest-db', 'split_precision'), 'pct')} / "
                 f"{fmt(A('age', 'guest-db', 'split_recall'), 'pct')}, on uniform (nothing sparse) it splits "
                 f"{fmt(A('age', 'uniform', 'nr_split'))} THPs. Age separates idle from busy memory, not sparse "
                 "from dense THPs: it is the wrong signal for the split decision.\n")
    else:
        P.append("## age\n\n" + _missing("age") + "\n")
    # control plane
    if _have(rows, "v2-addr-filter"):
        P.append("## Control plane (v2 address filters, max_nr_snapshots)\n\n"
                 f"The userspace control plane splits with precision "
                 f"{fmt(A('v2-addr-filter', 'guest-db', 'split_precision'), 'pct')} / recall "
                 f"{fmt(A('v2-addr-filter', 'guest-db', 'split_recall'), 'pct')} on guest-db (rfc-v3: "
                 f"{fmt(A('rfc-v3', 'guest-db', 'split_precision'), 'pct')} / "
                 f"{fmt(A('rfc-v3', 'guest-db', 'split_recall'), 'pct')}), "
                 f"{fmt(A('v2-addr-filter', 'sparse_8g', 'split_precision'), 'pct')} / "
                 f"{fmt(A('v2-addr-filter', 'sparse_8g', 'split_recall'), 'pct')} on sparse_8g (rfc-v3 "
                 f"{fmt(A('rfc-v3', 'sparse_8g', 'split_precision'), 'pct')} / "
                 f"{fmt(A('rfc-v3', 'sparse_8g', 'split_recall'), 'pct')}), converges after "
                 f"{fmt(A('v2-addr-filter', 'guest-db', 'converge_s'))} s on guest-db (rfc-v3 "
                 f"{fmt(A('rfc-v3', 'guest-db', 'converge_s'))} s) and costs "
                 f"{fmt(A('v2-addr-filter', 'guest-db', 'control_cpu_s'))} s of CPU per run there (rfc-v3's "
                 f"feeder: {fmt(A('rfc-v3', 'guest-db', 'control_cpu_s'))} s).\n")
    else:
        P.append("## Control plane (v2 address filters, max_nr_snapshots)\n\n" + _missing("v2-addr-filter") + "\n")
    # user_input
    if _have(rows, "user-input-goal"):
        P.append("## user_input goal\n\n"
                 "A `user_input` goal with the temporal tuner, fed the SPE-estimated sparse bytes as target and the "
                 "bytes split so far as current value (quotas/bytes = what is left), splits as much as the SPE "
                 "histogram asks for, but which THPs is DAMOS's quota priority (hottest first), not the histogram: "
                 f"precision {fmt(A('user-input-goal', 'guest-db', 'split_precision'), 'pct')} / recall "
                 f"{fmt(A('user-input-goal', 'guest-db', 'split_recall'), 'pct')} on guest-db, "
                 f"{fmt(A('user-input-goal', 'masim-phases', 'split_precision'), 'pct')} / "
                 f"{fmt(A('user-input-goal', 'masim-phases', 'split_recall'), 'pct')} on masim-phases, "
                 f"{fmt(A('user-input-goal', 'uniform', 'nr_split'))} THPs split on uniform; it converges after "
                 f"{fmt(A('user-input-goal', 'guest-db', 'converge_s'))} s and costs "
                 f"{fmt(A('user-input-goal', 'guest-db', 'control_cpu_s'))} s of CPU on guest-db. It is a simpler "
                 "control of how much, not of which.\n")
    else:
        P.append("## user_input goal\n\n" + _missing("user-input-goal") + "\n")
    # perf events
    if _have(rows, "perf-event"):
        P.append("## perf events\n\n"
                 "With SPE samples as the access source instead of the Access Flag, DAMON reports "
                 f"{fmt(A('perf-event', 'sparse_8g', 'reported_hot_bytes'), 'bytes')} hot on sparse_8g (truth "
                 f"{fmt(A('perf-event', 'sparse_8g', 'true_hot_bytes'), 'bytes')}, none "
                 f"{fmt(A('none', 'sparse_8g', 'reported_hot_bytes'), 'bytes')}) and "
                 f"{fmt(A('perf-event', 'guest-db', 'reported_hot_bytes'), 'bytes')} on guest-db (truth "
                 f"{fmt(A('perf-event', 'guest-db', 'true_hot_bytes'), 'bytes')}, none "
                 f"{fmt(A('none', 'guest-db', 'reported_hot_bytes'), 'bytes')}); split precision/recall on guest-db "
                 f"{fmt(A('perf-event', 'guest-db', 'split_precision'), 'pct')} / "
                 f"{fmt(A('perf-event', 'guest-db', 'split_recall'), 'pct')}.\n")
    else:
        P.append("## perf events\n\n" + _missing("perf-event") + "\n")
    # khugepaged
    kh = []
    for d in [d for d in DESIGNS if d != "none" and _have(rows, d)]:
        on = A(d, "hot_workload", "recollapses")
        off = A(d, "hot_workload", "recollapses", khugepaged="off")
        pr_on = A(d, "hot_workload", "split_recall")
        pr_off = A(d, "hot_workload", "split_recall", khugepaged="off")
        line = (f"{d}: {fmt(on)} re-collapses on hot_workload with khugepaged on (recall at the end "
                f"{fmt(pr_on, 'pct')}), {fmt(off)} off (recall {fmt(pr_off, 'pct')})")
        if "backoff" in KHUGEPAGED:
            line += (f", {fmt(A(d, 'hot_workload', 'recollapses', khugepaged='backoff'))} with the back-off "
                     f"(recall {fmt(A(d, 'hot_workload', 'split_recall', khugepaged='backoff'), 'pct')})")
        kh.append(line)
    P.append("## khugepaged\n\n"
             "khugepaged with the RFC's settings (kernel defaults, defrag=0: 4096 PTEs per 10 s wake-up) "
             "re-collapses any split range that has one young PTE, and the split scheme splits it again: "
             + "; ".join(kh) + f". On sparse_8g (4096 THPs) the same 0.8 PMD/s re-collapses "
             f"{fmt(A('rfc-v3', 'sparse_8g', 'recollapses'))} THPs per 30 s under rfc-v3. With khugepaged off "
             "nothing re-collapses and the splits stay. These runs never needed khugepaged to build THPs (the "
             "fault path does under THP=always), so all it did here was undo splits; putting THPs back where "
             "access turns dense is what DAMOS_COLLAPSE offers instead (not measured here)"
             + ("" if "backoff" in KHUGEPAGED else "; the back-off mode is not in this tree, so it was not measured")
             + ". guest-db's memory is shmem, whose khugepaged collapse damond does not model (null there).\n")
    # tuning
    if any(r["sweep"] for r in rows):
        parts = []
        for key, values in SWEEP:
            default = 30 if key == "ttl_s" else 10
            pts = [(default, A("rfc-v3", SWEEP_WORKLOAD, "split_precision"),
                    A("rfc-v3", SWEEP_WORKLOAD, "split_recall"), A("rfc-v3", SWEEP_WORKLOAD, "nr_split"))]
            for v in values:
                pr = {key: v}
                pts.append((v, A("rfc-v3", SWEEP_WORKLOAD, "split_precision", sweep=key, params=pr),
                            A("rfc-v3", SWEEP_WORKLOAD, "split_recall", sweep=key, params=pr),
                            A("rfc-v3", SWEEP_WORKLOAD, "nr_split", sweep=key, params=pr)))
            pts.sort()
            name = "TTL" if key == "ttl_s" else "peak fraction 1/N"
            parts.append(f"{name}: " + ", ".join(
                f"{'' if key == 'ttl_s' else '1/'}{v}{' s' if key == 'ttl_s' else ''} -> precision {fmt(p, 'pct')}, "
                f"recall {fmt(r, 'pct')}, {fmt(n)} THPs split" for v, p, r, n in pts))
        P.append("## Tuning (rfc-v3 on guest-db, seed 1)\n\n" + "; ".join(parts) + ". A short TTL drops the entries "
                 "of rarely sampled THPs, which are then split unconditionally (no heatmap); the peak fraction decides "
                 "how many 16 KiB chunks of a sampled THP count as hot. The chunk size matters as much: on "
                 f"hot_workload rfc-v3 splits {fmt(A('rfc-v3', 'hot_workload', 'nr_split'))} of 40 THPs, because its "
                 "25 % hot subpages are every fourth one, so every 16 KiB chunk holds one and the heatmap reads "
                 "100 % hot, while counted truth has 25 % of the subpages touched (truly sparse).\n")
    # the original report
    if _have(rows, "rfc-v3") and _have(rows, "none"):
        P.append("## The original report: THP tmpfs guest memory running a database\n\n"
                 f"On guest-db DAMON with no split reports {fmt(A('none', 'guest-db', 'reported_hot_bytes'), 'bytes')}"
                 f" hot where {fmt(A('none', 'guest-db', 'true_hot_bytes'), 'bytes')} is touched per 100 ms "
                 f"({fmt(A('none', 'guest-db', 'nr_truly_sparse'))} of "
                 f"{fmt(A('none', 'guest-db', 'nr_thps'))} THPs are truly sparse, "
                 f"{fmt(A('none', 'guest-db', 'nr_cold'))} untouched). rfc-v3 splits with precision "
                 f"{fmt(A('rfc-v3', 'guest-db', 'split_precision'), 'pct')} and recall "
                 f"{fmt(A('rfc-v3', 'guest-db', 'split_recall'), 'pct')}: it also splits the "
                 f"{fmt(A('rfc-v3', 'guest-db', 'nr_split_cold'))} untouched THPs, which SPE never samples and "
                 "the handler then splits unconditionally; afterwards DAMON reports "
                 f"{fmt(A('rfc-v3', 'guest-db', 'reported_hot_bytes'), 'bytes')} hot and the page walks cost "
                 f"{fmt(A('rfc-v3', 'guest-db', 'walk_ns_added'), 'ns/s')} more (summed walk latency per second).\n")
    a_none = A("none", "sparse_8g", "reported_hot_bytes")
    P.append("## Check against T2\n\n"
             f"Design none on sparse_8g reports {fmt(a_none, 'bytes')}; T2 (THP=always) reports the whole 8 GiB "
             f"({fmt(8 << 30, 'bytes')}): "
             + ("within 10 %." if a_none is not None and abs(a_none - (8 << 30)) <= 0.1 * (8 << 30) else "NOT within 10 %.")
             + "\n")
    return "\n".join(P)


# --- plots ------------------------------------------------------------------------------------------
def plots(rows: list[dict], outdir: str) -> list[str]:
    from damond.reproduce.plots import _plt
    plt = _plt()
    os.makedirs(outdir, exist_ok=True)
    designs = [d for d in DESIGNS if _have(rows, d)]
    workloads = [w for w in WORKLOADS if any(r["workload"] == w for r in rows)]
    paths = []
    for key, title, log in (("reported_hot_bytes", "reported hot / true hot per 100 ms (log; 0 drawn at 1e-3)", True),
                            ("split_precision", "split precision", False), ("split_recall", "split recall", False)):
        fig, ax = plt.subplots(figsize=(9, 4))
        width = 0.8 / max(len(designs), 1)
        for i, d in enumerate(designs):
            vals = []
            for w in workloads:
                v = agg(rows, d, w, key)
                if key == "reported_hot_bytes":
                    t = agg(rows, d, w, "true_hot_bytes")
                    v = (v / t if v is not None and t else None)
                    v = max(v, 1e-3) if v is not None else None
                vals.append(float("nan") if v is None else v)
            ax.bar([j + i * width for j in range(len(workloads))], vals, width, label=d)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(workloads))], workloads)
        if log:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.legend(fontsize=7)
        p = os.path.join(outdir, f"designs_{key}.png")
        fig.tight_layout()
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    if any(r["sweep"] for r in rows):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, (key, values) in zip(axes, SWEEP):
            default = 30 if key == "ttl_s" else 10
            xs = sorted(set(values) | {default})
            for m in ("split_precision", "split_recall"):
                ys = [agg(rows, "rfc-v3", SWEEP_WORKLOAD, m) if x == default else
                      agg(rows, "rfc-v3", SWEEP_WORKLOAD, m, sweep=key, params={key: x}) for x in xs]
                ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", label=m)
            ax.set_xscale("log")
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.minorticks_off()
            ax.set_xlabel(key)
            ax.legend(fontsize=7)
        fig.suptitle("rfc-v3 on guest-db: sensitivity")
        p = os.path.join(outdir, "designs_sensitivity.png")
        fig.tight_layout()
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    return paths


# --- the command ------------------------------------------------------------------------------------
def main(args, progress=None) -> int:
    names = args.design or list(DESIGNS)
    for d in names:
        if d not in DESIGN_MODULES:
            print(f"damond reproduce designs: unknown design {d!r} (one of {', '.join(DESIGNS)})", file=sys.stderr)
            return 2
        if not available(d):
            print(f"damond reproduce designs: design {d} is listed but damond/reproduce/designs/"
                  f"{DESIGN_MODULES[d]}.py is not in this tree; run the others with --design", file=sys.stderr)
            return 2
    wls = args.workload or list(WORKLOADS)
    for w in wls:
        if w not in WORKLOADS:
            print(f"damond reproduce designs: unknown workload {w!r} (one of {', '.join(WORKLOADS)})", file=sys.stderr)
            return 2
    if args.seeds < 1 or args.jobs < 1:
        print("damond reproduce designs: --seeds and --jobs must be >= 1", file=sys.stderr)
        return 2
    if "none" not in names:
        names.append("none")            # walk_ns_added is measured against it
    ts = tasks(args.seeds, tuple(d for d in DESIGNS if d in names), tuple(w for w in WORKLOADS if w in wls),
               duration_s=args.duration)
    try:
        rows = run_tasks(ts, jobs=args.jobs, cluster=args.cluster, progress=progress)
    except RuntimeError as e:
        print(f"damond reproduce designs: {e}", file=sys.stderr)
        return 2
    figures = plots(rows, args.plots) if args.plots else []
    for p in figures:
        print(f"damond reproduce: wrote {p}", file=sys.stderr)
    if args.doc:
        d = os.path.dirname(os.path.abspath(args.doc))
        os.makedirs(d, exist_ok=True)
        with open(args.doc, "w") as f:
            f.write(doc(rows, [os.path.relpath(os.path.abspath(p), d) for p in figures]))
        print(f"damond reproduce: wrote {args.doc}", file=sys.stderr)
    if args.json:
        print(json.dumps({"experiment": "designs", "runs": rows}, indent=1))
    else:
        sys.stdout.write(table(rows))
    return 0
