"""Each `damond reproduce` experiment at reduced size, seed 1, asserting the RFC's expected
outcome (issue 9) on what the experiment measured through the served tree."""
from __future__ import annotations

import pytest

from damond.reproduce import experiment
from damond.reproduce.common import GiB, MiB, Options


def run(name: str, **kw):
    return experiment(name).run(Options(seed=1, reduced=True, **kw))


def test_t1_small_thps_blind_4k_and_large_thp_visible():
    r = run("t1").json
    by = {c["name"]: c for c in r["cases"]}
    for name in ("16 MB THP", "256 MB THP", "512 MB THP"):
        assert by[name]["page_mapping"] == "pmd"
        assert max(by[name]["nr_tried_per_interval"]) == 0 and by[name]["nr_regions"] > 0
    for name in ("512 MB 4 KB", "6 GB THP"):
        c = by[name]
        assert c["min_visible_fraction"] >= 0.9, c
    assert by["512 MB 4 KB"]["page_mapping"] == "pte"
    assert by["512 MB 4 KB"]["truth_bytes"] == 512 * MiB          # every page counted as touched
    assert set(r["cases"][0]) >= {"name", "working_set_bytes", "page_mapping", "nr_tried", "nr_regions"}


def test_t2_thp_always_reports_everything_never_a_few_hundred_mb():
    r = run("t2").json
    assert r["true_hot_bytes"] == 16 * MiB                        # 4096 pages, counted
    assert r["reported_hot_bytes_thp_always"] >= 8 * GiB * 0.99
    assert 20 * MiB <= r["reported_hot_bytes_thp_never"] <= 1 * GiB
    assert len(r["reported_hot_bytes_thp_never_samples"]) >= 4
    assert max(r["reported_hot_bytes_thp_never_samples"]) < 2 * GiB


def test_t4_blind_then_split_into_16384_then_visible():
    r = run("t4").json
    assert r["nr_tried_before"] == 0
    assert r["folios_16k_after"] == 16384
    assert r["nr_tried_after"] > 0 and r["nr_tried_after"] == r["nr_regions_after"]


def test_t5_sampled_fraction_matches_counted_truth():
    r = run("t5").json
    assert r["nr_thps"] > 0
    assert r["max_abs_fraction_diff"] <= 0.03
    assert abs(r["fraction_below_10pct_sampled"] - r["fraction_below_10pct_truth"]) <= 0.03
    assert 0.9 <= r["fraction_below_10pct_sampled"] <= 0.99
    assert r["top_thp"]["pfn"] % 512 == 0 and r["top_thp"]["accesses"] > 0 and r["top_thp"]["hot_subpages"] >= 1


def test_e2e_keeps_hot_thp_splits_cold_into_128():
    r = run("e2e").json
    assert r["kept_hot_thp"] is True and r["split_cold_thp_into"] == 128


def test_methodology_split_collapse_and_feed_figures():
    r = run("methodology").json
    assert r["split"]["sz_applied"] == 33 * 2 * MiB and r["split"]["anon_huge_kb_after"] == 0
    assert r["split"]["nr_anon_16k_after"] == 4224
    assert r["collapse"]["sz_applied"] == 69206016 and r["collapse"]["anon_huge_kb_after"] == 67584
    amr = r["with_apply_min_nr_regions"]                # regions split to total / min_nr_regions first
    assert (amr["collapse"]["nr_applied"], amr["collapse"]["sz_applied"]) == (10, 69206016)     # the RFC's §2.3
    assert r["feed"] == ("nr_entries=2 total_accesses=384\n"
                         "  pfn=0x100000 pid=0 total=128 hot_pages=128/512\n"
                         "  pfn=0x200000 pid=0 total=256 hot_pages=256/512\n")


def test_x86_blind_at_16mb_visible_with_flush_on_mkold():
    r = run("x86").json
    assert r["machine"] == "x86-skylake"
    c16 = next(c for c in r["cases"] if c["name"] == "16 MB THP")
    assert max(c16["nr_tried_per_interval"]) == 0
    assert r["flush_on_mkold_nr_tried"] > 0 and r["flush_on_mkold_nr_tried"] == r["flush_on_mkold_nr_regions"]


def test_age_cannot_fix_thp_inflation_but_keeps_what_stays_hot():
    r = run("age").json
    a, nv, sk = r["sparse_thp_always"], r["sparse_thp_never"], r["skewed"]
    assert a["true_hot_bytes"] == nv["true_hot_bytes"] == 16 * MiB
    assert a["age_estimate_bytes"] >= 0.99 * a["reported_hot_bytes"] >= 7 * GiB      # cannot help
    assert nv["age_estimate_bytes"] < nv["reported_hot_bytes"]                      # drops the noise
    assert 64 * MiB * 0.9 <= sk["age_estimate_bytes"] <= 128 * MiB                   # keeps the swept 64 MB


def test_unknown_experiment_is_refused():
    with pytest.raises(ValueError, match="unknown experiment"):
        experiment("t3")
