"""Design (d), age: SJ's alternative without SPE (timing-and-designs-facts.md 2.1). Hot is
what DAMON saw accessed for a while, `nr_accesses >= 1` and `age >= age_min`
aggregations (the negative-idle tail of DAMON_STAT's memory_idle_ms_percentiles selects the
same regions); the `split` scheme (target_order 2) takes what stayed idle as long,
`nr_accesses 0..0` and `age >= age_min`, and keeps the rest whole.
"""
from __future__ import annotations

from damond.reproduce.designs.base import APPLY_US, Design, stage_context, tried_bytes

BIG = (1 << 32) - 1


class Age(Design):
    name = "age"
    ops = "vaddr"          # the operations set; perf_event.py's subclass swaps only this

    def __init__(self, **params):
        super().__init__(**params)
        self.age_min = int(params.get("age_min", 10))       # 1 s at 100 ms aggregations

    def setup(self, s, pid):
        stage_context(s, pid, [dict(action="stat", nr_accesses=(1, BIG), age=(self.age_min, BIG)),
                               dict(action="split", target_order=2, nr_accesses=(0, 0), age=(self.age_min, BIG),
                                    apply_interval_us=APPLY_US),
                               dict(action="stat")], ops=self.ops)

    def reported_hot_bytes(self, s, pid):
        return tried_bytes(s, 3)


DESIGN = Age
