"""Mitigation (issue 13, item 5): checkpoints that differ only in training data or objective,
compared with the natural ones at equal rate, and their Bjøntegaard rate price."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fairbits.bias.mitigation import (MITIGATION_COLUMNS, bd_rate, families, mitigation_table, read_mitigation,
                                      write_mitigation)
from fairbits.codecs.train.config import TrainConfig
from fairbits.measures.base import HIGHER, LOWER, SIGNED
from fairbits.report.mitigation import mitigation_section

ARCH = "bmshj2018-hyperprior"
KINDS = {"delta_e_skin": LOWER, "delta_ita": SIGNED, "psnr": HIGHER, "identity_cos": HIGHER}


def meta(lmbda: float, steps: int = 4000, **fields) -> dict:
    """A checkpoint's meta as training writes it (TrainConfig fields plus extra card values)."""
    fields = {"N": 64, "M": 96, **fields}
    return {**TrainConfig(arch=ARCH, lmbda=lmbda, steps=steps, **fields).to_dict(),
            "data": {"n_images": 100}, "train_psnr_estimate": 25.0}


# variant -> (training fields, bpp at the two checkpoints, psnr at them)
VARIANTS = {
    "natural": ({}, (0.04, 0.16), (25.0, 30.0)),
    "balanced": ({"sampler": "balanced:skin_group"}, (0.045, 0.18), (25.0, 30.0)),  # 12.5 % more bits
    "group-dro": ({"objective": "group-dro:skin_group"}, (0.04, 0.16), (24.0, 29.0)),  # 1 dB less
}
# delta_e_skin of group g in variant v = A[v][g] + C[v][g] · ln(bpp), exactly (mean of ±1 noise)
A = {"natural": {"A": 2.0, "B": 6.0}, "balanced": {"A": 2.0, "B": 4.0}, "group-dro": {"A": 3.0, "B": 4.0}}
C = {"natural": {"A": -0.5, "B": -1.0}, "balanced": {"A": -0.5, "B": -0.5}, "group-dro": {"A": -0.5, "B": -0.75}}
DRIFT = {"natural": {"A": 1.0, "B": -3.0}, "balanced": {"A": 0.5, "B": -1.0}, "group-dro": {"A": 1.0, "B": -2.0}}


def hand_made(n: int = 20) -> tuple[pd.DataFrame, dict]:
    """Rows in ``load_results``'s layout for three variants at two λ each, and their recipes."""
    rows, recipes = [], {}
    for v, (fields, bpps, psnrs) in VARIANTS.items():
        for lmbda, bpp, psnr in zip((0.0003, 0.002), bpps, psnrs):
            setting = f"{v}-l{lmbda}"
            recipes[(ARCH, setting)] = meta(lmbda, **fields)
            for g in "AB":
                noise = np.tile([1.0, -1.0], n // 2)
                rows.append(pd.DataFrame({
                    "image_id": [f"{g}{k}" for k in range(n)], "codec": ARCH, "setting": setting,
                    "checkpoint": setting, "mode": "fast", "bpp": bpp, "psnr": psnr + noise,
                    "delta_e_skin": A[v][g] + C[v][g] * np.log(bpp) + noise,
                    "delta_ita": DRIFT[v][g] * (1 if lmbda < 0.001 else 2) + noise,
                    "skin_group": g, "error": None}))
    rows.append(pd.DataFrame({"image_id": ["A0"], "codec": "jpeg", "setting": "q10", "checkpoint": None,
                              "mode": "exact", "bpp": 0.3, "psnr": 30.0, "delta_e_skin": 1.0, "delta_ita": 0.0,
                              "skin_group": "A", "error": None}))
    return pd.concat(rows, ignore_index=True), recipes


def de_gap(v: str, rate: float) -> float:
    return abs((A[v]["A"] - A[v]["B"]) + (C[v]["A"] - C[v]["B"]) * np.log(rate))


def ita_gap(v: str, rate: float) -> float:
    """Linear in log bpp between the two checkpoints (rates lo, hi) of variant v."""
    lo, hi = VARIANTS[v][1]
    w = np.log(rate / lo) / np.log(hi / lo)
    return abs(DRIFT[v]["A"] - DRIFT[v]["B"]) * (1 + w)


@pytest.fixture(scope="module")
def table():
    results, recipes = hand_made()
    return mitigation_table(results, recipes, ["skin_group"], KINDS, rates=[0.03, 0.05, 0.1, 0.25], n_boot=200,
                            min_group_n=5)


def test_gaps_change_and_bd_rate_against_known_values(table):
    assert list(table.columns) == MITIGATION_COLUMNS
    assert list(dict.fromkeys(table.variant)) == ["natural", "balanced", "group-dro"]
    assert set(table.measure) == {"delta_e_skin", "delta_ita"}  # psnr is no headline measure
    # the family covers 0.045-0.16 bpp: 0.03 and 0.25 are outside, nothing is extrapolated
    assert sorted(set(table.rate)) == pytest.approx([0.05, 0.1])
    assert (table.architecture == ARCH).all() and (table.family == 1).all()
    for row in table.itertuples():
        expect = (de_gap if row.measure == "delta_e_skin" else ita_gap)
        assert row.gap == pytest.approx(expect(row.variant, row.rate), abs=1e-9), row
        assert row.natural_gap == pytest.approx(expect("natural", row.rate), abs=1e-9)
        assert row.change_vs_natural == pytest.approx(expect(row.variant, row.rate) - expect("natural", row.rate),
                                                      abs=1e-9)
        assert row.gap_ci_low <= row.gap + 1e-12 and row.gap <= row.gap_ci_high + 1e-12
    bd = table.groupby("variant")["bd_rate_vs_natural"].agg(["min", "max"])
    assert (bd["min"] == bd["max"]).all()  # one price per variant
    assert bd.loc["natural", "min"] == pytest.approx(0.0, abs=1e-12)
    assert bd.loc["balanced", "min"] == pytest.approx(12.5, abs=1e-9)  # 1.125 x the rate at every PSNR
    # group-dro: log R = ln 0.04 + (q - 24)/5 · ln 4 against natural's (q - 25)/5 · ln 4: 4^(1/5) - 1
    assert bd.loc["group-dro", "min"] == pytest.approx(100 * (4 ** 0.2 - 1), abs=1e-9)
    de = table[(table.measure == "delta_e_skin") & (table.rate == 0.1)].set_index("variant")
    assert de.loc["balanced", "change_vs_natural"] < 0  # balanced narrows the ΔE gap at 0.1 bpp
    assert (de.worst_group == "B").all()
    assert (table.settings[table.variant == "balanced"] == "balanced-l0.0003+balanced-l0.002").all()


def test_middle_of_the_common_range_when_no_common_rate_is_inside():
    results, recipes = hand_made()
    t = mitigation_table(results, recipes, ["skin_group"], KINDS, rates=[0.5], n_boot=50, min_group_n=5)
    middle = np.sqrt(0.045 * 0.16)
    assert t.rate.to_numpy() == pytest.approx(np.full(len(t), middle))
    de = t[t.measure == "delta_e_skin"].set_index("variant")
    assert de.loc["group-dro", "gap"] == pytest.approx(de_gap("group-dro", middle))


def test_bd_rate_against_a_closed_form():
    # log R linear in PSNR on both curves: BD-rate = exp(mean over the common PSNR range of the
    # difference) - 1; the common range is [26, 30], the difference (a2 - a1) + (b2 - b1) q
    a1, b1, a2, b2 = np.log(0.01), 0.30, np.log(0.012), 0.28
    q1, q2 = np.array([24.0, 27.0, 30.0]), np.array([26.0, 33.0])
    ref = (np.exp(a1 + b1 * q1), q1)
    test = (np.exp(a2 + b2 * q2), q2)
    expect = 100 * np.expm1((a2 - a1) + (b2 - b1) * (26 + 30) / 2)
    assert bd_rate(ref, test) == pytest.approx(expect, rel=1e-9)
    assert bd_rate(test, ref) == pytest.approx(100 * np.expm1(-((a2 - a1) + (b2 - b1) * 28)), rel=1e-9)
    # two points each, rate up by 10 % at every quality: +10 %
    assert bd_rate(([0.1, 0.4], [28, 31]), ([0.11, 0.44], [28, 31])) == pytest.approx(10.0)
    assert np.isnan(bd_rate(([0.1, 0.4], [28, 31]), ([0.11, 0.44], [32, 35])))  # no common quality
    assert np.isnan(bd_rate(([0.1], [28]), ([0.11, 0.44], [28, 31])))  # one point: no curve


def test_write_read_and_no_file_with_a_single_variant(tmp_path):
    results, recipes = hand_made()
    cells = [{"id": f"{c}__{s}", "codec": c, "setting": s, "checkpoint": s, "target_bpp": None,
              "checkpoint_meta": m} for (c, s), m in recipes.items()]
    info = {"groups": ["skin_group"], "n_boot": 100, "seed": 0, "cells": cells,
            "spec": {"equal_rates": [0.05, 0.1], "min_group_n": 5},
            "column_kinds": {c: k.to_dict() for c, k in KINDS.items()}}
    (tmp_path / "run.json").write_text(json.dumps(info))
    path = write_mitigation(tmp_path, results)
    back = read_mitigation(tmp_path)
    assert path == tmp_path / "mitigation.csv" and len(back) == 3 * 2 * 2  # variants x measures x rates
    assert set(back.variant) == {"natural", "balanced", "group-dro"}
    section = mitigation_section(_context(tmp_path, results))
    assert section.title == "Mitigation" and section.html.count("<figure>") == 1
    assert "+12.5 %" in section.html  # balanced's price, in the table of variants
    # only natural checkpoints: nothing to compare, and the earlier file goes
    info["cells"] = [c for c in cells if c["setting"].startswith("natural")]
    (tmp_path / "run.json").write_text(json.dumps(info))
    assert write_mitigation(tmp_path, results) is None
    assert not (tmp_path / "mitigation.csv").exists() and read_mitigation(tmp_path) is None
    assert mitigation_section(_context(tmp_path, results)) is None


def _context(run_dir, results):
    from fairbits.report.context import ReportContext

    empty = pd.DataFrame()
    return ReportContext(run_dir, results, empty, {}, empty, empty, empty, run_dir / "figures")


def test_what_is_a_variant():
    nat = {(ARCH, "n1"): meta(0.0003, steps=4300), (ARCH, "n2"): meta(0.002, steps=4200)}
    # other widths: another recipe, not a variant of natural
    assert families({**nat, (ARCH, "w"): meta(0.0003, steps=4300, sampler="balanced:skin_group", N=128)}) == []
    # checkpoints of other codecs never pair, and a CompressAI checkpoint has no recipe
    assert families({**nat, ("mbt2018-mean", "b"): {**meta(0.0003, steps=4300, sampler="balanced:skin_group"),
                                                     "arch": "mbt2018-mean"},
                     (ARCH, "zoo"): {"arch": ARCH, "format": "compressai"}}) == []
    # how a training was logged does not matter; the steps at one λ do
    fams = families({**nat, (ARCH, "b1"): {**meta(0.0003, steps=4300, sampler="balanced:skin_group"),
                                           "log_every": 7, "device": "cuda"},
                     (ARCH, "b2"): meta(0.002, steps=9999, sampler="balanced:skin_group"),
                     (ARCH, "c1"): meta(0.0003, steps=4300, colour_loss=0.5),
                     (ARCH, "m1"): meta(0.0003, steps=4300, sampler="balanced:monk")})
    assert len(fams) == 1
    got = {v.name: v.settings for v in fams[0].variants}
    assert got == {"natural": ("n1", "n2"), "balanced": ("b1",), "colour": ("c1",),
                   "balanced (sampler=balanced:monk)": ("m1",)}
    assert fams[0].natural.name == "natural"


def test_a_variant_with_one_checkpoint_has_rows_without_a_gap():
    results, recipes = hand_made()
    recipes = {k: m for k, m in recipes.items() if k[1] != "balanced-l0.002"}
    t = mitigation_table(results[results.setting != "balanced-l0.002"], recipes, ["skin_group"], KINDS,
                         rates=[0.05, 0.1], n_boot=50, min_group_n=5)
    bal = t[t.variant == "balanced"]
    assert len(bal) == 2 and bal.gap.isna().all() and bal.rate.isna().all()
    assert bal.bd_rate_vs_natural.isna().all()  # one rate point: no rate-distortion curve either
    assert (bal.note == "one checkpoint: no curve; no BD-rate (needs psnr at two checkpoints of each variant, "
                        "with overlapping PSNR)").all()
    assert t[t.variant == "group-dro"].gap.notna().all()


def test_end_to_end_run_with_a_balanced_copy_of_the_builtins(tmp_path, one_torch_thread):
    """Built-in natural checkpoints and copies of them whose recipe says ``balanced``: the run
    records each checkpoint's meta, writes mitigation.csv and the report's section. The copies
    code exactly like the originals, so their gaps equal natural's and the BD-rate is 0."""
    pytest.importorskip("mediapipe")
    import torch

    from fairbits.audit.runner import run_audit
    from fairbits.audit.store import load_results
    from fairbits.codecs.checkpoints import WEIGHTS_DIR
    from fairbits.data.phantom import render_phantoms
    from fairbits.spec import parse_spec

    copies = []
    for key in ("phantom-l0.0003", "phantom-l0.002"):
        obj = torch.load(WEIGHTS_DIR / ARCH / f"{key}.pt", map_location="cpu", weights_only=True)
        obj["meta"] = {**obj["meta"], "sampler": "balanced:skin_group"}
        torch.save(obj, tmp_path / f"{key}-balanced.pt")
        copies.append(str(tmp_path / f"{key}-balanced.pt"))
    labels = render_phantoms(6, tmp_path / "faces", seed=3, size=128, balance="skin_group")
    spec = parse_spec({
        "dataset": {"reader": "csv", "path": str(labels), "path_column": "path"}, "groups": ["skin_group"],
        "codecs": [{"name": ARCH, "checkpoint": ["phantom-l0.0003", "phantom-l0.002", *copies], "mode": "fast"}],
        "measures": ["psnr", "skin_tone"], "n_boot": 100, "n_perm": 100, "min_group_n": 2})
    run = run_audit(spec, tmp_path / "run", progress=False)
    cells = json.loads((run / "run.json").read_text())["cells"]
    assert {c["setting"]: TrainConfig.from_dict(c["checkpoint_meta"]).variant() for c in cells} == {
        "phantom-l0.0003": "natural", "phantom-l0.002": "natural",
        "phantom-l0.0003-balanced": "balanced", "phantom-l0.002-balanced": "balanced"}
    table = read_mitigation(run)
    assert table is not None and set(table.variant) == {"natural", "balanced"}
    assert {"delta_e_skin", "delta_ita"} <= set(table.measure)
    assert load_results(run)["error"].isna().all()
    gaps = table.dropna(subset=["gap"])
    assert len(gaps) and np.allclose(gaps.change_vs_natural, 0, atol=1e-9)
    assert np.allclose(table.bd_rate_vs_natural, 0, atol=1e-9)
    html = (run / "report.html").read_text()
    assert "Mitigation" in html and (run / "figures" / "mitigation.png").is_file()
