"""Tests of fairbits.bias.stats: group means, gaps, bootstrap CIs, permutation p-values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame

from fairbits.bias.stats import (
    BIAS_COLUMNS,
    PAIRWISE_COLUMNS,
    SUMMARY_COLUMNS,
    bias_table,
    group_summary,
    pairwise_gaps,
    read_stats,
    summarize_run,
    write_stats,
)

DIRS = {"psnr": True, "ssim": True, "ciede2000": False, "bpp": False}


def make_results(n_images: int = 120, effects: dict[str, float] | None = None, seed: int = 0,
                 codecs=("jpeg", "webp"), settings=("q10", "q50", "q90"), noise: float = 1.0) -> pd.DataFrame:
    """Synthetic results table; group ``g`` of ``grp`` shifts psnr by ``effects[g]`` (in dB)."""
    effects = effects if effects is not None else {"a": 0.0, "b": -2.0, "c": 1.0}
    rng = np.random.default_rng(seed)
    ids = [f"img{i:04d}" for i in range(n_images)]
    names = list(effects)
    grp = np.array([names[i % len(names)] for i in range(n_images)])
    gender = rng.choice(["f", "m"], n_images)
    shift = np.array([effects[g] for g in grp])
    frames = []
    for codec in codecs:
        for s in settings:
            q = float(s[1:])
            psnr = 20 + q / 5 + shift + rng.normal(0, noise, n_images)
            frames.append(pd.DataFrame({
                "image_id": ids, "codec": codec, "setting": s, "target_bpp": np.nan, "quality": q,
                "bpp": q / 40 + rng.normal(0, 0.02, n_images), "psnr": psnr,
                "ssim": 1 - 1 / psnr, "ciede2000": 40 / psnr + rng.normal(0, 0.05, n_images),
                "grp": grp, "gender": gender, "error": None,
            }))
    return pd.concat(frames, ignore_index=True)


def tiny() -> pd.DataFrame:
    """Groups A=[1,2,3], B=[4,5,6] in one cell, for psnr and ciede2000."""
    vals = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    return pd.DataFrame({
        "image_id": [f"i{k}" for k in range(6)], "codec": "jpeg", "setting": "q10", "target_bpp": np.nan,
        "quality": 10.0, "bpp": 0.5, "psnr": vals, "ciede2000": vals, "grp": list("AAABBB"), "error": None,
    })


def mean_frame(vals, groups) -> MetricFrame:
    return MetricFrame(metrics=lambda y_true, y_pred: np.mean(y_pred), y_true=vals, y_pred=vals,
                       sensitive_features=groups)


def test_tiny_hand_computed():
    s = group_summary(tiny(), "grp", ["psnr"], n_boot=200, min_group_n=3)
    assert list(s.columns) == SUMMARY_COLUMNS
    assert s.set_index("group")["mean"].to_dict() == {"A": 2.0, "B": 5.0}
    assert s["n"].tolist() == [3, 3]
    assert s["sd"].tolist() == [1.0, 1.0] and not s["below_min_n"].any()
    b = bias_table(tiny(), "grp", ["psnr", "ciede2000"], n_boot=200, n_perm=200, directions=DIRS, min_group_n=3)
    assert list(b.columns) == BIAS_COLUMNS
    b = b.set_index("measure")
    assert (b["kind"] == "degradation").all()
    assert b.loc["psnr", "effect_size"] == pytest.approx(3.0)  # gap 3 over pooled SD 1
    assert b.loc["psnr", "worst_mean"] == 2.0 and b.loc["psnr", "best_mean"] == 5.0
    assert b.loc["psnr", "gap"] == pytest.approx(3.0)
    assert b.loc["psnr", "ratio"] == pytest.approx(0.4)
    assert b.loc["psnr", "worst_group"] == "A" and b.loc["psnr", "best_group"] == "B"
    assert b.loc["ciede2000", "worst_group"] == "B" and b.loc["ciede2000", "best_group"] == "A"
    assert b.loc["psnr", "n_groups"] == 2 and b.loc["psnr", "n"] == 6
    assert b.loc["psnr", "mean"] == pytest.approx(3.5)
    assert b.loc["psnr", "rel_gap"] == pytest.approx(3.0 / 3.5)


def test_worst_group_from_registry():
    b = bias_table(tiny(), "grp", ["psnr", "ciede2000"], n_boot=50, n_perm=50, min_group_n=3).set_index("measure")
    assert b.loc["psnr", "worst_group"] == "A"
    assert b.loc["ciede2000", "worst_group"] == "B"


def test_matches_fairlearn_on_several_cells():
    r = make_results(n_images=90, effects={"a": 0.0, "b": -1.0, "c": 0.5, "d": 2.0})
    s = group_summary(r, "grp", ["psnr", "ciede2000"], n_boot=10)
    b = bias_table(r, "grp", ["psnr", "ciede2000"], n_boot=10, n_perm=10, directions=DIRS)
    checked = 0
    for (codec, setting), cell in r.groupby(["codec", "setting"]):
        for m in ("psnr", "ciede2000"):
            mf = mean_frame(cell[m].to_numpy(), cell["grp"].to_numpy())
            ours = s[(s.codec == codec) & (s.setting == setting) & (s.measure == m)].set_index("group")["mean"]
            pd.testing.assert_series_equal(ours.sort_index(), mf.by_group.sort_index().astype(float),
                                           check_names=False, check_index_type=False)
            row = b[(b.codec == codec) & (b.setting == setting) & (b.measure == m)].iloc[0]
            assert row["gap"] == pytest.approx(mf.difference())
            assert row["ratio"] == pytest.approx(mf.ratio())
            checked += 1
    assert checked == 12


def test_round_off_is_not_an_effect():
    r = tiny()
    r["psnr"] = [0.3, 0.1 + 0.2, 0.3, 0.3, 0.3, 0.1 + 0.2]  # 0.1 + 0.2 != 0.3 in floating point
    b = bias_table(r, "grp", ["psnr"], n_boot=50, n_perm=50, directions=DIRS, min_group_n=3).iloc[0]
    assert b["gap"] < 1e-15 and b["effect_size"] == 0.0
    s = group_summary(r, "grp", ["psnr"], n_boot=50, min_group_n=3)
    assert (s.ci_method == "constant").all()


def test_ratio_mixed_sign_matches_fairlearn():
    r = tiny()
    r["psnr"] = [-2.0, -2.0, -2.0, 3.0, 3.0, 3.0]
    b = bias_table(r, "grp", ["psnr"], n_boot=10, n_perm=10, directions=DIRS, min_group_n=3).iloc[0]
    mf = mean_frame(r["psnr"].to_numpy(), r["grp"].to_numpy())
    assert b["ratio"] == pytest.approx(mf.ratio()) == pytest.approx(-2 / 3)


def test_ci_contains_mean_and_is_seeded():
    r = make_results(n_images=60)
    s1 = group_summary(r, "grp", ["psnr"], n_boot=300, seed=3)
    s2 = group_summary(r, "grp", ["psnr"], n_boot=300, seed=3)
    s3 = group_summary(r, "grp", ["psnr"], n_boot=300, seed=4)
    assert ((s1.ci_low <= s1["mean"]) & (s1["mean"] <= s1.ci_high)).all()
    assert (s1.ci_low < s1.ci_high).all()
    pd.testing.assert_frame_equal(s1, s2)
    assert not np.allclose(s1.ci_low, s3.ci_low)
    b1 = bias_table(r, "grp", ["psnr"], n_boot=300, n_perm=200, seed=3, directions=DIRS)
    b2 = bias_table(r, "grp", ["psnr"], n_boot=300, n_perm=200, seed=3, directions=DIRS)
    pd.testing.assert_frame_equal(b1, b2)
    assert ((b1.gap_ci_low <= b1.gap) & (b1.gap <= b1.gap_ci_high)).all()


def test_results_do_not_depend_on_cell_order():
    r = make_results(n_images=60)
    b1 = bias_table(r, "grp", ["psnr"], n_boot=100, n_perm=100, directions=DIRS)
    shuffled = r.sample(frac=1.0, random_state=1)
    # Row order within a group changes the bootstrap draws, so keep it; reverse only the cells.
    reordered = pd.concat([g for _, g in r.groupby(["codec", "setting"], sort=False)][::-1])
    b2 = bias_table(reordered, "grp", ["psnr"], n_boot=100, n_perm=100, directions=DIRS)
    key = ["codec", "setting", "measure"]
    pd.testing.assert_frame_equal(b1.sort_values(key).reset_index(drop=True),
                                  b2.sort_values(key).reset_index(drop=True))
    b3 = bias_table(shuffled, "grp", ["psnr"], n_boot=100, n_perm=100, directions=DIRS)
    np.testing.assert_allclose(b1.sort_values(key).gap, b3.sort_values(key).gap)


def test_permutation_p_value_detects_effects():
    strong = make_results(n_images=90, effects={"a": 0.0, "b": -2.0, "c": 1.0}, codecs=("jpeg",), settings=("q50",))
    none = make_results(n_images=90, effects={"a": 0.0, "b": 0.0, "c": 0.0}, codecs=("jpeg",), settings=("q50",),
                        seed=5)
    p_strong = bias_table(strong, "grp", ["psnr"], n_boot=50, n_perm=999, directions=DIRS).p_value.iloc[0]
    p_none = bias_table(none, "grp", ["psnr"], n_boot=50, n_perm=999, directions=DIRS).p_value.iloc[0]
    assert p_strong < 0.01
    assert p_strong == pytest.approx(1 / 1000)
    assert p_none > 0.05


def test_errors_nan_and_inf_are_excluded():
    r = tiny()
    r.loc[0, "error"] = "decode failed"
    r.loc[0, "psnr"] = np.nan
    r.loc[1, "error"] = "boom"  # measure present but the row errored: still excluded
    r.loc[4, "psnr"] = np.nan
    r.loc[5, "psnr"] = np.inf
    s = group_summary(r, "grp", ["psnr", "ciede2000"], n_boot=20, min_group_n=1).set_index(["measure", "group"])
    assert s.loc[("psnr", "A"), "n"] == 1 and s.loc[("psnr", "A"), "mean"] == 3.0
    assert s.loc[("psnr", "B"), "n"] == 1 and s.loc[("psnr", "B"), "mean"] == 4.0
    assert s.loc[("ciede2000", "A"), "n"] == 1 and s.loc[("ciede2000", "B"), "n"] == 3
    assert np.isnan(s.loc[("psnr", "A"), "ci_low"])  # one value: no interval, not a zero-width one
    b = bias_table(r, "grp", ["psnr"], n_boot=20, n_perm=20, directions=DIRS, min_group_n=1).iloc[0]
    assert b["n"] == 2 and b["gap"] == pytest.approx(1.0)


def test_empty_group_is_skipped_and_empty_cell_reported():
    r = tiny()
    r.loc[r.grp == "B", "psnr"] = np.nan
    s = group_summary(r, "grp", ["psnr"], n_boot=20, min_group_n=1)
    assert s["group"].tolist() == ["A"]
    b = bias_table(r, "grp", ["psnr"], n_boot=20, n_perm=20, directions=DIRS, min_group_n=1).iloc[0]
    assert b["n_groups"] == 1 and np.isnan(b["gap"]) and np.isnan(b["p_value"])  # one group: no gap, not 0
    assert "no gap" in b["note"]
    r["psnr"] = np.nan
    b = bias_table(r, "grp", ["psnr"], n_boot=20, n_perm=20, directions=DIRS, min_group_n=1).iloc[0]
    assert b["n_groups"] == 0 and np.isnan(b["gap"]) and "no usable rows" in b["note"]
    assert group_summary(r, "grp", ["psnr"], n_boot=20).empty


def test_single_group():
    r = tiny()
    r["grp"] = "only"
    b = bias_table(r, "grp", ["psnr"], n_boot=50, n_perm=50, directions=DIRS, min_group_n=1).iloc[0]
    assert np.isnan(b["gap"]) and np.isnan(b["ratio"]) and np.isnan(b["p_value"]) and np.isnan(b["q_value"])
    assert np.isnan(b["gap_ci_low"]) and np.isnan(b["gap_ci_high"])
    assert b["worst_group"] is None and b["best_group"] is None and b["n_groups"] == 1
    assert pairwise_gaps(r, "grp", ["psnr"], n_boot=50, min_group_n=1).empty


def test_pairwise_consistent_with_group_means():
    r = make_results(n_images=60)
    s = group_summary(r, "grp", ["psnr"], n_boot=200)
    p = pairwise_gaps(r, "grp", ["psnr"], n_boot=200)
    assert list(p.columns) == PAIRWISE_COLUMNS
    assert len(p) == 6 * 3  # 6 cells x C(3, 2) pairs
    means = s.set_index(["codec", "setting", "group"])["mean"]
    for row in p.itertuples():
        expected = means[(row.codec, row.setting, row.group_a)] - means[(row.codec, row.setting, row.group_b)]
        assert row.diff == pytest.approx(expected)
        assert row.group_a < row.group_b
        assert row.ci_low <= row.diff <= row.ci_high
    b = bias_table(r, "grp", ["psnr"], n_boot=200, n_perm=10, directions=DIRS)
    max_abs = p.assign(a=p["diff"].abs()).groupby(["codec", "setting"])["a"].max()
    np.testing.assert_allclose(b.set_index(["codec", "setting"]).loc[max_abs.index, "gap"], max_abs)


def test_summarize_run_matches_separate_calls_and_is_fast():
    import time

    r = make_results(n_images=240, codecs=("jpeg", "webp", "avif"), settings=("q10", "q30", "q50", "q70"))
    r["grp3"] = r["grp"].map({"a": "x", "b": "y", "c": "x"})
    measures = ["bpp", "psnr", "ssim", "ciede2000", "psnr2", "ssim2"]
    r["psnr2"], r["ssim2"] = r["psnr"] + 1, r["ssim"] * 2
    t = time.perf_counter()
    s, b, p = summarize_run(r, ["grp", "gender", "grp3"], measures, n_boot=1000, n_perm=1000, directions=DIRS)
    assert time.perf_counter() - t < 15
    assert len(b) == 12 * 6 * 3
    sub = b[b.attribute == "gender"].reset_index(drop=True)
    alone = bias_table(r, "gender", measures, directions=DIRS)
    # q-values differ: summarize_run corrects over every attribute's tests together
    pd.testing.assert_frame_equal(sub.drop(columns="q_value"), alone.drop(columns="q_value"))
    from scipy.stats import false_discovery_control
    tested = b[b.kind.isin(["degradation", "drift"])]
    np.testing.assert_allclose(tested.q_value, false_discovery_control(tested.p_value))
    sub = s[s.attribute == "grp"].reset_index(drop=True)
    pd.testing.assert_frame_equal(sub, group_summary(r, "grp", measures))


def test_write_and_read_stats(tmp_path):
    import json

    r = make_results(n_images=30)
    r.loc[r.grp == "a", "grp"] = "007"  # a label that looks numeric must stay a string
    (tmp_path / "run.json").write_text(json.dumps({"groups": ["grp", "gender"], "measures": ["psnr", "ssim"],
                                                  "seed": 1, "cells": []}))
    paths = write_stats(tmp_path, r, n_boot=50, n_perm=50)
    assert set(paths) == {"summary", "bias", "pairwise", "findings"} and all(p.is_file() for p in paths.values())
    s, b, p = read_stats(tmp_path)
    assert set(b.measure) == {"bpp", "psnr", "ssim"}
    assert set(b.attribute) == {"grp", "gender"}
    assert "007" in set(s.group)


# --------------------------------------------------------------------------- group-mean intervals
def test_wilson_interval_hand_computed():
    from fairbits.bias.intervals import wilson_interval

    z2 = 1.959963984540054 ** 2
    assert wilson_interval(0, 30) == pytest.approx((0.0, z2 / (30 + z2)))  # 0 of 30: not [0, 0]
    lo, hi = wilson_interval(15, 30)
    half = np.sqrt(z2) * np.sqrt(0.25 / 30 + z2 / 3600) / (1 + z2 / 30)
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half))


def test_wilson_exact_coverage_beats_the_percentile_bootstrap_on_rates():
    """Exact binomial coverage (no simulation) of flip-rate intervals."""
    from scipy.stats import binom

    from fairbits.bias.intervals import wilson_interval

    def coverage(n, p, interval):
        k = np.arange(n + 1)
        return float(sum(binom.pmf(j, n, p) for j in k if interval(j)[0] <= p <= interval(j)[1]))

    for n in (30, 100):
        cov = [coverage(n, p, lambda j: wilson_interval(j, n)) for p in np.linspace(0.02, 0.5, 25)]
        assert np.mean(cov) >= 0.945 and min(cov) >= 0.92
    # the percentile bootstrap of k/n: quantiles of Binomial(n, k/n)/n; 0 of 30 gives [0, 0]
    pct = lambda j: (binom.ppf(0.025, 30, j / 30) / 30, binom.ppf(0.975, 30, j / 30) / 30)  # noqa: E731
    assert coverage(30, 0.05, pct) < 0.85 <= 0.93 <= coverage(30, 0.05, lambda j: wilson_interval(j, 30))


def test_studentized_interval_matches_t_on_normal_data_and_follows_skew():
    from scipy.stats import t as student

    from fairbits.bias.intervals import bootstrap_mean_sd, mean_interval

    rng = np.random.default_rng(0)
    x = rng.normal(10, 2, 400)
    lo, hi, method = mean_interval(x, *bootstrap_mean_sd(x, 4000, rng))
    half = student.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    assert method == "bootstrap-t" and lo == pytest.approx(x.mean() - half, abs=0.05 * half)
    assert hi == pytest.approx(x.mean() + half, abs=0.05 * half)
    y = rng.lognormal(0, 1, 60)
    lo, hi, _ = mean_interval(y, *bootstrap_mean_sd(y, 2000, rng))
    assert hi - y.mean() > 1.3 * (y.mean() - lo)  # a long right tail gives a longer upper arm


def test_mean_interval_edge_cases():
    from fairbits.bias.intervals import bootstrap_mean_sd, mean_interval

    rng = np.random.default_rng(1)
    assert mean_interval(np.array([2.0]), np.empty(0), np.empty(0))[2] == "none"
    assert mean_interval(np.array([0.0, 1, 1, 0]), np.empty(0), np.empty(0))[2] == "wilson"
    assert mean_interval(np.full(5, 3.0), *bootstrap_mean_sd(np.full(5, 3.0), 100, rng)) == (3.0, 3.0, "constant")
    near = np.array([3.0] * 29 + [4.0])  # most resamples have no spread: t has infinite quantiles
    lo, hi, method = mean_interval(near, *bootstrap_mean_sd(near, 500, rng))
    assert method == "percentile" and 3.0 <= lo <= near.mean() <= hi <= 4.0


def test_bootstrap_mean_sd_matches_direct_resampling():
    from fairbits.bias.intervals import bootstrap_mean_sd, bootstrap_means

    x = np.random.default_rng(2).normal(1e4, 1, 50)  # a large mean: sums of squares must not cancel
    m, s = bootstrap_mean_sd(x, 300, np.random.default_rng(7))
    np.testing.assert_allclose(m, bootstrap_means(x, 300, np.random.default_rng(7)), rtol=1e-12)
    idx = np.random.default_rng(7).integers(0, 50, size=(300, 50))
    np.testing.assert_allclose(s, x[idx].std(axis=1, ddof=1), rtol=1e-6)


@pytest.mark.slow
def test_group_ci_coverage_on_skewed_data():
    """Issue #11: nominal 95 % intervals of group means of lognormal(0, 1) data (skewness 6.2)
    in groups of 30 cover at least 0.93. Seeded, 4,000 replications through group_summary
    (Monte-Carlo SE ±0.004). The bootstrap-t at Hesterberg's expanded level covers 0.938 on
    these draws; the plain bootstrap-t (tail α/2) covers 0.924 with intervals 7 % narrower,
    and fails (checked); the percentile interval about 0.87 (benchmarks/coverage.py,
    docs/statistics.md)."""
    sigma, n, reps = 1.0, 30, 4000
    true = np.exp(sigma ** 2 / 2)
    vals = np.random.default_rng(0).lognormal(0, sigma, (reps, n))
    df = pd.DataFrame({"codec": np.repeat([f"r{i:04d}" for i in range(reps)], n), "setting": "s",
                       "grp": "g", "x": vals.ravel()})
    s = group_summary(df, "grp", ["x"], n_boot=1000, min_group_n=1)
    assert len(s) == reps and (s.ci_method == "bootstrap-t").all()
    coverage = float(((s.ci_low <= true) & (true <= s.ci_high)).mean())
    assert 0.93 <= coverage < 0.96, coverage  # met, and not by intervals gone wide
