"""The source paper's bias measure: per-group classifier accuracy, max − min and SD (issue 11, item 4).

Checked against independent computations: fairlearn's ``MetricFrame`` with scikit-learn's
``accuracy_score`` for the group accuracies and ``difference(method="between_groups")``
(= max − min), ``statistics.pstdev`` for the SD, scipy's ``binomtest(...).proportion_ci``
for the Wilson intervals.
"""

from __future__ import annotations

import statistics

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score

from fairbits.bias.accuracy import (BIAS_COLUMNS, GROUP_COLUMNS, accuracy_tables, accuracy_targets, read_accuracy,
                                    write_accuracy_bias)
from fairbits.errors import FairbitsError, SpecError

SIZES = {"light": 60, "medium": 50, "dark": 40}
# accuracy on originals, on reconstructions, per group
ACCURACY = {"light": (0.9, 0.85), "medium": (0.85, 0.75), "dark": (0.8, 0.5)}
CELLS = (("jpeg", "q10", 0.2), ("jpeg", "q50", 0.6), ("webp", "q30", 0.3))


def classifier_results(seed: int = 0, sizes=SIZES, accuracy=ACCURACY, cells=CELLS) -> pd.DataFrame:
    """Rows with true labels ``eye`` (3 classes), predictions on originals and reconstructions
    (kept as ``_pred_*`` for the independent check) and their ``eye_correct_*`` columns.
    Attributes: ``skin`` (three groups) and ``sex`` (two, independent of skin)."""
    rng = np.random.default_rng(seed)
    grp = np.concatenate([[g] * n for g, n in sizes.items()])
    n = len(grp)
    truth = rng.integers(0, 3, n)
    sex = rng.choice(["f", "m"], n)
    p_orig = np.array([accuracy[g][0] for g in grp])
    pred_orig = np.where(rng.random(n) < p_orig, truth, (truth + 1) % 3)  # the same originals in every cell
    frames = []
    for codec, setting, bpp in cells:
        p_recon = np.array([accuracy[g][1] for g in grp])
        pred_recon = np.where(rng.random(n) < p_recon, truth, (truth + 2) % 3)
        frames.append(pd.DataFrame({
            "image_id": [f"i{k:03d}" for k in range(n)], "codec": codec, "setting": setting,
            "bpp": bpp * np.exp(rng.normal(0, 0.1, n)), "skin": grp, "sex": sex, "eye": truth,
            "_pred_orig": pred_orig, "_pred_recon": pred_recon,
            "eye_correct_orig": (pred_orig == truth).astype(float),
            "eye_correct_recon": (pred_recon == truth).astype(float),
            "eye_flip": (pred_orig != pred_recon).astype(float), "error": None}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def tables():
    return accuracy_tables(classifier_results(), ["skin", "sex"], n_boot=400, seed=3)


def test_targets_need_both_sides():
    assert accuracy_targets(["eye_correct_orig", "eye_correct_recon", "nose_correct_orig", "_correct_orig",
                             "_correct_recon", "lips_correct_recon"]) == ["eye"]


def test_group_accuracies_max_min_and_sd_match_fairlearn(tables):
    groups, bias = tables
    res = classifier_results()
    assert list(groups.columns) == GROUP_COLUMNS and list(bias.columns) == BIAS_COLUMNS
    assert len(bias) == len(CELLS) * 2  # one row per cell and attribute
    for (codec, setting), cell in res.groupby(["codec", "setting"]):
        for attr in ("skin", "sex"):
            row = bias[(bias.codec == codec) & (bias.setting == setting) & (bias.attribute == attr)].iloc[0]
            g = groups[(groups.codec == codec) & (groups.setting == setting) & (groups.attribute == attr)]
            for side in ("orig", "recon"):
                mf = MetricFrame(metrics=accuracy_score, y_true=cell["eye"], y_pred=cell[f"_pred_{side}"],
                                 sensitive_features=cell[attr])
                by_group = mf.by_group
                assert g.set_index("group")[f"accuracy_{side}"].to_dict() == pytest.approx(by_group.to_dict())
                assert row[f"gap_{side}"] == pytest.approx(mf.difference(method="between_groups"))
                assert row[f"sd_{side}"] == pytest.approx(statistics.pstdev(by_group.tolist()))
                assert row[f"worst_group_{side}"] == by_group.idxmin()
                assert row[f"best_group_{side}"] == by_group.idxmax()
                assert row[f"worst_accuracy_{side}"] == pytest.approx(by_group.min())
                assert row[f"accuracy_{side}"] == pytest.approx(accuracy_score(cell["eye"], cell[f"_pred_{side}"]))
            assert row.gap_change == pytest.approx(row.gap_recon - row.gap_orig)
            assert g.set_index("group")["n"].to_dict() == cell[attr].value_counts().to_dict()
    # the planted effect: coding costs the dark group most
    skin = bias[bias.attribute == "skin"]
    assert (skin.worst_group_recon == "dark").all() and (skin.gap_recon > skin.gap_orig).all()


def test_wilson_intervals_match_scipy(tables):
    groups, _ = tables
    res = classifier_results()
    for row in groups.itertuples():
        cell = res[(res.codec == row.codec) & (res.setting == row.setting) & (res[row.attribute] == row.group)]
        for side in ("orig", "recon"):
            k = int(cell[f"eye_correct_{side}"].sum())
            expected = binomtest(k, len(cell)).proportion_ci(confidence_level=0.95, method="wilson")
            assert getattr(row, f"accuracy_{side}_ci_low") == pytest.approx(expected.low)
            assert getattr(row, f"accuracy_{side}_ci_high") == pytest.approx(expected.high)


def test_sd_of_two_groups_is_half_the_gap(tables):
    _, bias = tables
    sex = bias[bias.attribute == "sex"]
    assert np.allclose(sex.sd_recon, sex.gap_recon / 2) and np.allclose(sex.sd_orig, sex.gap_orig / 2)


def test_sd_moves_less_than_max_minus_min_for_one_extreme_group():
    """Six groups of 100 images, 80 right each; then one group has only 30 right: max − min
    goes from 0 to 0.5, the SD only to 0.5·√5/6 (docs/statistics.md)."""
    def table(right_in_last: int) -> pd.Series:
        right = [80] * 5 + [right_in_last]
        recon = np.concatenate([np.r_[np.ones(k), np.zeros(100 - k)] for k in right])
        frame = pd.DataFrame({"codec": "jpeg", "setting": "q10", "bpp": 0.2,
                              "skin": np.repeat([f"g{k}" for k in range(6)], 100),
                              "eye_correct_orig": 1.0, "eye_correct_recon": recon})
        return accuracy_tables(frame, ["skin"], n_boot=0)[1].iloc[0]

    even, extreme = table(80), table(30)
    assert even.gap_recon == pytest.approx(0.0) and even.sd_recon == pytest.approx(0.0)
    assert extreme.gap_recon == pytest.approx(0.5) and extreme.sd_recon == pytest.approx(0.5 * np.sqrt(5) / 6)
    assert extreme.worst_group_recon == "g5" and extreme.gap_orig == 0.0 and extreme.gap_change == pytest.approx(0.5)


def test_bootstrap_intervals_are_seeded_and_bracket_the_estimates(tables):
    _, bias = tables
    for side in ("orig", "recon"):
        for stat in ("gap", "sd"):
            est, lo, hi = (bias[f"{stat}_{side}{s}"].to_numpy(float) for s in ("", "_ci_low", "_ci_high"))
            assert (lo <= hi).all() and (lo >= 0).all() and (hi > 0).all()
    big = bias[bias.attribute == "skin"]  # a large gap: its interval holds the estimate
    assert ((big.gap_recon_ci_low <= big.gap_recon) & (big.gap_recon <= big.gap_recon_ci_high)).all()
    again = accuracy_tables(classifier_results(), ["skin", "sex"], n_boot=400, seed=3)[1]
    pd.testing.assert_frame_equal(again, bias)
    other = accuracy_tables(classifier_results(), ["skin", "sex"], n_boot=400, seed=4)[1]
    assert not np.allclose(other.gap_recon_ci_low, bias.gap_recon_ci_low)
    assert np.allclose(other.gap_recon, bias.gap_recon)
    # keyed generators: one cell alone gets the same interval as in the whole run
    res = classifier_results()
    alone = accuracy_tables(res[res.codec == "webp"], ["skin", "sex"], n_boot=400, seed=3)[1]
    pd.testing.assert_frame_equal(alone.reset_index(drop=True),
                                  bias[bias.codec == "webp"].reset_index(drop=True))


@pytest.mark.slow
def test_gap_interval_covers_the_true_gap():
    """Two groups of 80 with accuracies 0.9 and 0.6 on reconstructions: the 95 % interval of
    max − min (0.3) and of the SD (0.15) cover the truth in most of 150 seeded replications."""
    covered = np.zeros(2)
    reps = 150
    for rep in range(reps):
        acc = {"a": (0.9, 0.9), "b": (0.9, 0.6)}
        row = accuracy_tables(classifier_results(100 + rep, {"a": 80, "b": 80}, acc, (("jpeg", "q10", 0.2),)),
                              ["skin"], n_boot=300, seed=rep)[1].iloc[0]
        covered += [row.gap_recon_ci_low <= 0.3 <= row.gap_recon_ci_high,
                    row.sd_recon_ci_low <= 0.15 <= row.sd_recon_ci_high]
    assert (covered / reps >= 0.88).all(), covered / reps


def test_small_groups_errors_and_missing_labels_are_left_out():
    res = classifier_results(sizes={"light": 30, "medium": 30, "dark": 5}, cells=(("jpeg", "q10", 0.2),))
    res.loc[res.index[:4], "error"] = "decode failed"  # four light rows fail
    res.loc[res.index[4:7], ["eye_correct_orig", "eye_correct_recon"]] = np.nan  # three without a label
    groups, bias = accuracy_tables(res, ["skin"], n_boot=50, min_group_n=10)
    n = groups.set_index("group")["n"]
    assert n.to_dict() == {"light": 23, "medium": 30, "dark": 5}
    assert groups.set_index("group")["below_min_n"].to_dict() == {"light": False, "medium": False, "dark": True}
    row = bias.iloc[0]
    assert row.n_groups == 2 and row.n == 53 and "dark (n=5)" in row.note
    acc = groups.set_index("group")["accuracy_recon"]
    assert row.gap_recon == pytest.approx(abs(acc["light"] - acc["medium"]))
    one = accuracy_tables(res, ["skin"], n_boot=50, min_group_n=25)[1].iloc[0]
    assert one.n_groups == 1 and np.isnan(one.gap_recon) and "no gap" in one.note


def test_writer_writes_both_files_and_reads_back(tmp_path):
    res = classifier_results(cells=(("jpeg", "q10", 0.2),))
    res["skin"] = res["skin"].map({"light": "001", "medium": "007", "dark": "010"})
    path = write_accuracy_bias(tmp_path, res, ["skin"], n_boot=50, seed=0, min_group_n=10)
    assert path == tmp_path / "accuracy_bias.csv" and (tmp_path / "accuracy_groups.csv").is_file()
    groups, bias = read_accuracy(tmp_path)
    assert set(groups.group) == {"001", "007", "010"} and bias.iloc[0].worst_group_recon == "010"
    assert groups.below_min_n.dtype == bool
    no_labels = res.drop(columns=["eye_correct_orig", "eye_correct_recon"])
    assert write_accuracy_bias(tmp_path / "none", no_labels, ["skin"], n_boot=50, seed=0, min_group_n=10) is None
    assert not (tmp_path / "none").exists()
    assert write_accuracy_bias(tmp_path, no_labels, ["skin"], n_boot=50, seed=0, min_group_n=10) is None
    assert read_accuracy(tmp_path) is None and not (tmp_path / "accuracy_groups.csv").exists()


def test_bad_configuration_says_what_is_wrong():
    res = classifier_results(cells=(("jpeg", "q10", 0.2),))
    with pytest.raises(SpecError, match="race"):
        accuracy_tables(res, ["race"])
    with pytest.raises(SpecError, match="group columns"):
        accuracy_tables(res, [])
    with pytest.raises(FairbitsError, match="n_boot"):
        accuracy_tables(res, ["skin"], n_boot=-1)
    with pytest.raises(FairbitsError, match="min_group_n"):
        accuracy_tables(res, ["skin"], min_group_n=0)


def test_report_section_draws_one_figure_per_target(tmp_path):
    from fairbits.report.accuracy import accuracy_section
    from fairbits.report.html import ReportContext

    res = classifier_results()
    write_accuracy_bias(tmp_path, res, ["skin", "sex"], n_boot=50, seed=0, min_group_n=10)
    empty = pd.DataFrame()
    ctx = ReportContext(tmp_path, res, empty, {"groups": ["skin", "sex"]}, empty, empty, empty, tmp_path / "figures")
    section = accuracy_section(ctx)
    assert section is not None and section.id == "accuracy-bias"
    png = tmp_path / "figures" / "accuracy_bias_eye.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<img" in section.html and "max − min" in section.html and "dark" in section.html
    assert accuracy_section(ReportContext(tmp_path / "x", res, empty, {}, empty, empty, empty, tmp_path)) is None
