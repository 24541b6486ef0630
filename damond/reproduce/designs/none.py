"""Design (f), none: DAMON monitors and nothing is split (the baseline). What it reports
hot is the RFC's `stat` scheme with nr_accesses >= 1, T2's THP=always figure."""
from __future__ import annotations

from damond.reproduce.common import stat_schemes
from damond.reproduce.designs.base import Design, stage_context, tried_bytes


class NoSplit(Design):
    name = "none"

    def setup(self, s, pid):
        stage_context(s, pid, stat_schemes(1))

    def reported_hot_bytes(self, s, pid):
        return tried_bytes(s, 2)


DESIGN = NoSplit
