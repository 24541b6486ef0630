"""The front over the real System (engine, machine, SPE files) through `damond mount`:
`on` really starts a kdamond on an emulated process, staging holds until `commit`,
update commands fill the files, `off` stops it, and the tree shape is the fake's."""
import os

from tests.helpers import read, write


def test_on_commit_update_off(damond):
    a = damond.admin / "kdamonds"
    pid = read(damond.root / "damond/processes").split()[0]
    write(a / "nr_kdamonds", "1")
    write(a / "0/contexts/nr_contexts", "1")
    c = a / "0/contexts/0"
    write(c / "targets/nr_targets", "1")
    write(c / "targets/0/pid_target", pid)
    write(c / "schemes/nr_schemes", "1")
    for f, v in (("sz/max", "18446744073709551615"), ("nr_accesses/max", "100"), ("age/max", "4294967295")):
        write(c / "schemes/0/access_pattern" / f, v)
    write(a / "0/state", "on")
    assert read(a / "0/state") == "on\n" and int(read(a / "0/pid")) > 0
    write(c / "schemes/0/action", "split")
    write(c / "schemes/0/target_order", "9")
    assert read(c / "schemes/0/target_order") == "9\n"        # staged only
    write(a / "0/state", "commit")
    assert read(c / "schemes/0/target_order") == "2\n" and read(c / "schemes/0/hot_threshold") == "30\n"
    write(a / "0/state", "update_schemes_tried_regions")
    total = int(read(c / "schemes/0/tried_regions/total_bytes"))
    regions = [d for d in os.listdir(c / "schemes/0/tried_regions") if d.isdigit()]
    assert total > 0 and regions
    assert sum(int(read(c / f"schemes/0/tried_regions/{r}/end")) - int(read(c / f"schemes/0/tried_regions/{r}/start"))
               for r in regions) == total
    write(a / "0/state", "update_schemes_stats")
    assert int(read(c / "schemes/0/stats/nr_tried")) > 0
    write(a / "0/state", "off")
    assert read(a / "0/state") == "off\n" and read(a / "0/pid") == "-1\n"
    assert {"spe_feed", "spe_stats"} <= set(os.listdir(damond.root / "kernel/debug/damon"))
