"""Design (c), a `user_input` quota-goal loop (timing-and-designs-facts.md 2.4), at feature
level 7.1+rfc (the first with quotas/goal_tuner). Userspace decides how much, DAMOS which:
one `split` scheme (target_order 2, every region: nr_accesses 0..max) whose quota has one
`user_input` goal and the `temporal` tuner (full quota until the goal is met, then none).
Each period, once `window_s` (10 s, the RFC's SPE interval) of samples is in, the control
loop builds spe_hist's candidate view of the last `window_s` of SPE samples (a sampled
THP is sparse when fewer than 30 % of its subpages reach 1/10 of its peak), and writes
target_value = sparse THPs x 2 MiB (what it wants split), current_value = THP bytes split
so far (AnonHugePages / ShmemPmdMapped drop since setup) and quotas/bytes = what is left
to split (the temporal tuner's full quota; unset, it is unlimited and one round splits
whole regions), then `commit`. Which regions get split is DAMOS's quota priority (hottest
first for split), not the SPE data: nothing feeds spe_feed, so the split handler splits
what the quota lets through.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from damond.reproduce.common import stat_schemes
from damond.reproduce.designs.base import APPLY_US, Design, stage_context, tried_bytes
from damond.reproduce.session import CTX

PMD = 2 << 20
SPARSE_PCT = 30


def thp_kb(s, pid: int) -> int:
    kb = 0
    for line in s.read(f"proc/{pid}/smaps_rollup").splitlines():
        if line.startswith(("AnonHugePages:", "ShmemPmdMapped:")):
            kb += int(line.split()[1])
    return kb


def sparse_thps(pfns: np.ndarray, counts: np.ndarray, pct: int = SPARSE_PCT) -> int:
    """spe_hist --threshold pct: sampled THPs whose hot subpages (>= max(peak/10, 1)) are < pct %."""
    if not len(pfns):
        return 0
    thp = pfns >> np.uint64(9)
    keys, start = np.unique(thp, return_index=True)
    peak = np.maximum.reduceat(counts, start)
    sig = np.maximum(peak // 10, 1)
    hot = np.add.reduceat((counts >= np.repeat(sig, np.diff(np.append(start, len(counts))))).astype(np.int64), start)
    return int(np.count_nonzero(hot * 100 // 512 < pct))


class UserInputGoal(Design):
    name = "user-input-goal"
    feature_level = "7.1+rfc"
    uses_spe = True

    def __init__(self, **params):
        super().__init__(**params)
        self.window_s = params.get("window_s", 10)
        self.recent: deque = deque()

    def setup(self, s, pid):
        self.thp0_kb = thp_kb(s, pid)
        stage_context(s, pid, stat_schemes(1) + [dict(action="split", target_order=2, apply_interval_us=APPLY_US)])
        q = f"{CTX}/schemes/2/quotas"
        s.write(f"{q}/reset_interval_ms", 1000)
        s.write(f"{q}/goal_tuner", "temporal")
        s.write(f"{q}/goals/nr_goals", 1)
        s.write(f"{q}/goals/0/target_metric", "user_input")
        s.write(f"{q}/goals/0/target_value", 1)          # met until the first decision: nothing split
        s.write(f"{q}/goals/0/current_value", 1)
        s.state("commit")

    def feed_spe(self, s, pid, pfns, counts):
        self.recent.append((pfns, counts))
        while len(self.recent) > self._window():
            self.recent.popleft()

    def _window(self) -> int:
        return max(int(self.window_s * 1e6 // self.control_period_us), 1)

    def control(self, s, pid):
        if len(self.recent) < self._window():       # the first decision after a full window, as rfc-v3's
            return
        pf = np.concatenate([p for p, _ in self.recent])
        ct = np.concatenate([c for _, c in self.recent])
        u, inv = np.unique(pf, return_inverse=True)
        cnt = np.bincount(inv, weights=ct.astype(np.float64)).astype(np.uint64)
        want = sparse_thps(u, cnt) * PMD
        done = max(self.thp0_kb - thp_kb(s, pid), 0) * 1024
        q = f"{CTX}/schemes/2/quotas"
        s.write(f"{q}/goals/0/target_value", max(want, 1))
        s.write(f"{q}/goals/0/current_value", done if want else 1)
        # temporal's "full quota" is quotas/bytes, or no limit at all: DAMOS applies whole regions, so
        # without a cap the first round splits every region it reaches (on uniform: all 256 THPs for 6 sparse)
        s.write(f"{q}/bytes", max(want - done, PMD))
        s.state("commit")

    def reported_hot_bytes(self, s, pid):
        return tried_bytes(s, 3)


DESIGN = UserInputGoal
