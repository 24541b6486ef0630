"""One result line per measured figure, shared by every benchmark in bench/.

A benchmark calls `row(...)` for each figure it measures against a target; the line it
prints (`@@bench {json}`) is what `bench/run_all.py` collects into the README's performance
table and what the `bench`-marked tests assert. Nothing else parses benchmark output.
"""
from __future__ import annotations

import json
import operator

PREFIX = "@@bench "
OPS = {">=": operator.ge, "<=": operator.le}


def row(bench: str, case: str, result: str, value: float, op: str, target: float) -> dict:
    """Print and return one figure: `value` (a ratio or a measured quantity) `op` `target`."""
    r = {"bench": bench, "case": case, "result": result, "value": round(float(value), 4), "op": op,
         "target": target, "ok": bool(OPS[op](value, target))}
    print(PREFIX + json.dumps(r), flush=True)
    return r


def parse(text: str) -> list[dict]:
    """The rows printed in `text` (a benchmark's stdout)."""
    return [json.loads(ln[len(PREFIX):]) for ln in text.splitlines() if ln.startswith(PREFIX)]
