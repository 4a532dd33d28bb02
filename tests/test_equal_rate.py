"""Bias at equal rate (issue 11, item 5): interpolation in log bpp between measured
settings only, the gap by kind, its bootstrap interval and the figure."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fairbits.bias.equal_rate import (EQUAL_RATE_COLUMNS, equal_rate_table, equal_rate_tables, read_equal_rate,
                                      resampled_means, write_equal_rate)
from fairbits.bias.intervals import bootstrap_means
from fairbits.errors import FairbitsError, SpecError
from fairbits.measures.base import HIGHER, LOWER, PROPERTY, SIGNED

# Group A reaches 0.04 / 0.16 / 0.64 bpp at the three settings, group B 0.05 / 0.2 / 0.8.
BPP = {"A": (0.04, 0.16, 0.64), "B": (0.05, 0.2, 0.8)}
# psnr = a + c·ln(bpp) exactly, per group: A = 30 + 4 ln b, B = 25 + 6 ln b
PSNR = {"A": (30.0, 4.0), "B": (25.0, 6.0)}
KINDS = {"psnr": HIGHER, "ciede2000": LOWER, "delta_ita": SIGNED, "ita_orig": PROPERTY, "bpp": PROPERTY}


def linear_table(n: int = 20, codec: str = "c", settings=("s0", "s1", "s2")) -> pd.DataFrame:
    """Every image of a (setting, group) has the group's bpp; psnr is its exact line ±1
    (half the images +1, half −1, so the group mean is on the line); ``ciede2000`` = 40 −
    psnr; ``delta_ita`` = +1 per setting index for A and −3 for B; ``ita_orig`` a huge
    group difference that is a description, never a gap."""
    rows = []
    for s, setting in enumerate(settings):
        for g in "AB":
            b = BPP[g][s]
            a, c = PSNR[g]
            psnr = a + c * np.log(b) + np.tile([1.0, -1.0], n // 2)
            rows.append(pd.DataFrame({
                "image_id": [f"{g}{k}" for k in range(n)], "codec": codec, "setting": setting, "bpp": b,
                "psnr": psnr, "ciede2000": 40 - psnr, "delta_ita": (1.0 if g == "A" else -3.0) * (s + 1),
                "ita_orig": 50.0 if g == "A" else -30.0, "skin": g, "error": None}))
    return pd.concat(rows, ignore_index=True)


def psnr_gap(rate: float) -> float:
    (a1, c1), (a2, c2) = PSNR["A"], PSNR["B"]
    return abs((a1 - a2) + (c1 - c2) * np.log(rate))


@pytest.fixture(scope="module")
def linear():
    return equal_rate_table(linear_table(), ["skin"], KINDS, rates=[0.03, 0.05, 0.1, 0.25, 0.5, 0.7], n_boot=200)


def test_linear_in_log_bpp_is_interpolated_exactly(linear):
    assert list(linear.columns) == EQUAL_RATE_COLUMNS
    psnr = linear[linear.measure == "psnr"].set_index("rate")
    # 0.03 is below B's lowest rate (0.05), 0.7 above A's highest (0.64): no rows there
    assert list(psnr.index) == pytest.approx([0.05, 0.1, 0.25, 0.5])
    for rate, row in psnr.iterrows():
        assert row.gap == pytest.approx(psnr_gap(rate), abs=1e-12)
        a, c = PSNR["B"]
        assert row.worst_group == "B" and row.worst_value == pytest.approx(a + c * np.log(rate))
        assert row.best_group == "A"
        assert row.rate_min == pytest.approx(0.05) and row.rate_max == pytest.approx(0.64)
        assert row.n_groups == 2 and row.n_settings == 3 and row.kind == "degradation"
        assert row.gap_ci_low <= row.gap <= row.gap_ci_high


def test_interpolation_by_hand_between_two_settings():
    """A: 10 at 0.1 bpp and 20 at 0.4 bpp; at 0.2 bpp, halfway in log bpp, 15 (13.3 if it
    were linear in bpp); B is flat at 12, so the gap is 3 and A is the best group."""
    rows = []
    for setting, bpp_a, bpp_b, va in (("lo", 0.1, 0.08, 10.0), ("hi", 0.4, 0.5, 20.0)):
        for g, b, v in (("A", bpp_a, va), ("B", bpp_b, 12.0)):
            rows.append(pd.DataFrame({"codec": "c", "setting": setting, "bpp": b, "psnr": v, "skin": g},
                                     index=range(12)))
    t = equal_rate_table(pd.concat(rows, ignore_index=True), ["skin"], {"psnr": HIGHER}, rates=[0.2], n_boot=50)
    row = t.iloc[0]
    assert row.best_value == pytest.approx(15.0) and row.gap == pytest.approx(3.0)
    assert (row.best_group, row.worst_group) == ("A", "B") and row.worst_value == pytest.approx(12.0)
    assert (row.rate_min, row.rate_max) == pytest.approx((0.1, 0.4))


def test_worst_group_follows_the_kind(linear):
    ciede = linear[linear.measure == "ciede2000"]  # lower is better: the higher ΔE of B is worst
    assert (ciede.worst_group == "B").all() and np.allclose(ciede.gap, [psnr_gap(r) for r in ciede.rate])
    drift = linear[linear.measure == "delta_ita"].set_index("rate")
    # at 0.1 bpp A has moved +1.66 (between +1 at 0.04 and +2 at 0.16), B −4.5 (between −3 and −6):
    # B has the lowest mean *and* moved most; at every rate the drift's worst group is the one
    # with the largest absolute mean
    row = drift.loc[0.1]
    wa = np.log(0.1 / 0.04) / np.log(0.16 / 0.04)
    wb = np.log(0.1 / 0.05) / np.log(0.2 / 0.05)
    assert row.best_value == pytest.approx(1 + wa) and row.worst_value == pytest.approx(-3 - 3 * wb)
    assert row.gap == pytest.approx((1 + wa) + (3 + 3 * wb)) and row.kind == "drift"
    assert (drift.worst_group == "B").all()
    assert set(linear.measure) == {"psnr", "ciede2000", "delta_ita"}  # never ita_orig, never bpp


def test_drift_worst_group_is_the_one_that_moved_most_not_the_lowest():
    t = linear_table()
    t["delta_ita"] = np.where(t.skin == "A", 5.0, -1.0)  # A moved most, although B is lowest
    row = equal_rate_table(t, ["skin"], {"delta_ita": SIGNED}, rates=[0.1], n_boot=0).iloc[0]
    assert (row.worst_group, row.best_group, row.gap) == ("A", "B", pytest.approx(6.0))
    assert np.isnan(row.gap_ci_low)  # n_boot = 0: no interval


def test_never_extrapolates():
    t = linear_table()
    one_setting = linear_table(codec="single", settings=("only",))
    both = pd.concat([t, one_setting], ignore_index=True)
    table, curves = equal_rate_tables(both, ["skin"], {"psnr": HIGHER}, rates=[0.05, 0.1], n_boot=20)
    assert set(table.codec) == {"c"} and set(curves.codec) == {"c"}  # a codec with one setting has no curve
    assert curves.rate.min() == pytest.approx(0.05) and curves.rate.max() == pytest.approx(0.64)
    # B too small at the top setting: its curve ends at 0.2 bpp, and so does the codec's range
    index = t.image_id.str[1:].astype(int)
    small = t[~((t.skin == "B") & (t.setting == "s2") & (index >= 5))]  # 5 images left
    cut = equal_rate_table(small, ["skin"], {"psnr": HIGHER}, rates=[0.1, 0.25], n_boot=20, min_group_n=10)
    assert list(cut.rate) == pytest.approx([0.1]) and cut.rate_max.iloc[0] == pytest.approx(0.2)
    assert cut.n_settings.iloc[0] == 3
    # B too small at two settings: one point is no curve, so B is left out and nothing is compared
    one_point = t[~((t.skin == "B") & (t.setting != "s0") & (index >= 5))]
    assert equal_rate_table(one_point, ["skin"], {"psnr": HIGHER}, n_boot=20, min_group_n=10).empty
    # a third group C with one usable setting is left out, and the note says so
    c = linear_table(settings=("s0",)).query("skin == 'A'").assign(skin="C")
    noted = equal_rate_table(pd.concat([t, c], ignore_index=True), ["skin"], {"psnr": HIGHER}, n_boot=20)
    assert (noted.n_groups == 2).all() and noted.note.str.contains("C").all()


@pytest.mark.slow
def test_interval_covers_the_truth():
    """Noisy groups whose mean is linear in the log of their expected bpp, bpp itself noisy:
    the 95 % interval of the gap at 0.1 bpp covers the true gap in most of 150 replications."""
    truth = psnr_gap(0.1)
    covered, reps = 0, 150
    for rep in range(reps):
        rng = np.random.default_rng(rep)
        rows = []
        for s in range(3):
            for g in "AB":
                n = 40
                a, c = PSNR[g]
                rows.append(pd.DataFrame({"codec": "c", "setting": f"s{s}", "skin": g,
                                          "bpp": BPP[g][s] * rng.lognormal(-0.02, 0.2, n),  # mean: BPP
                                          "psnr": a + c * np.log(BPP[g][s]) + rng.normal(0, 3, n)}))
        row = equal_rate_table(pd.concat(rows, ignore_index=True), ["skin"], {"psnr": HIGHER}, rates=[0.1],
                               n_boot=300, seed=rep).iloc[0]
        covered += row.gap_ci_low <= truth <= row.gap_ci_high
    assert covered / reps >= 0.88, covered / reps


def test_seeded_and_independent_of_other_codecs():
    t = linear_table()
    t["psnr"] += np.random.default_rng(0).normal(0, 1, len(t))
    other = linear_table(codec="d").assign(psnr=lambda d: d.psnr + 1)
    alone = equal_rate_table(t, ["skin"], KINDS, n_boot=100, seed=5)
    together = equal_rate_table(pd.concat([other, t], ignore_index=True), ["skin"], KINDS, n_boot=100, seed=5)
    pd.testing.assert_frame_equal(alone, together[together.codec == "c"].reset_index(drop=True))
    reseeded = equal_rate_table(t, ["skin"], KINDS, n_boot=100, seed=6)
    assert np.allclose(reseeded.gap, alone.gap) and not np.allclose(reseeded.gap_ci_low, alone.gap_ci_low)
    # a column's interval does not depend on the other columns analysed beside it, with or without NaN rows
    t.loc[t.index[::7], "ciede2000"] = np.nan
    full = equal_rate_table(t, ["skin"], KINDS, n_boot=100, seed=5)
    for measure, kind in (("psnr", HIGHER), ("ciede2000", LOWER)):
        one = equal_rate_table(t, ["skin"], {measure: kind}, n_boot=100, seed=5)
        pd.testing.assert_frame_equal(one, full[full.measure == measure].reset_index(drop=True))


def test_shared_resampling_equals_resampling_each_column():
    """The counts × values means equal the means of the resampled rows themselves (the
    plain bootstrap of :mod:`fairbits.bias.intervals`, same generator state, same draws)."""
    values = np.random.default_rng(0).lognormal(0, 1, (37, 3))
    for n_boot in (1, 500):
        fast = resampled_means(values, n_boot, np.random.default_rng(1))
        plain = bootstrap_means(values, n_boot, np.random.default_rng(1))
        assert fast.shape == (n_boot, 3) and np.allclose(fast, plain, rtol=1e-12)
    assert resampled_means(values, 0, np.random.default_rng(1)).shape == (0, 3)


def test_errors_and_bad_configuration():
    t = linear_table()
    t.loc[t.index[:2], "error"] = "encode failed"  # one +1 and one −1 row: the mean stays on the line
    t.loc[t.index[:2], "psnr"] = 1e6  # an error row's value is never used
    row = equal_rate_table(t, ["skin"], {"psnr": HIGHER}, rates=[0.1], n_boot=0).iloc[0]
    assert row.gap == pytest.approx(psnr_gap(0.1))
    for rates in ([], [0.1, -1], [0.1, float("nan")], "fast"):
        with pytest.raises(FairbitsError, match="rates"):
            equal_rate_table(t, ["skin"], {"psnr": HIGHER}, rates=rates)
    with pytest.raises(SpecError, match="race"):
        equal_rate_table(t, ["race"], {"psnr": HIGHER})
    with pytest.raises(SpecError, match="group columns"):
        equal_rate_table(t, [], {"psnr": HIGHER})
    with pytest.raises(FairbitsError, match="min_group_n"):
        equal_rate_table(t, ["skin"], {"psnr": HIGHER}, min_group_n=0)


def test_writer_kinds_from_run_json_and_nothing_to_compare(tmp_path):
    t = linear_table()
    (tmp_path / "run.json").write_text(json.dumps({"column_kinds": {"psnr": LOWER.to_dict()}}))
    path = write_equal_rate(tmp_path, t.drop(columns=["ciede2000"]), ["skin"], None, n_boot=20, seed=0)
    table, curves = read_equal_rate(tmp_path)
    assert path == tmp_path / "equal_rate.csv"
    # run.json says lower is better: A (higher psnr) is now the worst; delta_ita from the declarations
    assert (table[table.measure == "psnr"].worst_group == "A").all() and set(table.measure) == {"psnr", "delta_ita"}
    assert len(curves) > len(table) and set(curves.codec) == {"c"}
    # rates outside every range: the table is empty but the curves (the figure) remain
    assert write_equal_rate(tmp_path, t, ["skin"], KINDS, rates=[2.0], n_boot=20) is not None
    assert read_equal_rate(tmp_path)[0].empty and not read_equal_rate(tmp_path)[1].empty
    single = linear_table(settings=("only",))
    assert write_equal_rate(tmp_path / "none", single, ["skin"], KINDS, n_boot=20) is None
    assert read_equal_rate(tmp_path / "none") is None
    assert write_equal_rate(tmp_path, single, ["skin"], KINDS, n_boot=20) is None  # a report made again
    assert read_equal_rate(tmp_path) is None and not (tmp_path / "equal_rate_curves.csv").exists()


def test_figure_per_headline_measure(tmp_path):
    from fairbits.report.equal_rate import equal_rate_figure, equal_rate_section
    from fairbits.report.html import ReportContext

    t = pd.concat([linear_table(), linear_table(codec="d").assign(bpp=lambda d: d.bpp * 1.5)], ignore_index=True)
    t["sex"] = np.where(t.image_id.str[1:].astype(int) % 2 == 0, "f", "m")
    write_equal_rate(tmp_path, t, ["skin", "sex"], KINDS, n_boot=50)
    table, curves = read_equal_rate(tmp_path)
    fig = equal_rate_figure(curves, "psnr", table)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2 and all(ax.get_xscale() == "log" for ax in axes)
    assert axes[0].get_xlim() == axes[1].get_xlim() and axes[0].get_ylim() == axes[1].get_ylim()
    assert len(axes[0].get_lines()) == 2  # one line per codec
    empty = pd.DataFrame()
    ctx = ReportContext(tmp_path, t, empty, {"groups": ["skin", "sex"]}, empty, empty, empty, tmp_path / "figures")
    section = equal_rate_section(ctx)
    assert section is not None and section.id == "equal-rate" and section.html.count("<img") == 3
    for measure in ("psnr", "ciede2000", "delta_ita"):
        assert (tmp_path / "figures" / f"equal_rate_{measure}.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "figures" / "equal_rate_ita_orig.png").exists()
    assert equal_rate_section(ReportContext(tmp_path / "x", t, empty, {}, empty, empty, empty, tmp_path)) is None
