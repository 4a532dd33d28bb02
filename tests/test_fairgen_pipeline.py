"""FairGen pipeline: scorers, labelling, the bias-amplification study, exports and the CLI.

The synthetic generator has z ~ N(μ, I_8) with μ shifted along two orthogonal unit
directions u (skin) and v (hair), and no mapping network (w = z). It renders a 64×64
face whose skin patch has ITA° = 28 + 25·tanh(w·u) (so the ITA scorer's default
threshold 28° gives "light" exactly when w·u > 0) and whose hair band (the top rows)
has L* = 45 − 30·tanh(1.5·w·v) (dark exactly when w·v > 0). The prior's shift makes the
subgroups skewed: P(light) = Φ(1.0) ≈ 0.84, P(dark hair) = Φ(0.6) ≈ 0.73, so about
4 / 12 / 23 / 61 % for (light, dark) = 00 / 01 / 10 / 11.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from fairbits.cli import app
from fairbits.cli.fairgen import load_generator
from fairbits.colour import lab_to_srgb, srgb_to_lab
from fairbits.data.manifest import build_manifest
from fairbits.errors import FairbitsError, SpecError
from fairbits.generative.export import export_balanced, export_counterfactual, load_sampler, save_sampler
from fairbits.generative.scorers import GenderScorer, ItaScorer, get_scorer, ita_scorer, phenotype_scorer
from fairbits.generative.study import (bias_amplification, fit_sampler, label_images, load_image_set, parse_target,
                                       run_study)

D, SIZE = 8, 64
_rng = np.random.default_rng(7)
U_SKIN = _rng.standard_normal(D)
U_SKIN /= np.linalg.norm(U_SKIN)
U_HAIR = _rng.standard_normal(D)
U_HAIR -= (U_HAIR @ U_SKIN) * U_SKIN
U_HAIR /= np.linalg.norm(U_HAIR)
U_BACK = np.eye(D)[0] - (np.eye(D)[0] @ U_SKIN) * U_SKIN - (np.eye(D)[0] @ U_HAIR) * U_HAIR  # nuisance factor
MEAN = 1.0 * U_SKIN + 0.6 * U_HAIR
HAIR_ROWS = 12


def _layout():
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    face = ((yy - 34) / 22.0) ** 2 + ((xx - 32) / 18.0) ** 2 <= 1.0
    hair = (yy < HAIR_ROWS) & ~face
    return torch.from_numpy(face), torch.from_numpy(hair)


FACE, HAIR = _layout()


class SyntheticFaces:
    """A :class:`~fairbits.generative.generator.Generator` whose attributes are analytic in w."""

    latent_dim, w_dim, image_size = D, None, SIZE

    def __init__(self, mean=MEAN):
        self.mean = np.asarray(mean, dtype=np.float64)

    def sample_latents(self, n: int, seed: int) -> np.ndarray:
        return (np.random.default_rng(seed).standard_normal((n, D)) + self.mean).astype(np.float32)

    def mapping(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, dtype=np.float32).copy()

    def synthesize(self, w: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        w = torch.as_tensor(np.asarray(w, dtype=np.float64))
        ita = torch.deg2rad(28.0 + 25.0 * torch.tanh(w @ torch.from_numpy(U_SKIN)))
        skin = torch.stack([50 + 32 * torch.sin(ita), 16 * torch.cos(ita), 32 * torch.cos(ita)], 1)
        hair_l = 45.0 - 30.0 * torch.tanh(1.5 * (w @ torch.from_numpy(U_HAIR)))
        hair = torch.stack([hair_l, torch.full_like(hair_l, 4.0), torch.full_like(hair_l, 12.0)], 1)
        back_l = 60.0 + 12.0 * torch.tanh(w @ torch.from_numpy(U_BACK))
        back = torch.stack([back_l, torch.zeros_like(back_l), -8 * torch.ones_like(back_l)], 1)
        lab = torch.where(FACE, skin[:, :, None, None], torch.where(HAIR, hair[:, :, None, None],
                                                                     back[:, :, None, None]))
        return lab_to_srgb(lab).float().clamp(0, 1)


def make_generator() -> SyntheticFaces:
    """Entry point of the CLI test (``module:make_generator``)."""
    return SyntheticFaces()


def analytic(codes: np.ndarray) -> np.ndarray:
    """True (light_skin, dark_hair) labels ``(n, 2)`` of codes ``(n, 8)``."""
    return np.stack([codes @ U_SKIN > 0, codes @ U_HAIR > 0], 1).astype(np.int64)


class DarkHair:
    """Test scorer: 45 − mean L* of the hair band (> 0 = dark hair)."""

    name = "dark_hair"

    def __call__(self, images) -> np.ndarray:
        lab = srgb_to_lab(images[:, :, :4].double())
        return (45.0 - lab[:, 0].mean(dim=(1, 2))).numpy()


def scorers():
    return [ita_scorer(use_face_mesh=False), DarkHair()]


NAMES = ["light_skin", "dark_hair"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Shared cores: one BLAS/OpenMP/torch thread keeps the mixtures and colour maths fast."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def gen():
    return SyntheticFaces()


@pytest.fixture(scope="module")
def fitted(gen):
    sampler, info = fit_sampler(gen, scorers(), 2000, seed=0)
    return sampler, info


@pytest.fixture(scope="module")
def hair_model(tmp_path_factory, gen):
    """A pixels phenotype model of hair (classes dark / light) trained on unskewed renders."""
    from fairbits.face.phenotype import PhenotypeModel

    z = gen.sample_latents(400, seed=11) - MEAN.astype(np.float32)
    labels = np.where(z @ U_HAIR > 0, "dark", "light")
    model = PhenotypeModel.fit(gen.synthesize(z), labels, features="pixels", target="hair")
    return model.save(tmp_path_factory.mktemp("models") / "hair.npz")


# --------------------------------------------------------------------------- scorers and labelling

def test_labelling_recovers_analytic_labels(gen):
    codes = gen.mapping(gen.sample_latents(300, seed=1))
    df = label_images(gen.synthesize(codes), scorers())
    truth = analytic(codes)
    assert list(df.columns[:2]) == ["light_skin", "light_skin_score"]
    assert (df[NAMES].to_numpy(np.int64) == truth).all()
    expected_ita = 28.0 + 25.0 * np.tanh(codes.astype(np.float64) @ U_SKIN)
    assert np.abs(df["light_skin_ita"] - expected_ita).max() < 0.05
    assert set(df["light_skin_region"]) == {"central"}
    assert str(df["dark_hair"].dtype) == "Int64"


def test_ita_scorer_uses_face_mesh_on_faces_and_reports_fallback(gen):
    from fairbits.data.phantom import render_face, sample_labels

    labels = sample_labels(3, seed=4)
    faces = np.stack([render_face(row, seed=i, size=64)[0] for i, row in labels.iterrows()])
    scorer = ita_scorer()
    try:
        score, details = scorer.score_details(faces)                        # uint8 (N, H, W, 3) accepted
        assert list(details["region"]) == ["face_mesh"] * 3
        err = np.abs(details["ita"] - labels["ita"].to_numpy(float))
        assert err.max() < 12.0, (details["ita"], labels["ita"].tolist())
        np.testing.assert_allclose(score, details["ita"] - 28.0)
        _, details = scorer.score_details(gen.synthesize(gen.sample_latents(2, seed=0)))
        assert list(details["region"]) == ["central", "central"]
    finally:
        scorer.close()


def test_phenotype_scorer_is_the_log_odds(hair_model, gen):
    from fairbits.face.phenotype import PhenotypeModel

    codes = gen.sample_latents(200, seed=12) - MEAN.astype(np.float32)
    images = gen.synthesize(codes)
    scorer = phenotype_scorer(hair_model, "dark")
    assert scorer.name == "dark"
    score = scorer(images)
    logits = PhenotypeModel.load(hair_model).decision_function(images)   # classes (dark, light)
    np.testing.assert_allclose(score, logits[:, 0] - logits[:, 1], atol=1e-6)   # log p / (1 - p), no overflow
    assert np.mean((score > 0) == (codes @ U_HAIR > 0)) > 0.95
    with pytest.raises(SpecError, match="not one of the classes"):
        phenotype_scorer(hair_model, "purple")


def test_get_scorer_parses_specs_and_explains_errors(hair_model):
    s = get_scorer("ita")
    assert isinstance(s, ItaScorer) and s.threshold == 28.0 and s.name == "light_skin"
    s = get_scorer("skin=ita:20")
    assert s.threshold == 20.0 and s.name == "skin" and get_scorer(s.spec).threshold == 20.0
    s = get_scorer(f"dark_hair=phenotype:{hair_model}:dark")
    assert s.name == "dark_hair" and s.positive_class == "dark" and get_scorer(s.spec).name == "dark_hair"
    for bad, msg in [("itb", "unknown scorer"), ("ita:warm", "must be a number"), ("", "empty"),
                     ("phenotype:only", "expected phenotype"), ("gender:x", "no arguments"),
                     ("path=ita", "reserved"), ("9x=ita", "start with a letter")]:
        with pytest.raises(SpecError, match=msg):
            get_scorer(bad)
    with pytest.raises(FairbitsError, match="not found"):
        get_scorer("phenotype:/nonexistent/model.npz:dark")


def test_gender_scorer_on_faces(gen):
    from fairbits.data.phantom import render_face, sample_labels

    try:
        scorer = get_scorer("gender")
    except FairbitsError as e:
        pytest.skip(f"age/gender models not installed: {e}")
    assert isinstance(scorer, GenderScorer) and scorer.name == "male"
    row = sample_labels(1, seed=2).iloc[0]
    face = torch.from_numpy(render_face(row, seed=0, size=64)[0]).permute(2, 0, 1)[None].float() / 255
    blank = gen.synthesize(gen.sample_latents(1, seed=0))
    score, details = scorer.score_details(torch.cat([face, blank]))
    scorer.close()
    assert np.isfinite(score[0]) and np.isnan(score[1])
    assert list(details["region"]) == ["face_mesh", "none"]
    assert np.isclose(1 / (1 + np.exp(-score[0])), details["p_male"][0], atol=1e-6)


# --------------------------------------------------------------------------- the study

def test_bias_amplification_table():
    train = np.array([0] * 10 + [3] * 90)                 # attribute minorities: value 0, 10 %
    plain = np.array([0] * 5 + [3] * 95)
    fair = np.repeat(np.arange(4), 25)
    t = bias_amplification(train, plain, fair, 2, names=["a", "b"])
    att = t[t.kind == "attribute"].set_index(["source", "cell"])
    assert att.loc[("plain", "a=0"), "minority_ratio"] == pytest.approx(0.5)
    assert att.loc[("fairgen", "b=0"), "minority_ratio"] == pytest.approx(5.0)
    assert att.loc[("fairgen", "a=0"), "target"] == pytest.approx(0.5)
    ov = t[t.kind == "overall"].set_index("source")
    assert ov.loc["fairgen", "kl"] == pytest.approx(0, abs=1e-9) and ov.loc["fairgen", "l2"] == 0
    sub = t[(t.kind == "subgroup") & (t.source == "plain")]
    assert sub.cell.tolist() == ["a=0|b=0", "a=0|b=1", "a=1|b=0", "a=1|b=1"]
    assert (sub.ci_low <= sub.proportion).all() and (sub.proportion <= sub.ci_high).all()
    both = bias_amplification(None, plain, fair, 2, names=["a", "b"])          # no training images
    assert both.minority_ratio.isna().all() and set(both.source) == {"plain", "fairgen"}


def test_study_plain_keeps_the_skew_and_fairgen_balances(gen, fitted, tmp_path):
    sampler, info = fitted
    assert info["n_scored"] == 2000 and min(info["val_accuracy"].values()) > 0.97
    train = gen.synthesize(gen.sample_latents(600, seed=99))
    res = run_study(gen, scorers(), train, 800, 3, tmp_path / "study", sampler=sampler, quality_features="pixels")
    q = res["quality"]
    assert q["features"] == "pixels" and q["diversity_plain"] > 0 and q["diversity_fairgen"] > 0
    assert 0 <= q["precision"] <= 1 and 0 <= q["recall"] <= 1 and q["frechet_distance"] > 0
    src = res["sources"]
    plain = np.array(list(src["plain"]["proportions"].values()))
    fair = np.array(list(src["fairgen"]["proportions"].values()))
    training = np.array(list(src["training"]["proportions"].values()))
    print("\nplain", plain.round(3), "fairgen", fair.round(3), "training", training.round(3),
          "KL plain/fair", round(src["plain"]["kl"], 4), round(src["fairgen"]["kl"], 4),
          "amplification", src["plain"]["minority_ratio"], src["fairgen"]["minority_ratio"])
    assert plain[0] < 0.08 and plain[3] > 0.5                         # the prior's skew is kept
    assert np.abs(plain - training).max() < 0.06
    assert np.abs(fair - 0.25).max() < 0.04                            # FairGen: within a few points
    assert src["fairgen"]["kl"] < 0.01 < 0.3 < src["plain"]["kl"]
    amp_plain, amp_fair = src["plain"]["minority_ratio"], src["fairgen"]["minority_ratio"]
    assert set(amp_plain) == {"light_skin=0", "dark_hair=0"}
    assert all(0.75 < a < 1.33 for a in amp_plain.values())            # plain sampling preserves the imbalance
    assert amp_fair["light_skin=0"] > 2.5 and amp_fair["dark_hair=0"] > 1.5
    for name in ("study.csv", "study.png", "study.json"):
        assert (tmp_path / "study" / name).stat().st_size > 0
    table = pd.read_csv(tmp_path / "study" / "study.csv")
    assert set(table.source) == {"training", "plain", "fairgen"}
    assert json.loads((tmp_path / "study" / "study.json").read_text())["regions"]["plain"] == {
        "light_skin": {"central": 800}}
    with Image.open(tmp_path / "study" / "study.png") as im:
        assert im.size[0] > 400


def test_parse_target():
    assert parse_target("uniform", 2) is None and parse_target(None, 1) is None
    np.testing.assert_allclose(parse_target("1,1,2,4", 2), [0.125, 0.125, 0.25, 0.5])
    for bad in ("0.5,0.5", "a,b,c,d", "-1,1,1,1", "0,0,0,0"):
        with pytest.raises(SpecError, match="4"):
            parse_target(bad, 2)


# --------------------------------------------------------------------------- exports and files

def test_export_balanced_is_an_audit_dataset(gen, fitted, tmp_path):
    sampler, _ = fitted
    out = tmp_path / "bal"
    table = export_balanced(gen, sampler, 200, out, scorers(), seed=1)
    df = build_manifest("csv", out / "labels.csv", options={"path_column": "path"}, checksums=False)
    assert len(df) == 200 and {"light_skin", "dark_hair", "subgroup", "sampled_subgroup"} <= set(df.columns)
    assert df["sampled_subgroup"].value_counts().tolist() == [50, 50, 50, 50]
    measured = df["subgroup"].value_counts()
    print("\nbalanced export, measured subgroups:", measured.to_dict())
    assert len(measured) == 4 and measured.min() >= 45 and measured.max() <= 55
    codes = np.load(out / "latents.npy")
    assert codes.shape == (200, D)
    np.testing.assert_array_equal(analytic(codes), table[NAMES].to_numpy(np.int64))
    with Image.open(df["path"].iloc[0]) as im:
        assert im.size == (SIZE, SIZE)
    images, info = load_image_set(out / "labels.csv", SIZE, limit=20)       # the set as training images
    assert images.shape == (20, 3, SIZE, SIZE) and info["n"] == 20


class Patchy:
    """Test scorer that cannot score some images: NaN where the background is bluer than ``cut``."""

    name = "patchy"

    def __init__(self, cut: float):
        self.cut = cut

    def __call__(self, images) -> np.ndarray:
        b = images[:, 2, 40, 2].numpy().astype(np.float64)          # background blue: varies with the nuisance
        return np.where(b > self.cut, np.nan, b - np.median(b))


def test_unscored_images_are_dropped_or_refused(gen):
    images = gen.synthesize(gen.sample_latents(200, seed=3))
    cut = float(np.quantile(images[:, 2, 40, 2].numpy(), 0.8))
    df = label_images(images, [Patchy(cut)])
    assert df["patchy"].isna().sum() == (df["patchy_score"].isna()).sum() > 0
    _, info = fit_sampler(gen, [ita_scorer(use_face_mesh=False), Patchy(cut)], 300, seed=0, n_components=1)
    assert 200 < info["n_scored"] < 300
    with pytest.raises(FairbitsError, match="could be scored"):
        fit_sampler(gen, [Patchy(float(np.quantile(images[:, 2, 40, 2].numpy(), 0.3)))], 300, seed=0)


def test_counterfactual_pairs_flip_only_the_edited_attribute(gen, fitted, tmp_path):
    sampler, _ = fitted
    out = tmp_path / "cf"
    table = export_counterfactual(gen, sampler, "light_skin", 80, out, seed=2, scorers=scorers())
    assert len(table) == 160 and table.columns[:5].tolist() == ["image_id", "path", "pair_id", "side", "light_skin"]
    df = build_manifest("csv", out / "labels.csv", options={"path_column": "path"}, checksums=False)
    assert all(sorted(g) == [0, 1] for _, g in df.groupby("pair_id")["light_skin"])
    codes = np.load(out / "latents.npy").astype(np.float64)
    truth = analytic(codes)
    side0, side1 = truth[0::2], truth[1::2]
    assert (side0[:, 0] == 0).all() and (side1[:, 0] == 1).all()          # edited attribute flipped
    base = gen.mapping(gen.sample_latents(80, seed=_cf_seed(2)))
    kept = np.mean((side0[:, 1] == side1[:, 1]) & (side0[:, 1] == analytic(base)[:, 1]))
    hair_shift = np.abs(codes[0::2] @ U_HAIR - codes[1::2] @ U_HAIR).max()
    print(f"\ncounterfactual: other attribute kept in {kept:.3f} of pairs; max |Δ w·v| = {hair_shift:.4f}")
    assert kept == 1.0 and hair_shift < 0.15
    assert (table["light_skin_measured"] == table["side"]).all()
    np.testing.assert_allclose(np.abs(table["distance"]), sampler.distance_scale_[0], rtol=1e-6)
    with pytest.raises(SpecError, match="unknown attribute"):
        export_counterfactual(gen, sampler, "eyes", 2, tmp_path / "x")
    with pytest.raises(SpecError, match="distance is required"):
        export_counterfactual(gen, sampler.boundaries_, 0, 2, tmp_path / "x")


def test_exports_round_trip_through_the_audit(gen, fitted, tmp_path):
    """Counterfactual pairs → the audit's paired effect; a balanced set → a system audited per subgroup."""
    from fairbits.audit.runner import run_audit
    from fairbits.spec import parse_spec

    sampler, _ = fitted
    export_counterfactual(gen, sampler, "light_skin", 12, tmp_path / "cf", seed=4, scorers=scorers())
    spec = {"dataset": {"reader": "csv", "path": str(tmp_path / "cf" / "labels.csv"), "path_column": "path"},
            "groups": ["light_skin"], "codecs": [{"name": "jpeg", "quality": [20]}],
            "measures": ["psnr", "ciede2000"], "n_boot": 100, "n_perm": 100}
    run = run_audit(parse_spec(spec), tmp_path / "run", progress=False)
    paired = pd.read_csv(run / "paired.csv", dtype={"group_a": str, "group_b": str})
    assert set(paired.measure) == {"bpp", "psnr", "ciede2000"}
    assert (paired.n_pairs == 12).all() and (paired.group_a == "0").all() and (paired.group_b == "1").all()
    assert 'id="paired"' in (run / "report.html").read_text()

    export_balanced(gen, sampler, 16, tmp_path / "bal", scorers(), seed=5)
    spec = {"dataset": {"reader": "csv", "path": str(tmp_path / "bal" / "labels.csv"), "path_column": "path"},
            "groups": ["subgroup"], "codecs": [{"name": "resample-bicubic", "quality": [4]}],
            "measures": ["psnr"], "n_boot": 100, "n_perm": 100}
    run = run_audit(parse_spec(spec), tmp_path / "run2", progress=False)
    summary = pd.read_csv(run / "summary.csv")
    assert summary[summary.measure == "psnr"].group.nunique() == 4


def _cf_seed(seed: int) -> int:
    from fairbits.generative.study import int_seed

    return int_seed(seed, "export-counterfactual")


def test_sampler_round_trip_samples_identically(fitted, tmp_path):
    sampler, _ = fitted
    path = save_sampler(sampler, tmp_path / "s.npz", meta={"generator": "x:y"})
    loaded = load_sampler(path)
    target = [0.1, 0.2, 0.3, 0.4]
    np.testing.assert_array_equal(loaded.sample(300, target, seed=5), sampler.sample(300, target, seed=5))
    assert loaded.attribute_names_ == NAMES and loaded.meta_ == {"generator": "x:y"}
    assert loaded.scorer_specs_ == ["light_skin=ita:28", None]
    card = json.loads((tmp_path / "s.json").read_text())
    assert card["attributes"] == NAMES and card["format"].startswith("fairbits-fairgen-sampler")
    with pytest.raises(FairbitsError, match="not found"):
        load_sampler(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(FairbitsError, match="not a sampler file"):
        load_sampler(tmp_path / "junk.npz")
    with pytest.raises(SpecError, match=".npz"):
        save_sampler(sampler, tmp_path / "s.pkl")


# --------------------------------------------------------------------------- CLI

@pytest.fixture
def cli(tmp_path, monkeypatch):
    """``fairbits fairgen ...`` through the real CLI, with an entry-point module written to ``tmp_path``."""
    (tmp_path / "fairgen_synth_entry.py").write_text(f"from {__name__} import make_generator  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return lambda *args: CliRunner().invoke(app, ["fairgen", *map(str, args)])


def test_cli_round_trip(cli, tmp_path, hair_model, gen):
    entry = "fairgen_synth_entry:make_generator"
    assert isinstance(load_generator(f"{__name__}:make_generator"), SyntheticFaces)
    hair = f"dark_hair=phenotype:{hair_model}:dark"
    r = cli("fit", "--generator", entry, "--n", 800, "--scorer", "ita", "--scorer", hair,
            "--out", tmp_path / "s.npz")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s.npz").is_file() and (tmp_path / "s.json").is_file()

    r = cli("sample", "--sampler", tmp_path / "s.npz", "--n", 12, "--target", "0.25,0.25,0.25,0.25",
            "--out", tmp_path / "samples")
    assert r.exit_code == 2 and "never imports code" in r.output     # a file never names code to run
    r = cli("sample", "--sampler", tmp_path / "s.npz", "--generator", entry, "--n", 12,
            "--target", "0.25,0.25,0.25,0.25", "--out", tmp_path / "samples")
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "samples").glob("*.png"))) == 12
    codes = np.load(tmp_path / "samples" / "latents.npy")
    assert codes.shape == (12, D)
    drawn = pd.read_csv(tmp_path / "samples" / "samples.csv")["sampled_subgroup"]
    assert drawn.value_counts().tolist() == [3, 3, 3, 3]
    truth = [f"light_skin={a}|dark_hair={b}" for a, b in analytic(codes)]
    assert np.mean(drawn == truth) >= 10 / 12           # the hair scorer is a learned pixel model, not exact

    train = tmp_path / "train"
    train.mkdir()
    for i, img in enumerate(gen.synthesize(gen.sample_latents(120, seed=5))):
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(train / f"{i:03d}.png")
    r = cli("study", "--sampler", tmp_path / "s.npz", "--generator", entry, "--n", 200, "--train", train,
            "--out", tmp_path / "study")
    assert r.exit_code == 0, r.output
    study = json.loads((tmp_path / "study" / "study.json").read_text())
    fair = np.array(list(study["sources"]["fairgen"]["proportions"].values()))
    plain = np.array(list(study["sources"]["plain"]["proportions"].values()))
    print("\nCLI study: plain", plain.round(3), "fairgen", fair.round(3))
    assert study["attributes"] == NAMES and study["training"]["n"] == 120
    assert plain[3] > 0.45 and np.abs(fair - 0.25).max() < 0.08

    r = cli("export", "--sampler", tmp_path / "s.npz", "--generator", entry, "--balanced", 24,
            "--counterfactual", "dark_hair", "--pairs", 6, "--out", tmp_path / "sets")
    assert r.exit_code == 0, r.output
    bal = pd.read_csv(tmp_path / "sets" / "balanced" / "labels.csv")
    cf = pd.read_csv(tmp_path / "sets" / "counterfactual-dark_hair" / "labels.csv")
    assert len(bal) == 24 and bal["sampled_subgroup"].nunique() == 4
    assert len(cf) == 12 and {"pair_id", "side", "dark_hair", "dark_hair_measured", "light_skin_score"} <= set(cf)


def test_cli_errors_exit_2(cli, tmp_path, fitted):
    r = cli("fit", "--generator", f"{__name__}:make_generator", "--scorer", "ita:lots", "--out", tmp_path / "s.npz")
    assert r.exit_code == 2 and "ITA threshold must be a number" in r.output
    r = cli("fit", "--generator", "no_such_module_xyz:make", "--scorer", "ita", "--out", tmp_path / "s.npz")
    assert r.exit_code == 2 and "cannot import" in r.output
    r = cli("fit", "--generator", "nocolon", "--scorer", "ita", "--out", tmp_path / "s.npz")
    assert r.exit_code == 2 and "module:function" in r.output
    sampler, _ = fitted
    entry = f"{__name__}:make_generator"
    save_sampler(sampler, tmp_path / "f.npz", meta={"generator": entry})
    r = cli("sample", "--sampler", tmp_path / "f.npz", "--generator", entry, "--target", "0.5,0.5",
            "--out", tmp_path / "o")
    assert r.exit_code == 2 and "expected 4" in r.output
    r = cli("export", "--sampler", tmp_path / "f.npz", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "nothing to export" in r.output
    r = cli("export", "--sampler", tmp_path / "f.npz", "--generator", entry, "--balanced", 8,
            "--out", tmp_path / "o")
    assert r.exit_code == 2 and "custom scorer" in r.output
    r = cli("sample", "--sampler", tmp_path / "nope.npz", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "not found" in r.output
