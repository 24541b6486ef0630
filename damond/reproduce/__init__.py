"""`damond reproduce`: the RFC's tables rerun on the emulated machine.

Each experiment module (t1, t2, t4, t5, e2e, methodology, x86, age) builds its machine
from the daemon's own code, drives DAMON through the served sysfs tree on virtual time
(session.py) and returns a `common.Result`: table rows (case, the RFC's figure, damond's
figure, counted truth, verdict, why), the --json object and data for the plots.
"""
from __future__ import annotations

import importlib

EXPERIMENTS = ("t1", "t2", "t4", "t5", "e2e", "methodology", "x86", "age")


def experiment(name: str):
    """The module of experiment `name` (one of EXPERIMENTS)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r} (one of {', '.join(EXPERIMENTS)}, all)")
    return importlib.import_module(f"damond.reproduce.{name}")
