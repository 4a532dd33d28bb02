"""The permutation test shared by every measure column of a cell (issue 10, item 8).

One set of ``n_perm`` random orders of a cell's labelled rows, drawn from a generator keyed
by ``(seed, attribute, codec, setting)``, serves every column; each column's usable rows
fill its groups' slots in that order. Checked here against a direct, loop-by-loop test on
the same draws, for its level under the null and its power, its determinism, and that the
bootstrap did not change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fairbits.bias.intervals as intervals
import fairbits.bias.permutation as permutation
from fairbits.bias.intervals import bootstrap_mean_sd, mean_interval
from fairbits.bias.permutation import draw_orders
from fairbits.bias.stats import bias_table, group_summary, summarize_run
from fairbits.seeding import keyed_seed


def cell_table(n_per_group=(40, 30, 25, 6), shift=None, seed=0, codec="jpeg",
               setting="q10") -> pd.DataFrame:
    """One cell, groups ``g0..`` with ``n_per_group`` rows; columns with the awkward cases:
    ``x`` continuous, ``flip`` a 0/1 rate (ties), ``nan_x`` with NaN rows (so group ``g2``
    falls below 10 usable rows), ``inf_x`` with infinite rows, ``steps`` integers."""
    rng = np.random.default_rng(seed)
    grp = np.repeat([f"g{k}" for k in range(len(n_per_group))], n_per_group)
    n = len(grp)
    mu = np.repeat(shift if shift is not None else np.zeros(len(n_per_group)), n_per_group)
    nan_x = rng.normal(size=n) + mu
    nan_x[rng.random(n) < 0.1] = np.nan
    nan_x[np.flatnonzero(grp == "g2")[:18]] = np.nan  # g2 keeps at most 7 usable rows here
    inf_x = rng.normal(size=n) + mu
    inf_x[::7] = np.inf
    frame = pd.DataFrame({
        "image_id": [f"i{k}" for k in range(n)], "codec": codec, "setting": setting, "bpp": 0.5, "grp": grp,
        "error": None, "x": rng.normal(size=n) + mu, "flip": (rng.random(n) < 0.3 + 0.2 * (mu > 0)).astype(float),
        "nan_x": nan_x, "inf_x": inf_x, "steps": rng.integers(0, 4, n).astype(float) + np.round(mu),
    })
    frame.loc[frame.index[3], "grp"] = None  # an unlabelled row: in no test
    frame.loc[frame.index[5], "error"] = "decode failed"  # an error row: in no test
    return frame


COLUMNS = ["x", "flip", "nan_x", "inf_x", "steps"]


def direct_p_values(frame: pd.DataFrame, attribute: str, columns, n_perm: int, seed: int,
                    min_group_n: int = 10) -> dict[str, float]:
    """The test done the slow, obvious way on the documented draws: for each column, its
    usable rows (no error, labelled, finite, group with ≥ min_group_n such rows), put in the
    order each permutation gives them, fill the groups' slots (smallest group first); the
    p-value counts permuted gaps ≥ the observed one."""
    frame = frame[frame["error"].isna() & frame[attribute].notna()].reset_index(drop=True)
    codec, setting = frame["codec"].iloc[0], frame["setting"].iloc[0]
    rng = np.random.default_rng(keyed_seed(seed, "permutation", attribute, codec, setting))
    orders = draw_orders(rng, n_perm, len(frame))
    out = {}
    for col in columns:
        v = frame[col].to_numpy(dtype=float)
        finite = np.isfinite(v)
        counts = frame.loc[finite, attribute].value_counts()
        keep = counts[counts >= min_group_n]
        if len(keep) < 2:
            out[col] = float("nan")
            continue
        usable = finite & frame[attribute].isin(keep.index).to_numpy()
        observed = frame[usable].groupby(attribute)[col].mean()
        gap = observed.max() - observed.min()
        sizes = sorted(keep.to_numpy())
        tol = 1e-12 * max(1.0, abs(gap), np.abs(v[usable]).max())
        hits = 0
        for order in orders:
            rows = [r for r in order if usable[r]]
            means, at = [], 0
            for size in sizes:
                means.append(np.mean(v[rows[at:at + size]]))
                at += size
            hits += max(means) - min(means) >= gap - tol
        out[col] = (1 + hits) / (1 + n_perm)
    return out


@pytest.mark.parametrize("path", ["gather", "product"])
def test_matches_a_direct_test_on_the_same_draws(monkeypatch, path):
    monkeypatch.setattr(permutation, "_gather_is_cheaper", lambda *a: path == "gather")
    r = cell_table(shift=(0.0, 0.4, 0.0, 0.0))
    got = bias_table(r, "grp", COLUMNS, n_boot=0, n_perm=200, seed=11).set_index("measure").p_value
    want = direct_p_values(r, "grp", COLUMNS, n_perm=200, seed=11)
    for col in COLUMNS:
        assert got[col] == pytest.approx(want[col], abs=1e-15), col
    assert len(set(got.round(6))) >= 3  # not all equal: the columns did get different tests
    small = bias_table(r, "grp", ["nan_x"], n_boot=0, n_perm=10).iloc[0]
    assert "g2" in small["small_groups"] and "g3" in small["small_groups"]  # g2 left out for nan_x only
    assert "g2" not in bias_table(r, "grp", ["x"], n_boot=0, n_perm=10).iloc[0]["small_groups"]


def test_same_seed_same_p_values_whatever_the_chunks_or_the_other_columns(monkeypatch):
    r = pd.concat([cell_table(seed=1), cell_table(seed=2, setting="q50")], ignore_index=True)
    first = bias_table(r, "grp", COLUMNS, n_boot=0, n_perm=300, seed=4)
    again = bias_table(r, "grp", COLUMNS, n_boot=0, n_perm=300, seed=4)
    pd.testing.assert_series_equal(first.p_value, again.p_value)
    monkeypatch.setattr(intervals, "_CHUNK_ELEMENTS", 500)  # many small chunks of draws
    monkeypatch.setattr(permutation, "_SMALL_CELL", 0)  # drawn one permutation at a time
    chunked = bias_table(r, "grp", COLUMNS, n_boot=0, n_perm=300, seed=4)
    pd.testing.assert_series_equal(first.p_value, chunked.p_value)
    for col in ("nan_x", "flip"):  # a column's p-value does not depend on the columns beside it
        alone = bias_table(r, "grp", [col], n_boot=0, n_perm=300, seed=4).p_value.to_numpy()
        np.testing.assert_array_equal(alone, first[first.measure == col].p_value.to_numpy())
    other = bias_table(r, "grp", COLUMNS, n_boot=0, n_perm=300, seed=5)
    assert not np.allclose(first.p_value, other.p_value, equal_nan=True)


def test_draws_do_not_depend_on_chunking():
    whole = draw_orders(np.random.default_rng(3), 7, 50)
    rng = np.random.default_rng(3)
    parts = np.concatenate([draw_orders(rng, 3, 50), draw_orders(rng, 4, 50)])
    one_by_one = np.random.default_rng(3)
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_array_equal(whole, np.stack([one_by_one.permutation(50) for _ in range(7)]))
    assert all(sorted(o) == list(range(50)) for o in whole)


def test_level_holds_under_the_null():
    """400 independent null cells (three groups of 20, 30 and 40 exchangeable rows): the
    share of p ≤ α stays within Monte-Carlo error (3 SE) of α, at most α for a valid test,
    for a continuous column, one with NaN rows and the 0/1 rate with its many ties."""
    cells, columns = 400, ["x", "nan_x", "flip"]
    frames = [cell_table(n_per_group=(20, 30, 40), seed=100 + k, codec=f"c{k}") for k in range(cells)]
    b = bias_table(pd.concat(frames, ignore_index=True), "grp", columns, n_boot=0, n_perm=199, seed=0)
    for col in columns:
        p = b[b.measure == col].p_value.to_numpy()
        assert len(p) == cells and np.isfinite(p).all()
        for alpha in (0.05, 0.2, 0.5):
            rate = np.mean(p <= alpha)
            se = np.sqrt(alpha * (1 - alpha) / cells)
            assert rate <= alpha + 3 * se, (col, alpha, rate)
            if col != "flip":  # continuous: close to uniform, not just valid (ties make "flip" conservative)
                assert rate >= alpha - 3 * se, (col, alpha, rate)


def test_a_real_effect_gives_the_smallest_p():
    r = cell_table(n_per_group=(40, 40, 40), shift=(0.0, 1.5, 0.0))
    b = bias_table(r, "grp", COLUMNS, n_boot=0, n_perm=499).set_index("measure")
    for col in ("x", "nan_x", "inf_x", "steps"):
        assert b.loc[col, "p_value"] == pytest.approx(1 / 500), col
    assert b.loc["flip", "p_value"] < 0.05


def test_bootstrap_is_unchanged():
    """Group intervals and gap intervals come from the bootstrap generator documented before
    the permutation test got its own: the first child of keyed_seed(seed, attribute, codec,
    setting, measure), groups in sorted order."""
    r = cell_table(shift=(0.0, 0.5, -0.3, 0.0))
    s = group_summary(r, "grp", ["nan_x"], n_boot=400, seed=9)
    _, b, _ = summarize_run(r, ["grp"], ["nan_x"], n_boot=400, n_perm=50, seed=9)
    clean = r[r.error.isna() & r.grp.notna() & np.isfinite(r.nan_x)]
    rng = np.random.default_rng(keyed_seed(9, "grp", "jpeg", "q10", "nan_x").spawn(2)[0])
    boot = {}
    for g, v in sorted(clean.groupby("grp").nan_x):
        bm, bs = bootstrap_mean_sd(v.to_numpy(), 400, rng)
        boot[g] = bm
        lo, hi, _ = mean_interval(v.to_numpy(), bm, bs, 0.95)
        row = s[s.group == g].iloc[0]
        assert (row.ci_low, row.ci_high) == (lo, hi)
    compared = np.column_stack([boot["g0"], boot["g1"]])  # g2 (7 rows) and g3 (6) are left out
    gaps = compared.max(axis=1) - compared.min(axis=1)
    lo, hi = np.quantile(gaps, [0.025, 0.975])  # 2-D and 1-D quantiles may differ in the last bit
    assert b.gap_ci_low.iloc[0] == pytest.approx(lo, rel=1e-13)
    assert b.gap_ci_high.iloc[0] == pytest.approx(hi, rel=1e-13)
