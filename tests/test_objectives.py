"""Training objectives beyond the batch mean: group DRO, the skin-colour term, the config.

Tiny CPU models (N=16, M=24), 64 px crops, one torch thread.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import typer
import yaml
from PIL import Image
from typer.testing import CliRunner

from training_helpers import ARCH, TINY, phantoms, read_log  # noqa: F401 (phantoms: a fixture)

from fairbits.codecs.train.config import TrainConfig
from fairbits.codecs.train.data import ImageSource, SkinMasks, fit_mask, load_training_set
from fairbits.codecs.train.losses import (RateDistortionLoss, SkinColourTerm, mean_skin_lab,
                                          skin_colour_shift)
from fairbits.codecs.train.objectives import GroupDRO, MeanObjective
from fairbits.codecs.training import state_path, train_codec
from fairbits.colour import MST_SRGB, hex_to_srgb, srgb_to_lab
from fairbits.data.phantom import REGIONS, face_seed, render_face, render_phantoms, sample_labels
from fairbits.errors import DatasetError, FairbitsError, SpecError
from fairbits.face.tone import region_lab
from fairbits.spec import DatasetSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def two_groups(tmp_path_factory) -> pd.DataFrame:
    """A synthetic two-group set at 64 px: flat grey images ('smooth') vs uniform random
    pixels ('noisy'). The noisy images cost far more bits and distortion, so their loss is
    higher from the first step on."""
    root = tmp_path_factory.mktemp("two")
    rng = np.random.default_rng(0)
    rows = []
    for g in ("noisy", "smooth"):
        for k in range(4):
            img = np.full((64, 64, 3), 0.4 + 0.05 * k) if g == "smooth" else rng.random((64, 64, 3))
            p = root / f"{g}{k}.png"
            Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(p)
            rows.append({"image_id": f"{g}{k}", "path": str(p), "grp": g})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- colour

def test_lab_in_float32_matches_float64_and_scikit_image():
    from skimage.color import rgb2lab

    rng = np.random.default_rng(1)
    x = rng.random((2, 3, 8, 8))
    x[0, :, 0, :3] = [[0.0, 0.04045, 1.0]] * 3            # the branch points of both curves
    ref = srgb_to_lab(torch.tensor(x))
    assert torch.allclose(srgb_to_lab(torch.tensor(x).movedim(1, -1)).movedim(-1, 1), ref, atol=1e-10, rtol=0)
    lab32 = srgb_to_lab(torch.tensor(x, dtype=torch.float32))
    assert lab32.dtype == torch.float32 and (lab32.double() - ref).abs().max() < 1e-4
    # scikit-image, an independent implementation (its sRGB matrix has fewer digits)
    sk = np.moveaxis(rgb2lab(np.moveaxis(x, 1, -1)), -1, 1)
    assert np.abs(lab32.double().numpy() - sk).max() < 1e-2
    assert torch.allclose(srgb_to_lab(torch.tensor(x[0])), ref[0], atol=1e-10)


def test_lab_gradients_are_finite_and_the_colour_loss_clamps():
    x = torch.tensor([0.0, 1e-7, 0.04045, 0.5, 1.0, -0.3, 1.4]).view(1, 1, 7).expand(3, 1, 7).clone()
    x.requires_grad_(True)
    srgb_to_lab(x).sum().backward()
    g = x.grad
    assert torch.isfinite(g).all()                     # branch points and out-of-range values too
    assert (g[:, 0, 3].abs() > 0).all()
    # the colour loss clamps to [0, 1] first, as in a stored image: out-of-range pixels pass nothing
    rgb = x.detach().view(1, 3, 1, 7).clone().requires_grad_(True)
    mean_skin_lab(rgb, torch.ones(1, 1, 7, dtype=torch.bool))[0].sum().backward()
    g = rgb.grad
    assert torch.isfinite(g).all() and (g[..., -2:] == 0).all() and (g[..., 3].abs() > 0).all()
    with pytest.raises(ValueError):
        srgb_to_lab(torch.zeros(4, 4))


def _phantom(size=64, i=0):
    row = sample_labels(3, seed=0).iloc[i]
    img, reg = render_face(row, face_seed(0, i), size)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    return x, torch.from_numpy(reg == REGIONS["skin"])[None]


def test_skin_colour_term_zero_positive_and_exact():
    x, skin = _phantom()
    assert skin.sum() > 200
    assert skin_colour_shift(x, x, skin).item() == 0.0
    lighter = torch.where(skin[:, None], (x * 1.15).clamp(0, 1), x)
    shift = skin_colour_shift(lighter, x, skin)
    # independent: float64 Lab of the whole image, region mean as the audit's skin_tone measure does
    mean_o = region_lab(srgb_to_lab(x.double()), skin)
    mean_r = region_lab(srgb_to_lab(lighter.double()), skin)
    expected = ((mean_r - mean_o) ** 2).sum(1)
    assert shift.item() > 1.0
    assert torch.allclose(shift.double(), expected, rtol=1e-4)
    # a change off the skin does not count; an empty mask gives 0, not NaN
    off = torch.where(skin[:, None], x, 1 - x)
    assert skin_colour_shift(off, x, skin).item() == 0.0
    assert skin_colour_shift(lighter, x, torch.zeros_like(skin)).item() == 0.0


def test_colour_gradient_reaches_the_decoder():
    from fairbits.codecs.architectures import build_model

    torch.manual_seed(0)
    model = build_model(ARCH, 16, 24).train()
    x, skin = _phantom()
    loss = RateDistortionLoss(1e-9, "mse", [SkinColourTerm(1.0)])
    out = loss(model(x), x, skin)
    assert out["colour"].item() > 0
    out["colour"].sum().backward()
    grads = [p.grad for p in model.g_s.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


def test_mask_fitting_follows_the_image_geometry():
    row = sample_labels(1, seed=3).iloc[0]
    _, reg80 = render_face(row, face_seed(3, 0), 96)
    _, reg64 = render_face(row, face_seed(3, 0), 64)
    fitted = fit_mask(reg80, 64)
    assert fitted.shape == (64, 64) and set(np.unique(fitted)) <= set(np.unique(reg80))
    a, b = fitted == REGIONS["skin"], reg64 == REGIONS["skin"]
    assert (a & b).sum() / (a | b).sum() > 0.85


# --------------------------------------------------------------------------- group DRO

def test_group_dro_weights_follow_exponentiated_gradient():
    dro = GroupDRO("grp", ["easy", "hard"], np.array([0, 0, 1, 1]), step=0.5)
    assert dro.weights == pytest.approx({"easy": 0.5, "hard": 0.5})
    loss = torch.tensor([1.0, 1.0, 3.0, 3.0])
    qs = []
    for k in range(1, 4):
        total, m = dro(loss, np.array([0, 1, 2, 3]))
        qs.append(dro.weights["hard"])
        ratio = np.exp(0.5 * k * (3.0 - 1.0))             # q_hard / q_easy after k steps
        assert qs[-1] == pytest.approx(ratio / (1 + ratio), rel=1e-12)
        assert total.item() == pytest.approx((1 - qs[-1]) * 1.0 + qs[-1] * 3.0, rel=1e-6)
        assert m["group_loss"] == {"easy": 1.0, "hard": 3.0}
    assert qs == sorted(qs) and qs[-1] > 0.95
    # a batch without the hard group: its weight is kept (factor 1) and renormalised
    q = dro.q.clone()
    _, m = dro(torch.tensor([2.0, 2.0]), np.array([0, 1]))
    assert set(m["group_loss"]) == {"easy"}
    z = q[0] * np.exp(0.5 * 2.0) + q[1]
    assert dro.weights["hard"] == pytest.approx(float(q[1] / z), rel=1e-12)
    # state round trip is exact
    other = GroupDRO("grp", ["easy", "hard"], np.array([0, 0, 1, 1]), step=0.5)
    other.load_state_dict(dro.state_dict())
    assert torch.equal(other.log_q, dro.log_q) and other.updates == dro.updates == 4
    with pytest.raises(SpecError, match="objective state"):
        GroupDRO("other", ["easy", "hard"], np.zeros(4), 0.5).load_state_dict(dro.state_dict())
    assert MeanObjective()(loss, np.arange(4))[0].item() == 2.0


def test_group_dro_needs_a_group_for_every_image():
    df = pd.DataFrame({"path": ["a", "b", "c"], "grp": ["x", None, "y"]})
    with pytest.raises(DatasetError, match="no 'grp'"):
        GroupDRO.from_manifest("grp", df, 0.1)
    with pytest.raises(DatasetError, match="columns are"):
        GroupDRO.from_manifest("nope", df, 0.1)
    with pytest.raises(DatasetError, match="two groups"):
        GroupDRO.from_manifest("grp", df.assign(grp="x"), 0.1)


@pytest.mark.parametrize("relative", [False, True])
def test_group_dro_training_moves_weight_to_the_harder_group(two_groups, tmp_path, relative):
    eta = 0.5 if relative else 0.05
    out = train_codec(ARCH, 0.001, two_groups, steps=16, out=tmp_path / "d.pt", log_every=1,
                      objective="group-dro:grp", dro_step=eta, dro_relative=relative, **TINY)
    recs = read_log(out)
    assert all(set(r["group_weight"]) == {"noisy", "smooth"} for r in recs)
    log_ratio = [0.0] + [np.log(r["group_weight"]["noisy"] / r["group_weight"]["smooth"]) for r in recs]
    both = 0
    for r, before, after in zip(recs, log_ratio[:-1], log_ratio[1:]):
        gl = r["group_loss"]
        if len(gl) == 2:          # each step moves log(q_noisy / q_smooth) by η·(L_noisy − L_smooth)
            both += 1
            assert gl["noisy"] > gl["smooth"]
            d = gl["noisy"] - gl["smooth"]
            expected = eta * (2 * d / (gl["noisy"] + gl["smooth"]) if relative else d)
            assert after - before == pytest.approx(expected, rel=1e-6)
        elif relative:            # one group only: no weight moves
            assert after == before
    assert both >= 4
    assert recs[-1]["group_weight"]["noisy"] > 0.9
    meta = torch.load(out, weights_only=True)["meta"]
    assert meta["objective"] == "group-dro:grp" and meta["dro_step"] == eta and meta["dro_relative"] is relative
    assert meta["group_weight"] == pytest.approx(recs[-1]["group_weight"], rel=1e-12)
    assert meta["variant"] == "group-dro" and meta["data"]["counts_grp"] == {"noisy": 4, "smooth": 4}
    st = torch.load(state_path(out), weights_only=True)
    assert st["objective"]["kind"] == "group-dro" and st["objective"]["updates"] == 16


def test_group_dro_resume_is_bit_identical(two_groups, tmp_path):
    kw = dict(steps=6, ckpt_every=2, log_every=3, objective="group-dro:grp", dro_step=0.3, **TINY)
    full = train_codec(ARCH, 0.01, two_groups, out=tmp_path / "full.pt", **kw)

    class Stop(Exception):
        pass

    def crash(step, m):
        if step == 5:
            raise Stop

    part = tmp_path / "part.pt"
    with pytest.raises(Stop):
        train_codec(ARCH, 0.01, two_groups, out=part, callback=crash, **kw)
    seen = []
    train_codec(ARCH, 0.01, two_groups, out=part, callback=lambda s, m: seen.append(s), **kw)
    assert seen == [5, 6]
    a = torch.load(state_path(full), weights_only=True)
    b = torch.load(state_path(part), weights_only=True)
    assert torch.equal(a["objective"]["log_q"], b["objective"]["log_q"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert read_log(full) == [{**r, "seconds": f["seconds"]} for r, f in zip(read_log(part), read_log(full))]
    # the objective is part of the settings a resume must match
    with pytest.raises(SpecError, match="other settings"):
        train_codec(ARCH, 0.01, two_groups, out=part, **{**kw, "dro_step": 0.2})


# --------------------------------------------------------------------------- short trainings

@pytest.mark.parametrize("objective,colour", [("group-dro:skin_group", 0.0), ("mean", 0.002)])
def test_short_training_lowers_its_loss(phantoms, tmp_path, objective, colour):
    ds = DatasetSpec(reader="csv", path=phantoms)
    out = train_codec(ARCH, 0.01, ds, steps=40, out=tmp_path / "c.pt", log_every=1,
                      objective=objective, colour_loss=colour, **TINY)
    recs = read_log(out)
    first, last = np.mean([r["loss"] for r in recs[:10]]), np.mean([r["loss"] for r in recs[-10:]])
    assert last < 0.7 * first, (first, last)
    meta = torch.load(out, weights_only=True)["meta"]
    if colour:
        c0, c1 = np.mean([r["colour"] for r in recs[:10]]), np.mean([r["colour"] for r in recs[-10:]])
        assert c1 < 0.7 * c0, (c0, c1)
        assert meta["skin_masks"].startswith("region masks") and meta["variant"] == "colour"
    else:
        assert set(meta["group_weight"]) == {"MST1-3", "MST4-7", "MST8-10"}


def test_colour_loss_masks_from_mask_path_follow_the_crop(phantoms, tmp_path):
    """The crop of the skin mask is the skin of the image crop (phantom skin is near its swatch)."""
    cfg = TrainConfig(arch=ARCH, lmbda=0.01, steps=1, colour_loss=1.0, patch=64, size=72)
    tset = load_training_set(DatasetSpec(reader="csv", path=phantoms), cfg)
    source = ImageSource(tset.manifest, tset.size)
    masks = SkinMasks(tset, source)
    rng = np.random.default_rng(0)
    rows = np.arange(6)
    x, boxes = source.crop_boxes(rows, 64, rng)
    skin = masks.crops(rows, boxes, 64)
    assert skin.shape == (6, 64, 64) and skin.dtype == torch.bool
    lab = srgb_to_lab(x.double())
    for k, r in enumerate(rows):
        on, off = lab[k][:, skin[k]], lab[k][:, ~skin[k]]
        mst = int(tset.manifest.loc[r, "mst"])
        swatch = srgb_to_lab(torch.tensor(hex_to_srgb(MST_SRGB[mst - 1])))
        d_on = (on.median(1).values - swatch).norm()
        d_off = (off.median(1).values - swatch).norm()
        assert d_on < 12 and d_on < d_off, (k, float(d_on), float(d_off))
    source.close()
    bad = tset.manifest.assign(mask_path="../../outside.png")
    bad_set = dataclasses.replace(tset, manifest=bad)
    with pytest.raises(DatasetError, match="outside"):
        SkinMasks(bad_set, ImageSource(bad, tset.size)).masks([0])


# --------------------------------------------------------------------------- config + CLI

def test_config_round_trip_and_validation():
    c = TrainConfig(arch=ARCH, lmbda=0.01, steps=5, objective="group-dro:skin_group", colour_loss=0.1,
                    mix={"a": 1, "b": 3}, mix_column="grp")
    assert TrainConfig.from_dict(c.to_dict()) == c
    r = c.resolved()
    assert r.dro_step == 0.01 and r.perceptual is None and r.realism_weight == 0.0
    assert r.variant() == "group-dro+colour" and r.group_columns() == ["grp", "skin_group"]
    assert "steps" not in r.resume_key() and "device" not in r.resume_key()
    assert TrainConfig.from_dict({**r.to_dict(), "data": {}, "train_seconds": 3.0}) == r
    g = TrainConfig(arch="hific", lmbda=0.01, steps=1).resolved()
    assert (g.realism_weight, g.perceptual_weight, g.perceptual) == (0.15, 1.0, "ms-ssim")
    for kw, match in [(dict(objective="dro"), "unknown objective"),
                      (dict(dro_step=0.1), "group-dro"),
                      (dict(objective="group-dro:g", dro_step=0.0), "dro_step"),
                      (dict(colour_loss=-1.0), "colour_loss"),
                      (dict(batch_size=2.5), "whole number"),
                      (dict(train_size=10), "group mix")]:
        with pytest.raises(SpecError, match=match):
            TrainConfig(arch=ARCH, lmbda=0.01, steps=5, **kw)
    with pytest.raises(SpecError, match="generative"):
        TrainConfig(arch=ARCH, lmbda=0.01, steps=5, realism_weight=0.1).resolved()


def test_builtin_checkpoints_meta_are_configs():
    from fairbits.codecs.checkpoints import builtin_checkpoints, card_variant, load_checkpoint, read_card

    found = 0
    for arch in ("bmshj2018-hyperprior", "mbt2018-mean", "hific"):
        for _, path, _ in builtin_checkpoints(arch):
            model, meta = load_checkpoint(path, arch)
            cfg = TrainConfig.from_dict(meta)
            assert cfg.arch == arch and cfg.variant() == card_variant(read_card(path)) and cfg.resolved() == cfg
            assert (cfg.N, cfg.M) == (model.N, model.M)
            found += 1
    assert found >= 4


def test_cli_objective_options(phantoms, tmp_path):
    from fairbits.cli.train import register

    app = typer.Typer()
    register(app)
    app.command()(lambda: None)
    data = tmp_path / "d.yaml"
    data.write_text(yaml.safe_dump({"reader": "csv", "path": str(phantoms)}))
    base = ["train-codec", "--arch", ARCH, "--data", str(data), "--steps", "2", "--patch", "64",
            "--batch-size", "2", "--n-ch", "16", "--m-ch", "24", "--device", "cpu", "--no-progress",
            "--lmbda", "0.01"]
    runner = CliRunner()
    out = tmp_path / "m.pt"
    r = runner.invoke(app, base + ["--out", str(out), "--objective", "group-dro:skin_group",
                                   "--dro-step", "0.2", "--dro-relative", "--colour-loss", "0.01"])
    assert r.exit_code == 0, r.output
    meta = torch.load(out, weights_only=True)["meta"]
    assert (meta["objective"], meta["dro_step"], meta["dro_relative"], meta["colour_loss"]) == \
        ("group-dro:skin_group", 0.2, True, 0.01)
    assert meta["variant"] == "group-dro+colour"
    assert set(meta["group_weight"]) == {"MST1-3", "MST4-7", "MST8-10"}
    for extra, match in [(["--dro-step", "0.1"], "group-dro"),
                         (["--dro-relative"], "group-dro"),
                         (["--objective", "group-dro:nope"], "nope"),
                         (["--objective", "worst"], "unknown objective"),
                         (["--colour-loss", "-1"], "colour_loss")]:
        r = runner.invoke(app, base + ["--out", str(tmp_path / "x.pt")] + extra)
        assert r.exit_code == 2 and match in r.output, (extra, r.output)
    assert not (tmp_path / "x.pt").exists()


def test_colour_loss_without_mask_path_uses_face_analysis(two_groups, tmp_path):
    """No mask_path: the skin mask of fairbits' face analysis, once per image; no face found
    gives an empty mask and a zero term (no crash); a relative mask_path without a root is a
    clear error."""
    pytest.importorskip("mediapipe")
    labels = render_phantoms(3, tmp_path / "ph128", seed=0, size=128)
    cfg = TrainConfig(arch=ARCH, lmbda=0.01, steps=1, colour_loss=1.0, patch=64)
    tset = load_training_set(DatasetSpec(reader="csv", path=labels), cfg)
    truth = [np.asarray(Image.open(labels.parent / p)) == REGIONS["skin"] for p in tset.manifest["mask_path"]]
    tset.manifest = tset.manifest.drop(columns="mask_path")
    source = ImageSource(tset.manifest, tset.size)
    masks = SkinMasks(tset, source)
    try:
        assert masks.method == "face analysis"
        for found, gt in zip(masks.masks([0, 1, 2]), truth):
            inter = (found & gt).sum()
            assert inter / found.sum() > 0.85 and inter / (found | gt).sum() > 0.5
    finally:
        masks.close()
        source.close()

    out = train_codec(ARCH, 0.01, two_groups, steps=2, out=tmp_path / "f.pt", log_every=1,
                      colour_loss=1.0, **TINY)
    assert all(r["colour"] == 0.0 for r in read_log(out))
    assert torch.load(out, weights_only=True)["meta"]["skin_masks"] == "face analysis"
    with pytest.raises(FairbitsError, match="relative"):
        train_codec(ARCH, 0.01, two_groups.assign(mask_path="m.png"), steps=1, out=tmp_path / "g.pt",
                    colour_loss=1.0, **TINY)
