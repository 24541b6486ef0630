"""Run `damond demo` and copy its summary block into README.md, between
`<!-- demo-summary:begin -->` and `<!-- demo-summary:end -->`, with the date of the run.

    python bench/demo_readme.py [--seconds S]
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BEGIN, END = "<!-- demo-summary:begin -->", "<!-- demo-summary:end -->"


def summary(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    i = lines.index("== Summary: DAMON vs ground truth ==")
    return [ln for ln in lines[i:i + 4] if not ln.startswith("#")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="passed to damond demo (its default)")
    a = ap.parse_args()
    p = subprocess.run([sys.executable, "-m", "damond", "demo", "--seconds", f"{a.seconds:g}"], cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=600)
    if p.returncode:
        print(p.stdout[-3000:] + p.stderr, file=sys.stderr)
        return 1
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    block = "\n".join([BEGIN, "```", *summary(p.stdout), "```",
                       f"(`damond demo --seconds {a.seconds:g}`, {now}; "
                       "the second figure varies from run to run with how far the split got)",
                       END])
    text = README.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(head + block + tail)
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
