"""The documented pipeline through a real mount:
`damond spe-record ... | damond spe-hist --feed > MOUNT/kernel/debug/damon/spe_feed`."""
import subprocess
import sys

from tests.helpers import REPO

DBG = "kernel/debug/damon"


def test_record_hist_feed_pipeline(damond):
    root = damond.root
    py = f"{sys.executable} -m damond"
    cmd = (f"{py} spe-record --mount {root} --duration 1 --period 65536 -F phys_addr,event,tid,time,cpu,comm "
           f"> {root.parent}/rec.txt && {py} spe-hist --feed < {root.parent}/rec.txt > {root.parent}/feed.txt && "
           f"cat {root.parent}/feed.txt > {root}/{DBG}/spe_feed")
    r = subprocess.run(["sh", "-c", cmd], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    feed = (root.parent / "feed.txt").read_text().splitlines()
    assert feed, r.stderr
    total = sum(int(line.split()[1]) for line in feed)
    rec_lines = (root.parent / "rec.txt").read_text().count(" memory: ")
    assert total == rec_lines
    stats = (root / DBG / "spe_feed_stats").read_text()
    assert f"lines={len(feed)}\n" in stats and "malformed=0\n" in stats
    spe = (root / DBG / "spe_stats").read_text()
    recorded = int(stats.split("recorded_accesses=")[1].split()[0])
    dropped = int(stats.split("dropped_accesses=")[1].split()[0])
    assert recorded + dropped == total
    assert spe.startswith("nr_entries=") and f"total_accesses={recorded}\n" in spe.splitlines()[0] + "\n"


def test_documented_pipe_at_default_period(damond):
    """`damond spe-record --mount M --duration 2 -F +phys_addr | damond spe-hist --feed > M/.../spe_feed`
    through a real `|` in sh, default period and fields: every record reaches spe_feed as
    an access, recorded or counted as dropped (the tree holds 1024 THPs)."""
    root = damond.root
    py = f"{sys.executable} -m damond"
    cmd = f"{py} spe-record --mount {root} --duration 2 -F +phys_addr | {py} spe-hist --feed > {root}/{DBG}/spe_feed"
    r = subprocess.run(["sh", "-c", cmd], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    records = int(r.stderr.split("damond spe-record: ")[1].split()[0])
    assert records > 1000, r.stderr
    assert f", {records} records (one `memory` line each)" in r.stderr
    stats = dict(line.split("=", 1) for line in (root / DBG / "spe_feed_stats").read_text().split()[1:])
    n = {k: int(v) for k, v in stats.items() if k != "parser"}
    assert n["lines"] > 0 and n["malformed"] == 0 and n["lines"] == n["recorded"] + n["dropped_full"]
    assert n["recorded_accesses"] + n["dropped_accesses"] == records
    head = (root / DBG / "spe_stats").read_text().splitlines()[0]
    assert head.endswith(f" total_accesses={n['recorded_accesses']}")
