"""`crop: face`: originals cropped to a square around the detected face before coding.

Scenes are phantom faces (fairbits.data.phantom.render_face) pasted small into a large
textured frame at a known place; the phantom's own region map gives where its eyes and
mouth landed, independently of the detector.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from fairbits.codecs.base import get_codec
from fairbits.data.images import fit_size, load_cropped_original, load_original
from fairbits.data.phantom import REGIONS, face_seed, render_face, sample_labels
from fairbits.errors import ImageError, SpecError
from fairbits.face.crop import (DEFAULT_MARGIN, FULL_RANGE, NO_FACE, FaceCrop, crop_to_face, face_detector,
                                square_box)
from fairbits.spec import parse_spec

FRAME, FACE_PX, AT = 512, 96, (290, 140)  # frame side, pasted phantom side, its (x, y)
# Phantoms the full-range detector finds at 96 px in this frame (2, 3 and 5 are missed).
FOUND = (0, 4, 7)


def _background(side: int, seed: int = 1) -> np.ndarray:
    """Blotchy colour texture, uint8 (side, side, 3): smoothed noise, contrast stretched."""
    a = ndimage.gaussian_filter(np.random.default_rng(seed).uniform(0, 255, (side, side, 3)), (4, 4, 0))
    return np.clip((a - a.mean()) * 4 + 128, 0, 255).astype(np.uint8)


def _scene(i: int, frame: int = FRAME, face_px: int = FACE_PX, at: tuple[int, int] = AT):
    """Phantom ``i`` resized to ``face_px`` and pasted at ``at`` into a textured frame.

    Returns ``(scene, features)``: uint8 (frame, frame, 3) and the box ``(x, y, w, h)`` of
    the phantom's eyes and lips in the scene's pixels."""
    face, regions = render_face(sample_labels(i + 1, seed=0).iloc[i], face_seed(0, i), 256)
    small = np.asarray(Image.fromarray(face).resize((face_px, face_px), Image.Resampling.LANCZOS))
    codes = np.asarray(Image.fromarray(regions).resize((face_px, face_px), Image.Resampling.NEAREST))
    scene = _background(frame)
    x0, y0 = at
    scene[y0:y0 + face_px, x0:x0 + face_px] = small
    ys, xs = np.nonzero(np.isin(codes, (REGIONS["eyes"], REGIONS["lips"])))
    return scene, (x0 + xs.min(), y0 + ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def _contains(outer, inner) -> bool:
    ox, oy, ow, oh = outer
    ix, iy, iw, ih = inner
    return ox <= ix and oy <= iy and ix + iw <= ox + ow and iy + ih <= oy + oh


# ----------------------------------------------------------------------------- geometry


def test_square_box_by_hand():
    # side = ceil(max(w, h) * (1 + 2 margin)) = ceil(40 * 1.5) = 60, centred on (120, 120).
    assert square_box((100.0, 100.0, 40.0, 40.0), 0.25, (400, 400)) == (90, 90, 60, 60)


def test_square_box_squares_shifts_and_shrinks():
    # A tall box: the square takes the larger side (h) after the margin, around the same centre.
    assert square_box((100.0, 50.0, 20.0, 40.0), 0.5, (400, 300)) == (70, 30, 80, 80)
    assert square_box((100.0, 50.0, 20.0, 40.0), 0.0, (400, 300)) == (90, 50, 40, 40)
    # Near the top-left corner: shifted inside, not shrunk.
    assert square_box((-5.0, 2.0, 40.0, 40.0), 0.25, (200, 300)) == (0, 0, 60, 60)
    # Near the bottom-right corner of a 200 (H) x 300 (W) image.
    assert square_box((280.0, 185.0, 30.0, 30.0), 1.0, (200, 300)) == (210, 110, 90, 90)
    # Larger than the image's short side: shrunk to it, and centred where it can be.
    assert square_box((100.0, 50.0, 100.0, 100.0), 2.0, (200, 300)) == (50, 0, 200, 200)
    for box in [(-50.0, -50.0, 500.0, 10.0), (290.0, 190.0, 3.0, 3.0), (0.2, 0.3, 0.1, 0.1)]:
        x, y, w, h = square_box(box, 0.25, (200, 300))
        assert w == h >= 1 and 0 <= x and x + w <= 300 and 0 <= y and y + h <= 200


def test_square_box_refuses_a_negative_margin():
    with pytest.raises(ValueError, match="margin must be >= 0"):
        square_box((0, 0, 10, 10), -0.1, (100, 100))


# ----------------------------------------------------------------------------- detection


def test_the_full_range_model_is_used():
    """mediapipe 0.10.21 ships the full-range detector; it finds small faces in large frames."""
    assert face_detector().model == FULL_RANGE
    assert face_detector() is face_detector()  # one per process


@pytest.mark.parametrize("i", FOUND)
def test_crop_holds_the_small_face_and_little_else(i):
    scene, features = _scene(i)
    crop, box = crop_to_face(scene, DEFAULT_MARGIN)
    x, y, w, h = box
    assert w == h and crop.shape == (h, w, 3) and crop.dtype == np.uint8
    assert np.array_equal(crop, scene[y:y + h, x:x + w])
    assert _contains(box, features), (box, features)
    # Not much larger than the face: the detected face box is at most twice the eye-to-mouth
    # box of these phantoms (1.5-1.9x measured), grown by the margin on both sides ...
    assert w <= (1 + 2 * DEFAULT_MARGIN) * 2 * max(features[2:])
    # ... and it lies inside the pasted phantom, so no pixel of the frame's texture is kept.
    assert _contains((*AT, FACE_PX, FACE_PX), box)
    assert w * h < 0.05 * FRAME * FRAME


def test_margin_scales_the_square():
    scene, features = _scene(FOUND[0])
    (_, box0), (_, box1) = crop_to_face(scene, 0.0), crop_to_face(scene, 0.5)
    assert abs(box1[2] - 2 * box0[2]) <= 2  # (1 + 2 * 0.5) / (1 + 0) = 2, up to rounding up
    assert _contains(box1, box0) and _contains(box0, features)


def test_rate_is_over_the_cropped_pixels():
    scene, _ = _scene(FOUND[0])
    crop, (_, _, w, h) = crop_to_face(scene, DEFAULT_MARGIN)
    jpeg = get_codec("jpeg")
    coded, whole = jpeg.code(crop, 50), jpeg.code(scene, 50)
    assert coded.recon.shape == crop.shape
    assert coded.bpp == pytest.approx(8 * len(coded.data) / (w * h))
    assert coded.bpp != pytest.approx(8 * len(coded.data) / (FRAME * FRAME))
    assert len(coded.data) < len(whole.data) / 5  # the background's bits are no longer spent


@pytest.mark.parametrize("faceless", [
    np.full((FRAME, FRAME, 3), 128, np.uint8),
    np.random.default_rng(3).integers(0, 256, (FRAME, FRAME, 3), dtype=np.uint8),
    _background(FRAME),
], ids=["grey", "noise", "texture"])
def test_no_face_raises(faceless):
    with pytest.raises(ImageError) as e:
        crop_to_face(faceless, DEFAULT_MARGIN)
    assert str(e.value).startswith(NO_FACE) and NO_FACE == "no face for crop: face"


def test_detector_is_safe_across_threads():
    scenes = [_scene(i)[0] for i in FOUND] * 3
    serial = [crop_to_face(s)[1] for s in scenes]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda s: crop_to_face(s)[1], scenes)) == serial


# ----------------------------------------------------------------------------- loading


def test_load_cropped_original_at_full_size(tmp_path):
    scene, _ = _scene(FOUND[0])
    Image.fromarray(scene).save(tmp_path / "s.png")
    image, box = load_cropped_original(tmp_path / "s.png", max_pixels=100 * 100, crop=FaceCrop(DEFAULT_MARGIN))
    expected_crop, expected_box = crop_to_face(scene, DEFAULT_MARGIN)
    assert box == expected_box and np.array_equal(image, expected_crop)
    # max_pixels bounds what the measures see (the crop), not the original.
    with pytest.raises(ImageError, match=r"^too large: the crop is \d+x\d+ pixels > limit 1600; set dataset.size"):
        load_cropped_original(tmp_path / "s.png", max_pixels=40 * 40, crop=FaceCrop(DEFAULT_MARGIN))
    # Too small after the crop: an error row, not a crash.
    with pytest.raises(ImageError, match=r"^too small: \d+x\d+ pixels after the crop; the minimum is 200"):
        load_cropped_original(tmp_path / "s.png", crop=FaceCrop(DEFAULT_MARGIN), min_side=200)


def test_load_cropped_original_with_size_gives_the_box_in_original_pixels(tmp_path):
    """A 1600 px JPEG (which `load_original` would decode at 1/8 scale for size 128) with a
    400 px phantom: the crop is found at full resolution and resized after."""
    scene, features = _scene(FOUND[0], frame=1600, face_px=400, at=(900, 400))
    Image.fromarray(scene).save(tmp_path / "s.jpg", quality=95)
    image, box = load_cropped_original(tmp_path / "s.jpg", size=128, crop=FaceCrop(DEFAULT_MARGIN))
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert _contains(box, features) and _contains((900, 400, 400, 400), box)
    decoded = np.asarray(Image.open(tmp_path / "s.jpg").convert("RGB"))
    x, y, w, h = box
    assert np.array_equal(image, fit_size(decoded[y:y + h, x:x + w], 128))
    coded = get_codec("jpeg").code(image, 50)
    assert coded.bpp == pytest.approx(8 * len(coded.data) / 128 ** 2)


def test_load_cropped_original_without_crop_is_load_original(tmp_path):
    scene, _ = _scene(FOUND[0])
    Image.fromarray(scene).save(tmp_path / "s.png")
    for size in (None, 64):
        image, box = load_cropped_original(tmp_path / "s.png", size=size)
        assert box is None and np.array_equal(image, load_original(tmp_path / "s.png", size=size))


def test_faceless_file_is_an_image_error(tmp_path):
    Image.fromarray(np.full((300, 400, 3), 128, np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(ImageError, match="^no face for crop: face"):
        load_cropped_original(tmp_path / "grey.png", size=64, crop=FaceCrop())


def test_face_crop_pickles():
    import pickle

    assert pickle.loads(pickle.dumps(FaceCrop(0.5))) == FaceCrop(0.5)


# ----------------------------------------------------------------------------- spec


_SPEC = {"dataset": {"reader": "csv", "path": "labels.csv"}, "groups": ["g"],
         "codecs": [{"name": "jpeg", "quality": [10]}]}


def _dataset(**options):
    spec = copy.deepcopy(_SPEC)
    spec["dataset"].update(options)
    return parse_spec(spec).dataset


def test_spec_crop_defaults_and_values():
    d = _dataset()
    assert (d.crop, d.crop_margin) == ("none", DEFAULT_MARGIN) and d.reader_options == {}
    d = _dataset(crop="face", crop_margin=1)
    assert (d.crop, d.crop_margin) == ("face", 1.0) and isinstance(d.crop_margin, float)
    assert _dataset(crop="face", crop_margin=0).crop_margin == 0.0
    assert _dataset(crop="face", crop_margin=2.0).crop_margin == 2.0


@pytest.mark.parametrize("options,message", [
    ({"crop": "faces"}, r"dataset.crop: Input should be 'none' or 'face'"),
    ({"crop": None}, r"dataset.crop: Input should be 'none' or 'face'"),
    ({"crop": "face", "crop_margin": -0.1}, r"dataset.crop_margin: crop_margin must be from 0 to 2 .*got -0.1"),
    ({"crop": "face", "crop_margin": 2.5}, r"crop_margin must be from 0 to 2 .*got 2.5"),
    ({"crop": "face", "crop_margin": float("nan")}, r"crop_margin must be from 0 to 2 .*got nan"),
    ({"crop": "face", "crop_margin": "0.3"}, r"dataset.crop_margin: expected a number, got str '0.3'"),
    ({"crop": "face", "crop_margin": True}, r"dataset.crop_margin: expected a number, got bool True"),
    ({"crop_margin": 0.3}, r"crop_margin is set but crop is 'none'; set `crop: face`"),
])
def test_spec_refuses_bad_crop_options(options, message):
    with pytest.raises(SpecError, match=message):
        _dataset(**options)
