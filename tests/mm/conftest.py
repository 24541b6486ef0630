"""Helpers for the machine tests: build a Machine from a small TOML snippet."""
from __future__ import annotations

import numpy as np
import pytest

from damond.config import Config
from damond.mm.machine import Machine

KB, MB, GB = 1 << 10, 1 << 20, 1 << 30


def machine(toml: str, name: str = "<test>") -> Machine:
    return Machine.from_config(Config.from_text(toml, name))


def exact_mmap(size: str = "4M", thp: str = "always", extra: str = "", tlb: str = "") -> tuple[Machine, int, int]:
    """An exact-TLB machine with one idle process mapping `size`; returns (m, pid, start)."""
    m = machine(f"""
[machine]
memory = "64M"
[machine.tlb]
model = "exact"
{tlb}
[thp]
enabled = "{thp}"
{extra}
[khugepaged]
enabled = false
[[workload]]
kind = "mmap"
size = "{size}"
""")
    pid = m.processes()[0].pid
    v = big_vma(m, pid)
    return m, pid, v.start


def big_vma(m: Machine, pid: int):
    return max(m.process(pid).vmas(), key=lambda v: v.end - v.start)


def addrs(*a) -> np.ndarray:
    return np.array(a, np.uint64)


@pytest.fixture
def mk():
    return machine
