"""The `paddr` operations set: physical address ranges, checked through the reverse map.

Mirrors the monitoring half of `mm/damon/paddr.c`: regions are the user's ranges in core
units (physical address / `addr_unit`); each sample mkolds and young-checks one random
address per region through `machine.pa_mkold` / `machine.pa_young` (the rmap walk lives
in the machine). The young result of the last freshly checked folio is reused for any
later sampling address in the same folio, across samples too, as the kernel's static
state does. A paddr context with no regions monitors nothing. Actions are `actions.py`'s.
"""
from __future__ import annotations

import numpy as np

from damond.damon import core
from damond.damon.params import OpsId
from damond.damon.vaddr import draw_rows, resolve_reuse


class PaddrOps:
    """paddr: fixed physical ranges; always valid targets."""

    id = OpsId.PADDR
    init = None
    update = None
    target_valid = None

    def __init__(self):
        self._last_key: int | None = None     # __damon_pa_check_access statics
        self._last_young = False
        self._paddrs: dict[int, tuple] = {}   # id(target) -> (its sampling_addr, those * addr_unit)

    def _pa(self, t, unit) -> np.ndarray:
        """The physical sampling addresses of t: one read-only array from mkold to young (the
        machine then reuses the sample's translation without comparing)."""
        sa = t.regions.sampling_addr
        c = self._paddrs.get(id(t))
        if c is not None and c[0] is sa:
            return c[1]
        if unit != 1:
            pa = sa * unit
        else:
            pa = sa if not sa.flags.writeable else sa.view()    # a read-only view of the draw
        pa.setflags(write=False)
        self._paddrs[id(t)] = (sa, pa)
        return pa

    def prepare_access_checks(self, ctx) -> None:
        unit = np.uint64(ctx.addr_unit)
        self._paddrs.clear()
        for t in ctx.targets:
            r = t.regions
            if not len(r):
                continue
            r.sampling_addr = draw_rows(ctx.rng, r.start, r.end, 1)[0]     # = rng.integers(start, end)
            ctx.machine.pa_mkold(self._pa(t, unit))

    def check_accesses(self, ctx) -> None:
        unit = np.uint64(ctx.addr_unit)
        for t in ctx.targets:
            r = t.regions
            if not len(r):
                continue
            paddrs = self._pa(t, unit)
            young, fsz = ctx.machine.pa_young(paddrs)
            acc, self._last_key, self._last_young = resolve_reuse(
                np.asarray(young, dtype=bool), np.asarray(fsz), paddrs,
                first_is_fresh=False, last_key=self._last_key, last_young=self._last_young)
            core.update_access_rate(r, acc, ctx.attrs)


core.register_ops(PaddrOps)
