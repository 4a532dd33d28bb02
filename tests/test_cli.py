"""The command line end to end on phantom faces: phantom → audit → report, codecs, demo."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import fairbits
from fairbits.cli import app
from fairbits.demo import run_demo
from fairbits.spec import load_spec

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "audit.yaml"


def test_example_spec_is_valid():
    spec = load_spec(EXAMPLE)
    assert spec.group_columns == ["skin_group"]
    assert {c.name for c in spec.codecs} == {"jpeg", "jpeg444", "webp", "avif", "bmshj2018-hyperprior"}


def test_phantom_audit_report(tmp_path):
    cli = CliRunner()
    r = cli.invoke(app, ["phantom", "--n", "6", "--out", str(tmp_path / "ph"), "--seed", "3", "--size", "64"])
    assert r.exit_code == 0, r.output
    labels = pd.read_csv(tmp_path / "ph" / "labels.csv")
    assert len(labels) == 6 and labels["skin_group"].nunique() == 3
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["dataset"]["path"] = str(tmp_path / "ph" / "labels.csv")
    spec["dataset"]["size"] = 48  # resize + centre-crop: rate is over the 48x48 coded pixels
    spec["codecs"] = [{"name": "jpeg", "quality": [20]}, {"name": "webp", "target_bpp": [0.8]}]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    r = cli.invoke(app, ["audit", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    df = fairbits.load_results(tmp_path / "run")
    assert len(df) == 12 and set(df["height"]) == {48} and df["error"].isna().all()
    (tmp_path / "run" / "report.html").unlink()
    r = cli.invoke(app, ["report", str(tmp_path / "run")])
    assert r.exit_code == 0 and (tmp_path / "run" / "report.html").is_file()
    assert "MST8-10" in (tmp_path / "run" / "report.html").read_text()


def test_codecs_lists_every_codec():
    r = CliRunner().invoke(app, ["codecs"])
    lines = r.output.strip().splitlines()
    kinds = {ln.split()[0]: ln.split()[1] for ln in lines}
    for name in ("jpeg", "jpeg444", "webp", "avif", "jpeg2000", "heic", "jxl"):
        assert kinds[name] == "classical"
    for name in ("bmshj2018-factorized", "bmshj2018-factorized-relu", "bmshj2018-hyperprior", "mbt2018-mean",
                 "mbt2018", "cheng2020-anchor", "cheng2020-attn"):
        assert kinds[name] == "learned"
    assert kinds["hific"] == "generative" and kinds["mbt2018-mean-gan"] == "generative"
    hyperprior = next(ln for ln in lines if ln.startswith("bmshj2018-hyperprior "))
    assert "available (built-in: 8" in hyperprior
    assert "needs weights" in next(ln for ln in lines if ln.startswith("cheng2020-anchor "))


def test_report_of_a_non_run_dir_exits_2(tmp_path):
    r = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "not a fairbits run directory" in r.output


@pytest.mark.slow
def test_small_demo(tmp_path):
    report = run_demo(tmp_path / "demo", n=6, progress=False, fairgen_n=40)
    assert report.is_file()
    bias = pd.read_csv(report.parent / "bias.csv")
    assert set(bias["codec"]) == {"jpeg", "jpeg444", "webp", "avif", "bmshj2018-hyperprior", "mbt2018-mean",
                                  "hific"}
    classical = bias[bias["codec"].isin(["jpeg", "jpeg444", "webp", "avif"])]
    assert set(classical["setting"]) == {"bpp0.1", "bpp0.25", "bpp0.5"}
    learned = fairbits.load_results(report.parent).query("mode == 'fast'")
    assert learned["bpp"].min() < 0.15  # a built-in learned setting below 0.15 bpp
    assert (report.parent / "realism.csv").is_file()
    # the built-in bmshj2018-hyperprior variants are compared with natural (too few faces here for gaps)
    mitigation = pd.read_csv(report.parent / "mitigation.csv")
    assert list(mitigation.drop_duplicates("variant")["variant"]) == ["natural", "balanced", "group-dro", "colour"]
    assert "Mitigation" in report.read_text()
    for col in ("delta_ita", "identity_cos", "identity_nonmatch", "skin_group_flip", "hair_type_flip"):
        assert (bias.measure == col).any(), col
    # two faces per group: reported, but below min_group_n, so no gaps and no attribution
    assert bias["gap"].isna().all() and bias["note"].notna().all()
    assert not (report.parent / "attribution.csv").exists()
    assert 'id="phenotype"' in report.read_text()
    fairgen = tmp_path / "demo" / "fairgen"
    assert (fairgen / "study" / "study.json").is_file() and (fairgen / "pairs-run" / "paired.csv").is_file()
    df = fairbits.load_results(report.parent)
    webp = df[df.codec == "webp"].groupby("setting")["bpp"].mean()
    assert webp["bpp0.1"] < webp["bpp0.25"] < webp["bpp0.5"]
    assert abs(webp["bpp0.25"] - 0.25) < 0.08


def test_training_example_spec_is_valid():
    spec = load_spec(EXAMPLE.parent / "train_natural_vs_balanced.yaml")
    learned = spec.codecs[0]
    assert learned.mode == "fast" and all(Path(c).is_absolute() for c in learned.checkpoint)
    assert Path(learned.checkpoint[0]).name == "natural.pt"
