"""Attacks with degenerate groups (issue 9, item 8, statistics part).

A group with one image used to get a zero-width "95 % CI" and could be named the worst
group; an audit with a single group reported a gap of 0 with CI [0, 0]. Groups below
``min_group_n`` (default 10) are now reported with their n and CI, flagged, and left out
of gaps, worst/best groups and tests, with a note naming them; a single group gives no
gap (NaN), not 0.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import fairbits
from fairbits.audit.runner import run_audit
from fairbits.bias.stats import DEFAULT_MIN_GROUP_N, bias_table, group_summary, pairwise_gaps, read_stats, write_stats
from fairbits.errors import FairbitsError
from fairbits.report.html import render_report
from fairbits.spec import parse_spec

from conftest import write_csv_dataset


def cell(groups: dict[str, np.ndarray]) -> pd.DataFrame:
    """One jpeg cell with ``psnr`` values per group."""
    frames = [pd.DataFrame({"psnr": v, "grp": g}) for g, v in groups.items()]
    df = pd.concat(frames, ignore_index=True)
    return df.assign(image_id=[f"i{k}" for k in range(len(df))], codec="jpeg", setting="q10", bpp=0.5, error=None)


def two_groups_and_a_lone_image() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return cell({"a": 30 + rng.normal(0, 1, 30), "b": 30.5 + rng.normal(0, 1, 30), "lone": np.array([5.0])})


def test_default_minimum_is_ten():
    assert DEFAULT_MIN_GROUP_N == 10


def test_one_image_group_is_never_named_worst():
    r = two_groups_and_a_lone_image()
    b = bias_table(r, "grp", ["psnr"], n_boot=200, n_perm=200).iloc[0]
    assert b["worst_group"] == "a" and b["best_group"] == "b"  # the lone 5 dB image would be "worst"
    assert b["gap"] < 2 and b["n_groups"] == 2 and b["n"] == 60
    assert b["small_groups"] == "lone (n=1)" and "lone (n=1)" in b["note"]
    assert pairwise_gaps(r, "grp", ["psnr"], n_boot=50)[["group_a", "group_b"]].values.tolist() == [["a", "b"]]


def test_one_image_group_has_no_zero_width_interval():
    s = group_summary(two_groups_and_a_lone_image(), "grp", ["psnr"], n_boot=200).set_index("group")
    assert s.loc["lone", "n"] == 1 and bool(s.loc["lone", "below_min_n"])  # reported, flagged
    assert np.isnan(s.loc["lone", "ci_low"]) and np.isnan(s.loc["lone", "ci_high"])
    assert not s.loc[["a", "b"], "below_min_n"].any() and (s.loc[["a", "b"], "ci_high"] > s.loc[["a", "b"], "ci_low"]).all()


def test_small_group_is_left_out_of_the_test():
    rng = np.random.default_rng(1)
    # a 3-image group far away would make "all groups equal" look false
    r = cell({"a": 30 + rng.normal(0, 1, 30), "b": 30 + rng.normal(0, 1, 30), "few": np.array([20.0, 21, 22])})
    b = bias_table(r, "grp", ["psnr"], n_boot=50, n_perm=500).iloc[0]
    assert b["p_value"] > 0.05 and b["gap"] < 1.5
    with_few = bias_table(r, "grp", ["psnr"], n_boot=50, n_perm=500, min_group_n=3).iloc[0]
    assert with_few["p_value"] < 0.01 and with_few["worst_group"] == "few"  # the setting decides


@pytest.mark.parametrize("groups", [{"only": 40}, {"big": 40, "small": 4}])
def test_fewer_than_two_large_groups_give_no_gap(groups):
    rng = np.random.default_rng(2)
    r = cell({g: 30 + rng.normal(0, 1, n) for g, n in groups.items()})
    b = bias_table(r, "grp", ["psnr"], n_boot=50, n_perm=50).iloc[0]
    for col in ("gap", "gap_ci_low", "gap_ci_high", "ratio", "p_value", "q_value", "effect_size"):
        assert np.isnan(b[col]), col  # no gap: NaN, never 0 with CI [0, 0]
    assert b["worst_group"] is None and b["best_group"] is None
    assert "fewer than two groups with at least 10 images" in b["note"]


def test_run_setting_is_read_from_run_json_and_reported(tmp_path):
    rng = np.random.default_rng(3)
    r = cell({"a": 30 + rng.normal(0, 1, 8), "b": 29 + rng.normal(0, 1, 8), "c": 28 + rng.normal(0, 1, 3)})
    info = {"name": "degenerate", "groups": ["grp"], "measures": ["psnr"], "seed": 0, "cells": [],
            "n_boot": 50, "n_perm": 50, "spec": {"min_group_n": 5}}
    (tmp_path / "run.json").write_text(json.dumps(info))
    write_stats(tmp_path, r)
    s, b, _ = read_stats(tmp_path)
    row = b[b.measure == "psnr"].iloc[0]
    assert row["n_groups"] == 2 and row["small_groups"] == "c (n=3)" and row["worst_group"] == "b"
    assert s[s.measure == "psnr"].set_index("group").loc["c", "below_min_n"]
    html = render_report(tmp_path, r, pd.DataFrame(), info).read_text()
    assert "fewer than 5 usable images" in html and "<b>c</b> (n = 3)" in html


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "ten"])
def test_bad_minimum_is_a_configuration_error(tmp_path, bad):
    r = two_groups_and_a_lone_image()
    with pytest.raises(FairbitsError, match="min_group_n"):
        bias_table(r, "grp", ["psnr"], n_boot=10, n_perm=10, min_group_n=bad)
    (tmp_path / "run.json").write_text(json.dumps({"groups": ["grp"], "spec": {"min_group_n": bad}}))
    with pytest.raises(FairbitsError, match="min_group_n"):
        write_stats(tmp_path, r)


def test_single_group_audit_reports_no_gap(tmp_path):
    """End to end: an audit whose dataset has one group (12 images) and one with 2 images."""
    csv = write_csv_dataset(tmp_path / "d", groups=("a", "b"), n_per_group=12)
    labels = pd.read_csv(csv)
    labels.loc[labels.index[-10:], "grp"] = "a"  # b keeps 2 images
    labels.to_csv(csv, index=False)
    spec = parse_spec({"dataset": {"reader": "csv", "path": str(csv)}, "groups": ["grp"],
                       "codecs": [{"name": "jpeg", "quality": [20]}], "measures": ["psnr"], "seed": 0,
                       "n_boot": 100, "n_perm": 100})
    run = run_audit(spec, tmp_path / "run", progress=False)
    assert len(fairbits.load_results(run)) == 24
    s, b, p = read_stats(run)
    psnr = b[b.measure == "psnr"].iloc[0]
    assert np.isnan(psnr["gap"]) and pd.isna(psnr["worst_group"]) and psnr["small_groups"] == "b (n=2)"
    assert p.empty and set(s[s.measure == "psnr"].group) == {"a", "b"}
    html = (run / "report.html").read_text()
    assert "left out of every gap" in html and "<b>b</b> (n = 2)" in html


def test_attribution_leaves_small_groups_out():
    from fairbits.bias.attribution import attribute_cell

    rng = np.random.default_rng(4)
    rows = [{"codec": "c", "setting": "s", "bpp": 0.1, "grp": g, "error": None, "T_loss_orig": 1.0,
             "T_loss_recon": base + rng.normal(0, 0.1), "T_flip": 0.0}
            for g, base, n in (("x", 1.5, 12), ("y", 1.0, 12), ("lone", 9.0, 1)) for _ in range(n)]
    frame = pd.DataFrame(rows)
    row = attribute_cell(frame, "grp", "T", n_boot=50, seed=0, min_group_n=10)
    assert (row["group_a"], row["group_b"]) == ("x", "y")  # not the lone image's 9 nats
    assert attribute_cell(frame, "grp", "T", n_boot=50, seed=0, min_group_n=13) is None
