"""Staged tree -> params (commit.py, commit_schemes.py) and state commands (state.py),
in process over tests/fs/fakes.py: field-by-field round trips, sysfs-level validation,
the RFC's target_order/hot_threshold rewrites and index-matched copy-back."""
import errno

import pytest

from damond.damon import params
from damond.damon.params import Action, FilterType, OpsId
from damond.fs.root import build
from damond.fs.tree import ADMIN_PATH, FsError
from tests.fs.fakes import FakeKdamond, FakeSettings, FakeSystem


class T:
    """The tree plus write/read helpers by admin-relative path."""

    def __init__(self, level="6.18+rfc"):
        self.system = FakeSystem(settings=FakeSettings(feature_level=level))
        self.served = build(self.system, kdamond_factory=FakeKdamond, extras=False)
        self.tree = self.served.tree

    def node(self, rel):
        return self.tree.nodes[f"{ADMIN_PATH}/{rel}"]

    def w(self, rel, v):
        self.tree.store(self.node(rel), v.encode() if isinstance(v, str) else v)

    def r(self, rel):
        return self.tree.show(self.node(rel)).decode()

    def errno_of(self, rel, v):
        with pytest.raises(Exception) as e:
            self.w(rel, v)
        return e.value.errno


K = "kdamonds/0"
C = "kdamonds/0/contexts/0"
S = C + "/schemes/0"


@pytest.fixture
def t():
    t = T()
    t.w("kdamonds/nr_kdamonds", "1")
    t.w(K + "/contexts/nr_contexts", "1")
    t.w(C + "/operations", "vaddr")
    t.w(C + "/targets/nr_targets", "1")
    t.w(C + "/targets/0/pid_target", "100")
    t.w(C + "/schemes/nr_schemes", "1")
    return t


def kd(t):
    return t.node(K).obj


def test_on_builds_ctx_field_by_field(t):
    t.w(C + "/monitoring_attrs/intervals/sample_us", "1000")
    t.w(C + "/monitoring_attrs/intervals/aggr_us", "0x4e20")
    t.w(C + "/monitoring_attrs/nr_regions/min", "5")
    t.w(C + "/targets/0/regions/nr_regions", "2")
    t.w(C + "/targets/0/regions/0/start", "4096")
    t.w(C + "/targets/0/regions/0/end", "8192")
    t.w(C + "/targets/0/regions/1/start", "8192")
    t.w(C + "/targets/0/regions/1/end", "12288")
    t.w(S + "/action", "pageout\n")
    t.w(S + "/access_pattern/age/max", "18446744073709551615")
    t.w(S + "/quotas/ms", "10")
    t.w(S + "/quotas/weights/age_permil", "1000")
    t.w(S + "/ops_filters/nr_filters", "1")
    t.w(S + "/ops_filters/0/type", "anon")
    t.w(S + "/ops_filters/0/matching", "Y")
    t.w(S + "/core_filters/nr_filters", "1")
    t.w(S + "/core_filters/0/type", "addr")
    t.w(S + "/core_filters/0/addr_end", "4096")
    t.w(S + "/filters/nr_filters", "1")
    t.w(S + "/filters/0/type", "memcg")
    t.w(S + "/filters/0/memcg_path", "/a\n")
    t.w(S + "/quotas/goals/nr_goals", "1")
    t.w(S + "/quotas/goals/0/target_value", "10000")
    t.w(S + "/dests/nr_dests", "1")
    t.w(S + "/dests/0/weight", "3")
    t.w(K + "/state", "on")
    ctx = kd(t).ctx
    assert ctx.ops == OpsId.VADDR and ctx.addr_unit == 1
    assert (ctx.attrs.sample_interval, ctx.attrs.aggr_interval, ctx.attrs.min_nr_regions) == (1000, 20000, 5)
    assert ctx.targets == [params.Target(pid=100, regions=[params.AddrRange(4096, 8192), params.AddrRange(8192, 12288)])]
    s = ctx.schemes[0]
    assert s.action == Action.PAGEOUT and s.pattern.max_age_region == (1 << 32) - 1   # copied into 32 bits
    assert s.quota.ms == 10 and s.quota.weight_age == 1000
    assert [f.type for f in s.core_filters] == [FilterType.ADDR]
    assert [(f.type, f.matching, f.memcg_path) for f in s.ops_filters] == [(FilterType.ANON, True, ""),
                                                                          (FilterType.MEMCG, False, "/a")]
    assert s.quota.goals == [params.QuotaGoal(target_value=10000)]
    assert s.dests == [params.Dest(0, 3)] and s.target_nid == -1
    assert t.r(K + "/state") == "on\n" and t.r(K + "/pid") == "4242\n"


@pytest.mark.parametrize("setup", [
    [(C + "/targets/0/pid_target", "999")],                                   # no such process
    [(C + "/targets/0/regions/nr_regions", "1"), (C + "/targets/0/regions/0/start", "2")],   # start > end
    [(C + "/targets/0/regions/nr_regions", "2"), (C + "/targets/0/regions/0/end", "100"),
     (C + "/targets/0/regions/1/start", "50"), (C + "/targets/0/regions/1/end", "200")],    # overlap
    [(C + "/operations", "paddr"), (C + "/targets/nr_targets", "2")],         # paddr takes one target
    [(S + "/core_filters/nr_filters", "1"), (S + "/core_filters/0/type", "addr"),
     (S + "/core_filters/0/addr_start", "10")],                               # addr end < start
    [(S + "/ops_filters/nr_filters", "1"), (S + "/ops_filters/0/type", "hugepage_size"),
     (S + "/ops_filters/0/min", "10")],                                       # hugepage_size max < min
    [(S + "/ops_filters/nr_filters", "1"), (S + "/ops_filters/0/type", "memcg"),
     (S + "/ops_filters/0/memcg_path", "/nope")],                             # no such memcg
    [(C + "/monitoring_attrs/nr_regions/min", "2")],                          # engine: min < 3
])
def test_on_validation_einval(t, setup):
    for rel, v in setup:
        t.w(rel, v)
    assert t.errno_of(K + "/state", "on") == errno.EINVAL
    assert t.r(K + "/state") == "off\n"


@pytest.mark.parametrize("action,order,thr,exp_order,exp_thr", [
    ("collapse", 0, 0, 0, 0), ("collapse", 9, 0, 9, 0), ("collapse", 4, 50, 0, 50),
    ("split", 0, 0, 2, 30), ("split", 9, 0, 2, 30), ("split", 4, 10, 4, 10),
    ("mthp_split", 9, 100, 2, 100), ("mthp_split", 3, 0, 3, 30), ("pageout", 5, 0, 5, 0),
])
def test_rfc_rewrites_written_back(t, action, order, thr, exp_order, exp_thr):
    t.w(S + "/action", action)
    t.w(S + "/target_order", str(order))
    t.w(S + "/hot_threshold", str(thr))
    t.w(K + "/state", "on")
    s = kd(t).ctx.schemes[0]
    assert t.r(S + "/target_order") == f"{exp_order}\n"
    assert t.r(S + "/hot_threshold") == f"{exp_thr}\n"
    assert s.target_order == exp_order
    assert s.hot_threshold == (exp_thr if action in ("split", "mthp_split") else 0)


def test_rfc_rewrite_on_commit_too(t):
    t.w(K + "/state", "on")
    t.w(S + "/action", "split")
    t.w(S + "/target_order", "9")
    t.w(K + "/state", "commit")
    assert t.r(S + "/target_order") == "2\n" and kd(t).ctx.schemes[0].target_order == 2


@pytest.mark.parametrize("rel,v,err", [
    (S + "/target_order", "1", errno.EINVAL), (S + "/target_order", "10", errno.EINVAL),
    (S + "/target_order", "4294967296", errno.ERANGE), (S + "/hot_threshold", "101", errno.EINVAL),
    (S + "/hot_threshold", "x", errno.EINVAL),
])
def test_rfc_store_checks(t, rel, v, err):
    assert t.errno_of(rel, v) == err


def test_staging_until_commit(t):
    t.w(K + "/state", "on")
    t.w(C + "/monitoring_attrs/intervals/sample_us", "2000")
    t.w(S + "/action", "cold")
    assert kd(t).ctx.attrs.sample_interval == 5000 and kd(t).ctx.schemes[0].action == Action.STAT
    t.w(K + "/state", "commit")
    assert kd(t).ctx.attrs.sample_interval == 2000 and kd(t).ctx.schemes[0].action == Action.COLD


def test_state_command_errnos(t):
    assert t.errno_of(K + "/state", "off") == errno.EINVAL            # never started
    for cmd in ("commit", "update_schemes_stats", "update_schemes_tried_regions", "update_tuned_intervals",
                "commit_schemes_quota_goals", "update_schemes_effective_quotas", "update_schemes_tried_bytes"):
        assert t.errno_of(K + "/state", cmd) == errno.EINVAL
    t.w(K + "/state", "clear_schemes_tried_regions")                   # works while off
    t.w(K + "/state", "on")
    assert t.errno_of(K + "/state", "on") == errno.EBUSY
    assert t.errno_of("kdamonds/nr_kdamonds", "1") == errno.EBUSY
    assert t.errno_of(K + "/state", "ON") == errno.EINVAL
    assert t.errno_of(K + "/state", "update_schemes_quota_goals") == errno.EINVAL   # 7.1 only
    t.w(K + "/state", "off\n")
    assert t.errno_of(K + "/state", "off") == errno.EPERM
    assert t.r(K + "/pid") == "-1\n"
    t.w(K + "/contexts/nr_contexts", "0")
    assert t.errno_of(K + "/state", "on") == errno.EINVAL
    t.w("kdamonds/nr_kdamonds", "1")                                   # stopped: allowed, kdamond freed
    assert t.system.kdamonds == []


def test_trylock_ebusy(t):
    t.tree.tree_mutex.acquire()
    try:
        for rel, v in ((K + "/state", "on"), ("kdamonds/nr_kdamonds", "1"), (C + "/targets/nr_targets", "0")):
            assert t.errno_of(rel, v) == errno.EBUSY
        with pytest.raises(FsError) as e:
            t.r(K + "/pid")
        assert e.value.errno == errno.EBUSY
        t.w(C + "/monitoring_attrs/intervals/sample_us", "7")           # plain files take no lock
    finally:
        t.tree.tree_mutex.release()


def test_update_commands_copy_back(t):
    t.w(C + "/schemes/nr_schemes", "2")
    t.w(S + "/quotas/goals/nr_goals", "1")
    t.w(K + "/state", "on")
    t.w(K + "/state", "update_schemes_stats")
    assert [t.r(f"{C}/schemes/{i}/stats/nr_tried") for i in (0, 1)] == ["1\n", "2\n"]
    assert t.r(C + "/schemes/1/stats/qt_exceeds") == "7\n"
    t.w(K + "/state", "update_schemes_effective_quotas")
    assert t.r(C + "/schemes/1/quotas/effective_bytes") == "1001\n"
    t.w(K + "/state", "update_tuned_intervals")
    assert t.r(C + "/monitoring_attrs/intervals/sample_us") == "1234\n"
    assert t.r(C + "/monitoring_attrs/intervals/aggr_us") == "56789\n"
    t.w(K + "/state", "update_schemes_tried_regions")
    assert t.r(S + "/tried_regions/total_bytes") == f"{3 * 0x1000}\n"
    assert t.r(S + "/tried_regions/2/start") == f"{0x2000}\n" and t.r(S + "/tried_regions/2/age") == "12\n"
    t.w(K + "/state", "update_schemes_tried_bytes")
    assert "0" not in t.node(S + "/tried_regions").children and t.r(S + "/tried_regions/total_bytes") == "12288\n"
    t.w(K + "/state", "clear_schemes_tried_regions")
    assert t.r(S + "/tried_regions/total_bytes") == "0\n"
    # a removed scheme dir is skipped, not an error
    t.w(C + "/schemes/nr_schemes", "0")
    t.w(K + "/state", "update_schemes_stats")
    t.w(K + "/state", "commit_schemes_quota_goals")


def test_refresh_ms_registers_and_refreshes(t):
    t.w(K + "/refresh_ms", "100")
    t.w(K + "/state", "on")
    ms, fn = kd(t).refresh
    assert ms == 100
    fn()
    assert t.r(S + "/stats/nr_tried") == "1\n" and t.r(C + "/monitoring_attrs/intervals/sample_us") == "1234\n"
    t.w(K + "/refresh_ms", "0")
    assert kd(t).refresh == (0, None)


def test_feature_levels():
    t = T("7.1+rfc")
    t.w("kdamonds/nr_kdamonds", "1")
    t.w(K + "/contexts/nr_contexts", "1")
    t.w(C + "/targets/nr_targets", "1")
    t.w(C + "/schemes/nr_schemes", "1")
    t.w(S + "/quotas/goals/nr_goals", "1")
    for rel in (C + "/targets/0/obsolete_target", S + "/quotas/goals/0/path", S + "/stats/nr_snapshots",
                S + "/stats/max_nr_snapshots", S + "/quotas/goal_tuner"):
        t.node(rel)
    t.w(S + "/quotas/goals/0/target_metric", "active_mem_bp")
    assert t.r(S + "/quotas/goal_tuner") == "consist\n"
    assert oct(t.node(S + "/stats/max_nr_snapshots").mode) == "0o600"
    base = T()
    base.w("kdamonds/nr_kdamonds", "1")
    base.w(K + "/contexts/nr_contexts", "1")
    base.w(C + "/schemes/nr_schemes", "1")
    base.w(S + "/quotas/goals/nr_goals", "1")
    assert "goal_tuner" not in base.node(S + "/quotas").children
    assert "path" not in base.node(S + "/quotas/goals/0").children
    assert base.errno_of(S + "/quotas/goals/0/target_metric", "active_mem_bp") == errno.EINVAL
    assert base.errno_of(S + "/quotas/goals/0/target_metric", "node_eligible_mem_bp") == errno.EINVAL
