"""Design (a), the RFC v3 (79804f2, the fixed sign): a userspace feeder writes each
period's SPE histogram (`0xPFN COUNT` lines) into debugfs spe_feed, the in-kernel PFN tree
keeps it (TTL `ttl_s`, 1024 entries), and once the first SPE interval has been fed
(`spe_interval_s`, damon_spe_ctl.sh's 10 s) a `split` scheme is committed: target_order
2, hot_threshold 30, nr_accesses 0..1000 (ACCESS_MIN 0), sz 4 KiB..1 TiB, applied every
1 s (APPLY_US; the RFC leaves apply_interval_us at the 100 ms aggregation, which walks
every THP ten times a second here for the same outcome). A THP is kept when its heatmap (16 KiB chunks, hot when >= 1/`peak_divisor`
of the peak chunk) has >= hot_threshold % hot chunks; a THP without SPE data is split
unconditionally, as the RFC does. Reports what DAMON's nr_accesses >= 1 `stat` scheme
sees after the splits (T2's "after split" figure).
"""
from __future__ import annotations

from damond.reproduce.common import stat_schemes
from damond.reproduce.designs.base import APPLY_US, Design, stage_context, tried_bytes


class RfcV3(Design):
    name = "rfc-v3"
    uses_spe = True

    def __init__(self, **params):
        super().__init__(**params)
        self.ttl_s = params.get("ttl_s", 30)
        self.peak_divisor = int(params.get("peak_divisor", 10))
        self.hot_threshold = int(params.get("hot_threshold", 30))
        self.spe_interval_s = params.get("spe_interval_s", 10)
        self.fed_us = 0
        self.committed = False

    def config_extra(self):
        return f"[spe]\nttl_s = {self.ttl_s}\npeak_divisor = {self.peak_divisor}\n"

    def setup(self, s, pid):
        self.start_us = s.now_us()
        stage_context(s, pid, stat_schemes(1))

    def control(self, s, pid):
        if self.committed or s.now_us() - self.start_us < self.spe_interval_s * 1_000_000:
            return
        s.stage_schemes(stat_schemes(1) + [dict(action="split", target_order=2, hot_threshold=self.hot_threshold,
                                                nr_accesses=(0, 1000), sz=(4096, 1 << 40), age=(0, 1 << 20),
                                                apply_interval_us=APPLY_US)])
        s.state("commit")
        self.committed = True

    def reported_hot_bytes(self, s, pid):
        return tried_bytes(s, 3 if self.committed else 2)


DESIGN = RfcV3
