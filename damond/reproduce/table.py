"""The text table `damond reproduce` prints: one block per experiment, columns case, the
RFC's figure, damond's figure, counted truth, verdict, and why where they differ."""
from __future__ import annotations

from damond.reproduce.common import Result

HEAD = ("case", "RFC", "damond", "counted truth", "verdict", "why")


def render(results: list[Result]) -> str:
    rows = [(r.case, r.rfc, r.damond, r.truth, r.verdict, r.why) for res in results for r in res.rows]
    widths = [max([len(h)] + [len(x[i]) for x in rows]) for i, h in enumerate(HEAD[:-1])]
    out = []
    for res in results:
        out.append(f"== {res.experiment} ==")
        out.append("  ".join(h.ljust(w) for h, w in zip(HEAD, widths)) + "  " + HEAD[-1])
        for r in res.rows:
            cells = (r.case, r.rfc, r.damond, r.truth, r.verdict)
            out.append(("  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + r.why).rstrip())
        out.extend(res.notes)
        out.append("")
    n = sum(len(res.rows) for res in results)
    tally = {v: sum(1 for res in results for r in res.rows if r.verdict == v) for v in ("match", "differs", "n/a")}
    out.append(f"{n} rows: {tally['match']} match, {tally['differs']} differ (see why), {tally['n/a']} without "
               "an RFC figure to compare")
    return "\n".join(out) + "\n"
