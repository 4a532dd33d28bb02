"""Codec training on tiny phantom sets (CPU, small widths, 64 px): loss, resume, GAN, sweep, CLI."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from training_helpers import ARCH, TINY, phantoms, read_log  # noqa: F401 (phantoms: a fixture)

from fairbits.cli.train import register
from fairbits.codecs.train.data import load_training_data
from fairbits.codecs.training import state_path, sweep_path, train_codec, train_sweep
from fairbits.errors import FairbitsError, SpecError
from fairbits.spec import DatasetSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def ds(phantoms) -> DatasetSpec:
    return DatasetSpec(reader="csv", path=phantoms)


def test_training_lowers_the_loss(ds, tmp_path):
    from fairbits.codecs.checkpoints import load_checkpoint

    out = train_codec(ARCH, 0.01, ds, steps=40, out=tmp_path / "c.pt", log_every=1, **TINY)
    recs = read_log(out)
    assert [r["step"] for r in recs] == list(range(1, 41))
    assert set(recs[0]) >= {"step", "loss", "bpp", "mse", "psnr", "aux", "d_loss", "g_adv", "lr", "seconds"}
    first, last = np.mean([r["loss"] for r in recs[:10]]), np.mean([r["loss"] for r in recs[-10:]])
    assert last < 0.7 * first, (first, last)
    model, meta = load_checkpoint(out, ARCH)
    assert (model.N, model.M) == (16, 24)
    assert meta["lmbda"] == 0.01 and meta["steps"] == 40 and meta["sampler"] == "natural"
    assert meta["data"]["n_images"] == 12 and meta["fairbits_version"]
    assert 0 < meta["train_bpp_estimate"] < 20 and 5 < meta["train_psnr_estimate"] < 60
    assert state_path(out).is_file() and not list(tmp_path.glob(".*tmp"))


def _states_equal(a, b):
    for key in ("model", "opt", "aux_opt"):
        ta, tb = a[key], b[key]
        if key == "model":
            assert ta.keys() == tb.keys()
            for k in ta:
                assert torch.equal(ta[k], tb[k]), k
        else:
            for pa, pb in zip(ta["state"].values(), tb["state"].values()):
                for k in pa:
                    assert torch.equal(torch.as_tensor(pa[k]), torch.as_tensor(pb[k])), (key, k)


def test_resume_equals_uninterrupted(ds, tmp_path):
    kw = dict(steps=6, ckpt_every=2, log_every=1, sampler="balanced:skin_group", **TINY)
    full = train_codec(ARCH, 0.02, ds, out=tmp_path / "full.pt", **kw)

    class Stop(Exception):
        pass

    def crash(step, m):
        if step == 5:                          # after the checkpoint at step 4
            raise Stop

    part = tmp_path / "part.pt"
    with pytest.raises(Stop):
        train_codec(ARCH, 0.02, ds, out=part, callback=crash, **kw)
    assert not part.exists()
    assert torch.load(state_path(part), weights_only=True)["step"] == 4
    seen = []
    train_codec(ARCH, 0.02, ds, out=part, callback=lambda s, m: seen.append(s), **kw)
    assert seen == [5, 6]                       # continued at the saved step
    a = torch.load(state_path(full), weights_only=True)
    b = torch.load(state_path(part), weights_only=True)
    assert a["step"] == b["step"] == 6
    _states_equal(a, b)
    la, lb = read_log(full), read_log(part)
    assert [r["step"] for r in lb] == list(range(1, 7))
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    fa = torch.load(full, weights_only=True)["state_dict"]
    fb = torch.load(part, weights_only=True)["state_dict"]
    assert all(torch.equal(fa[k], fb[k]) for k in fa)

    # other settings with the same state file are refused; --no-resume starts over
    with pytest.raises(SpecError, match="other settings"):
        train_codec(ARCH, 0.05, ds, out=part, **kw)
    seen.clear()
    train_codec(ARCH, 0.05, ds, out=part, resume=False, callback=lambda s, m: seen.append(s),
                **{**kw, "steps": 2})
    assert seen == [1, 2] and [r["step"] for r in read_log(part)] == [1, 2]


@pytest.mark.parametrize("arch", ["hific", "mbt2018-mean-gan"])
def test_generative_updates_the_discriminator(ds, tmp_path, monkeypatch, arch):
    import dataclasses

    from fairbits.codecs import architectures

    made = {}
    entry = architectures.architecture(arch)
    assert entry.discriminator is not None            # registered on the architecture entry

    def spy(N, M):
        made["disc"] = entry.discriminator(N, M)
        made["init"] = copy.deepcopy(made["disc"].state_dict())
        return made["disc"]

    monkeypatch.setitem(architectures.ARCHITECTURES, arch, dataclasses.replace(entry, discriminator=spy))
    metrics = []
    out = train_codec(arch, 0.01, ds, steps=3, out=tmp_path / "g.pt", log_every=1,
                      callback=lambda s, m: metrics.append(m), **TINY)
    assert all(m["d_loss"] is not None and np.isfinite(m["d_loss"]) for m in metrics)
    assert all(m["g_adv"] is not None and np.isfinite(m["g_adv"]) for m in metrics)
    after = made["disc"].state_dict()
    changed = [k for k in after if after[k].is_floating_point() and not torch.equal(after[k], made["init"][k])]
    assert changed, "the discriminator's weights did not move"
    st = torch.load(state_path(out), weights_only=True)
    assert st["disc"] is not None and st["disc_opt"]["state"]
    meta = torch.load(out, weights_only=True)["meta"]
    assert meta["realism_weight"] == 0.15 and meta["perceptual"] == "ms-ssim"


def test_sweep_mix_amp_and_msssim(ds, tmp_path):
    paths = train_sweep(ARCH, [0.01, 0.1], ds, out_dir=tmp_path / "sw", steps=2, mix="50/25/25",
                        sampler="balanced:skin_group", amp=True, distortion="ms-ssim", **TINY)
    assert paths == [sweep_path(tmp_path / "sw", ARCH, 0.01), sweep_path(tmp_path / "sw", ARCH, 0.1)]
    assert [p.name for p in paths] == [f"{ARCH}-l0.01.pt", f"{ARCH}-l0.1.pt"]
    for p, lm in zip(paths, (0.01, 0.1)):
        meta = torch.load(p, weights_only=True)["meta"]
        assert meta["lmbda"] == lm and meta["amp"] and meta["distortion"] == "ms-ssim"
        assert meta["data"]["counts_skin_group"] == {"MST1-3": 4, "MST4-7": 2, "MST8-10": 2}
        assert all(np.isfinite(r["loss"]) for r in read_log(p))
    with pytest.raises(SpecError, match="repeated"):
        train_sweep(ARCH, [0.1, 0.1], ds, out_dir=tmp_path / "sw", steps=1, **TINY)


@pytest.mark.parametrize("kw,match", [
    (dict(distortion="l1"), "distortion"),
    (dict(realism_weight=0.1), "generative"),
    (dict(patch=96), "patch"),                      # larger than the 64 px images
    (dict(patch=48, size=64), "multiple of 64"),
    (dict(sampler="balanced:ethnicity"), "ethnicity"),
    (dict(steps=0), "steps"),
    (dict(perceptual_weight=1.0, perceptual="vgg"), "perceptual"),
])
def test_bad_options_raise(ds, tmp_path, kw, match):
    args = {**TINY, "steps": 1, **kw}
    with pytest.raises(FairbitsError, match=match):
        train_codec(ARCH, 0.01, ds, out=tmp_path / "x.pt", **args)


def test_lpips_is_explained_when_missing(ds, tmp_path):
    try:
        import lpips  # noqa: F401
        pytest.skip("lpips is installed here")
    except ImportError:
        pass
    with pytest.raises(FairbitsError, match="lpips"):
        train_codec(ARCH, 0.01, ds, out=tmp_path / "x.pt", steps=1, perceptual_weight=1.0,
                    perceptual="lpips", **TINY)


# --------------------------------------------------------------------------- CLI

@pytest.fixture
def cli_app():
    app = typer.Typer()
    register(app)

    @app.command()
    def other():  # a second command so typer keeps subcommand names
        pass

    return app


def test_data_yaml_forms(phantoms, tmp_path):
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"reader": "csv", "path": str(phantoms), "size": 64}))
    assert load_training_data(tmp_path / "d.yaml").size == 64
    # a whole audit spec; its relative dataset path is read from the spec's folder
    spec_dir = phantoms.parent.parent / "specs"
    spec_dir.mkdir(exist_ok=True)
    spec = {"dataset": {"reader": "csv", "path": f"../{phantoms.parent.name}/labels.csv"},
            "groups": ["skin_group"], "codecs": [{"name": "jpeg", "quality": [10]}]}
    (spec_dir / "a.yaml").write_text(yaml.safe_dump(spec))
    assert load_training_data(spec_dir / "a.yaml").path == phantoms.resolve()
    (tmp_path / "bad.yaml").write_text("reader: csv\n")
    with pytest.raises(SpecError, match="path"):
        load_training_data(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(SpecError, match="dataset mapping"):
        load_training_data(tmp_path / "list.yaml")


def test_cli_trains_and_validates(cli_app, phantoms, tmp_path):
    runner = CliRunner()
    data = tmp_path / "d.yaml"
    data.write_text(yaml.safe_dump({"reader": "csv", "path": str(phantoms)}))
    base = ["train-codec", "--arch", ARCH, "--data", str(data), "--steps", "1", "--patch", "64",
            "--batch-size", "2", "--n-ch", "16", "--m-ch", "24", "--device", "cpu", "--no-progress"]
    r = runner.invoke(cli_app, base + ["--lmbda", "0.01", "--lmbda", "0.02", "--out", str(tmp_path / "runs"),
                                       "--sampler", "balanced:skin_group"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "runs").glob("*.pt") if ".train" not in p.name) == \
        [f"{ARCH}-l0.01.pt", f"{ARCH}-l0.02.pt"]

    bad = [
        (["--lmbda", "0.01", "--out", str(tmp_path / "a.pt"), "--sampler", "balanced:nope"], "nope"),
        (["--lmbda", "0.01", "--lmbda", "0.1", "--out", str(tmp_path / "a.pt")], "must be a folder"),
        (["--lmbda", "-1", "--out", str(tmp_path / "a.pt")], "> 0"),
        (["--lmbda", "0.01", "--out", str(tmp_path / "a.pt"), "--group-mix", "80/20"], "3 values"),
        (["--lmbda", "0.01", "--out", str(tmp_path / "a.pt"), "--distortion", "l1"], "distortion"),
        (["--lmbda", "0.01", "--out", str(tmp_path / "a.pt"), "--train-size", "5"], "--group-mix"),
    ]
    for extra, match in bad:
        r = runner.invoke(cli_app, base + extra)
        assert r.exit_code == 2, (extra, r.output)
        assert match in r.output, (extra, r.output)
    r = runner.invoke(cli_app, ["train-codec", "--arch", "nope", "--lmbda", "1", "--data", str(data),
                                "--steps", "1", "--out", str(tmp_path / "a.pt")])
    assert r.exit_code == 2 and "unknown architecture" in r.output
    r = runner.invoke(cli_app, base[:3] + ["--data", str(tmp_path / "missing.yaml"), "--lmbda", "1", "--steps", "1",
                                           "--out", str(tmp_path / "a.pt")])
    assert r.exit_code == 2 and "not found" in r.output
    assert not (tmp_path / "a.pt").exists()
