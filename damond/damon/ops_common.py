"""DAMOS priority scores shared by the operations sets, as `mm/damon/ops-common.c`.

Owns `damon_hot_score` / `damon_cold_score` (integer arithmetic exactly as the kernel,
vectorised over a target's regions for the quota histogram) and the per-ops choice of
which score an action uses (`damon_va_scheme_score`, `damon_pa_scheme_score`). Access
checks (mkold/young) live with the machine; this module never touches memory.
"""
from __future__ import annotations

import numpy as np

from damond.damon.params import Action, OpsId, Scheme

MAX_SCORE = 99          # DAMOS_MAX_SCORE
MAX_SUBSCORE = 100      # DAMON_MAX_SUBSCORE
MAX_AGE_IN_LOG = 32     # DAMON_MAX_AGE_IN_LOG

_VA_HOT = (Action.MIGRATE_HOT,)
_VA_COLD = (Action.PAGEOUT, Action.MIGRATE_COLD)
_PA_HOT = (Action.LRU_PRIO, Action.MIGRATE_HOT)
_PA_COLD = (Action.PAGEOUT, Action.LRU_DEPRIO, Action.MIGRATE_COLD)


def max_nr_accesses(sample_us: int, aggr_us: int) -> int:
    """damon_max_nr_accesses(): aggr/sample, at least 1."""
    return max(aggr_us // max(sample_us, 1), 1)


def hot_scores(nr_accesses: np.ndarray, ages: np.ndarray, sample_us: int, aggr_us: int,
               weight_nr_accesses: int, weight_age: int) -> np.ndarray:
    """damon_hot_score() for arrays of regions; returns int64 scores in [0, 99]."""
    nr = np.asarray(nr_accesses, dtype=np.int64)
    freq = nr * MAX_SUBSCORE // max_nr_accesses(sample_us, aggr_us)
    age_sec = (np.asarray(ages, dtype=np.int64) * int(aggr_us)) // 1_000_000
    age_sec = np.minimum(age_sec, (1 << 62))
    # bit length of age_in_sec capped at 32: the kernel's shift loop, exactly
    age_log = np.zeros(len(nr), dtype=np.int64)
    for k in range(MAX_AGE_IN_LOG):
        age_log += (age_sec >> k) > 0
    age_log = np.where(freq == 0, -age_log, age_log)
    age_sub = (age_log + MAX_AGE_IN_LOG) * MAX_SUBSCORE // MAX_AGE_IN_LOG // 2
    hot = weight_nr_accesses * freq + weight_age * age_sub
    wsum = weight_nr_accesses + weight_age
    if wsum:
        hot = hot // wsum
    return hot * MAX_SCORE // MAX_SUBSCORE


def hot_score(nr_accesses: int, age: int, sample_us: int, aggr_us: int, weight_nr_accesses: int,
              weight_age: int) -> int:
    """Scalar damon_hot_score()."""
    return int(hot_scores(np.array([nr_accesses]), np.array([age]), sample_us, aggr_us,
                          weight_nr_accesses, weight_age)[0])


def cold_score(nr_accesses: int, age: int, sample_us: int, aggr_us: int, weight_nr_accesses: int,
               weight_age: int) -> int:
    """damon_cold_score(): 99 - hot score."""
    return MAX_SCORE - hot_score(nr_accesses, age, sample_us, aggr_us, weight_nr_accesses, weight_age)


def score_kind(ops_id: OpsId, action: Action) -> str:
    """'hot', 'cold' or 'max': which score the ops set uses for an action."""
    if ops_id == OpsId.PADDR:
        return "hot" if action in _PA_HOT else "cold" if action in _PA_COLD else "max"
    return "hot" if action in _VA_HOT else "cold" if action in _VA_COLD else "max"


def scheme_scores(ops_id: OpsId, scheme: Scheme, nr_accesses: np.ndarray, ages: np.ndarray,
                  sample_us: int, aggr_us: int) -> np.ndarray:
    """get_scheme_score() of every given region (vaddr/fvaddr or paddr rules)."""
    kind = score_kind(ops_id, scheme.action)
    if kind == "max":
        return np.full(len(nr_accesses), MAX_SCORE, dtype=np.int64)
    q = scheme.quota
    hot = hot_scores(nr_accesses, ages, sample_us, aggr_us, q.weight_nr_accesses, q.weight_age)
    return hot if kind == "hot" else MAX_SCORE - hot


def scheme_score(ops_id: OpsId, scheme: Scheme, nr_accesses: int, age: int, sample_us: int,
                 aggr_us: int) -> int:
    """get_scheme_score() of one region, in plain integers (the per-region apply path)."""
    kind = score_kind(ops_id, scheme.action)
    if kind == "max":
        return MAX_SCORE
    q = scheme.quota
    freq = nr_accesses * MAX_SUBSCORE // max_nr_accesses(sample_us, aggr_us)
    age_log = min((age * aggr_us // 1_000_000).bit_length(), MAX_AGE_IN_LOG)
    if freq == 0:
        age_log = -age_log
    age_sub = (age_log + MAX_AGE_IN_LOG) * MAX_SUBSCORE // MAX_AGE_IN_LOG // 2
    hot = q.weight_nr_accesses * freq + q.weight_age * age_sub
    if q.weight_nr_accesses + q.weight_age:
        hot //= q.weight_nr_accesses + q.weight_age
    hot = hot * MAX_SCORE // MAX_SUBSCORE
    return hot if kind == "hot" else MAX_SCORE - hot
