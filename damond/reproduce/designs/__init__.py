"""`damond reproduce designs`: the RFC's split design and the alternatives its reviewer
proposed, each run on the same emulated machine, workloads and seeds (issue 11).

A design is a `base.Design` subclass in its own module here, registered in DESIGNS by its
JSON name. The runner (runner.py) builds one `Session` per design x workload x seed,
calls the design's hooks, and measures every metric the same way for every design.
"""
from __future__ import annotations

import importlib

# JSON name -> module in this package holding one Design subclass named DESIGN
DESIGN_MODULES: dict[str, str] = {
    "rfc-v3": "rfc_v3",
    "v2-addr-filter": "v2_addr_filter",
    "user-input-goal": "user_input_goal",
    "age": "age",
    "perf-event": "perf_event",
    "none": "none",
}


def design(name: str):
    """The Design class for JSON name `name`."""
    if name not in DESIGN_MODULES:
        raise ValueError(f"unknown design {name!r} (one of {', '.join(DESIGN_MODULES)})")
    return importlib.import_module(f"damond.reproduce.designs.{DESIGN_MODULES[name]}").DESIGN
