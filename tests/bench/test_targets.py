"""Every performance target, asserted as the ratio (or quantity) its benchmark measures side
by side with its reference (`bench/*.py`, rows of bench/report.py). Deselected by default;
run with `python -m pytest -m bench` (quick sizes; `python bench/run_all.py` for the full
runs that write the README table)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from run_all import BENCHES, run_one  # noqa: E402

pytestmark = pytest.mark.bench


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_benchmark_meets_its_targets(name):
    res = run_one(name, quick=True)
    assert res["rc"] == 0 and res["rows"], res["stderr"][-2000:]
    missed = [f"{r['case']}: {r['result']} (target {r['op']} {r['target']:g})" for r in res["rows"] if not r["ok"]]
    assert not missed, f"load {res['load_before']} -> {res['load_after']}: " + "; ".join(missed)
