"""The rate search: the same choice and bytes as the search it replaced, with one decode per target.

``reference_search_rate`` is the old search (every probe encoded and decoded); the new one
must pick the same setting, give an identical :class:`Coded`, encode the same settings and
decode only the chosen one.
"""

from __future__ import annotations

from typing import Any, Hashable

import numpy as np
import pytest
import torch

from fairbits.codecs import available_codecs, get_codec
from fairbits.codecs.architectures import build_model
from fairbits.codecs.base import Coded, SplitCodec, decode_coded, decoded, encode_only
from fairbits.codecs.checkpoints import save_checkpoint
from fairbits.codecs.learned import LearnedCodec
from fairbits.codecs.ratesearch import NEIGHBOURS, RateCurve, image_key, rate_curve, search_rate
from fairbits.data.phantom import render_face, sample_labels

AVAILABLE = [name for name, kind, reason in available_codecs() if reason is None and kind == "classical"]

REFERENCE_NEIGHBOURS = 2


def reference_search_rate(codec, image: np.ndarray, target_bpp: float,
                          cache: dict | None = None, key: Hashable | None = None) -> Coded:
    """The search as it was before issue 10 (the old ``_Prober`` folded into one function):
    bisection over ``codec.settings``, then the 2 settings either side of the crossing,
    every probe coded (encode + decode) with ``codec.code``; ``cache`` holds byte counts."""
    settings = tuple(codec.settings)
    pixels = image.shape[0] * image.shape[1]
    if cache is not None and key is None:
        key = image_key(image)
    ckey = (codec.name, key)
    coded: dict[Any, Coded] = {}

    def get(s):
        if s not in coded:
            coded[s] = codec.code(image, s)
            if cache is not None:
                cache[(ckey, s)] = coded[s].num_bytes
        return coded[s]

    def bpp(s):
        if cache is not None and (ckey, s) in cache:
            return 8.0 * cache[(ckey, s)] / pixels
        return 8.0 * get(s).num_bytes / pixels

    lo, hi = 0, len(settings) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if bpp(settings[mid]) < target_bpp:
            lo = mid + 1
        else:
            hi = mid
    candidates = settings[max(0, lo - 1 - REFERENCE_NEIGHBOURS): lo + 1 + REFERENCE_NEIGHBOURS]
    best = min(candidates, key=lambda s: (abs(bpp(s) - target_bpp), bpp(s)))
    return get(best)


class CurveCodec:
    """A split codec replaying a recorded rate curve: setting ``i`` encodes to ``sizes[i]``
    bytes (the setting index repeated), decoding gives a constant image; counts its calls."""

    kind = "classical"

    def __init__(self, sizes, shape=(16, 16, 3), name="curve"):
        self.name, self.shape = name, shape
        self.sizes = [int(s) for s in sizes]
        self.settings = tuple(range(len(self.sizes)))
        self.encodes = self.decodes = 0

    def encode(self, image, setting):
        self.encodes += 1
        return bytes([setting % 256]) * self.sizes[setting]

    def decode(self, data, setting):
        self.decodes += 1
        return np.full(self.shape, data[0] if data else 0, np.uint8)

    def code(self, image, setting):
        data = self.encode(image, setting)
        return Coded(data, self.decode(data, setting), setting)


class Counting:
    """Wraps a codec and counts its calls; a split codec stays split (``encode``/``decode``),
    a code-only one stays code-only."""

    def __init__(self, inner, split: bool = True):
        self.inner, self.name, self.kind, self.settings = inner, inner.name, inner.kind, inner.settings
        self.encodes = self.decodes = 0
        if split:
            self.encode, self.decode = self._encode, self._decode

    def _encode(self, image, setting):
        self.encodes += 1
        return self.inner.encode(image, setting)

    def _decode(self, data, setting):
        self.decodes += 1
        return self.inner.decode(data, setting)

    def code(self, image, setting):
        self.encodes += 1
        self.decodes += 1
        return self.inner.code(image, setting)


def phantom_faces(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` phantom portraits, ``uint8 (size, size, 3)``."""
    labels = sample_labels(n, seed=seed)
    return [render_face(labels.iloc[i].to_dict(), seed=seed * 1000 + i, size=size)[0] for i in range(n)]


def assert_same_coded(a: Coded, b: Coded) -> None:
    assert a.setting == b.setting
    assert a.data == b.data
    assert np.array_equal(a.recon, b.recon)
    assert a.num_bytes == b.num_bytes and a.bpp == b.bpp


CLASSICAL = [n for n in ("jpeg", "jpeg444", "webp", "avif", "jpeg2000") if n in AVAILABLE]
TARGETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


@pytest.mark.parametrize("name", AVAILABLE)
def test_classical_codecs_split_into_encode_and_decode(name):
    codec = get_codec(name)
    assert isinstance(codec, SplitCodec)
    image = phantom_faces(1, 64, seed=4)[0]
    for setting in (codec.settings[0], codec.settings[len(codec.settings) // 2], codec.settings[-1]):
        data = codec.encode(image, setting)
        assert_same_coded(decoded(codec, image.shape, setting, data), codec.code(image, setting))
        assert_same_coded(decode_coded(codec, image, setting, encode_only(codec, image, setting)),
                          codec.code(image, setting))


@pytest.mark.parametrize("name", CLASSICAL)
def test_search_equals_reference_on_phantom_faces(name):
    """Same Coded as the old search for every image, size and target; same encodes; one decode."""
    slow = name in ("avif", "jpeg2000")  # ~20 ms per encode at 256 px
    for size, n in ((48, 3), (112, 2), (256, 1)) if slow else ((48, 4), (112, 4), (256, 2)):
        for image in phantom_faces(n, size, seed=size):
            ref, new = Counting(get_codec(name)), Counting(get_codec(name))
            ref_cache, new_cache = {}, {}
            for target in TARGETS:
                want = reference_search_rate(ref, image, target, cache=ref_cache, key="face")
                decodes = new.decodes
                got = search_rate(new, image, target, cache=new_cache, key="face")
                assert_same_coded(got, want)
                assert new.decodes - decodes == 1
            assert new_cache == ref_cache
            assert new.encodes == ref.encodes and ref.decodes == ref.encodes
            assert_same_coded(got, get_codec(name).code(image, got.setting))


def random_curve(rng: np.random.Generator) -> np.ndarray:
    """Byte counts of a made-up rate curve: rising in log, with flat runs, small and large
    non-monotone steps, and sometimes very few settings."""
    n = int(rng.choice([1, 2, 3, 5, 8, 40, 101]))
    log_bytes = np.log(rng.uniform(20, 400)) + np.cumsum(rng.uniform(0.0, 0.12, n))
    log_bytes += rng.normal(0, rng.choice([0.0, 0.01, 0.04]), n)
    sizes = np.exp(log_bytes)
    flat = rng.random(n) < rng.choice([0.0, 0.3])
    for i in np.nonzero(flat)[0][np.nonzero(flat)[0] > 0]:
        sizes[i] = sizes[i - 1]
    if n > 3 and rng.random() < 0.2:  # an outlier setting
        sizes[rng.integers(n)] *= rng.choice([0.5, 2.0])
    return np.maximum(np.rint(sizes), 1).astype(int)


def test_search_equals_reference_on_random_curves():
    """Thousands of curves, targets inside and outside their range, any order of targets."""
    rng = np.random.default_rng(0)
    image = np.zeros((16, 16, 3), np.uint8)
    for _ in range(600):
        sizes = random_curve(rng)
        bpps = 8.0 * sizes / 256
        inside = rng.uniform(0.8 * bpps.min(), 1.2 * bpps.max(), 5)  # and a little beyond both ends
        targets = np.concatenate([inside, bpps[rng.integers(len(bpps), size=2)]])  # exact hits too
        ref, new = CurveCodec(sizes), CurveCodec(sizes)
        ref_cache, new_cache = {}, {}
        for target in rng.permutation(targets):
            want = reference_search_rate(ref, image, float(target), cache=ref_cache, key="k")
            decodes = new.decodes
            got = search_rate(new, image, float(target), cache=new_cache, key="k")
            assert got.setting == want.setting and got.data == want.data
            assert new.decodes - decodes == 1
            alone = CurveCodec(sizes)  # no cache: the choice does not depend on earlier targets
            assert search_rate(alone, image, float(target)).setting == want.setting
        assert new.encodes == ref.encodes


def test_probes_are_shared_between_targets():
    """Targets of one image reuse each other's byte counts: fewer encodes, the same choice,
    and a target already searched costs one encode and one decode (of the chosen setting)."""
    codec = get_codec("webp")
    image = phantom_faces(1, 128, seed=9)[0]
    targets = (0.1, 0.25, 0.5)
    cold = Counting(codec)
    alone = [search_rate(cold, image, t) for t in targets]
    warm, cache = Counting(codec), {}
    shared = [search_rate(warm, image, t, cache=cache, key="img") for t in targets]
    assert [c.setting for c in shared] == [c.setting for c in alone]
    assert warm.encodes < cold.encodes and warm.decodes == cold.decodes == len(targets)
    assert all(k[0] == ("webp", "img") for k in cache)
    for (_, setting), num_bytes in cache.items():
        assert num_bytes == len(codec.encode(image, setting))
    assert len(RateCurve(codec, image, cache, "img").bpp) == len(cache)
    before = warm.encodes, warm.decodes
    again = search_rate(warm, image, 0.25, cache=cache, key="img")
    assert_same_coded(again, shared[1])
    assert (warm.encodes - before[0], warm.decodes - before[1]) == (1, 1)


def test_code_only_codec_falls_back_to_code():
    """A codec without ``encode``/``decode`` is coded in full at every probe, never twice."""
    image = phantom_faces(1, 64, seed=2)[0]
    ref, new = Counting(get_codec("jpeg"), split=False), Counting(get_codec("jpeg"), split=False)
    assert not isinstance(new, SplitCodec) and isinstance(Counting(get_codec("jpeg")), SplitCodec)
    for target in (0.3, 1.0):
        assert_same_coded(search_rate(new, image, target), reference_search_rate(ref, image, target))
    assert new.encodes == new.decodes == ref.encodes


def test_rate_curve_sizes_without_decoding():
    codec = Counting(get_codec("jpeg"))
    image = phantom_faces(1, 64, seed=3)[0]
    settings = codec.settings[::20]
    curve = rate_curve(codec, image, settings)
    assert [s for s, _ in curve] == list(settings) and codec.decodes == 0
    assert [b for _, b in curve] == [get_codec("jpeg").code(image, s).bpp for s in settings]


def test_neighbours_unchanged():
    assert NEIGHBOURS == REFERENCE_NEIGHBOURS


@pytest.mark.usefixtures("one_torch_thread")
def test_learned_codec_splits_and_searches_like_reference(tmp_path):
    for key, seed in (("low", 0), ("mid", 1), ("high", 2)):
        torch.manual_seed(seed)
        model = build_model("bmshj2018-factorized", 32, 48)
        save_checkpoint(model, "bmshj2018-factorized", tmp_path / f"{key}.pt")
    codec = LearnedCodec("bmshj2018-factorized", weights_dir=tmp_path)
    assert isinstance(codec, SplitCodec)
    image = phantom_faces(1, 48, seed=5)[0]
    for setting in codec.settings:
        assert_same_coded(decoded(codec, image.shape, setting, codec.encode(image, setting)),
                          codec.code(image, setting))
    bpps = sorted(b for _, b in rate_curve(codec, image))
    for target in (bpps[0] / 2, (bpps[0] + bpps[1]) / 2, bpps[2] * 2):
        assert_same_coded(search_rate(codec, image, target), reference_search_rate(codec, image, target))
