"""Face analysis (mediapipe face mesh + selfie segmentation) on phantom faces.

Measured on the 12 phantoms below (256 px, ``sample_labels(12, seed=0)``), mediapipe
0.10.21, CPU: 12/12 faces found; IoU per region, mean (min):

* skin vs phantom skin ∩ analysed face oval: 0.934 (0.900)
* lips: 0.708 (0.594)   (the "small" lips score lower: about 0.6 vs 0.8 for "big")
* eyes: 0.658 (0.556)
* hair, non-bald faces only: 0.67 (0.41); bald faces score 0 (phantom hair = brows only)

The floors asserted below sit well under those means, so a real regression fails them
while run-to-run noise does not.
"""

import numpy as np
import pytest

pytest.importorskip("mediapipe")

from fairbits.data.phantom import REGIONS, face_seed, render_face, sample_labels  # noqa: E402
from fairbits.face import MASK_NAMES, FaceAnalyzer, region_masks  # noqa: E402

N_FACES, SIZE = 12, 256


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


@pytest.fixture(scope="module")
def analyzer():
    with FaceAnalyzer() as fa:
        yield fa


@pytest.fixture(scope="module")
def phantom_results(analyzer):
    labels = sample_labels(N_FACES, seed=0)
    out = []
    for i, row in labels.iterrows():
        img, reg = render_face(row, face_seed(0, i), SIZE)
        out.append((row, img, reg, analyzer.analyze(img)))
    return out


def test_faces_found_with_valid_landmarks_and_masks(phantom_results):
    found = [r for *_, r in phantom_results if r.face_found]
    assert len(found) >= 0.9 * N_FACES
    for r in found:
        assert r.landmarks.shape == (478, 2) and r.landmarks.dtype == np.float32
        assert np.all((r.landmarks > -5) & (r.landmarks < SIZE + 5))  # face fully in frame
        assert set(r.masks) == set(MASK_NAMES)
        for m in r.masks.values():
            assert m.shape == (SIZE, SIZE) and m.dtype == bool
        # The face oval covers a plausible part of a centred portrait.
        assert 0.08 < r.masks["face"].mean() < 0.5


def test_region_iou_against_phantom_ground_truth(phantom_results):
    skin, lips, eyes, hair = [], [], [], []
    for row, _, reg, r in phantom_results:
        if not r.face_found:
            continue
        m = r.masks
        # Phantom skin includes neck and ears: compare inside the analysed face oval only.
        skin.append(_iou(m["skin"], (reg == REGIONS["skin"]) & m["face"]))
        lips.append(_iou(m["lips"], reg == REGIONS["lips"]))
        eyes.append(_iou(m["eyes"], reg == REGIONS["eyes"]))
        if row["hair_type"] != "bald":
            hair.append(_iou(m["hair"], reg == REGIONS["hair"]))
    assert np.mean(skin) >= 0.85 and min(skin) >= 0.8      # measured 0.934 / 0.900
    assert np.mean(lips) >= 0.55                           # measured 0.708
    assert np.mean(eyes) >= 0.5                            # measured 0.658
    assert np.mean(hair) >= 0.5                            # measured 0.67 (non-bald)


@pytest.mark.parametrize("kind", ["gray", "noise"])
def test_no_face_gives_empty_masks(analyzer, kind):
    if kind == "gray":
        img = np.full((SIZE, SIZE, 3), 128, np.uint8)
    else:
        img = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    r = analyzer.analyze(img)
    assert r.face_found is False and r.landmarks is None
    assert set(r.masks) == set(MASK_NAMES)
    assert all(m.shape == (SIZE, SIZE) and not m.any() for m in r.masks.values())


def test_analyze_rejects_non_rgb_uint8(analyzer):
    with pytest.raises(ValueError):
        analyzer.analyze(np.zeros((SIZE, SIZE), np.uint8))
    with pytest.raises(ValueError):
        analyzer.analyze(np.zeros((SIZE, SIZE, 3), np.float32))


def test_region_masks_pure_and_disjoint(phantom_results):
    _, _, reg, r = next(x for x in phantom_results if x[3].face_found)
    lm = r.landmarks.copy()
    person = (reg != REGIONS["background"]).astype(np.float32)
    a = region_masks(lm, (SIZE, SIZE), person)
    b = region_masks(lm.copy(), (SIZE, SIZE), person.copy())
    assert np.array_equal(lm, r.landmarks)  # input not modified
    for k in MASK_NAMES:
        assert np.array_equal(a[k], b[k])
        assert a[k].any()
    assert not (a["skin"] & a["lips"]).any()
    assert not (a["skin"] & a["eyes"]).any()
    assert not (a["lips"] & a["eyes"]).any()
    assert not (a["hair"] & a["face"]).any()
    for k in ("skin", "lips", "eyes"):
        assert not (a[k] & ~a["face"]).any()
    # Hair stops at the chin line: nothing on or below the chin landmark's row.
    chin_row = int(np.ceil(lm[152, 1]))
    assert not a["hair"][chin_row:].any()
    # Without a person mask there is no hair; the other masks are unchanged.
    c = region_masks(lm, (SIZE, SIZE))
    assert not c["hair"].any() and np.array_equal(c["skin"], a["skin"])
    # Shifting the landmarks shifts the face mask with them.
    d = region_masks(lm + np.float32([10, 0]), (SIZE, SIZE))
    assert np.array_equal(d["face"][:, 20:-20], a["face"][:, 10:-30])


def test_region_masks_rejects_bad_shapes():
    with pytest.raises(ValueError):
        region_masks(np.zeros((468, 2), np.float32), (SIZE, SIZE))
    lm = np.zeros((478, 2), np.float32)
    with pytest.raises(ValueError):
        region_masks(lm, (SIZE, SIZE), np.zeros((10, 10), np.float32))
