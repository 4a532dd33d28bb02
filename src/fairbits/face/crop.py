"""Cropping an original to its face (the dataset spec's ``crop: face``).

In-the-wild images (RFW's 400 x 400 frames, UTKFace's in-the-wild parts, FairFace with
padding 1.25) hold a small face in a large frame, so a codec would spend most of its
bits on background. ``crop: face`` codes and measures only a square around the face.

Detection uses mediapipe's legacy solutions API,
``mp.solutions.face_detection.FaceDetection``. mediapipe 0.10.21 ships both of its
models: the **full-range** model (``model_selection=1``, 192 x 192 input, faces up to
about 5 m from the camera, so small faces in a large frame) and the short-range one
(``model_selection=0``, 128 x 128 input, faces filling much of the frame). The
full-range model is used whenever its files are in the installed mediapipe package,
else the short-range one; :attr:`FaceDetector.model` says which. Of six phantom faces
pasted at 96 px into a 512 x 512 textured frame, the full-range model found three and
the short-range model none (at 160 px: five and three).

Geometry (:func:`square_box`), in pixels of the decoded image, x right and y down: the
most confident detection's box ``(x, y, w, h)`` grows by ``margin`` x its width on the
left and right and ``margin`` x its height above and below, becomes a square of side
``max(w, h) * (1 + 2 * margin)`` (rounded up) around the same centre, and is then
shifted inside the frame; it shrinks (to the image's short side) only when it cannot
fit at all. The crop is therefore always square.

One detector (a mediapipe graph) is made per process, on first use
(:func:`face_detector`), and its calls are serialised by a lock: the graph is not
thread-safe; one detection takes about 9 ms on a 400 x 400 image and 16 ms on a
1600 x 1600 one here (creating the detector: about 1.6 s).
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fairbits.errors import ImageError

# (x, y, w, h) in pixels of the decoded image: left, top, width, height.
Box = tuple[int, int, int, int]
NO_FACE = "no face for crop: face"
DEFAULT_MARGIN = 0.25
MAX_MARGIN = 2.0
# The detector's own score threshold (mediapipe's default): weaker detections are no face.
MIN_CONFIDENCE = 0.5
FULL_RANGE, SHORT_RANGE = "full-range", "short-range"


def _full_range_installed() -> bool:
    """Whether the installed mediapipe has the full-range face detection graph and model."""
    import mediapipe as mp

    folder = Path(mp.__file__).parent / "modules" / "face_detection"
    return ((folder / "face_detection_full_range_cpu.binarypb").is_file()
            and any(folder.glob("face_detection_full_range*.tflite")))


class FaceDetector:
    """mediapipe face detection of ``uint8 (H, W, 3)`` RGB images, one graph reused.

    ``model`` is :data:`FULL_RANGE` or :data:`SHORT_RANGE` (see the module docstring).
    Calls from several threads are serialised.
    """

    def __init__(self, min_confidence: float = MIN_CONFIDENCE):
        from fairbits.face.analysis import _native_logs_silenced

        self.model = FULL_RANGE if _full_range_installed() else SHORT_RANGE
        self._lock = threading.Lock()
        with _native_logs_silenced():  # mediapipe logs its start-up lines on the first image
            import mediapipe as mp

            self._graph = mp.solutions.face_detection.FaceDetection(
                min_detection_confidence=min_confidence, model_selection=1 if self.model == FULL_RANGE else 0)
            self._graph.process(np.zeros((64, 64, 3), np.uint8))

    def detect(self, image: np.ndarray) -> tuple[tuple[float, float, float, float], float] | None:
        """The most confident face of ``image``: ``((x, y, w, h), score)`` with the box in
        pixels (floats; it may reach past the image's edges) and the score in [0, 1], or
        None when no face scores at least the detector's threshold."""
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
        h, w = img.shape[:2]
        with self._lock:
            found = self._graph.process(np.ascontiguousarray(img)).detections
        if not found:
            return None
        best = max(found, key=lambda d: d.score[0])
        b = best.location_data.relative_bounding_box
        return (b.xmin * w, b.ymin * h, b.width * w, b.height * h), float(best.score[0])

    def close(self) -> None:
        """Release the mediapipe graph (safe to call twice)."""
        try:
            self._graph.close()
        except (ValueError, RuntimeError):
            pass


_DETECTOR: tuple[int, FaceDetector] | None = None
_DETECTOR_LOCK = threading.Lock()


def face_detector() -> FaceDetector:
    """This process's face detector, made on the first call (a forked child makes its own)."""
    global _DETECTOR
    with _DETECTOR_LOCK:
        if _DETECTOR is None or _DETECTOR[0] != os.getpid():
            _DETECTOR = (os.getpid(), FaceDetector())
        return _DETECTOR[1]


def square_box(box: tuple[float, float, float, float], margin: float, shape: tuple[int, ...]) -> Box:
    """The crop square of a face box (see the module docstring), inside an image of
    ``shape`` ``(H, W, ...)``.

    Args:
        box: the face, ``(x, y, w, h)`` in pixels (may reach past the edges).
        margin: growth on each side, as a fraction of the box's width (left, right) and
            height (top, bottom); 0 keeps the box's larger side.
    Returns:
        ``(x, y, side, side)`` in whole pixels with ``0 <= x``, ``x + side <= W`` (same
        for y and H) and ``1 <= side <= min(H, W)``.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    height, width = shape[:2]
    x, y, w, h = box
    side = math.ceil(max(w, h) * (1 + 2 * margin) - 1e-9)
    side = int(min(max(side, 1), width, height))
    cx, cy = x + w / 2, y + h / 2
    left = int(min(max(round(cx - side / 2), 0), width - side))
    top = int(min(max(round(cy - side / 2), 0), height - side))
    return left, top, side, side


def crop_to_face(image: np.ndarray, margin: float = DEFAULT_MARGIN,
                 detector: FaceDetector | None = None) -> tuple[np.ndarray, Box]:
    """Crop ``image`` to a square around its most confident face.

    Args:
        image: ``uint8 (H, W, 3)`` RGB, the decoded original.
        margin: see :func:`square_box` (the spec's ``crop_margin``, 0 to 2).
        detector: default: this process's :func:`face_detector`.
    Returns:
        ``(crop, box)``: ``uint8 (side, side, 3)`` (a copy) and ``box = (x, y, side, side)``
        in pixels of ``image``.
    Raises:
        ImageError: no face found; the message starts with :data:`NO_FACE` and is the
            same for every image of a run (so error rows can be counted by message).
    """
    detector = detector or face_detector()
    found = detector.detect(image)
    if found is None:
        raise ImageError(f"{NO_FACE} (mediapipe {detector.model} face detection, score >= {MIN_CONFIDENCE})")
    x, y, w, h = square_box(found[0], margin, image.shape)
    return image[y:y + h, x:x + w].copy(), (x, y, w, h)


@dataclass(frozen=True)
class FaceCrop:
    """``crop_to_face`` with a fixed margin, as the ``crop`` of
    :func:`fairbits.data.images.load_cropped_original`: ``image -> (crop, box)``.

    Picklable (it holds only the margin); each process uses its own :func:`face_detector`.
    """

    margin: float = DEFAULT_MARGIN

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, Box]:
        return crop_to_face(image, self.margin)
