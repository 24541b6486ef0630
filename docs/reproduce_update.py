"""Regenerate, from one full `damond reproduce all` run, docs/reproduce.txt, the README's
table (the block between the reproduce markers) and docs/reproduce-t2.png.

Run: PYTHONPATH=. python docs/reproduce_update.py   (needs matplotlib: pip install '.[plots]')
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
README = DOCS.parent / "README.md"
BEGIN, END = "<!-- reproduce:begin (docs/reproduce_update.py) -->", "<!-- reproduce:end -->"


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run([sys.executable, "-m", "damond", "reproduce", "all", "--plots", d],
                           capture_output=True, text=True, check=True)
        shutil.copy(Path(d) / "t2.png", DOCS / "reproduce-t2.png")
    (DOCS / "reproduce.txt").write_text(p.stdout)
    text = README.read_text()
    block = f"{BEGIN}\n```\n$ damond reproduce all\n{p.stdout}```\n{END}"
    new, n = re.subn(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    if n != 1:
        print(f"{README}: no reproduce block between the markers", file=sys.stderr)
        return 1
    README.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
