"""Fixtures shared by the tests of `damond exec` with real programs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from damond.host import tracing


@pytest.fixture
def need_exec():
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")
    if not Path("/sys/kernel/mm/damon").is_dir():
        pytest.skip("this kernel has no /sys/kernel/mm/damon to hide")
    if tracing.preload_path() is None:
        pytest.skip("tracer not built")
