"""Under `damond exec`, a script's `./workload &` is monitored as the kernel would: its pid
goes into pid_target as is, the pages it keeps touching are reported accessed and the
others not, and the kdamond turns itself off once the program is gone."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path



REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCRIPT = r"""
set -e
A=/sys/kernel/mm/damon/admin/kdamonds
C=$A/0/contexts/0
"$PROG" 32 8 none 0 > "$OUT" &
pid=$!
while [ ! -s "$OUT" ]; do sleep 0.05; done
read addr size cpid < "$OUT"
a=$(printf '%d' 0x$addr)
echo 1 > $A/nr_kdamonds
echo 1 > $A/0/contexts/nr_contexts
echo fvaddr > $C/operations
echo 1 > $C/targets/nr_targets
echo $pid > $C/targets/0/pid_target
echo 2 > $C/targets/0/regions/nr_regions
echo $a > $C/targets/0/regions/0/start
echo $((a + 8388608)) > $C/targets/0/regions/0/end
echo $((a + 12582912)) > $C/targets/0/regions/1/start
echo $((a + 29360128)) > $C/targets/0/regions/1/end
echo 1 > $C/schemes/nr_schemes
echo 18446744073709551615 > $C/schemes/0/access_pattern/sz/max
echo 4294967295 > $C/schemes/0/access_pattern/nr_accesses/max
echo 4294967295 > $C/schemes/0/access_pattern/age/max
echo on > $A/0/state
sleep 1
echo update_schemes_tried_regions > $A/0/state
echo "addr $a"
for r in $C/schemes/0/tried_regions/[0-9]*; do
  echo "region $(cat $r/start) $(cat $r/end) $(cat $r/nr_accesses)"
done
kill $pid; wait $pid || true
i=0
while [ "$(cat $A/0/state)" = on ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo "state $(cat $A/0/state)"
"""


def test_script_workload_under_exec(need_exec, tmp_path):
    exe = tmp_path / "touch"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "touch.c")], check=True)
    cfg = tmp_path / "m.toml"
    cfg.write_text('seed = 1\n[machine]\nmemory = "4G"\nnr_cpus = 2\nnuma_nodes = 1\n[khugepaged]\nenabled = false\n')
    env = dict(os.environ, PYTHONPATH=str(REPO), PROG=str(exe), OUT=str(tmp_path / "addr"))
    p = subprocess.run([sys.executable, "-m", "damond", "exec", "--config", str(cfg), "--", "sh", "-c", SCRIPT],
                       env=env, text=True, capture_output=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [ln.split() for ln in p.stdout.splitlines()]
    a = int(next(ln[1] for ln in lines if ln[0] == "addr"))
    regs = [tuple(map(int, ln[1:])) for ln in lines if ln[0] == "region"]
    hot = [r for r in regs if r[1] <= a + (8 << 20)]
    cold = [r for r in regs if r[0] >= a + (12 << 20)]
    assert hot and cold and len(hot) + len(cold) == len(regs), regs
    assert all(r[2] > 0 for r in hot) and all(r[2] == 0 for r in cold), regs
    assert ["state", "off"] in lines
