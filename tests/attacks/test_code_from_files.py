"""Attacks that hide code in files fairbits reads: a file may name data, never code to run.

Every test plants a module that writes a marker file when it is imported or called,
names it from a file on disk (a sampler's generator or scorers, a phenotype model's
features, a checkpoint's architecture or pickle payload, a run's ``run.json``), and checks
that fairbits refuses the file with a message (exit status 2 on the command line) and
that the marker was never written. A control shows the marker does appear when the
user names the same code on the command line, so the marker is a working detector.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fairbits.cli import app
from fairbits.cli.fairgen import BUILTIN, stored_generator
from fairbits.errors import FairbitsError, SpecError
from fairbits.generative.export import load_sampler, save_sampler
from fairbits.generative.sampler import FairLatentSampler

PLANTED = "fairbits_planted_code"


@pytest.fixture
def marker(tmp_path, monkeypatch) -> Path:
    """A module ``fairbits_planted_code`` on sys.path; importing or calling it writes the marker."""
    flag = tmp_path / "code-ran.txt"
    (tmp_path / "planted").mkdir()
    (tmp_path / "planted" / f"{PLANTED}.py").write_text(
        "from pathlib import Path\n"
        f"MARKER = Path({str(flag)!r})\n"
        "MARKER.write_text('imported\\n')\n"
        "def make(*args, **kwargs):\n"
        "    MARKER.write_text('called\\n')\n"
        "    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path / "planted"))
    yield flag
    sys.modules.pop(PLANTED, None)


@pytest.fixture
def cli():
    return lambda *args: CliRunner().invoke(app, ["fairgen", *map(str, args)])


def _sampler(k: int = 2, d: int = 6, seed: int = 0) -> FairLatentSampler:
    """A sampler fitted on latents whose first k coordinates are the attributes' scores."""
    rng = np.random.default_rng(seed)
    latents = rng.normal(size=(600, d))
    s = FairLatentSampler(n_components=1).fit(latents, latents[:, :k])
    s.attribute_names_ = [f"a{i}" for i in range(k)]
    s.scorer_specs_ = [f"a{i}=ita" for i in range(k)]
    return s


def _saved(tmp_path: Path, generator, scorers=None) -> Path:
    s = _sampler()
    if scorers is not None:
        s.scorer_specs_ = scorers
    return save_sampler(s, tmp_path / "sampler.npz", meta={"generator": generator})


# --------------------------------------------------------------------------- sampler files

@pytest.mark.parametrize("command", [
    ["sample", "--n", "4"],
    ["study", "--n", "4"],
    ["export", "--balanced", "4"],
    ["export", "--counterfactual", "a0", "--pairs", "2"],
])
def test_sampler_naming_a_generator_runs_nothing(cli, tmp_path, marker, command):
    path = _saved(tmp_path, f"{PLANTED}:make")
    r = cli(*command, "--sampler", path, "--out", tmp_path / "out")
    assert r.exit_code == 2, r.output
    assert "--generator" in r.output and "never imports code" in r.output
    assert not marker.exists(), "a module named in a sampler file was imported"
    assert not (tmp_path / "out").exists()


def test_sampler_naming_a_stdlib_function_is_refused(cli, tmp_path, monkeypatch):
    """The attack as found: ``meta.generator = tempfile:mkdtemp`` made a directory."""
    import tempfile

    calls = []
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: calls.append(a) or str(tmp_path / "made"))
    path = _saved(tmp_path, "tempfile:mkdtemp")
    r = cli("sample", "--sampler", path, "--n", "4", "--out", tmp_path / "out")
    assert r.exit_code == 2 and "'tempfile:mkdtemp'" in r.output
    assert calls == []


def test_control_the_marker_detects_code_named_on_the_command_line(cli, tmp_path, marker):
    """The user may name code on the command line; then it runs (and here is no generator)."""
    path = _saved(tmp_path, f"{PLANTED}:make")
    r = cli("sample", "--sampler", path, "--n", "4", "--generator", f"{PLANTED}:make", "--out", tmp_path / "out")
    assert marker.read_text() == "called\n"
    assert r.exit_code == 2  # make() returns None, which is not a generator


@pytest.mark.parametrize("meta,expected", [
    ({"generator": BUILTIN}, BUILTIN),
    ({"generator": f"{PLANTED}:make"}, "never imports code"),
    ({"generator": ["tempfile", "mkdtemp"]}, "never imports code"),
    ({}, "records no generator"),
])
def test_stored_generator_only_returns_the_builtin_key(tmp_path, marker, meta, expected):
    s = _sampler()
    s.meta_ = meta
    if expected == BUILTIN:
        assert stored_generator(s, "s.npz") == BUILTIN
    else:
        with pytest.raises(SpecError, match=expected):
            stored_generator(s, "s.npz")
    assert not marker.exists()


@pytest.mark.parametrize("spec,message", [
    (f"{PLANTED}:make", "unknown scorer"),
    (f"x={PLANTED}:make", "unknown scorer"),
    (f"phenotype:{PLANTED}.py:make", "not a phenotype model"),
])
def test_sampler_scorer_specs_never_import(cli, tmp_path, marker, monkeypatch, spec, message):
    """Stored scorer specs go through get_scorer, which knows only built-in kinds and reads
    phenotype models as pickle-free .npz data."""
    monkeypatch.chdir(tmp_path / "planted")  # the planted module's file is reachable as a relative path
    path = _saved(tmp_path, BUILTIN, scorers=[spec, "a1=ita"])
    r = cli("export", "--sampler", path, "--balanced", "4", "--out", tmp_path / "out")
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert not marker.exists()


@pytest.mark.parametrize("change,message", [
    (lambda c: c.update(meta=["generator", "tempfile:mkdtemp"]), "meta"),
    (lambda c: c["params"].update(evil=1), "unknown sampler parameter"),
    (lambda c: c.update(scorers=[{"kind": "ita"}, None]), "scorers"),
    (lambda c: c.pop("k"), "not a valid sampler file"),
])
def test_malformed_sampler_card_is_a_clear_error(tmp_path, change, message):
    path = _saved(tmp_path, BUILTIN)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    card = json.loads(str(arrays["card"]))
    change(card)
    arrays["card"] = np.array(json.dumps(card))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(FairbitsError, match=message):
        load_sampler(tmp_path / "bad.npz")


def test_sampler_round_trip_keeps_meta(tmp_path):
    path = _saved(tmp_path, BUILTIN)
    loaded = load_sampler(path)
    assert loaded.meta_ == {"generator": BUILTIN} and loaded.scorer_specs_ == ["a0=ita", "a1=ita"]
    a, b = _sampler().sample(50, seed=3), loaded.sample(50, seed=3)
    assert np.allclose(a, b)


# --------------------------------------------------------------------------- phenotype models

def test_phenotype_model_features_cannot_name_code(tmp_path, marker):
    """A phenotype model's ``features`` are checked against the fixed list of extractors."""
    from fairbits.face.phenotype import PhenotypeModel

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.uniform(size=(12, 3, 16, 16)).astype(np.float32))
    labels = np.array(["x", "y"] * 6)
    path = PhenotypeModel.fit(images, labels, features="pixels", target="t").save(tmp_path / "m.npz")
    assert PhenotypeModel.load(path).features == "pixels"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["features"] = np.array(f"{PLANTED}:make")
    np.savez(tmp_path / "evil.npz", **arrays)
    with pytest.raises(SpecError, match="unknown component"):
        PhenotypeModel.load(tmp_path / "evil.npz")
    assert not marker.exists()


# --------------------------------------------------------------------------- checkpoints

class _Payload:
    """Unpickling this calls the planted module (what a malicious checkpoint would do)."""

    def __reduce__(self):
        import importlib

        return (importlib.import_module, (PLANTED,))


def test_checkpoint_pickle_payload_is_never_run(tmp_path, marker):
    from fairbits.codecs.checkpoints import load_checkpoint

    torch.save({"format": "fairbits-codec/1", "arch": "bmshj2018-hyperprior", "payload": _Payload()},
               tmp_path / "evil.pt")
    with pytest.raises(SpecError, match="only tensors and plain values"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_checkpoint_architecture_is_a_registry_key(tmp_path, marker):
    from fairbits.codecs.checkpoints import FORMAT, load_checkpoint

    torch.save({"format": FORMAT, "arch": f"{PLANTED}:make", "N": 8, "M": 8, "state_dict": {}, "meta": {}},
               tmp_path / "evil.pt")
    with pytest.raises(SpecError, match="unknown architecture"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


# --------------------------------------------------------------------------- run.json

@pytest.mark.slow
def test_report_does_not_register_systems_from_run_json(tmp_path, marker):
    """``fairbits report`` reads run.json as data: an ``entry`` planted there is not imported."""
    from fairbits.audit.runner import run_audit
    from fairbits.spec import parse_spec

    from conftest import write_csv_dataset

    csv = write_csv_dataset(tmp_path / "d", n_per_group=3)
    spec = {"dataset": {"reader": "csv", "path": str(csv)}, "groups": ["grp"],
            "codecs": [{"name": "jpeg", "quality": [30]}], "measures": ["psnr"], "n_boot": 100, "n_perm": 100}
    run = run_audit(parse_spec(spec), tmp_path / "run", progress=False, report=False)
    info = json.loads((run / "run.json").read_text())
    info["spec"]["codecs"].append({"name": "planted", "entry": f"{PLANTED}:make", "quality": [1]})
    info["cells"].append({**info["cells"][0], "id": "planted__q1", "codec": "planted"})
    (run / "run.json").write_text(json.dumps(info))
    r = CliRunner().invoke(app, ["report", str(run)])
    assert not marker.exists(), "fairbits report imported a system named in run.json"
    assert r.exit_code in (0, 2), r.output


# --------------------------------------------------------------------------- image files

def test_an_eps_named_as_png_never_reaches_ghostscript(tmp_path, monkeypatch):
    """Pillow identifies files by content and renders EPS by running Ghostscript; an
    original is only ever opened as one of the raster IMAGE_FORMATS."""
    from PIL import EpsImagePlugin, Image

    from fairbits.data.images import load_rgb
    from fairbits.errors import ImageError

    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "x.eps", format="EPS")
    (tmp_path / "x.png").write_bytes((tmp_path / "x.eps").read_bytes())
    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a) or Image.new("RGB", (8, 8)).im)
    with Image.open(tmp_path / "x.png") as im:  # control: plain Pillow does take it for EPS
        assert im.format == "EPS"
        im.load()
    assert len(calls) == 1
    with pytest.raises(ImageError, match="not a recognised image format"):
        load_rgb(tmp_path / "x.png")
    assert len(calls) == 1


def test_a_checkpoint_asking_for_huge_widths_is_refused_before_building(tmp_path):
    import torch

    from fairbits.codecs.checkpoints import FORMAT, load_checkpoint
    from fairbits.errors import SpecError

    path = tmp_path / "wide.pt"
    torch.save({"format": FORMAT, "arch": "bmshj2018-hyperprior", "N": 200_000, "M": 200_000,
                "state_dict": {}, "meta": {}}, path)
    with pytest.raises(SpecError, match="channel widths"):
        load_checkpoint(path, arch="bmshj2018-hyperprior")
