"""Model-free face measures, original vs reconstruction: skin tone, geometry, identity.

All three read the original's face analysis from ``context["faces"]``
(:class:`fairbits.audit.faces.FaceBatch`) and return NaN for images whose original has
no face found. Column conventions: ``*_orig`` on the original, ``*_recon`` on the
reconstruction, ``delta_*`` = recon − orig (signed).

``skin_tone``
    Over the original's skin mask (mean CIELAB, :mod:`fairbits.face.tone`): ITA°, L*,
    b*, hue angle (degrees) and their changes; ΔE2000 between mean colours in the skin,
    lip and hair masks; the ITA-derived Fitzpatrick type (1–6, Del Bino bins) and Monk
    category (1–10, nearest swatch ITA) and whether each changed (1/0). A positive
    ``delta_ita`` means the skin came back lighter. The float64 CIELAB images come from
    the batch's memo when the engine passes one, shared with ``ciede2000``
    (:mod:`fairbits.measures.memo`).
``landmarks``
    Face mesh detected again on the reconstruction. ``face_found_recon`` (1/0);
    ``landmark_nme``: mean displacement of the 478 points divided by the original's
    inter-ocular (iris-centre) distance; and three ratios on original and
    reconstruction: nose width (alar points) over face width, lip thickness (upper-lip
    top to lower-lip bottom) over face height, eye aperture (mean lid gap of both eyes)
    over inter-ocular distance.
``identity``
    ``identity_cos``: cosine similarity of SFace embeddings of original and
    reconstruction, both cropped with the original's landmark alignment
    (:mod:`fairbits.face.identity`).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from fairbits.colour import ita_to_fitzpatrick, ita_to_monk
from fairbits.data.images import to_uint8
from fairbits.face.tone import region_delta_e, region_lab, tone_stats
from fairbits.measures.base import HIGHER, LOWER, PROPERTY, SIGNED, register_measure
from fairbits.measures.memo import cielab

# Face-mesh points of the geometry ratios.
IRIS = (468, 473)
ALAE = (129, 358)                 # nose wings
CHEEKS = (234, 454)               # face width
FACE_TOP_BOTTOM = (10, 152)       # forehead top, chin
LIP_TOP_BOTTOM = (0, 17)          # upper-lip top, lower-lip bottom
LIDS = ((159, 145), (386, 374))   # upper and lower lid of each eye


def _to_uint8(x: torch.Tensor) -> list[np.ndarray]:
    """(N, 3, H, W) in [0, 1] → list of contiguous uint8 (H, W, 3)."""
    return [np.ascontiguousarray(im) for im in to_uint8(x)]


def _categories(ita: np.ndarray, fn) -> np.ndarray:
    c = fn(ita).astype(np.float64)
    return np.where(np.isnan(ita), np.nan, c)


def skin_tone(original: torch.Tensor, recon: torch.Tensor, context: dict) -> dict[str, np.ndarray]:
    faces = context["faces"]
    lab_o, lab_r = cielab(original, context, recon=False), cielab(recon, context, recon=True)
    skin = faces.masks["skin"]
    so = {k: v.cpu().numpy() for k, v in tone_stats(region_lab(lab_o, skin)).items()}
    sr = {k: v.cpu().numpy() for k, v in tone_stats(region_lab(lab_r, skin)).items()}
    out: dict[str, np.ndarray] = {}
    for k, name in (("ita", "ita"), ("L", "L"), ("b", "b"), ("hue", "hue")):
        out[f"{name}_orig"], out[f"{name}_recon"] = so[k], sr[k]
        d = sr[k] - so[k]
        out[f"delta_{name}"] = (d + 180.0) % 360.0 - 180.0 if k == "hue" else d
    for region in ("skin", "lips", "hair"):
        out[f"delta_e_{region}"] = region_delta_e(lab_o, lab_r, faces.masks[region]).cpu().numpy()
    for name, fn in (("fitzpatrick", ita_to_fitzpatrick), ("monk", ita_to_monk)):
        a, b = _categories(so["ita"], fn), _categories(sr["ita"], fn)
        out[f"{name}_orig"], out[f"{name}_recon"] = a, b
        out[f"{name}_changed"] = np.where(np.isnan(a) | np.isnan(b), np.nan, (a != b).astype(np.float64))
    return out


def _dist(p: np.ndarray, i: int, j: int) -> np.ndarray:
    """Distance between points i and j of landmark sets (N, 478, 2) → (N,)."""
    return np.linalg.norm(p[:, i] - p[:, j], axis=-1)


def geometry(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Shape ratios of landmark sets ``(N, 478, 2)`` (NaN rows give NaN): ``nose_ratio``,
    ``lip_ratio``, ``eye_aperture`` (see the module docstring)."""
    p = np.asarray(landmarks, dtype=np.float64)
    inter = _dist(p, *IRIS)
    return {"nose_ratio": _dist(p, *ALAE) / _dist(p, *CHEEKS),
            "lip_ratio": _dist(p, *LIP_TOP_BOTTOM) / _dist(p, *FACE_TOP_BOTTOM),
            "eye_aperture": np.mean([_dist(p, *lid) for lid in LIDS], axis=0) / inter}


@functools.cache
def _analyzer():
    from fairbits.face.analysis import FaceAnalyzer

    return FaceAnalyzer()


def landmarks(original: torch.Tensor, recon: torch.Tensor, context: dict) -> dict[str, np.ndarray]:
    faces = context["faces"]
    n = len(faces)
    lm_r = np.full((n, 478, 2), np.nan, np.float32)
    found_r = np.full(n, np.nan)
    for k, im in enumerate(_to_uint8(recon)):
        if not faces.found[k]:
            continue
        a = _analyzer().analyze(im)
        found_r[k] = float(a.face_found)
        if a.face_found:
            lm_r[k] = a.landmarks
    lm_o = faces.landmarks.astype(np.float64)
    inter = _dist(lm_o, *IRIS)
    out = {"face_found_recon": found_r,
           "landmark_nme": np.linalg.norm(lm_r - lm_o, axis=-1).mean(axis=1) / inter}
    go, gr = geometry(lm_o), geometry(lm_r)
    for k in go:
        out[f"{k}_orig"], out[f"{k}_recon"], out[f"delta_{k}"] = go[k], gr[k], gr[k] - go[k]
    return out


@functools.cache
def _embedder():
    from fairbits.face.identity import IdentityEmbedder

    return IdentityEmbedder()


def identity(original: torch.Tensor, recon: torch.Tensor, context: dict) -> dict[str, np.ndarray]:
    faces = context["faces"]
    lms = [lm if ok else None for lm, ok in zip(faces.landmarks, faces.found)]
    emb_o = faces.embedding
    missing = faces.found & ~np.isfinite(emb_o).all(axis=1)
    if missing.any():  # the cache normally holds them; compute any that are absent
        emb_o = emb_o.copy()
        emb_o[missing] = _embedder().embed([im for im, m in zip(_to_uint8(original), missing) if m],
                                           [lm for lm, m in zip(lms, missing) if m])
    emb_r = _embedder().embed(_to_uint8(recon), lms)
    return {"identity_cos": np.sum(emb_o.astype(np.float64) * emb_r, axis=1)}


_SKIN_COLUMNS = {
    **{f"{k}_orig": PROPERTY for k in ("ita", "L", "b", "hue")},
    **{f"{k}_recon": PROPERTY for k in ("ita", "L", "b", "hue")},
    **{f"delta_{k}": SIGNED for k in ("ita", "L", "b", "hue")},
    "delta_e_skin": LOWER, "delta_e_lips": LOWER, "delta_e_hair": LOWER,
    "fitzpatrick_orig": PROPERTY, "fitzpatrick_recon": PROPERTY, "fitzpatrick_changed": LOWER,
    "monk_orig": PROPERTY, "monk_recon": PROPERTY, "monk_changed": LOWER,
}
register_measure("skin_tone", _SKIN_COLUMNS, skin_tone,
                 "skin ITA°, L*, b*, hue; ΔE2000 in skin, lips, hair; Fitzpatrick/Monk changes", needs_faces=True)
_GEOMETRY = ("nose_ratio", "lip_ratio", "eye_aperture")
register_measure("landmarks", {"face_found_recon": HIGHER, "landmark_nme": LOWER,
                               **{f"{g}_{s}": PROPERTY for g in _GEOMETRY for s in ("orig", "recon")},
                               **{f"delta_{g}": SIGNED for g in _GEOMETRY}},
                 landmarks, "landmark displacement (NME) and nose/lip/eye ratios on re-detected landmarks",
                 needs_faces=True)
# ``identity_nonmatch`` is derived when the statistics are made (fairbits.bias.verification):
# 1 = false non-match at the threshold calibrated on the originals.
register_measure("identity", {"identity_cos": HIGHER}, identity,
                 "cosine similarity of aligned SFace embeddings, original vs reconstruction", needs_faces=True,
                 derived={"identity_nonmatch": LOWER})
