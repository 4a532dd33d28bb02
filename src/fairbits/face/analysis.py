"""Face landmarks and semantic region masks of one RGB image, with mediapipe.

:class:`FaceAnalyzer` wraps two graphs of mediapipe's legacy *solutions* API, created
once and reused for every image:

* ``FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1)`` gives
  478 landmarks (468 mesh points + 10 iris points) of the most prominent face;
* ``SelfieSegmentation(model_selection=0)`` gives a per-pixel person probability, used
  only for the hair mask.

:func:`region_masks` turns landmarks into boolean masks (pure numpy + Pillow). Every
polygon is built from a mediapipe ``FACEMESH_*`` edge set, whose edges are chained into
ordered vertex rings. The rules, in pixels of the analysed image:

* ``face``: the filled face-oval ring (forehead to chin, cheek to cheek).
* ``lips``: the outer lip ring **minus** the inner mouth ring, so an open mouth is not
  lips (on a closed mouth the inner ring is a sliver and removes almost nothing).
* ``eyes``: both eye-opening rings (the iris lies inside them).
* ``skin``: ``face`` minus lips (outer ring, mouth included), eyes and eyebrows, each
  dilated by :data:`EXCLUDE_DILATE_FRAC` of the face width, minus the nostrils:
  a disc of radius :data:`NOSTRIL_RADIUS_FRAC` of the face width around each landmark in
  :data:`NOSTRIL_LANDMARKS`.
* ``hair``: person probability > :data:`PERSON_THRESHOLD`, minus ``face`` dilated by
  :data:`HAIR_FACE_DILATE_FRAC` of the face width, kept only on rows above the chin
  line (image row ``y`` < the chin landmark's ``y``, :data:`CHIN_LANDMARK`), so neck,
  shoulders and clothes are dropped. Ears and the part of the head beside the face oval
  also land in ``hair``, and eyebrows are *not* in it: a known approximation.

``face width`` is the horizontal extent of the face-oval landmarks, so every margin
scales with the face, not the image.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

N_LANDMARKS = 478
PERSON_THRESHOLD = 0.5          # selfie-segmentation probability counted as person
EXCLUDE_DILATE_FRAC = 0.01      # growth of eyes/brows/lips removed from skin, × face width
HAIR_FACE_DILATE_FRAC = 0.03    # growth of the face oval removed from hair, × face width
NOSTRIL_RADIUS_FRAC = 0.035     # nostril disc radius, × face width
# Mesh points on the nostril openings (canonical face-mesh indices; subject's right then left).
NOSTRIL_LANDMARKS: tuple[int, ...] = (20, 238, 241, 250, 458, 461)
CHIN_LANDMARK = 152             # lowest point of the face oval
MASK_NAMES = ("skin", "lips", "eyes", "hair", "face")


@dataclass
class FaceAnalysis:
    """Result of :meth:`FaceAnalyzer.analyze` on one image of shape (H, W, 3).

    ``landmarks``: float32 (478, 2) pixel coordinates ``(x, y)`` (x right, y down), or
    None when no face was found. ``masks``: bool (H, W) arrays named by
    :data:`MASK_NAMES`, all False when no face was found. ``person``: bool (H, W)
    selfie-segmentation mask (probability > :data:`PERSON_THRESHOLD`), None when no face
    was found.
    """

    face_found: bool
    landmarks: np.ndarray | None
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    person: np.ndarray | None = None


def _connections():
    import mediapipe as mp

    return mp.solutions.face_mesh_connections


def _chains(edges) -> list[list[int]]:
    """Order an undirected edge set into vertex chains (closed rings or open paths).

    Each returned chain lists its vertices once, in walking order. Vertices of degree
    > 2 are not expected (the FACEMESH contour sets have none).
    """
    adj: dict[int, list[int]] = {}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    seen: set[int] = set()
    chains = []
    # Start open paths at their ends (degree 1), then rings anywhere.
    starts = sorted(v for v, n in adj.items() if len(n) == 1) + sorted(adj)
    for s in starts:
        if s in seen:
            continue
        chain, prev, cur = [s], None, s
        seen.add(s)
        while True:
            nxt = [n for n in adj[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            chain.append(cur)
            seen.add(cur)
        chains.append(chain)
    return chains


def _rings(edges, pts: np.ndarray) -> list[list[int]]:
    """Vertex rings of an edge set; two open paths (eyebrow rows) are joined into one.

    The second path is reversed if that makes the joined ring shorter at its two seams.
    """
    chains = _chains(edges)
    degree: dict[int, int] = {}
    for a, b in edges:
        degree[a] = degree.get(a, 0) + 1
        degree[b] = degree.get(b, 0) + 1
    open_paths = [c for c in chains if degree[c[0]] == 1]
    if len(chains) == 2 and len(open_paths) == 2:
        a, b = chains
        d_same = np.linalg.norm(pts[a[-1]] - pts[b[0]]) + np.linalg.norm(pts[b[-1]] - pts[a[0]])
        d_rev = np.linalg.norm(pts[a[-1]] - pts[b[-1]]) + np.linalg.norm(pts[b[0]] - pts[a[0]])
        return [a + (b if d_same <= d_rev else b[::-1])]
    return chains


def _fill(pts: np.ndarray, rings: list[list[int]], shape: tuple[int, int]) -> np.ndarray:
    """Union of the filled polygons ``pts[ring]``; bool (H, W)."""
    img = Image.new("1", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(img)
    for ring in rings:
        if len(ring) >= 3:
            draw.polygon([tuple(map(float, p)) for p in pts[ring]], fill=1, outline=1)
    return np.asarray(img, dtype=bool)


def _disk(radius: float) -> np.ndarray:
    r = max(int(round(radius)), 0)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return xx * xx + yy * yy <= radius * radius + 1e-9


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    return ndimage.binary_dilation(mask, _disk(radius)) if radius >= 0.5 else mask.copy()


def empty_masks(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """All-False bool (H, W) masks for every name in :data:`MASK_NAMES`."""
    return {k: np.zeros(shape, dtype=bool) for k in MASK_NAMES}


def region_masks(landmarks: np.ndarray, shape: tuple[int, int],
                 person: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Region masks from face-mesh landmarks (rules in the module docstring).

    ``landmarks``: (478, 2) pixel coordinates ``(x, y)``; ``shape``: ``(H, W)``;
    ``person``: optional float (H, W) person probability in [0, 1] (without it ``hair``
    is all False). Returns bool (H, W) masks keyed by :data:`MASK_NAMES`. Pure: the same
    inputs always give the same masks.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (N_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape ({N_LANDMARKS}, 2), got {pts.shape}")
    h, w = int(shape[0]), int(shape[1])
    c = _connections()
    oval_rings = _rings(c.FACEMESH_FACE_OVAL, pts)
    face = _fill(pts, oval_rings, (h, w))
    oval_idx = [i for r in oval_rings for i in r]
    face_w = float(np.ptp(pts[oval_idx, 0]))

    lip_rings = sorted(_rings(c.FACEMESH_LIPS, pts), key=lambda r: -len(r))
    lips_outer = _fill(pts, lip_rings[:1], (h, w))
    mouth = _fill(pts, lip_rings[1:], (h, w))
    lips = lips_outer & ~mouth
    eyes = _fill(pts, _rings(c.FACEMESH_LEFT_EYE, pts) + _rings(c.FACEMESH_RIGHT_EYE, pts), (h, w))
    brows = _fill(pts, _rings(c.FACEMESH_LEFT_EYEBROW, pts)
                  + _rings(c.FACEMESH_RIGHT_EYEBROW, pts), (h, w))

    yy, xx = np.mgrid[0:h, 0:w]
    nostrils = np.zeros((h, w), dtype=bool)
    r_n = NOSTRIL_RADIUS_FRAC * face_w
    for i in NOSTRIL_LANDMARKS:
        nostrils |= (xx - pts[i, 0]) ** 2 + (yy - pts[i, 1]) ** 2 <= r_n * r_n

    excluded = _dilate(lips_outer | eyes | brows, EXCLUDE_DILATE_FRAC * face_w) | nostrils
    skin = face & ~excluded
    lips &= ~eyes

    hair = np.zeros((h, w), dtype=bool)
    if person is not None:
        person = np.asarray(person)
        if person.shape != (h, w):
            raise ValueError(f"person must have shape {(h, w)}, got {person.shape}")
        hair = (person > PERSON_THRESHOLD) & ~_dilate(face, HAIR_FACE_DILATE_FRAC * face_w)
        hair &= yy < pts[CHIN_LANDMARK, 1]
    return {"skin": skin, "lips": lips, "eyes": eyes, "hair": hair, "face": face}


@contextlib.contextmanager
def _native_logs_silenced():
    """Send file descriptor 2 (where native libraries log) to /dev/null for the block."""
    try:
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):  # no usable fd 2: nothing to silence
        yield
        return
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _warm_up_face() -> np.ndarray:
    """A small phantom face, uint8 (128, 128, 3)."""
    from fairbits.data.phantom import face_seed, render_face, sample_labels

    return render_face(sample_labels(1, seed=0).iloc[0], face_seed(0, 0), 128)[0]


class FaceAnalyzer:
    """Landmarks and region masks of RGB images, one face per image.

    Creates the two mediapipe graphs once; call :meth:`close` when done, or use it as a
    context manager (``with FaceAnalyzer() as fa: fa.analyze(img)``).
    """

    def __init__(self):
        with _native_logs_silenced():  # mediapipe's C++ start-up lines (INFO, W0000...) say nothing useful
            import mediapipe as mp

            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, refine_landmarks=True, max_num_faces=1)
            self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
            self.analyze(_warm_up_face())  # the graphs log once, on their first face

    def analyze(self, image: np.ndarray) -> FaceAnalysis:
        """Analyse one uint8 RGB image of shape (H, W, 3); see :class:`FaceAnalysis`."""
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
        img = np.ascontiguousarray(img)
        h, w = img.shape[:2]
        res = self._mesh.process(img)
        if not res.multi_face_landmarks:
            return FaceAnalysis(False, None, empty_masks((h, w)))
        lm = res.multi_face_landmarks[0].landmark
        pts = np.array([(p.x * w, p.y * h) for p in lm], dtype=np.float32)
        person = self._seg.process(img).segmentation_mask
        return FaceAnalysis(True, pts, region_masks(pts, (h, w), person), person > PERSON_THRESHOLD)

    def close(self) -> None:
        """Release the mediapipe graphs (safe to call twice)."""
        for g in (self._mesh, self._seg):
            try:
                g.close()
            except (ValueError, RuntimeError):
                pass

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
