"""The T1 cases on an x86 preset (SJ's review: "x86 has the same issue"): the Accessed bit
of x86_64 is set only on a page walk too, and ptep_test_and_clear_young() does not flush
the TLB, so a working set inside the STLB's reach is as invisible as on arm64. With
[machine.tlb] flush_on_mkold (DAMON's mkold also invalidating the TLB entry) the next
access walks and sets the bit again: the 16 MB case becomes visible.
"""
from __future__ import annotations

from damond.reproduce import t1
from damond.reproduce.common import MiB, Options, Result, Row

X86 = ("x86-skylake", "x86-zen2")


def run(opts: Options) -> Result:
    preset = opts.machine if opts.machine in X86 else "x86-skylake"
    todo = t1.CASES if not opts.reduced else [c for c in t1.CASES if c[1] <= 512 * MiB]
    cases = []
    for i, (name, ws, thp, _) in enumerate(todo):
        cases.append(t1.run_case(opts, name, ws, thp, preset, intervals=3 if opts.reduced else 10))
        opts.progress((i + 1) / (len(todo) + 1))
    flush = t1.run_case(opts, "16 MB THP, flush_on_mkold", 16 * MiB, "always", preset, tlb="flush_on_mkold = true",
                        intervals=3 if opts.reduced else 10)
    opts.progress(1.0)
    blind = {c["name"]: c["page_mapping"] == "pmd" and c["working_set_bytes"] <= 512 * MiB for c in cases}
    rfc = {n: "same as arm64 (SJ)" for n, _, _, _ in t1.CASES}
    rows = [Row(f"{preset}: {r.case}", r.rfc, r.damond, r.truth, r.verdict, r.why)
            for r in t1.rows_for(cases, blind, rfc)]
    shown, v, why = t1.verdict(flush, expect_blind=False)
    rows.append(Row(f"{preset}: 16 MB THP, flush_on_mkold", "visible (SJ: a TLB flush on mkold fixes it)", shown,
                    t1.human(flush["truth_bytes"]) + " touched / 100 ms", v, why))
    res = Result("x86", rows)
    res.json = {"experiment": "x86", "machine": preset, "cases": cases,
                "flush_on_mkold_nr_tried": flush["nr_tried"], "flush_on_mkold_nr_regions": flush["nr_regions"]}
    return res
