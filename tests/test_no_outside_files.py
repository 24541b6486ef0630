"""Tests read nothing outside the repository: no test names a path under the development
host's shared folders or a home directory (reference data lives in tests/data/)."""
from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
OUTSIDE = re.compile(r"""["'](/work/|/home/|/root/|~/)""")


def test_no_test_names_a_file_outside_the_repository():
    hits = [f"{p.relative_to(TESTS)}:{no}: {line.strip()}"
            for p in sorted(TESTS.rglob("*.py")) if p != Path(__file__).resolve()
            for no, line in enumerate(p.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, "\n".join(hits)
