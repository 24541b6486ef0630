"""damond's own control files over the real machine: spawn takes a [[workload]] table
on one line (TOML values), processes lists it with its kind, kill ends it."""
from __future__ import annotations

import errno

import pytest

from tests.helpers import read, write


def test_spawn_typed_values_list_and_kill(damond):
    d = damond.root / "damond"
    write(d / "spawn", "access_memory nr_regions=2 sz_region=1M access_time_ms=100 repeat=true\n")
    pid = int(read(d / "spawn"))
    assert f"{pid} " in read(d / "processes")
    line = next(x for x in read(d / "processes").splitlines() if x.startswith(f"{pid} "))
    assert line.split()[2] == "access_memory"
    assert (damond.root / f"proc/{pid}/maps").exists()
    write(d / "kill", str(pid))
    assert not (damond.root / f"proc/{pid}").exists()


def test_spawn_rejects_a_bad_table_with_einval(damond):
    d = damond.root / "damond"
    with pytest.raises(OSError) as e:
        write(d / "spawn", "access_memory nr_regions=2 sz_region=1M access_time_ms=100 repeat=maybe\n")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        write(d / "spawn", "nosuchkind size=1M\n")
    assert e.value.errno == errno.EINVAL
