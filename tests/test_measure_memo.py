"""The batch memo (fairbits.measures.memo): each shared value computed once, same bits as without it.

The engine's loop is simulated here: one memo per batch of originals, every cell's
reconstructions measured in chunks of 4 (the CPU chunk), realism features after each
cell. Outputs with and without the memo are compared with ``torch.equal`` /
``np.array_equal``; counting wrappers check how often the shared work ran.
"""

from __future__ import annotations

import io
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import fairbits.measures.memo as memo_mod
from fairbits.audit.faces import FaceBatch
from fairbits.data.images import to_tensor
from fairbits.errors import FairbitsError
from fairbits.measures import get_measure
from fairbits.measures.base import resolve_measure
from fairbits.measures.features import InceptionExtractor, SFaceExtractor, get_extractor
from fairbits.measures.memo import BatchMemo, cielab, feature_key, image_features

CHUNK = 4


def _jpeg(image: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _images(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for _ in range(n):
        base = np.stack([0.2 + 0.6 * x, 0.3 + 0.5 * y, 0.6 - 0.4 * x * y], -1) * rng.uniform(0.5, 1.2)
        out.append(np.clip((base + rng.normal(0, 0.05, base.shape)) * 255, 0, 255).round().astype(np.uint8))
    return out


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a, b)
    return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


def _loop(measures, ids, originals, cells, memo, *, faces=None, labels=None, realism=None, realism_first=False):
    """The engine's measure loop over one batch (see the module docstring). ``cells`` maps a
    cell id to ``(positions, recons)``: the images that cell measures (a cell may lack some)."""
    out = []
    for cell, (pos, recons) in cells.items():
        cell_ids = [ids[k] for k in pos]
        if realism is not None and realism_first:
            out.append(image_features(memo, realism, cell_ids, recons, cell))
        for k in range(0, len(pos), CHUNK):
            rows = pos[k:k + CHUNK]
            x, y = to_tensor([originals[j] for j in rows]), to_tensor(recons[k:k + CHUNK])
            context = {} if memo is None else {"ids": cell_ids[k:k + CHUNK], "cell": cell, "memo": memo}
            if faces is not None:
                context["faces"] = FaceBatch(faces.found[rows], faces.landmarks[rows],
                                             {n: v[rows] for n, v in faces.masks.items()}, faces.embedding[rows])
            if labels is not None:
                context["labels"] = labels.iloc[rows].reset_index(drop=True)
            for m in measures:
                out.append(m.fn(x, y, context))
        if realism is not None and not realism_first:
            out.append(image_features(memo, realism, cell_ids, recons, cell))
    if realism is not None:
        out.append(image_features(memo, realism, ids, originals))
    return out


# --------------------------------------------------------------------------- BatchMemo

def test_per_image_computes_only_the_ids_not_held():
    memo, asked = BatchMemo(), []

    def compute(ids):
        def f(pos):
            asked.append([ids[k] for k in pos])
            return [f"v{ids[k]}" for k in pos]
        return f

    assert memo.per_image("x", ["a", "b"], compute(["a", "b"])) == ["va", "vb"]
    assert memo.per_image("x", ["b", "c", "a"], compute(["b", "c", "a"])) == ["vb", "vc", "va"]
    assert memo.per_image("y", ["a"], compute(["a"])) == ["va"]  # another name: computed again
    assert asked == [["a", "b"], ["c"], ["a"]]
    with pytest.raises(ValueError, match="2 values for 1 images"):
        memo.per_image("x", ["z"], lambda pos: [1, 2])


def test_reconstructions_are_held_for_one_cell_originals_for_the_batch():
    memo, calls = BatchMemo(), Counter()

    def compute(tag):
        def f(pos):
            calls[tag] += len(pos)
            return [tag] * len(pos)
        return f

    memo.per_image("f", ["a"], compute("orig"))
    memo.per_image("f", ["a"], compute("c1"), cell="c1")
    memo.per_image("f", ["a"], compute("c1"), cell="c1")   # held
    memo.per_image("f", ["a"], compute("c2"), cell="c2")   # another cell: c1's are dropped
    memo.per_image("f", ["a"], compute("c1"), cell="c1")   # computed again
    memo.per_image("f", ["a"], compute("orig"))            # originals stay
    assert calls == {"orig": 1, "c1": 2, "c2": 1}


def test_per_chunk_reuses_only_the_same_ordered_ids():
    memo, calls = BatchMemo(), []

    def compute(tag):
        return lambda: calls.append(tag) or tag

    assert memo.per_chunk("lab", ["a", "b"], compute(1)) == 1
    assert memo.per_chunk("lab", ["a", "b"], compute(2)) == 1
    assert memo.per_chunk("lab", ["b", "a"], compute(3)) == 3   # other order: other value
    assert memo.per_chunk("lab", ["a", "b"], compute(4)) == 1   # originals: every chunk of the batch kept
    assert memo.per_chunk("lab", ["a", "b"], compute(5), cell="c") == 5
    assert memo.per_chunk("lab", ["a", "b"], compute(6), cell="c") == 5
    assert memo.per_chunk("lab", ["c", "d"], compute(7), cell="c") == 7
    assert memo.per_chunk("lab", ["a", "b"], compute(8), cell="c") == 8  # reconstructions: latest chunk only
    assert calls == [1, 3, 5, 7, 8]


def test_context_ids_must_match_the_batch():
    x = to_tensor(_images(2, 8, 8))
    with pytest.raises(ValueError, match="3 images for a batch of 2"):
        cielab(x, {"memo": BatchMemo(), "ids": ["a", "b", "c"]}, recon=False)


# --------------------------------------------------------------------------- CIELAB

@pytest.mark.parametrize("size", [(64, 64), (37, 53)])
def test_lab_measures_same_bits_and_one_conversion_per_chunk(size, monkeypatch):
    """ciede2000 + skin_tone over 3 cells, one of which lacks an image (its chunks differ)."""
    n = 10
    originals = _images(n, *size)
    ids = [f"im{k}" for k in range(n)]
    rng = np.random.default_rng(1)
    masks = {k: torch.from_numpy(rng.random((n, *size)) < 0.4) for k in ("skin", "lips", "eyes", "hair", "face")}
    faces = FaceBatch(np.ones(n, bool), np.full((n, 478, 2), np.nan, np.float32), masks,
                      np.full((n, 128), np.nan, np.float32))
    every = list(range(n))
    cells = {f"jpeg__{q}": (every, [_jpeg(im, q) for im in originals]) for q in (10, 50)}
    short = [k for k in every if k != 2]
    cells["jpeg__90"] = (short, [_jpeg(originals[k], 90) for k in short])
    measures = [get_measure("ciede2000"), get_measure("skin_tone")]

    conversions = []
    real = memo_mod.srgb_to_lab
    monkeypatch.setattr(memo_mod, "srgb_to_lab", lambda x: conversions.append(len(x)) or real(x))
    without = _loop(measures, ids, originals, cells, None, faces=faces)
    n_without = len(conversions)
    memo = BatchMemo()
    with_memo = _loop(measures, ids, originals, cells, memo, faces=faces)
    assert _same(without, with_memo)
    chunks = [len(range(0, len(pos), CHUNK)) for pos, _ in cells.values()]
    assert n_without == 4 * sum(chunks)   # 2 measures × (original + reconstruction) per chunk
    # originals: one conversion per distinct chunk (3 for the full cells, 3 more for the short
    # cell, whose chunks are other ids); reconstructions: one per chunk and cell
    assert len(conversions) - n_without == 3 + 3 + sum(chunks)
    assert memo.nbytes >= n * size[0] * size[1] * 24  # the batch's originals in float64 Lab


def test_lab_is_the_direct_conversion_of_the_same_chunk():
    """At 37×53 px an image's Lab can differ in the last bit with the chunk it is converted in
    (vectorised vs scalar pow), so a chunk reuses only a conversion of the same ids."""
    x = to_tensor(_images(10, 37, 53))
    ids = [f"im{k}" for k in range(10)]
    memo = BatchMemo()
    for pos in ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [5, 6, 7, 8], [0], [0, 1, 2, 3]):
        for recon in (False, True):
            got = cielab(x[pos], {"memo": memo, "ids": [ids[k] for k in pos], "cell": "c"}, recon=recon)
            assert torch.equal(got, memo_mod.srgb_to_lab(x[pos].double()))
    context = {"memo": memo, "ids": ids[:4]}
    assert cielab(x[:4], context, recon=False) is cielab(x[:4], context, recon=False)
    assert torch.equal(cielab(x[:4], None, recon=True), cielab(x[:4], context, recon=False))  # no memo


# --------------------------------------------------------------------------- features

def test_only_batch_independent_extractors_are_shared():
    from fairbits.face.phenotype_features import _extractor

    try:
        sface = get_extractor("sface")
    except FairbitsError as e:
        pytest.skip(f"sface not installed: {e}")
    assert feature_key(sface) == feature_key(_extractor("sface")) == "sface(crop=0.8)"
    assert feature_key(_extractor("sface-inner")) == "sface(crop=0.4)"
    assert feature_key(get_extractor("pixels")) == feature_key(_extractor("pixels"))
    assert feature_key(_extractor("colour")) is None
    assert not hasattr(InceptionExtractor, "memo_key")


def test_image_features_mixed_sizes_in_order():
    ext = get_extractor("pixels")
    images = _images(3, 24, 24) + _images(2, 16, 20, seed=1)
    order = [3, 0, 4, 1, 2]
    ids = [f"i{k}" for k in order]
    ims = [images[k] for k in order]
    direct = np.concatenate([ext(to_tensor([im])) for im in ims])
    memo = BatchMemo()
    got = image_features(memo, ext, ids, ims, "c")
    assert got.dtype == np.float32 and np.array_equal(got, direct)
    assert np.array_equal(image_features(None, ext, ids, ims), direct)
    assert np.array_equal(image_features(memo, ext, ids[:2], ims[:2], "c"), direct[:2])
    assert image_features(memo, ext, [], []).shape == (0, ext.dim)


@pytest.fixture(scope="module")
def phenotype_setup(tmp_path_factory):
    """10 phantom faces at 64 px, two fitted classifiers (``colour``; ``sface+colour``)."""
    try:
        get_extractor("sface")
    except FairbitsError as e:
        pytest.skip(f"sface not installed: {e}")
    from fairbits.data.phantom import render_face, sample_labels
    from fairbits.face.phenotype import PhenotypeModel

    labels = sample_labels(10, seed=3)
    originals = [render_face(row, seed=i, size=64)[0] for i, row in labels.iterrows()]
    labels = labels.assign(image_id=[str(i) for i in labels["image_id"]], tone=labels["skin_group"],
                           tone2=labels["skin_group"])
    tmp = tmp_path_factory.mktemp("phenotype")
    x = to_tensor(originals)
    paths = [PhenotypeModel.fit(x, labels[t], features=f, target=t).save(tmp / f"{t}.npz")
             for t, f in (("tone", "colour"), ("tone2", "sface+colour"))]
    return SimpleNamespace(originals=originals, labels=labels, ids=list(labels["image_id"]),
                           spec=SimpleNamespace(phenotype_models=paths))


@pytest.mark.parametrize("realism_first", [False, True])
def test_sface_once_per_reconstruction_same_bits(phenotype_setup, realism_first, monkeypatch):
    s = phenotype_setup
    every = list(range(len(s.ids)))
    cells = {f"jpeg__{q}": (every, [_jpeg(im, q) for im in s.originals]) for q in (20, 60)}
    realism = get_extractor("sface")
    embedded = Counter()
    real_call = SFaceExtractor.__call__

    def counting(self, images):
        embedded[self.memo_key] += len(images)
        return real_call(self, images)

    monkeypatch.setattr(SFaceExtractor, "__call__", counting)
    runs = {}
    for use_memo in (False, True):
        embedded.clear()
        phenotype = resolve_measure("phenotype", s.spec)  # a fresh measure: originals computed again
        runs[use_memo] = _loop([phenotype], s.ids, s.originals, cells, BatchMemo() if use_memo else None,
                               labels=s.labels, realism=realism, realism_first=realism_first)
        runs[use_memo, "count"] = embedded["sface(crop=0.8)"]
    assert _same(runs[False], runs[True])
    n, n_cells = len(s.ids), len(cells)
    assert runs[False, "count"] == 2 * n * (1 + n_cells)  # phenotype and realism, originals and recons
    assert runs[True, "count"] == n * (1 + n_cells)       # once per original, once per recon and cell
    # the realism features are the extractor's on the uint8 images, as the engine stored them before
    recons = cells["jpeg__20"][1]
    assert np.array_equal(runs[True][-1], real_call(realism, to_tensor(s.originals)))
    at = next(i for i, v in enumerate(runs[True]) if isinstance(v, np.ndarray))
    assert np.array_equal(runs[True][at], real_call(realism, to_tensor(recons)))


def test_phenotype_without_memo_keys_still_works(phenotype_setup):
    """Called as tests and other callers do (labels only, or nothing): computed directly."""
    s = phenotype_setup
    x = to_tensor(s.originals[:4])
    y = to_tensor([_jpeg(im, 30) for im in s.originals[:4]])
    phenotype = resolve_measure("phenotype", s.spec)
    a = phenotype.fn(x, y, {"labels": s.labels.iloc[:4].reset_index(drop=True)})
    b = resolve_measure("phenotype", s.spec).fn(x, y, {"labels": s.labels.iloc[:4].reset_index(drop=True),
                                                       "ids": s.ids[:4], "cell": "c", "memo": BatchMemo()})
    assert _same(a, b) and set(a) >= {"tone_pred_recon", "tone2_loss_recon"}
    c = phenotype.fn(x, y, {})
    assert np.isnan(c["tone_loss_recon"]).all() and np.array_equal(c["tone_pred_recon"], a["tone_pred_recon"])
