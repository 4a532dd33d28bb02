"""Training samplers: proportions, determinism, exact resume, mixed subsets, bad specs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairbits.data.samplers import make_sampler, parse_mix, subsample_with_mix
from fairbits.errors import DatasetError, SpecError

GROUPS = ("MST1-3", "MST4-7", "MST8-10")


def manifest(counts=(70, 20, 10)) -> pd.DataFrame:
    """A manifest with ``counts`` rows per skin group (imbalanced by default) plus one unlabelled row."""
    rows = [{"image_id": f"i{g}_{k:03d}", "skin_group": grp}
            for g, (grp, c) in enumerate(zip(GROUPS, counts)) for k in range(c)]
    rows.append({"image_id": "z_nolabel", "skin_group": None})
    return pd.DataFrame(rows)


def shares(df, idx, column="skin_group") -> dict:
    vals = df[column].iloc[idx].astype(str)
    return vals.value_counts(normalize=True).to_dict()


def test_natural_follows_the_data():
    df = manifest()
    s = make_sampler("natural", df, seed=1)
    idx = s.indices(40_000)
    assert idx.min() >= 0 and idx.max() == len(df) - 1
    got = shares(df, idx)
    for grp, c in zip(GROUPS, (70, 20, 10)):
        assert got[grp] == pytest.approx(c / len(df), abs=0.01)
    # uniform over rows: every row drawn roughly equally
    counts = np.bincount(idx, minlength=len(df))
    assert counts.min() > 0.6 * counts.mean() and counts.max() < 1.4 * counts.mean()


def test_balanced_equal_groups_and_uniform_within():
    df = manifest()
    s = make_sampler("balanced:skin_group", df, seed=2)
    idx = s.indices(30_000)
    got = shares(df, idx)
    assert set(got) == set(GROUPS)                      # the unlabelled row is never drawn
    for grp in GROUPS:
        assert got[grp] == pytest.approx(1 / 3, abs=0.015)
    small = np.flatnonzero(df["skin_group"] == "MST8-10")
    counts = np.bincount(idx, minlength=len(df))[small]
    assert counts.min() > 0.75 * counts.mean()          # within a group: uniform


@pytest.mark.parametrize("spec,mix", [("mix:skin_group=80/15/5", None),
                                      ("mix:skin_group", "80/15/5"),
                                      ("mix:skin_group", {"MST1-3": 16, "MST4-7": 3, "MST8-10": 1}),
                                      ("mix:skin_group=MST8-10:5,MST1-3:80,MST4-7:15", None)])
def test_mix_hits_its_proportions(spec, mix):
    df = manifest(counts=(10, 30, 60))                  # the mix is opposite to the data
    s = make_sampler(spec, df, seed=3, mix=mix)
    got = shares(df, s.indices(40_000))
    for grp, want in zip(GROUPS, (0.80, 0.15, 0.05)):
        assert got[grp] == pytest.approx(want, abs=0.01)


def test_determinism_and_exact_resume():
    df = manifest()
    a = make_sampler("balanced:skin_group", df, seed=7)
    b = make_sampler("balanced:skin_group", df, seed=7)
    c = make_sampler("balanced:skin_group", df, seed=8)
    first = a.indices(50)
    assert np.array_equal(first, b.indices(50))
    assert not np.array_equal(first, c.indices(50))

    state = a.state_dict()
    cont = a.indices(100)
    fresh = make_sampler("balanced:skin_group", df, seed=123)   # seed is overwritten by the state
    fresh.load_state_dict(state)
    assert fresh.drawn == 50
    assert np.array_equal(fresh.indices(100), cont)

    batches = make_sampler("natural", df, seed=0).batches(4)
    assert [len(next(batches)) for _ in range(3)] == [4, 4, 4]

    with pytest.raises(SpecError, match="sampler state"):
        make_sampler("natural", df, seed=0).load_state_dict(state)


def test_subsample_with_mix_builds_the_set():
    df = manifest(counts=(100, 40, 30))
    sub = subsample_with_mix(df, "skin_group", "80/15/5", n=80, seed=0)
    assert sub["skin_group"].value_counts().to_dict() == {"MST1-3": 64, "MST4-7": 12, "MST8-10": 4}
    assert sub["image_id"].is_unique and set(sub["image_id"]) <= set(df["image_id"])
    assert sub.attrs["mix"] == {"MST1-3": 64, "MST4-7": 12, "MST8-10": 4}
    again = subsample_with_mix(df, "skin_group", "80/15/5", n=80, seed=0)
    assert again["image_id"].tolist() == sub["image_id"].tolist()
    other = subsample_with_mix(df, "skin_group", "80/15/5", n=80, seed=1)
    assert other["image_id"].tolist() != sub["image_id"].tolist()
    # default n: the largest the scarcest group allows (MST1-3: 100 / 0.8 = 125)
    full = subsample_with_mix(df, "skin_group", "80/15/5", seed=0)
    assert len(full) == 125 and (full["skin_group"] == "MST1-3").sum() == 100
    with pytest.raises(DatasetError, match="MST1-3 needs"):
        subsample_with_mix(df, "skin_group", "80/15/5", n=200)


def test_bad_specs_are_clear():
    df = manifest()
    with pytest.raises(SpecError, match="unknown sampler"):
        make_sampler("weighted", df)
    with pytest.raises(DatasetError, match="not in the data"):
        make_sampler("balanced:ethnicity", df)
    with pytest.raises(SpecError, match="3 values"):
        make_sampler("mix:skin_group=80/20", df)
    with pytest.raises(SpecError, match="not present"):
        make_sampler("mix:skin_group", df, mix={"MST11": 1.0})
    with pytest.raises(SpecError, match="needs a column"):
        make_sampler("natural", df, mix="80/15/5")
    with pytest.raises(SpecError, match="once"):
        make_sampler("mix:skin_group", df)
    with pytest.raises(SpecError, match="not all zero"):
        parse_mix("0/0/0", list(GROUPS))
