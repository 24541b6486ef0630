"""khugepaged's split back-off (`[khugepaged] split_backoff_scans`, damond's proposal for the
split/re-collapse ping-pong): a range DAMOS split is skipped for N visits of khugepaged's scan.
On the RFC's sparse pattern (one touched 4 KiB page per 2 MiB) every split THP qualifies
for collapse again (max_ptes_none 511, one young PTE), so without back-off khugepaged undoes
DAMOS's splits; `khugepaged.recollapses` counts them."""
from __future__ import annotations

from damond.reproduce.session import Session


def run(backoff: int | None, seconds: int = 12) -> tuple[int, int, int]:
    extra = "" if backoff is None else f"split_backoff_scans = {backoff}\n"
    s = Session(f"""seed = 4
[machine]
memory = "256M"
[thp]
enabled = "always"
[khugepaged]
scan_sleep_millisecs = 200
pages_to_scan = 4096
{extra}
[[workload]]
kind = "sparse-hotspot"
size = "32M"
""")
    pid = s.machine.processes()[0].pid
    s.run_until_populated(pid)
    s.stage([pid], [{"action": "split", "target_order": 2, "apply_interval_us": 1_000_000}])
    s.state("on")
    s.run(seconds * 1_000_000)
    k = s.machine.thp.khugepaged
    return k.recollapses, k.pages_collapsed, s.stats(0)["sz_applied"]


def test_default_is_no_backoff():
    assert run(None, 4) == run(0, 4)


def test_backoff_cuts_the_ping_pong():
    """16 THPs, 8 per khugepaged wake-up every 200 ms, DAMOS splitting every second: each
    range is visited every 400 ms, so a back-off of 3 visits outlasts half the re-splits."""
    without, collapsed, split = run(0)
    with_, _, split_b = run(3)
    assert without > 0 and without == collapsed          # every khugepaged collapse undid a DAMOS split
    assert with_ < without and split_b < split           # fewer collapses, so fewer re-splits
