"""Classical Pillow codecs and the per-image rate search."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from fairbits.codecs import Codec, available_codecs, get_codec
from fairbits.codecs import base as codec_base
from fairbits.codecs.ratesearch import rate_curve, search_rate
from fairbits.errors import CodecUnavailable

EXPECTED = {"jpeg", "jpeg444", "webp", "avif", "jpeg2000", "heic", "jxl"}
AVAILABLE = [name for name, kind, reason in available_codecs() if reason is None and kind == "classical"]


def make_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradient plus mild noise, ``uint8 (h, w, 3)``."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([40 + 180 * x / w, 60 + 150 * y / h, 90 + 100 * (x + y) / (h + w)], -1)
    noise = np.random.default_rng(seed).normal(0, 6, (h, w, 3))
    return np.clip(np.rint(base + noise), 0, 255).astype(np.uint8)


def test_all_classical_codecs_registered():
    names = {name for name, kind, _ in available_codecs() if kind == "classical"}
    assert EXPECTED <= names
    assert {"jpeg", "jpeg444", "webp", "jpeg2000"} <= set(AVAILABLE)


@pytest.mark.parametrize("name", AVAILABLE)
@pytest.mark.parametrize("shape", [(64, 64), (96, 80)])
def test_round_trip(name, shape):
    codec = get_codec(name)
    assert isinstance(codec, Codec) and codec.name == name and codec.kind == "classical"
    assert list(codec.settings) == sorted(codec.settings)
    image = make_image(*shape)
    coded = codec.code(image, codec.settings[len(codec.settings) // 2])
    h, w = shape
    assert coded.recon.shape == image.shape and coded.recon.dtype == np.uint8
    assert isinstance(coded.data, bytes) and coded.num_bytes == len(coded.data) > 0
    assert coded.bpp == pytest.approx(8 * len(coded.data) / (h * w))
    with Image.open(io.BytesIO(coded.data)) as im:
        again = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(again, coded.recon)
    # lossy but close to the input at a middle setting
    assert np.abs(coded.recon.astype(int) - image).mean() < 20


@pytest.mark.parametrize("name", AVAILABLE)
def test_bytes_grow_with_quality(name):
    codec = get_codec(name)
    image = make_image(64, 64)
    low = codec.code(image, codec.settings[0]).num_bytes
    high = codec.code(image, codec.settings[-1]).num_bytes
    assert low < high


def test_jpeg_chroma_subsampling():
    image = make_image(64, 64)
    sampling = {}
    for name in ("jpeg", "jpeg444"):
        data = get_codec(name).code(image, 75).data
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG"
            sampling[name] = JpegImagePlugin.get_sampling(im)
    assert sampling == {"jpeg": 2, "jpeg444": 0}


def test_jpeg2000_is_codestream_and_setting_sets_rate():
    codec = get_codec("jpeg2000")
    image = make_image(96, 80)
    coded = codec.code(image, 50)
    assert coded.data[:4] == b"\xff\x4f\xff\x51"  # SOC + SIZ: raw .j2k, no JP2 box
    bpps = [codec.code(image, s).bpp for s in (1, 30, 60, 100)]
    assert bpps == sorted(bpps) and bpps[0] < bpps[-1]


def test_unavailable_codec_message(monkeypatch):
    info = codec_base.codec_info("jxl")
    reason = "pillow-jxl-plugin is not installed: pip install pillow-jxl-plugin"
    monkeypatch.setitem(codec_base._REGISTRY, "jxl", info.__class__(
        info.name, info.kind, info.factory, lambda: reason, info.description))
    with pytest.raises(CodecUnavailable, match="pip install pillow-jxl-plugin"):
        get_codec("jxl")
    assert ("jxl", "classical", reason) in available_codecs()


def test_missing_plugin_check_says_how_to_install(monkeypatch):
    from fairbits.codecs import classical

    def broken():
        raise ImportError("No module named 'pillow_heif'")

    check = classical._check_plugin(broken, "pillow-heif")
    assert "pip install pillow-heif" in check()
    assert classical._check_plugin(lambda: None, "pillow-heif")() is None


@pytest.mark.parametrize("name", ["jpeg", "webp"])
def test_rate_search_matches_brute_force(name):
    codec = get_codec(name)
    image = make_image(48, 40, seed=3)
    curve = rate_curve(codec, image)
    assert [s for s, _ in curve] == list(codec.settings)
    bpps = np.array([b for _, b in curve])
    for target in (0.3, 0.8, 1.5, 2.7, 0.01, 50.0):
        coded = search_rate(codec, image, target)
        best = np.abs(bpps - target).min()
        assert abs(coded.bpp - target) == pytest.approx(best)
        # the tie rule: the lowest rate among the nearest
        nearest = bpps[np.isclose(np.abs(bpps - target), best)]
        assert coded.bpp == pytest.approx(nearest.min())
        assert coded.recon.shape == image.shape


class CountingCodec:
    """Wraps a codec and counts encodes."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.name, self.kind, self.settings = inner.name, inner.kind, inner.settings

    def code(self, image, setting):
        self.calls += 1
        return self.inner.code(image, setting)


def test_rate_search_cache_reuses_encodes():
    image = make_image(64, 64, seed=5)
    targets = (0.5, 0.55, 0.6)

    cold = CountingCodec(get_codec("jpeg"))
    results_cold = [search_rate(cold, image, t) for t in targets]

    warm = CountingCodec(get_codec("jpeg"))
    cache: dict = {}
    results_warm = [search_rate(warm, image, t, cache=cache, key="img-5") for t in targets]

    assert [r.setting for r in results_warm] == [r.setting for r in results_cold]
    assert warm.calls < cold.calls
    assert all(k[0] == ("jpeg", "img-5") for k in cache)
    # a fully cached search only encodes the chosen setting once more
    before = warm.calls
    search_rate(warm, image, 0.5, cache=cache, key="img-5")
    assert warm.calls - before == 1
