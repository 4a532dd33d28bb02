"""The built-in mitigation variants of bmshj2018-hyperprior: cards, recipes, listing, rate ladder."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from fairbits.bias.mitigation import families
from fairbits.cli import app
from fairbits.codecs.base import get_codec
from fairbits.codecs.checkpoints import WEIGHTS_DIR, builtin_checkpoints, card_variant, read_card
from fairbits.codecs.train.config import DATA_FIELDS, OBJECTIVE_FIELDS, RUN_FIELDS, TrainConfig

ARCH = "bmshj2018-hyperprior"
VARIANTS = {"balanced": "balanced", "dro": "group-dro", "colour": "colour"}
LAMBDAS = ("0.0003", "0.002")


def _meta(key: str) -> dict:
    obj = torch.load(WEIGHTS_DIR / ARCH / f"{key}.pt", weights_only=True)
    return {"arch": obj["arch"], **obj["meta"]}


def test_each_variant_repeats_the_natural_recipe_but_one_choice():
    for lm in LAMBDAS:
        natural = _meta(f"phantom-l{lm}")
        base = TrainConfig.from_dict(natural).resolved().to_dict()
        for suffix, name in VARIANTS.items():
            key = f"phantom-l{lm}-{suffix}"
            meta, card = _meta(key), read_card(WEIGHTS_DIR / ARCH / f"{key}.pt")
            cfg = TrainConfig.from_dict(meta)
            assert cfg.variant() == name == card_variant(card) == meta["variant"]
            mine = cfg.resolved().to_dict()
            differ = {k for k in base if base[k] != mine[k]} - set(RUN_FIELDS) - {"log_every", "ckpt_every"}
            assert differ and differ <= set(DATA_FIELDS + OBJECTIVE_FIELDS), (key, differ)
            # the same 1,190 training images (digest of their ids) and the same number of steps
            assert meta["data"]["ids_sha256"] == natural["data"]["ids_sha256"]
            assert meta["data"]["counts_skin_group"] == natural["data"]["counts_skin_group"]
            assert meta["steps"] == natural["steps"] == card["steps"]
            assert card["natural"] == f"phantom-l{lm}" and card["lmbda"] == float(lm)
            assert 0.01 < card["bpp"] < 0.2 and set(card["by_skin_group"]) == {"MST1-3", "MST4-7", "MST8-10"}
            assert (WEIGHTS_DIR / ARCH / f"{key}.md").read_text().count(key) >= 1


def test_the_built_ins_form_one_family_of_four_variants():
    recipes = {(ARCH, key): _meta(key) for key, _, _ in builtin_checkpoints(ARCH)}
    (fam,) = families(recipes)
    assert [v.name for v in fam.variants] == ["natural", "balanced", "group-dro", "colour"]
    assert all(len(v.settings) == 2 for v in fam.variants)


def test_rate_search_walks_the_natural_ladder_only():
    codec = get_codec(ARCH)
    assert codec.rate_settings == ("phantom-l0.0003", "phantom-l0.002")
    assert len(codec.builtin_settings) == 8
    assert {codec.builtin_variants[k] for k in codec.builtin_settings} == {"natural", *VARIANTS.values()}


def test_codecs_lists_built_in_checkpoints_with_their_cards():
    r = CliRunner().invoke(app, ["codecs"])
    assert r.exit_code == 0
    lines = [ln.split() for ln in r.output.splitlines() if ln.startswith("  phantom-l")]
    listed = {ln[0]: ln[1] for ln in lines}
    for lm in LAMBDAS:
        assert listed[f"phantom-l{lm}"] == "natural"
        for suffix, name in VARIANTS.items():
            assert listed[f"phantom-l{lm}-{suffix}"] == name
    card = json.loads((WEIGHTS_DIR / ARCH / "phantom-l0.002-dro.json").read_text())
    row = next(ln for ln in lines if ln[0] == "phantom-l0.002-dro")
    assert f"{card['bpp']:.3f}" in row and row[-1].endswith("phantom-l0.002-dro.md")
