"""Fixtures shared by every room's tests: a real damond mount in a temporary directory."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import DamondProcess  # noqa: E402


def _need_fuse():
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")


@pytest.fixture
def damond(tmp_path):
    """The real daemon (embedded default config) mounted at tmp_path/sys; yields DamondProcess."""
    _need_fuse()
    with DamondProcess(tmp_path / "sys") as d:
        yield d


@pytest.fixture
def admin(damond):
    return damond.admin


@pytest.fixture
def fake_damond(tmp_path):
    """The real front over tests/fs/fakes.py (no engine, no machine)."""
    _need_fuse()
    with DamondProcess(tmp_path / "sys", fake=True) as d:
        yield d
