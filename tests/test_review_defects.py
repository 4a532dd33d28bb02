"""Defects found in review (issue 11, item 9), each with the test that would have caught it.

1. a learned codec's rate search walks one family of settings ordered by rate, and the row
   records the setting it chose;
2. a system given by ``entry`` cannot take a built-in codec's name;
3. only a missing third-party package may hide an architecture module, and then with a reason;
4. ``padding: zeros`` reproduces CompressAI's own evaluation (bytes and reconstruction);
5. the skin-tone probe refuses a photo without colour.
"""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import textured_image, write_csv_dataset
from fairbits.audit.coding import code_exact
from fairbits.audit.plan import plan_audit, plan_cells
from fairbits.codecs import architectures, base
from fairbits.codecs.architectures import build_model
from fairbits.codecs.base import get_codec
from fairbits.codecs.checkpoints import WEIGHTS_DIR, ZOO_URL_OVERRIDES, save_checkpoint, zoo_file
from fairbits.codecs.learned import ExactPool, LearnedCodec, setting_columns
from fairbits.codecs.ratesearch import rate_curve, search_rate
from fairbits.data.images import to_tensor
from fairbits.errors import CodecUnavailable, FairbitsError, SpecError
from fairbits.spec import parse_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HYPER = "bmshj2018-hyperprior"
BUILTIN = "phantom-l0.002"  # a shipped, trained bmshj2018-hyperprior checkpoint (N=64, M=96)


def photo(size=(200, 200), seed=0) -> np.ndarray:
    """A textured colour image, uint8 (H, W, 3)."""
    return textured_image(np.random.default_rng(seed), size)


def _spec(csv, codecs, **extra) -> object:
    return parse_spec({"dataset": {"reader": "csv", "path": str(csv), "path_column": "path"},
                       "groups": ["grp"], "codecs": codecs, "measures": ["psnr"],
                       "n_boot": 100, "n_perm": 100, **extra})


# ---------------------------------------------------------------- 1. rate search of learned codecs

FACT = "bmshj2018-factorized"  # has CompressAI zoo weights and no built-in checkpoint


@pytest.fixture
def fake_zoo(tmp_path, monkeypatch):
    """Cached 'zoo' qualities 1-3 of bmshj2018-hyperprior and bmshj2018-factorized: tiny
    CompressAI state dicts in a private torch hub cache (nothing is downloaded)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    for arch in (HYPER, FACT):
        monkeypatch.setitem(ZOO_URL_OVERRIDES, arch, {q: f"http://127.0.0.1:9/{arch}-q{q}.pth" for q in (1, 2, 3)})
        for q, width in ((1, 24), (2, 32), (3, 48)):
            torch.manual_seed(q)
            model = build_model(arch, width, width + 16)
            model.update(force=True)
            file, _ = zoo_file(arch, q)
            file.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), file)
    return ("zoo-q1", "zoo-q2", "zoo-q3")


def nearest(curve: dict, target: float):
    """The rule's choice, by brute force: nearest bpp, ties to the lower rate."""
    return min(curve, key=lambda s: (abs(curve[s] - target), curve[s]))


@pytest.mark.parametrize("arch", [HYPER, FACT])
def test_rate_search_walks_one_family_ordered_by_rate(fake_zoo, monkeypatch, arch):
    codec = get_codec(arch)
    assert codec.settings == codec.builtin_settings + fake_zoo  # both families are here ...
    natural = tuple(k for k in codec.builtin_settings if codec.builtin_variants[k] == "natural")
    family = natural or fake_zoo
    assert codec.rate_settings == family  # ... and a search walks one of them (not the mitigation variants)
    if arch == HYPER:  # the shipped checkpoints, ascending in their cards' bpp
        cards = [json.loads((WEIGHTS_DIR / arch / f"{k}.json").read_text())["bpp"] for k in family]
        assert len(family) >= 2 and cards == sorted(cards)
    encoded = []
    real_encode = LearnedCodec.encode
    monkeypatch.setattr(LearnedCodec, "encode", lambda self, im, s: encoded.append(s) or real_encode(self, im, s))
    image = photo((64, 64))
    curve = dict(rate_curve(codec, image))
    assert list(curve) == list(family)
    for target in (min(curve.values()) * 0.5, float(np.median(list(curve.values()))), max(curve.values()) * 2):
        encoded.clear()
        coded = search_rate(codec, image, target)
        assert coded.setting == nearest(curve, target) and coded.bpp == pytest.approx(curve[coded.setting])
        assert set(encoded) <= set(family)  # the other family is never probed


def test_builtin_ladder_follows_the_model_cards(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    for key, bpp in [("high", 0.9), ("low", 0.2), ("nocard", None), ("mid", 0.5)]:
        torch.manual_seed(0)
        save_checkpoint(build_model(FACT, 16, 16), FACT, tmp_path / f"{key}.pt")
        if bpp is not None:
            (tmp_path / f"{key}.json").write_text(f'{{"bpp": {bpp}}}')
    assert LearnedCodec(FACT, weights_dir=tmp_path).rate_settings == ("low", "mid", "high", "nocard")
    assert LearnedCodec(FACT, weights_dir=tmp_path / "none").rate_settings == tuple(f"zoo-q{q}" for q in range(1, 9))
    assert LearnedCodec("bmshj2018-factorized-relu", weights_dir=tmp_path / "none").rate_settings == ()


def test_rate_ladders_are_checked_at_planning(csv_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    with pytest.raises(CodecUnavailable, match="target_bpp. searches zoo-q1, .*zoo-q8: .*not in the cache"):
        plan_audit(_spec(csv_dataset, [{"name": FACT, "target_bpp": [0.1]}]))
    with pytest.raises(SpecError, match="needs settings ordered by rate"):
        plan_audit(_spec(csv_dataset, [{"name": "bmshj2018-factorized-relu", "target_bpp": [0.1]}]))


def test_setting_columns():
    assert setting_columns(30) == {"quality": 30.0, "checkpoint": None}
    assert setting_columns("zoo-q3") == {"quality": 3.0, "checkpoint": "zoo-q3"}
    built_in = setting_columns("phantom-l0.002")
    assert np.isnan(built_in["quality"]) and built_in["checkpoint"] == "phantom-l0.002"
    assert setting_columns("/runs/zoo-q3.pt")["checkpoint"] == "/runs/zoo-q3.pt"


@pytest.mark.parametrize("arch", [HYPER, FACT])
def test_rate_search_cell_reports_the_chosen_setting(fake_zoo, csv_dataset, arch):
    spec = _spec(csv_dataset, [{"name": arch, "target_bpp": [0.3]}])
    codecs: dict = {}
    (cell,) = plan_cells(spec, codecs)
    images = {f"i{k}": photo((64, 64), seed=k) for k in range(3)}
    with ThreadPoolExecutor(1) as pool:
        out = code_exact(cell, codecs[arch], list(images), images, {i: i for i in images}, pool=pool, cache={})
    for i, outcome in out.items():
        best = nearest(dict(rate_curve(codecs[arch], images[i])), 0.3)
        assert outcome.setting == best
        quality = float(best[len("zoo-q"):]) if arch == FACT else np.nan
        np.testing.assert_equal(setting_columns(outcome.setting), {"quality": quality, "checkpoint": best})


def test_rate_search_rows_record_the_chosen_setting(fake_zoo, tmp_path):
    from fairbits.audit.runner import run_audit
    from fairbits.audit.store import load_results

    csv = write_csv_dataset(tmp_path / "data", n_per_group=2, size=(64, 64))
    run_audit(_spec(csv, [{"name": HYPER, "target_bpp": [0.3]}, {"name": FACT, "target_bpp": [0.3]}]),
              tmp_path / "run", progress=False, report=False)
    rows = load_results(tmp_path / "run")
    assert rows["error"].isna().all()
    hyper, fact = rows[rows["codec"] == HYPER], rows[rows["codec"] == FACT]
    assert hyper["checkpoint"].isin(get_codec(HYPER).builtin_settings).all() and hyper["quality"].isna().all()
    assert fact["checkpoint"].isin(fake_zoo).all()
    assert (fact["quality"] == fact["checkpoint"].str.removeprefix("zoo-q").astype(float)).all()


# ---------------------------------------------------------------- 2. entry systems vs built-in names

@pytest.fixture
def entry_module(tmp_path, monkeypatch):
    (tmp_path / "fb_review_systems.py").write_text("def darken(image):\n    return image // 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "fb_review_systems"
    sys.modules.pop("fb_review_systems", None)


@pytest.mark.parametrize("name", ["jpeg", "resample-bicubic", HYPER])
def test_entry_system_cannot_take_a_builtin_name(csv_dataset, entry_module, name):
    kind = get_codec(name).kind
    with pytest.raises(SpecError, match="choose another name"):
        plan_audit(_spec(csv_dataset, [{"name": name, "entry": f"{entry_module}:darken"}]))
    assert get_codec(name).kind == kind  # the built-in is untouched


def test_entry_system_may_be_planned_twice(csv_dataset, entry_module):
    spec = _spec(csv_dataset, [{"name": "fb-review-dark", "entry": f"{entry_module}:darken"}])
    for _ in range(2):  # e.g. plan_audit, then a Ray worker's plan in the same process
        (cell,) = plan_audit(spec).cells
    assert get_codec("fb-review-dark").code(photo((8, 8)), 1).recon.max() <= 127


def test_registry_refuses_a_taken_name():
    with pytest.raises(SpecError, match="already taken .*choose another name"):
        base.register("jpeg", "classical", lambda: None)
    assert get_codec("jpeg").kind == "classical"


def test_entry_system_named_jpeg_before_the_builtins_are_loaded(tmp_path):
    """In a fresh process the built-ins are registered lazily: the user's `jpeg` came first
    and the built-in import then replaced it without a word."""
    (tmp_path / "fb_fresh.py").write_text("def f(image):\n    return image\n")
    script = textwrap.dedent("""
        from fairbits.codecs.systems import register_entry_system
        from fairbits.errors import SpecError
        try:
            register_entry_system("jpeg", "fb_fresh:f")
            print("registered")
        except SpecError as e:
            print("refused:", e)
        from fairbits.codecs.base import get_codec
        print("kind:", get_codec("jpeg").kind)
    """)
    import fairbits

    path = os.pathsep.join([str(tmp_path), str(Path(fairbits.__file__).parents[1])])  # this fairbits
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": path}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "choose another name" in out.stdout, out.stdout
    assert "kind: classical" in out.stdout


# ---------------------------------------------------------------- 3. architecture modules' import errors

@pytest.fixture
def fresh_architectures(monkeypatch):
    """Architectures unloaded and fairbits.codecs.generative unimported (all restored after)."""
    monkeypatch.setattr(architectures, "ARCHITECTURES", {})
    monkeypatch.setattr(architectures, "UNAVAILABLE", {})
    monkeypatch.setattr(architectures._State, "loaded", False)
    monkeypatch.delitem(sys.modules, "fairbits.codecs.generative")


def fail_import_in_generative(monkeypatch, target: str, error: ImportError) -> None:
    """Make the import statement of ``target`` inside fairbits.codecs.generative raise ``error``."""
    real = builtins.__import__

    def fake(name, globals=None, locals=None, fromlist=(), level=0):
        if (globals or {}).get("__name__") == "fairbits.codecs.generative" and name == target:
            raise error
        return real(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", fake)


def test_generative_architectures_are_the_listed_extension():
    from fairbits.codecs.generative import GENERATIVE

    assert architectures.EXTENSIONS["fairbits.codecs.generative"] == ("generative", GENERATIVE)


@pytest.mark.parametrize("target, error", [
    # a bug in fairbits: a circular import, a module that does not exist
    ("fairbits.codecs", ImportError("cannot import name 'architectures' from partially initialized module "
                                    "'fairbits.codecs'", name="fairbits.codecs")),
    ("torch.nn.utils.parametrizations", ModuleNotFoundError("No module named 'fairbits.codecs.gan_blocks'",
                                                            name="fairbits.codecs.gan_blocks")),
    # a name that is not in an installed package (a typo, or a version fairbits does not support)
    ("compressai.ops", ImportError("cannot import name 'quantize_ste' from 'compressai.ops'",
                                   name="compressai.ops")),
])
def test_import_error_other_than_a_missing_package_propagates(fresh_architectures, monkeypatch, target, error):
    fail_import_in_generative(monkeypatch, target, error)
    for _ in range(2):  # raised every time, never hidden by a half-finished first load
        with pytest.raises(ImportError) as raised:
            architectures.architecture_names()
        assert raised.value is error
    assert architectures.UNAVAILABLE == {}


def test_missing_optional_package_lists_the_codec_as_unavailable(fresh_architectures, monkeypatch):
    fail_import_in_generative(monkeypatch, "torch.nn.utils.parametrizations",
                              ModuleNotFoundError("No module named 'spectralkit'", name="spectralkit"))
    names = architectures.architecture_names()
    assert HYPER in names and "hific" not in names
    missing = architectures.unavailable_architectures()
    assert set(missing) == {"hific", "mbt2018-mean-gan"}
    assert missing["hific"][0] == "generative" and "spectralkit" in missing["hific"][1]
    with pytest.raises(CodecUnavailable, match="spectralkit"):
        architectures.architecture("hific")
    from fairbits.codecs import learned

    monkeypatch.setattr(base, "_REGISTRY", {})
    learned._register_all()
    listed = {name: (kind, reason) for name, kind, reason in base.available_codecs()}
    assert listed[HYPER] == ("learned", None)
    assert listed["hific"][0] == "generative" and "spectralkit" in listed["hific"][1]
    with pytest.raises(CodecUnavailable, match="spectralkit"):
        get_codec("hific")


# ---------------------------------------------------------------- 4. padding: zeros = CompressAI's evaluation

def compressai_eval(model, image: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    """CompressAI's eval_model inference, written out: zero-pad centred to multiples of 64,
    compress, decompress, crop. Returns (the entropy-coded strings, uint8 (H, W, 3) recon)."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
    h, w = image.shape[:2]
    H, W = -(-h // 64) * 64, -(-w // 64) * 64
    left, top = (W - w) // 2, (H - h) // 2
    xp = F.pad(x, (left, W - w - left, top, H - h - top), mode="constant", value=0)
    with torch.no_grad():
        enc = model.compress(xp)
        x_hat = model.decompress(enc["strings"], enc["shape"])["x_hat"][..., top:top + h, left:left + w]
    recon = (x_hat[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return [s[0] for s in enc["strings"]], recon


@pytest.fixture
def zeros_codec(csv_dataset):
    spec = _spec(csv_dataset, [{"name": HYPER, "checkpoint": [BUILTIN], "mode": "exact", "padding": "zeros"}])
    codecs: dict = {}
    plan_cells(spec, codecs)
    return spec, codecs[HYPER]


def test_zeros_padding_matches_compressai_eval_model(zeros_codec):
    from fairbits.codecs import bitstream

    _, codec = zeros_codec
    assert codec.padding == "zeros"
    image = photo((200, 200))
    coded = codec.code(image, BUILTIN)
    strings, recon = compressai_eval(codec.model(BUILTIN), image)
    h, w, streams = bitstream.unpack(coded.data, len(strings))
    assert (h, w) == (200, 200) and streams == strings  # the very same entropy-coded bytes
    np.testing.assert_array_equal(coded.recon, recon)
    # CompressAI's own evaluation function reports the same rate and PSNR
    from compressai.utils.eval_model.__main__ import inference

    threads = torch.get_num_threads()
    try:
        ref = inference(codec.model(BUILTIN), torch.from_numpy(image).permute(2, 0, 1).float() / 255.0)
    finally:
        torch.set_num_threads(threads)  # that module sets 1 thread when imported
    assert 8.0 * sum(map(len, streams)) / (200 * 200) == pytest.approx(ref["bpp"], rel=1e-12)
    mse = np.mean((coded.recon.astype(float) - image.astype(float)) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) == pytest.approx(ref["psnr-rgb"], abs=1e-4)
    # not vacuous: the default padding codes other bytes
    assert get_codec(HYPER).code(image, BUILTIN).data != coded.data


def test_zeros_padding_in_fast_mode(zeros_codec):
    _, codec = zeros_codec
    image = photo((200, 200), seed=3)
    recon, _ = codec.forward_batch(to_tensor(image), BUILTIN)
    x = to_tensor(image)
    with torch.no_grad():
        ref = codec.model(BUILTIN)(F.pad(x, (28, 28, 28, 28)))["x_hat"][..., 28:228, 28:228].clamp(0, 1)
    torch.testing.assert_close(recon, ref)


def test_zeros_padding_reaches_both_engines_and_worker_processes(zeros_codec, tmp_path):
    from fairbits.audit.work import AuditWorker

    spec, codec = zeros_codec
    assert AuditWorker.from_spec(spec, device="cpu").codecs[HYPER].padding == "zeros"  # the Ray actors' path
    image = photo((200, 200), seed=5)
    with ExactPool(codec, BUILTIN, processes=1) as pool:
        (remote,) = pool.code([image])
    assert remote.data == codec.code(image, BUILTIN).data


def test_zeros_padding_through_an_audit(tmp_path):
    from fairbits.audit.runner import run_audit
    from fairbits.audit.store import load_results

    csv = write_csv_dataset(tmp_path / "data", n_per_group=1, size=(200, 200))
    spec = _spec(csv, [{"name": HYPER, "checkpoint": [BUILTIN], "mode": "exact", "padding": "zeros"}])
    run_audit(spec, tmp_path / "run", progress=False, report=False)
    from fairbits.codecs import bitstream

    rows = load_results(tmp_path / "run").set_index("image_id")
    model = get_codec(HYPER).model(BUILTIN)
    paths = pd.read_csv(csv)["path"]
    assert len(rows) == len(paths) == 2 and rows["error"].isna().all()
    for rel in paths:
        image = np.asarray(Image.open(csv.parent / rel).convert("RGB"))
        strings, recon = compressai_eval(model, image)
        row = rows.loc[rel.rsplit(".", 1)[0]]  # the csv reader's image id: the path without suffix
        assert row["num_bytes"] == len(bitstream.pack(200, 200, strings))  # CompressAI's strings + header
        mse = np.mean((recon.astype(float) - image.astype(float)) ** 2)
        assert row["psnr"] == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-4)  # float32 in the audit


def test_padding_options_are_checked(csv_dataset):
    with pytest.raises(SpecError, match="learned codecs only"):
        plan_audit(_spec(csv_dataset, [{"name": "jpeg", "quality": [50], "padding": "zeros"}]))
    with pytest.raises(SpecError, match="same `padding`"):
        plan_audit(_spec(csv_dataset, [{"name": HYPER, "checkpoint": [BUILTIN], "padding": "zeros"},
                                       {"name": HYPER, "checkpoint": ["phantom-l0.0003"]}]))
    with pytest.raises(SpecError, match="padding"):
        _spec(csv_dataset, [{"name": HYPER, "checkpoint": [BUILTIN], "padding": "reflect"}])
    with pytest.raises(SpecError, match="takes no checkpoint, target_bpp or padding"):
        _spec(csv_dataset, [{"name": "x", "entry": "m:f", "padding": "zeros"}])


# ---------------------------------------------------------------- 5. skin-tone probe on a greyscale photo

def test_check_colour_on_grey_and_colour_skin():
    from fairbits.face.probe import GREY_CHROMA, check_colour, recolour_skin, skin_chroma
    skimage_color = pytest.importorskip("skimage.color")

    rng = np.random.default_rng(0)
    skin = np.zeros((64, 64), bool)
    skin[16:48, 16:48] = True
    grey = np.repeat(rng.integers(60, 200, (64, 64, 1), dtype=np.uint8), 3, axis=2)
    grey[16, 16:20] = (200, 120, 90)  # a few stray coloured pixels (< 1 % of the skin)
    with pytest.raises(FairbitsError, match="has no colour"):
        check_colour(grey, skin, "grey.png")
    with pytest.raises(FairbitsError, match="has no colour"):  # not "the sRGB gamut clips"
        recolour_skin(grey, skin, 25.0)
    tan = np.clip(rng.normal((190, 140, 110), 6, (64, 64, 3)), 0, 255).astype(np.uint8)
    check_colour(tan, skin)
    lab = skimage_color.rgb2lab(tan)[skin]  # an independent sRGB → CIELAB (D65)
    expected = np.quantile(np.hypot(lab[:, 1], lab[:, 2]), 0.99)
    assert skin_chroma(tan, skin) == pytest.approx(expected, rel=1e-3) and expected > 5 * GREY_CHROMA


def test_probe_on_a_greyscale_photo_says_it_has_no_colour(tmp_path):
    pytest.importorskip("mediapipe")
    skimage_data = pytest.importorskip("skimage.data")
    import typer
    from typer.testing import CliRunner

    from fairbits.cli.probe import register
    from fairbits.face.probe import skin_tone_series

    path = tmp_path / "grey_astronaut.png"
    Image.fromarray(skimage_data.astronaut()).convert("L").convert("RGB").save(path)
    with pytest.raises(FairbitsError, match="grey_astronaut.png: the photo has no colour"):
        skin_tone_series(path, [40.0], tmp_path / "out")
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # two commands keep typer's group form: `probe skin-tone`
    r = CliRunner().invoke(app, ["probe", "skin-tone", str(path), "--ita", "40", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "has no colour" in r.output, r.output
    assert not (tmp_path / "o" / "labels.csv").exists()
