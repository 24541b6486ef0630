"""After nr_* create/destroy cycles the daemon's RSS comes back to within 10 % of where it
was (tree nodes, dict tables and glibc arenas are given back), through a real mount."""
from __future__ import annotations

import time

from tests.conftest import _need_fuse
from tests.helpers import DamondProcess, write

SMALL = '''seed = 1
[machine]
memory = "256M"
[[workload]]
kind = "uniform"
size = "32M"
'''


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_rss_returns_after_nr_cycles(tmp_path):
    """Baseline after one warm-up round of each cycle (the FUSE loop's worker threads and
    their buffers exist from then on: a pool, not kept data); then three more rounds of the
    issue's nr_schemes 4000 -> 0 and of a mixed kdamonds/targets/regions/schemes cycle."""
    _need_fuse()
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    with DamondProcess(tmp_path / "sys", config=cfg) as d:
        k = d.admin / "kdamonds"
        write(k / "nr_kdamonds", "1")
        write(k / "0/contexts/nr_contexts", "1")
        c = k / "0/contexts/0"

        def schemes_cycle() -> float:
            write(c / "schemes/nr_schemes", "4000")
            peak = rss_mb(d.proc.pid)
            write(c / "schemes/nr_schemes", "0")
            return peak

        def mixed_cycle() -> float:
            write(k / "nr_kdamonds", "20")
            for i in range(0, 20, 4):
                write(k / f"{i}/contexts/nr_contexts", "1")
                write(k / f"{i}/contexts/0/targets/nr_targets", "30")
                write(k / f"{i}/contexts/0/schemes/nr_schemes", "30")
                write(k / f"{i}/contexts/0/targets/0/regions/nr_regions", "200")
            peak = rss_mb(d.proc.pid)
            write(k / "nr_kdamonds", "1")
            write(k / "0/contexts/nr_contexts", "1")
            return peak

        time.sleep(1.0)                       # the machine's start-up (the workload populates)
        schemes_cycle()
        mixed_cycle()
        base = rss_mb(d.proc.pid)
        peaks = [f() for _ in range(3) for f in (schemes_cycle, mixed_cycle)]
        final = rss_mb(d.proc.pid)
        assert max(peaks) > base + 20, (base, peaks)      # the cycles did allocate
        assert final <= base * 1.10, f"RSS {base:.0f} MB -> {final:.0f} MB (peaks {[round(p) for p in peaks]})"
