"""Column kinds, findings.csv and Benjamini–Hochberg q-values (issue 11, items 1–3).

The planted table has one cell per (codec, setting) and three skin groups of 40 images:

* ``psnr`` (a degradation, higher is better): the ``dark`` group loses 6 dB (SD 1);
* ``ciede2000`` (a degradation, lower is better): ``dark`` is 2 units worse (SD 1);
* ``delta_ita`` (a drift): ``light`` comes back +1° lighter, ``dark`` −2° darker (SD 1),
  so the group that moved most is ``dark`` although ``light`` has the highest mean;
* ``ita_orig`` (descriptive): 80° between light and dark originals — a description of
  the dataset, never a finding;
* ``ssim`` (a degradation with no group effect): the null measure.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairbits.bias.fdr import bh_q_values
from fairbits.bias.findings import FINDINGS_COLUMNS, findings_table, read_findings
from fairbits.bias.kinds import resolve_kinds
from fairbits.bias.stats import bias_table, read_table, summarize_run, with_q_values, write_stats
from fairbits.measures.base import ColumnKind, column_kind

GROUPS = ("light", "medium", "dark")
MEASURES = ["psnr", "ciede2000", "delta_ita", "ita_orig", "ssim"]


def planted(n_per_group: int = 40, cells=(("jpeg", "q10"), ("jpeg", "q50"), ("webp", "q10"), ("webp", "q50")),
            seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    grp = np.repeat(GROUPS, n_per_group)
    n = len(grp)
    dark, light = grp == "dark", grp == "light"
    frames = []
    for codec, setting in cells:
        frames.append(pd.DataFrame({
            "image_id": [f"i{k}" for k in range(n)], "codec": codec, "setting": setting, "bpp": 0.3,
            "psnr": 30 - 6.0 * dark + rng.normal(0, 1, n),
            "ciede2000": 5 + 2.0 * dark + rng.normal(0, 1, n),
            "delta_ita": 1.0 * light - 2.0 * dark + rng.normal(0, 1, n),
            "ita_orig": np.select([light, dark], [50.0, -30.0], 10.0) + rng.normal(0, 5, n),
            "ssim": 0.9 + rng.normal(0, 0.02, n),
            "skin": grp, "error": None}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def bias():
    return bias_table(planted(), "skin", MEASURES, n_boot=200, n_perm=999)


def test_kinds_come_from_the_measures_declarations(bias):
    kinds = bias.drop_duplicates("measure").set_index("measure")["kind"].to_dict()
    assert kinds == {"psnr": "degradation", "ciede2000": "degradation", "delta_ita": "drift",
                     "ita_orig": "descriptive", "ssim": "degradation"}


def test_findings_rank_the_planted_effect_first_and_skip_descriptions(bias):
    f = findings_table(bias)
    assert list(f.columns) == FINDINGS_COLUMNS
    assert "ita_orig" not in set(f.measure)  # the largest group difference of all, but a description
    assert len(f) == 4 * 4  # one row per cell, measure (degradation or drift) and attribute
    assert (f.iloc[:4].measure == "psnr").all()  # largest effect size: 6 dB over an SD of 1
    assert f.iloc[0].effect_size == pytest.approx(6.0, rel=0.25)
    # the old ranking (gap / pooled mean) put the drift first: its pooled mean is near 0
    assert bias[bias.measure == "delta_ita"].rel_gap.min() > bias[bias.measure == "psnr"].rel_gap.max()


def test_worst_group_follows_the_kind(bias):
    f = findings_table(bias)
    for measure, worst, best in (("psnr", "dark", {"light", "medium"}), ("ciede2000", "dark", {"light", "medium"}),
                                 ("delta_ita", "dark", {"medium"})):
        rows = f[f.measure == measure]
        assert (rows.worst_group == worst).all(), measure
        assert rows.best_group.isin(best).all(), measure
    drift = f[f.measure == "delta_ita"]
    assert (drift.worst_mean < 0).all() and (drift.worst_mean.abs() > drift.best_mean.abs()).all()
    # descriptive rows keep their gap in bias.csv but name no worst or best group
    desc = bias[bias.measure == "ita_orig"]
    assert desc.worst_group.isna().all() and desc.q_value.isna().all() and (desc.gap > 70).all()


def test_null_measure_is_not_significant_after_correction(bias):
    f = findings_table(bias)
    null = f[f.measure == "ssim"]
    assert not null.significant.any() and (null.q_value >= 0.05).all()
    assert f[f.measure.isin(["psnr", "ciede2000", "delta_ita"])].significant.all()
    assert f.significant.iloc[:12].all() and not f.significant.iloc[12:].any()  # significant rows first


def test_q_values_against_a_hand_computation():
    # sorted p: 0.005, 0.01, 0.03, 0.04 (m = 4) → p·m/rank = 0.02, 0.02, 0.04, 0.04
    q = bh_q_values([0.01, 0.04, 0.03, 0.005, np.nan])
    np.testing.assert_allclose(q[:4], [0.02, 0.04, 0.04, 0.02])
    assert np.isnan(q[4])
    # step-up: 0.02·4/2 = 0.04 is lowered to the next rank's 0.021·4/3 = 0.028
    np.testing.assert_allclose(bh_q_values([0.01, 0.02, 0.2, 0.021]), [0.028, 0.028, 0.2, 0.028])


def test_permutation_floor_defeats_bonferroni_not_bh():
    """700 tests with 1000 shuffles: p can never be below 1/1001, Bonferroni's threshold
    0.05/700 is, so it finds nothing; BH finds the 20 tests at the floor."""
    p = np.full(700, 0.5)
    p[:20] = 1 / 1001
    assert (p * len(p) >= 0.05).all()  # Bonferroni: nothing significant
    q = bh_q_values(p)
    assert (q[:20] < 0.05).all() and (q[20:] >= 0.05).all()


def test_q_values_are_over_every_test_of_the_run(bias):
    paired = pd.DataFrame({"kind": ["degradation", "descriptive", "drift"], "p_value": [0.001, 0.001, np.nan]})
    b, p = with_q_values(bias, paired)
    tested = b.kind.isin(["degradation", "drift"])
    family = np.concatenate([b.p_value[tested].to_numpy(), [0.001]])
    q = bh_q_values(family)
    np.testing.assert_allclose(b.q_value[tested], q[:-1])
    assert p.q_value[0] == pytest.approx(q[-1]) and p.q_value[1:].isna().all()
    assert b.q_value[~tested].isna().all()


def test_summarize_run_corrects_across_attributes():
    r = planted()
    r["half"] = np.where(np.arange(len(r)) % 2, "x", "y")
    _, b, _ = summarize_run(r, ["skin", "half"], MEASURES, n_boot=50, n_perm=199)
    tested = b.kind.isin(["degradation", "drift"])
    np.testing.assert_allclose(b.q_value[tested], bh_q_values(b.p_value[tested]))


def _run_dir(tmp_path: Path, results: pd.DataFrame, **info) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "run.json").write_text(json.dumps({"groups": ["skin"], "seed": 0, "cells": [], **info}))
    return tmp_path


def test_write_stats_writes_findings_and_reads_back(tmp_path):
    r = planted()
    run = _run_dir(tmp_path, r, measures=MEASURES)
    paths = write_stats(run, r, n_boot=50, n_perm=199)
    assert paths["findings"] == run / "findings.csv"
    f = read_findings(run)
    pd.testing.assert_frame_equal(f, findings_table(read_table(run / "bias.csv")), check_dtype=False)
    assert f.significant.dtype == bool and f.iloc[0].measure == "psnr"
    b = read_table(run / "bias.csv")
    assert {"kind", "q_value", "effect_size"} <= set(b.columns)


def test_report_works_from_stored_kinds_and_old_directions(tmp_path):
    r = planted().rename(columns={"psnr": "my_score"})
    # run.json records kinds: an undeclared column is a degradation (lower is better) there
    run = _run_dir(tmp_path / "new", r, measures=["my_score", "delta_ita"],
                   column_kinds={"my_score": {"kind": "degradation", "higher_is_better": False}})
    write_stats(run, r, n_boot=50, n_perm=199)
    f = read_findings(run)
    mine = f[f.measure == "my_score"]
    assert len(mine) == 4 and (mine.worst_group.isin(["light", "medium"])).all()  # highest mean is worst
    # an old run.json with directions only: a declared column keeps its declared kind (the
    # recorded "lower is better" of delta_ita is wrong for a drift); others follow the record
    old = _run_dir(tmp_path / "old", r, measures=["my_score", "delta_ita"],
                   directions={"my_score": True, "delta_ita": False})
    write_stats(old, r, n_boot=50, n_perm=199)
    b = read_table(old / "bias.csv").drop_duplicates("measure").set_index("measure")
    assert b.loc["delta_ita", "kind"] == "drift" and b.loc["delta_ita", "worst_group"] == "dark"
    assert b.loc["my_score", "kind"] == "degradation" and b.loc["my_score", "worst_group"] == "dark"


def test_resolve_kinds_order():
    info = {"column_kinds": {"psnr": {"kind": "descriptive", "higher_is_better": None}},
            "directions": {"x": False, "delta_L": False}}
    k = resolve_kinds(["psnr", "x", "delta_L", "ssim", "unknown"], run_info=info)
    assert k["psnr"].kind == "descriptive"  # recorded kinds win over the declarations
    assert k["x"] == ColumnKind("degradation", False)  # old record for an undeclared column
    assert k["delta_L"].kind == "drift" and k["ssim"] == ColumnKind("degradation", True)
    assert k["unknown"].kind == "descriptive"  # undeclared: described, never ranked
    assert resolve_kinds(["ssim"], directions={"ssim": False})["ssim"].higher_is_better is False


@pytest.mark.parametrize("column,kind,hib", [
    ("ita_orig", "descriptive", None), ("ita_recon", "descriptive", None), ("monk_orig", "descriptive", None),
    ("monk_recon", "descriptive", None), ("skin_group_pred_orig", "descriptive", None),
    ("skin_group_pred_recon", "descriptive", None), ("face_found", "descriptive", None),
    ("bpp", "descriptive", None), ("skin_group_correct_orig", "descriptive", None),
    ("skin_group_loss_orig", "descriptive", None), ("skin_group_correct_recon", "degradation", True),
    ("skin_group_loss_recon", "degradation", False), ("skin_group_flip", "degradation", False),
    ("gender_correct_recon", "degradation", True), ("delta_ita", "drift", None), ("delta_L", "drift", None),
    ("delta_age", "drift", None), ("delta_nose_ratio", "drift", None), ("delta_e_skin", "degradation", False),
    ("monk_changed", "degradation", False), ("identity_cos", "degradation", True),
    ("identity_nonmatch", "degradation", False), ("face_found_recon", "degradation", True),
    ("landmark_nme", "degradation", False), ("psnr", "degradation", True), ("ciede2000", "degradation", False),
])
def test_declared_kinds(column, kind, hib):
    assert column_kind(column) == ColumnKind(kind, hib)


def test_every_registered_column_has_a_kind():
    from fairbits.measures import base

    for m in base._MEASURES.values():
        assert set(m.columns) <= set(m.kinds), m.name
    with pytest.raises(ValueError, match="declares no kind"):
        base.Measure("bad", ("a",), lambda *a: {}, kinds={})
    with pytest.raises(ValueError, match="higher_is_better"):
        ColumnKind("degradation")


def test_registry_is_a_leaf_module():
    """measures/base.py imports no implementation; the package imports them."""
    import fairbits.measures.base as base

    tree = ast.parse(Path(base.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m and m.startswith("fairbits")} <= {"fairbits.errors"}
    assert not hasattr(base, "HIGHER_IS_BETTER") and not hasattr(base, "_load_builtins")
    init = Path(base.__file__).with_name("__init__.py").read_text()
    assert "from fairbits.measures import classifiers, face, pixel" in init
