"""Under `damond exec`, a real program is a twin before anyone names its pid (its smaps shows
the emulated THP policy's AnonHugePages), `perf record -e arm_spe_0/.../ -p PID` (and
`-a`) records emulated SPE samples only where it really touches, with the physical address its pagemap
shows, and the RFC's control-plane flow (SPE histogram -> spe_feed -> split scheme) splits
its sparse THPs and keeps its dense ones."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from damond.host import tracing
from damond.spe.sampler import OP_LOAD, OP_STORE, parse_records
from tests.helpers import read, write
from tests.host.test_twins import MB, Prog, mount, setup_ctx, tried

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NR_THPS, STRIDE = 4, 32
SCRIPT = r"""
set -e
A=/sys/kernel/mm/damon/admin/kdamonds
C=$A/0/contexts/0
"$PROG" $NR_THPS $STRIDE > "$W/addr" &
pid=$!
while [ ! -s "$W/addr" ]; do sleep 0.05; done
read sparse dense size cpid < "$W/addr"
echo "areas $((0x$sparse)) $((0x$dense)) $size $pid"
echo "kdamonds $(cat $A/../kdamonds/nr_kdamonds)"
dev=$(stat -c %d /sys/kernel/mm/damon/admin)
i=0                          # the twin appears unasked: its smaps becomes damond's (the admin tree's device)
while [ "$(stat -c %d /proc/$pid/smaps)" != "$dev" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo "smaps_dev $(stat -c %d /proc/$pid/smaps) admin_dev $dev waited_ds $i"
smaps_thp() {                # AnonHugePages (kB) of the VMA starting at $1
  awk -v a="$1" '/^[0-9a-f]+-/ {split($1, r, "-"); cur = r[1]} /^AnonHugePages:/ && cur == a {print $2}' /proc/$pid/smaps
}
echo "before $(smaps_thp $sparse) $(smaps_thp $dense)"
perf record -e arm_spe_0/ts_enable=1,pa_enable=1,min_latency=0/ -p $pid -o "$W/spe.data" -- sleep 2 2> "$W/rec.log"
perf script -i "$W/spe.data" -F addr,phys_addr,event > "$W/samples.txt"
"$DAMOND_PYTHON" - "$pid" "$W/samples.txt" <<'EOF'
import sys
pid, path = int(sys.argv[1]), sys.argv[2]
with open(f"/proc/{pid}/pagemap", "rb") as pm:
    for line in open(path):
        f = line.split()
        if f[-3] != "memory:":
            continue
        va, pa = int(f[-2], 16), int(f[-1], 16)
        pm.seek(va // 4096 * 8)
        e = int.from_bytes(pm.read(8), "little")
        print("sample", va, pa, (e & ((1 << 55) - 1)) if e >> 63 else -1)
EOF
perf record -e arm_spe_0/ts_enable=1,pa_enable=1/ -c 16384 -a -o "$W/all.data" -- sleep 1 2> "$W/rec_all.log"
perf script -i "$W/all.data" -F pid,addr,event | awk -v p=$pid '$1 == p && $2 == "memory:" {print "all", $3}'
perf script -i "$W/spe.data" -F phys_addr | "$DAMOND_PYTHON" -m damond spe-hist --feed > /sys/kernel/debug/damon/spe_feed
echo 1 > $A/nr_kdamonds
echo 1 > $A/0/contexts/nr_contexts
echo fvaddr > $C/operations
echo 1 > $C/targets/nr_targets
echo $pid > $C/targets/0/pid_target
echo 1 > $C/targets/0/regions/nr_regions
echo $((0x$sparse)) > $C/targets/0/regions/0/start
echo $((0x$dense + size)) > $C/targets/0/regions/0/end
echo 1 > $C/schemes/nr_schemes
echo split > $C/schemes/0/action
echo 2 > $C/schemes/0/target_order
echo 18446744073709551615 > $C/schemes/0/access_pattern/sz/max
echo 4294967295 > $C/schemes/0/access_pattern/nr_accesses/max
echo 4294967295 > $C/schemes/0/access_pattern/age/max
echo on > $A/0/state
i=0
while [ "$(smaps_thp $sparse)" != 0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.5
echo "after $(smaps_thp $sparse) $(smaps_thp $dense)"
echo off > $A/0/state
kill $pid; wait $pid || true
"""


def test_twin_spe_ctl_flow(need_exec, tmp_path):
    exe = tmp_path / "thpmix"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "thpmix.c")], check=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), PROG=str(exe), W=str(tmp_path), NR_THPS=str(NR_THPS),
               STRIDE=str(STRIDE))
    p = subprocess.run([sys.executable, "-m", "damond", "exec", "--", "bash", "-c", SCRIPT],
                       env=env, text=True, capture_output=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    out = [ln.split() for ln in p.stdout.splitlines()]
    first = {ln[0]: ln[1:] for ln in out if ln[0] not in ("sample", "all")}
    sparse, dense, size, _ = map(int, first["areas"])
    thp_kb = str(NR_THPS * 2048)
    # a twin before any pid_target write: smaps is damond's and shows the emulated THPs
    assert first["kdamonds"] == ["0"]
    assert first["smaps_dev"][0] == first["smaps_dev"][2], first
    assert first["before"] == [thp_kb, thp_kb], p.stdout
    # SPE samples: only the pages the program keeps touching, at its exact offset, with the
    # physical address of the twin's page (its pagemap)
    samples = [tuple(map(int, ln[1:])) for ln in out if ln[0] == "sample"]
    in_sparse = [s for s in samples if sparse <= s[0] < sparse + size]
    in_dense = [s for s in samples if dense <= s[0] < dense + size]
    assert len(in_dense) > 100 and in_sparse, (len(samples), len(in_sparse), len(in_dense))
    assert all((va - sparse) % (STRIDE * 4096) == 64 for va, _, _ in in_sparse), in_sparse[:5]
    assert all(va % 4096 == 64 for va, _, _ in in_dense)
    assert all(pa >> 12 == pfn for _, pa, pfn in in_sparse + in_dense)
    assert len({va >> 21 for va, _, _ in in_dense}) == NR_THPS
    # system-wide (-a, with the emulated workloads' records): the program's samples too, same rule
    every = [int(ln[1], 16) for ln in out if ln[0] == "all"]
    assert len(every) > 10 and all(dense <= va < dense + size and va % 4096 == 64 or
                                   sparse <= va < sparse + size and (va - sparse) % (STRIDE * 4096) == 64
                                   or not (sparse <= va < dense + size) for va in every), every[:10]
    assert sum(dense <= va < dense + size for va in every) > 10
    # SPE histogram -> spe_feed -> split: the sparse THPs are split, the dense ones kept
    assert first["after"] == ["0", thp_kb], p.stdout


@pytest.fixture(scope="module")
def touch(tmp_path_factory):
    exe = tmp_path_factory.mktemp("prog") / "touch"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "touch.c")], check=True)
    return exe


def test_spe_session_and_kdamond_share_a_twin(tmp_path, touch):
    """An SPE session on a twin (damond/spe_record, as perf's -p writes it) while a kdamond
    monitors it: both use the program's one batch of protected units. DAMON still reports the
    hot 8 MiB accessed and the cold 16 MiB not, and the SPE records all fall in the hot part,
    at the offset the program touches, with a physical address in the same page offset."""
    with mount(tmp_path) as d:
        prog = Prog(touch, d.root, 32, 8)
        try:
            a = prog.addr
            c = setup_ctx(d.admin, prog.pid, "fvaddr", [(a, a + 8 * MB), (a + 12 * MB, a + 28 * MB)])
            write(d.admin / "kdamonds/0/state", "on")
            fd = os.open(d.root / "damond/spe_record", os.O_RDWR)
            try:
                os.write(fd, f"pa_enable=1 pid={prog.pid}".encode())
                hot_seen = 0
                for _ in range(4):
                    time.sleep(0.35)
                    regs = tried(d.admin, c)
                    hot = [r for r in regs if r[1] <= a + 8 * MB]
                    cold = [r for r in regs if r[0] >= a + 12 * MB]
                    assert hot and cold and all(r[2] == 0 for r in cold), regs
                    hot_seen += all(r[2] > 0 for r in hot)
                raw = b""
                while chunk := os.read(fd, 1 << 20):
                    raw += chunk
            finally:
                os.close(fd)
            assert hot_seen >= 2, regs
            recs, comms = parse_records(raw)
            mine = recs[recs["pid"] == prog.pid]
            assert len(mine) > 50 and len(mine) == len(recs), (len(mine), len(recs))
            va = mine["va"].astype(np.int64)
            assert ((va >= a) & (va < a + 8 * MB)).all(), [hex(v) for v in va[:10]]
            assert (va % 4096 == 0).all()                      # touch.c touches byte 0 of each page
            assert (mine["pa"] & 0xFFF == 0).all() and (mine["pa"] != 0).all()
            assert set(mine["op"].tolist()) <= {OP_LOAD, OP_STORE}
            if platform.machine() == "x86_64":                 # the fault's error code: p[i]++ faults as a write
                assert (mine["op"] == OP_STORE).all()
            assert prog.p.poll() is None
        finally:
            prog.stop()


@pytest.fixture(scope="module")
def grow(tmp_path_factory):
    exe = tmp_path_factory.mktemp("prog") / "grow"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "grow.c")], check=True)
    return exe


def _anon_huge_kb(path: Path) -> int:
    return sum(int(ln.split()[1]) for ln in path.read_text().splitlines() if ln.startswith("AnonHugePages:"))


def test_proc_read_sees_what_the_program_just_mapped(tmp_path, grow):
    """A traced program becomes a twin without any pid_target write, and a /proc/PID read
    right after the program mapped and wrote more memory already shows it (the read brings
    the twin up to date first), as the kernel's smaps_rollup would."""
    with mount(tmp_path) as d:
        p = subprocess.Popen([str(grow)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=tracing.child_env(dict(os.environ), str(d.root)))
        try:
            p.stdout.readline()
            rollup = d.root / f"proc/{p.pid}/smaps_rollup"
            deadline = time.monotonic() + 10
            while not rollup.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert read(d.admin / "kdamonds/nr_kdamonds").strip() == "0"
            assert _anon_huge_kb(rollup) == 8192                  # the emulated policy: 4 PMD folios
            for n in (2, 3, 4):
                p.stdin.write("more\n")
                p.stdin.flush()
                p.stdout.readline()
                assert _anon_huge_kb(rollup) == n * 8192
        finally:
            p.kill()
            p.wait()
