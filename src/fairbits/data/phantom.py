"""Synthetic "phantom" frontal portraits whose labels are known by construction.

No real face data ships with fairbits, so tests and the demo audit codecs on stylised
faces rendered here. Every face is drawn from analytic fields over the pixel grid
(numpy, vectorised; no per-pixel Python loops):

* **Geometry** lives in *face units*: the image spans ``[-1, 1]`` on both axes at pose
  scale 1, ``u`` points right and ``v`` down. A pose (rotation ±8°, scale, translation)
  maps face units to the image, so every length scales with ``size``.
* **Skin** is the Monk Skin Tone (MST) swatch of the label, in linear light, times a
  shading field ``S`` (Lambertian shading of a height field: head ellipsoid plus nose,
  brow, cheek, lip and chin bumps; multi-scale noise; pores; optional freckles).
  ``S`` is normalised so that the mean of ``S**(1/3)`` over the skin mask is 1, which
  keeps the mean CIELAB L* and b* of the skin pixels, and so their ITA°, close to the
  swatch's.
* **Regions** (:data:`REGIONS`): ``0`` background and everything that is not one of the
  others (clothing, nostrils), ``1`` skin (face, neck, ears), ``2`` lips (including the
  mouth line), ``3`` eyes (eye opening plus the upper-lid lash line), ``4`` hair. The
  **eyebrows count as hair**, so a ``bald`` face still has a small hair region: the brows.

Label vocabularies: ``mst`` 1..10, ``skin_group`` in :data:`SKIN_GROUPS`, ``eyelid`` in
:data:`EYELIDS` (``other`` draws an upper-lid crease line; ``monolid`` has none and a
slightly narrower, smoother lid), ``nose`` in :data:`NOSES` (alar width and nostril
spacing), ``lips`` in :data:`LIPS` (lip heights about 2:1), ``hair_type`` in
:data:`HAIR_TYPES`, ``hair_colour`` in :data:`HAIR_COLOURS`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from fairbits.colour import (MST_SRGB, hex_to_srgb, ita_to_fitzpatrick, lab_to_srgb, mst_ita,
                             srgb_to_lab)
from fairbits.fileio import atomic_write, atomic_write_text

VERSION = 1

REGIONS: dict[str, int] = {"background": 0, "skin": 1, "lips": 2, "eyes": 3, "hair": 4}


SKIN_GROUPS = ("MST1-3", "MST4-7", "MST8-10")
_GROUP_MST = {"MST1-3": (1, 2, 3), "MST4-7": (4, 5, 6, 7), "MST8-10": (8, 9, 10)}
EYELIDS = ("monolid", "other")
NOSES = ("wide", "narrow")
LIPS = ("big", "small")
HAIR_TYPES = ("straight", "wavy", "curly", "bald")
HAIR_COLOURS = ("black", "blonde", "brown", "gray", "red")
LABEL_COLUMNS = ("image_id", "mst", "ita", "fitzpatrick", "skin_group", "eyelid", "nose",
                 "lips", "hair_type", "hair_colour")

_HAIR_SRGB = {"black": "211c19", "blonde": "c9a56c", "brown": "5e3f29", "gray": "a9a6a1",
              "red": "9c4a25"}
_IRIS_SRGB = ("3b2416", "5a3a22", "6e5a3a", "4d6b8c", "5b7a58", "6f7880")
_F32 = np.float32


# --------------------------------------------------------------------------- labels

def _to_linear(srgb) -> np.ndarray:
    """sRGB in [0, 1] → linear light (same shape, float32)."""
    c = np.asarray(srgb, dtype=_F32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(_F32)


def _to_srgb(lin: np.ndarray) -> np.ndarray:
    """Linear light → sRGB in [0, 1] (clipped); same shape, float32."""
    c = np.clip(lin, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055).astype(_F32)


def skin_group_of(mst: int) -> str:
    """Skin group of an MST value: ``"MST1-3"``, ``"MST4-7"`` or ``"MST8-10"``."""
    mst = int(mst)
    if not 1 <= mst <= 10:
        raise ValueError(f"MST must be in 1..10, got {mst}")
    return SKIN_GROUPS[0] if mst <= 3 else SKIN_GROUPS[1] if mst <= 7 else SKIN_GROUPS[2]


def face_seed(seed: int, i: int) -> int:
    """The per-face render seed of face ``i`` in a set made with ``seed`` (independent of n)."""
    return int(np.random.SeedSequence([seed, i, 1]).generate_state(1, np.uint32)[0])


def _face_labels(seed: int, i: int, balance: str | None) -> dict:
    """Labels of face ``i``; depends only on (seed, i, balance)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, i, 0]))
    if balance == "skin_group":
        mst = int(rng.choice(_GROUP_MST[SKIN_GROUPS[i % len(SKIN_GROUPS)]]))
    else:
        mst = int(rng.integers(1, 11))
    ita = mst_ita()[mst - 1]
    return {
        "image_id": f"phantom_{i:05d}", "mst": mst, "ita": ita,
        "fitzpatrick": int(ita_to_fitzpatrick(ita)), "skin_group": skin_group_of(mst),
        "eyelid": str(rng.choice(EYELIDS)), "nose": str(rng.choice(NOSES)),
        "lips": str(rng.choice(LIPS)), "hair_type": str(rng.choice(HAIR_TYPES)),
        "hair_colour": str(rng.choice(HAIR_COLOURS)),
    }


def sample_labels(n: int, seed: int = 0, balance: str | None = "skin_group") -> pd.DataFrame:
    """Labels of ``n`` phantom faces, one row each, columns :data:`LABEL_COLUMNS`.

    ``balance="skin_group"`` assigns the skin groups round-robin (face ``i`` gets group
    ``i % 3``) with MST uniform inside the group; ``balance=None`` draws MST uniformly
    from 1..10. All other attributes are uniform. Row ``i`` depends only on
    ``(seed, i, balance)``, so a bigger set starts with the rows of a smaller one.
    """
    if balance not in ("skin_group", None):
        raise ValueError(f"balance must be 'skin_group' or None, got {balance!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rows = [_face_labels(seed, i, balance) for i in range(n)]
    return pd.DataFrame(rows, columns=list(LABEL_COLUMNS))


# --------------------------------------------------------------------------- field helpers

def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _cover(sd: np.ndarray, px: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape from its signed distance ``sd`` (<0 inside)."""
    return np.clip(0.5 - sd / px, 0.0, 1.0).astype(_F32)


def _ellipse_sd(u, v, cx, cy, rx, ry) -> np.ndarray:
    """Approximate signed distance (face units) to an axis-aligned ellipse."""
    r = np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)
    return (r - 1.0) * min(rx, ry)


def _gauss(u, v, cx, cy, sx, sy) -> np.ndarray:
    """Unnormalised 2-D Gaussian bump, peak 1 at (cx, cy), widths (sx, sy) in face units."""
    return np.exp(-0.5 * (((u - cx) / sx) ** 2 + ((v - cy) / sy) ** 2)).astype(_F32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise (size, size), ~unit std, with about ``cells`` blobs per side."""
    grid = rng.standard_normal((cells + 4, cells + 4)).astype(_F32)
    im = Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC,
                                      box=(1.5, 1.5, cells + 2.5, cells + 2.5))
    a = np.asarray(im, dtype=_F32)
    return (a - a.mean()) / (a.std() + 1e-6)


def _child(rng: np.random.Generator) -> np.random.Generator:
    """A generator seeded by one draw of ``rng``.

    Arrays whose length depends on the image size come from a child, so ``rng`` advances
    by the same amount at every size and the geometry drawn after them stays the same.
    """
    return np.random.default_rng(int(rng.integers(2**62)))


def _fine_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """White noise blurred by ``sigma_px`` pixels, (size, size), unit std."""
    a = _child(rng).standard_normal((size, size)).astype(_F32)
    if sigma_px > 0.05:
        a = ndimage.gaussian_filter(a, sigma_px)
    return (a - a.mean()) / (a.std() + 1e-6)


def _noise1d(rng: np.random.Generator, x: np.ndarray, scales, weights, span=4.0) -> np.ndarray:
    """Sum of 1-D value-noise octaves evaluated at ``x`` (face units, |x| < span/2)."""
    out = np.zeros(x.shape, _F32)
    for s, w in zip(scales, weights):
        n = int(span / s) + 3
        knots = rng.standard_normal(n).astype(_F32)
        out += w * np.interp((x + span / 2) / s + 1, np.arange(n), knots).astype(_F32)
    return out


def _normals(h: np.ndarray, pose: "_Pose") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit surface normals (image frame, z towards viewer) of a height field in face units."""
    step = 2.0 / pose.size
    hy, hx = np.gradient(h * pose.scale, step)
    inv = 1.0 / np.sqrt(hx * hx + hy * hy + 1.0)
    return (-hx * inv).astype(_F32), (-hy * inv).astype(_F32), inv.astype(_F32)


def _lambert(n, light, ambient: float) -> np.ndarray:
    """Ambient + diffuse shading in [ambient, 1] for normals ``n`` and unit ``light``."""
    d = n[0] * light[0] + n[1] * light[1] + n[2] * light[2]
    return (ambient + (1 - ambient) * np.clip(d, 0, None)).astype(_F32)


def _specular(n, light, shininess: float) -> np.ndarray:
    """Blinn–Phong specular term in [0, 1], viewer on +z."""
    hv = np.asarray(light, dtype=np.float64) + (0.0, 0.0, 1.0)
    hv /= np.linalg.norm(hv)
    d = np.clip(n[0] * hv[0] + n[1] * hv[1] + n[2] * hv[2], 0, None)
    return (d ** shininess).astype(_F32)


def _put(img: np.ndarray, cover: np.ndarray, colour) -> None:
    """Composite ``colour`` ((3,) or (H, W, 3), linear) over ``img`` in place, alpha ``cover``.

    Only the bounding box of ``cover > 0`` is touched.
    """
    box = _box(cover > 0)
    if box[0].stop == 0:
        return
    colour = np.asarray(colour, dtype=_F32)
    local = colour if colour.ndim == 1 else colour[box]
    img[box] += cover[box][..., None] * (local - img[box])


# --------------------------------------------------------------------------- pose & geometry

@dataclass(frozen=True)
class _Pose:
    """Where the face sits in the image; ``u``, ``v`` are face coordinates of each pixel."""
    size: int
    scale: float
    u: np.ndarray       # (H, W) float32
    v: np.ndarray       # (H, W) float32
    light: tuple[float, float, float]

    @property
    def px(self) -> float:
        """One pixel in face units."""
        return 2.0 / (self.size * self.scale)


def _pose(size: int, rng: np.random.Generator) -> _Pose:
    """Random rotation (±8°), scale (1.0–1.15), translation (±0.05) and light direction."""
    theta = math.radians(rng.uniform(-8, 8))
    scale = rng.uniform(1.0, 1.15)
    tx, ty = rng.uniform(-0.05, 0.05, 2)
    c = (np.arange(size, dtype=_F32) + 0.5) * (2.0 / size) - 1.0
    x, y = np.meshgrid(c, c)
    xs, ys = (x - tx) / scale, (y - ty) / scale
    ct, st = math.cos(theta), math.sin(theta)
    u = (ct * xs + st * ys).astype(_F32)
    v = (-st * xs + ct * ys).astype(_F32)
    light = np.array([rng.choice([-1, 1]) * rng.uniform(0.3, 0.9), rng.uniform(-0.7, 0.0), 1.0])
    light /= np.linalg.norm(light)
    return _Pose(size, scale, u, v, tuple(float(a) for a in light))


@dataclass(frozen=True)
class _Geometry:
    """Face proportions in face units, jittered per face; the labels set the key ones."""
    cy: float
    rx: float
    ry: float
    taper: float
    yaw: float          # horizontal shift of the central features (pseudo head turn)
    eye_y: float
    eye_dx: float
    eye_w: float
    eye_hu: float
    eye_hl: float
    eye_tilt: float
    crease: bool
    brow_y: float
    brow_arch: float
    brow_thick: float
    tip_y: float
    nostril_y: float
    alar: float
    nostril_dx: float
    mouth_y: float
    mouth_w: float
    lip_hu: float
    lip_hl: float
    smile: float


def _geometry(labels: Mapping, rng: np.random.Generator) -> _Geometry:
    """Sample the proportions of one face; eyelid, nose and lips labels fix their shapes."""
    def j(a: float, rel: float = 0.04) -> float:
        return float(a * rng.uniform(1 - rel, 1 + rel))

    mono = labels["eyelid"] == "monolid"
    wide = labels["nose"] == "wide"
    big = labels["lips"] == "big"
    return _Geometry(
        cy=-0.12, rx=j(0.42), ry=j(0.56), taper=j(0.24, 0.15),
        yaw=float(rng.uniform(-0.025, 0.025)),
        eye_y=j(-0.12, 0.06), eye_dx=j(0.165), eye_w=j(0.076 if mono else 0.08),
        eye_hu=j(0.027 if mono else 0.037, 0.08), eye_hl=j(0.022, 0.1),
        eye_tilt=float(rng.uniform(0.0, 0.12)), crease=not mono,
        brow_y=j(-0.215, 0.05), brow_arch=j(0.022, 0.3), brow_thick=j(0.014, 0.2),
        tip_y=j(0.07, 0.1), nostril_y=j(0.098, 0.06),
        alar=j(0.098 if wide else 0.064, 0.05), nostril_dx=j(0.052 if wide else 0.031, 0.05),
        mouth_y=j(0.235, 0.05), mouth_w=j(0.145, 0.06),
        lip_hu=j(0.046 if big else 0.022, 0.08), lip_hl=j(0.056 if big else 0.028, 0.08),
        smile=float(rng.uniform(-0.2, 1.0)),
    )


def _face_shape(pose: _Pose, g: _Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Face oval (egg-shaped, narrower at the jaw): signed distance and normalised radius."""
    u, v = pose.u, pose.v
    t = np.clip((v - g.cy) / g.ry, 0, 1)
    rxv = g.rx * (1 - g.taper * t * t)
    r = np.sqrt((u / rxv) ** 2 + ((v - g.cy) / g.ry) ** 2)
    return ((r - 1) * rxv).astype(_F32), r.astype(_F32)


def _face_height(pose: _Pose, g: _Geometry, r: np.ndarray) -> np.ndarray:
    """Height field (face units) of the face: ellipsoid plus feature bumps and hollows."""
    u, v = pose.u, pose.v
    nx = g.yaw * 1.6
    h = 0.65 * g.rx * np.sqrt(np.clip(1 - r * r, 0, 1))
    t = np.clip((v - (g.eye_y - 0.06)) / (g.tip_y - g.eye_y + 0.06), 0, 1)
    below = np.clip(v - g.tip_y, 0, None)
    ridge = (0.02 + 0.06 * t) * np.exp(-0.5 * (below / 0.022) ** 2) \
        * _smoothstep(g.brow_y, g.eye_y - 0.04, v)
    h += ridge * np.exp(-0.5 * ((u - nx) / (0.018 + 0.02 * t)) ** 2)
    h += 0.025 * _gauss(u, v, nx, g.tip_y, 0.032, 0.028)
    au = np.abs(u - nx)
    h += 0.03 * np.exp(-0.5 * (((au - g.alar * 0.72) / 0.026) ** 2
                                + ((v - g.nostril_y + 0.012) / 0.022) ** 2))
    eu = np.abs(u - g.yaw)
    h -= 0.04 * np.exp(-0.5 * (((eu - g.eye_dx) / 0.075) ** 2 + ((v - g.eye_y) / 0.05) ** 2))
    h += 0.012 * np.exp(-0.5 * (((eu - g.eye_dx) / 0.05) ** 2 + ((v - g.eye_y) / 0.03) ** 2))
    h += 0.016 * np.exp(-0.5 * ((v - g.brow_y + 0.012) / 0.03) ** 2) \
        * np.exp(-0.5 * (u / 0.28) ** 2)
    h += 0.03 * np.exp(-0.5 * (((eu - 0.21) / 0.09) ** 2 + ((v - 0.02) / 0.08) ** 2))
    mx = g.yaw * 1.2
    h += 0.5 * g.lip_hu * _gauss(u, v, mx, g.mouth_y - g.lip_hu * 0.5, g.mouth_w * 0.7, g.lip_hu)
    h += 0.5 * g.lip_hl * _gauss(u, v, mx, g.mouth_y + g.lip_hl * 0.5, g.mouth_w * 0.7, g.lip_hl)
    h += 0.02 * _gauss(u, v, mx * 0.5, g.cy + g.ry - 0.09, 0.08, 0.05)
    return h.astype(_F32)


# --------------------------------------------------------------------------- layers

def _background(pose: _Pose, rng: np.random.Generator) -> np.ndarray:
    """Linear-light backdrop (H, W, 3): two-colour gradient, soft blobs, bokeh discs, grain."""
    size = pose.size
    grey = rng.uniform(0.2, 0.8, 2)
    cols = np.stack([grey[k] + (rng.uniform(0.1, 0.9, 3) - grey[k]) * rng.uniform(0.2, 0.6)
                     for k in range(2)])
    c = (np.arange(size, dtype=_F32) + 0.5) / size - 0.5
    x, y = np.meshgrid(c, c)
    a = rng.uniform(0, 2 * math.pi)
    t = np.clip(0.5 + 1.1 * (x * math.cos(a) + y * math.sin(a)), 0, 1)[..., None]
    srgb = cols[0] * (1 - t) + cols[1] * t
    for _ in range(int(rng.integers(2, 7))):
        cx, cy, rad = rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(0.03, 0.12)
        disc = np.clip((rad - np.hypot(x - cx, y - cy)) / 0.015, 0, 1)
        srgb = srgb + rng.uniform(0.04, 0.12) * disc[..., None]
    mod = 0.1 * _smooth_noise(rng, size, 3) + 0.05 * _smooth_noise(rng, size, 12)
    grain = 0.025 * _fine_noise(rng, size, 0.6 * size / 256)
    return _to_linear(np.clip(srgb * (1 + mod[..., None]) + grain[..., None], 0, 1))


def _clothing(pose: _Pose, rng: np.random.Generator, neck_w: float):
    """Shoulders in a crew-neck top: (coverage (H, W), linear colour (H, W, 3))."""
    u, v = pose.u, pose.v
    top = 0.60 + 0.35 * np.clip(np.abs(u) - 0.12, 0, None) ** 1.6
    collar = _ellipse_sd(u, v, 0.0, 0.60, neck_w + 0.03, 0.10)
    cover = _cover(top - v, pose.px) * (1 - _cover(collar, pose.px))
    base = _to_linear(rng.uniform(0.1, 0.8, 3))
    folds = 1 + 0.15 * _smooth_noise(rng, pose.size, 6) \
        + 0.05 * _fine_noise(rng, pose.size, 0.7 * pose.size / 256)
    shade = 1 - 0.35 * _smoothstep(0.3, 0.9, np.abs(u)) \
        - 0.4 * _cover(np.abs(collar) - 0.008, pose.px)
    return cover, base * (folds * shade)[..., None]


def _hair_texture(pose: _Pose, hair_type: str, rng: np.random.Generator, crown) -> np.ndarray:
    """Brightness multiplier (H, W) of hair: strands, waves or coils; mean about 1."""
    u, v = pose.u, pose.v
    du, dv = u - crown[0], v - crown[1]
    across = np.arctan2(du, dv).astype(_F32) * 0.8
    along = np.hypot(du, dv).astype(_F32)
    if hair_type == "curly":
        return 0.35 + 1.1 * _coils(u, v, rng) + 0.1 * _noise1d(rng, across, (0.01,), (1.0,))
    if hair_type == "wavy":
        lam, ph = rng.uniform(0.12, 0.18), rng.uniform(0, 2 * math.pi)
        wave = 2 * math.pi * along / lam + ph
        across = across + rng.uniform(0.02, 0.035) * np.sin(wave)
        bands = 0.8 + 0.35 * np.cos(wave + math.pi / 2 + 0.6)
    else:
        across = across + 0.006 * _noise1d(rng, along, (0.15,), (1.0,))
        bands = 1.0
    strands = _noise1d(rng, across, (0.0025, 0.006, 0.02), (0.5, 0.35, 0.3))
    return (0.9 + 0.55 * np.tanh(strands)) * bands


def _coils(u: np.ndarray, v: np.ndarray, rng: np.random.Generator,
           cell: float = 0.04) -> np.ndarray:
    """Coiled texture in [0, 1]: a spiral around the nearest of jittered grid points."""
    n = int(4.0 / cell) + 3
    jit = rng.uniform(0.15, 0.85, (2, n, n)).astype(_F32)
    turns = rng.choice([-1.0, 1.0], (n, n)).astype(_F32)
    gu, gv = (u + 2.0) / cell, (v + 2.0) / cell
    iu, iv = np.floor(gu).astype(np.int32), np.floor(gv).astype(np.int32)
    best = np.full(u.shape, np.inf, _F32)
    ang = np.zeros(u.shape, _F32)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            ci, cj = np.clip(iu + di, 0, n - 1), np.clip(iv + dj, 0, n - 1)
            ox = ci + jit[0, cj, ci] - gu
            oy = cj + jit[1, cj, ci] - gv
            d = np.hypot(ox, oy)
            closer = d < best
            best = np.where(closer, d, best)
            ang = np.where(closer, turns[cj, ci] * np.arctan2(oy, ox), ang)
    spiral = 0.5 + 0.5 * np.cos(2 * math.pi * best / 0.33 + ang)
    return (spiral * (1 - 0.6 * _smoothstep(0.5, 0.9, best))).astype(_F32)


def _hair(pose: _Pose, g: _Geometry, labels: Mapping, rng: np.random.Generator):
    """Scalp hair: (front coverage, back coverage, linear colour (H, W, 3)); empty if bald."""
    u, v = pose.u, pose.v
    hair_type = labels["hair_type"]
    if hair_type == "bald":
        zero = np.zeros(u.shape, _F32)
        return zero, zero, np.zeros(u.shape + (3,), _F32)
    curly = hair_type == "curly"
    vol = float(rng.uniform(0.11, 0.2) if curly else rng.uniform(0.035, 0.07))
    ang = np.arctan2(v - g.cy, u).astype(_F32)
    edge = _noise1d(rng, ang, (0.5, 0.12), (0.012, 0.006) if not curly else (0.02, 0.014))
    if curly:
        edge += 0.008 * _fine_noise(rng, pose.size, 1.2 * pose.size / 256)
    crx, cry, ccy = g.rx + vol, g.ry + vol * 0.9, g.cy - 0.03
    cap = _ellipse_sd(u, v, 0.0, ccy, crx, cry) + edge
    au = np.abs(u)
    fringe = rng.random() < (0.0 if curly else 0.3)
    line = (-0.33 if fringe else -0.45 + 0.03 * rng.standard_normal()) \
        + 0.8 * np.clip(au - 0.12, 0, None) ** 2 + 0.33 * _smoothstep(0.28, 0.43, au)
    line = line + 0.008 * _noise1d(rng, u, (0.03,), (1.0,))
    front = _cover(np.maximum(cap, v - line), pose.px)
    if curly and rng.random() < 0.7:
        back_sd = _ellipse_sd(u, v, 0.0, g.cy + 0.05, crx + 0.04, cry * 0.95) + edge
    elif not curly and rng.random() < 0.6:
        length = rng.uniform(0.2, 0.85)
        width = crx + 0.015 + 0.07 * np.clip((v - g.cy) / 0.8, 0, 1)
        bottom = v - length + 0.25 * np.clip(au - width + 0.08, 0, None)
        back_sd = np.where(v > ccy, np.maximum(au - width, bottom) + edge, cap)
    else:
        back_sd = cap + 0.01
    back = _cover(back_sd, pose.px)
    crown = (float(rng.choice([-0.12, 0.0, 0.1])), g.cy - g.ry - rng.uniform(0.15, 0.35))
    tex = _hair_texture(pose, hair_type, rng, crown)
    hh = np.maximum(0.5 * crx * np.sqrt(np.clip(-cap / crx * 2, 0, 1)),
                    0.3 * crx * np.sqrt(np.clip(-back_sd / crx * 3, 0, 1)))
    n = _normals(hh, pose)
    shade = _lambert(n, pose.light, 0.35) * (1 - 0.35 * _cover(-back_sd, pose.px) * (1 - front))
    base = _to_linear(np.clip(hex_to_srgb(_HAIR_SRGB[labels["hair_colour"]])
                              * rng.uniform(0.85, 1.15), 0, 1))
    sheen = 0.08 * _specular(n, pose.light, 14.0) * np.clip(tex, 0, None)
    colour = base * (np.clip(tex, 0.05, None) * shade)[..., None] + sheen[..., None]
    return front, back, colour.astype(_F32)


def _eye(pose: _Pose, g: _Geometry, side: int, rng: np.random.Generator, iris_col: np.ndarray):
    """One eye: (opening coverage, lash-line coverage, crease coverage, linear colour (H, W, 3)).

    Computed only in a window around the eye and zero elsewhere.
    """
    px = pose.px
    ex = side * g.eye_dx + g.yaw
    gaze = rng.uniform(-0.01, 0.01, 2)
    box = _box((np.abs(pose.u - ex) < g.eye_w + 0.04) & (np.abs(pose.v - g.eye_y) < 0.09))
    u, v = pose.u[box], pose.v[box]
    du = (u - ex) * side
    t = np.clip(du / g.eye_w, -1, 1)
    q = np.clip((1 - t) * (1 + t) * (1 + 0.25 * t), 0, None)   # fuller towards the inner corner
    dv = v - g.eye_y + g.eye_tilt * du
    upper = -g.eye_hu * q ** 0.8
    lower = g.eye_hl * q ** 0.9
    ends = np.abs(du) - g.eye_w
    opening = _cover(np.maximum(np.maximum(upper - dv, dv - lower), ends), px)
    lw = 0.004 + 0.006 * (t + 1) / 2
    lash = _cover(np.maximum(np.abs(upper - dv - lw) - lw, ends + 0.004), px) * (1 - opening)
    crease = np.zeros_like(u)
    if g.crease:
        cline = upper - 0.016 - 0.014 * q
        crease = _cover(np.abs(dv - cline) - 0.0035, px) * np.clip(q * 1.4, 0, 1)
    lid_shadow = np.exp(-np.clip(dv - upper, 0, None) / 0.012)
    sclera = _to_linear((0.9, 0.87, 0.84)) \
        * (1 - 0.45 * lid_shadow - 0.25 * np.abs(t) ** 3)[..., None]
    ix, iy = ex + gaze[0], g.eye_y + gaze[1] + 0.004
    ri = 0.46 * g.eye_w
    rr = np.hypot(u - ix, v - iy) / ri
    ia = np.arctan2(v - iy, u - ix)
    streaks = 0.85 + 0.15 * np.cos(17 * ia + 4 * rr) + 0.1 * np.cos(7 * ia - 3 * rr)
    iris = iris_col * (streaks * (1 - 0.55 * _smoothstep(0.72, 1.0, rr))
                       * (1 - 0.4 * np.exp(-np.clip(dv - upper, 0, None) / 0.015)))[..., None]
    col = sclera.copy()
    _put(col, _cover((rr - 1) * ri, px), iris)
    _put(col, _cover((rr - 0.38) * ri, px), np.array([0.008, 0.007, 0.007], _F32))
    lx, ly = pose.light[0], pose.light[1]
    glint = np.hypot(u - ix - 0.45 * ri * lx - 0.1 * ri, v - iy - 0.45 * ri * ly + 0.2 * ri)
    _put(col, 0.9 * _cover(glint - 0.14 * ri, px), np.array([0.95, 0.95, 0.95], _F32))
    return tuple(_embed(a, box, pose.u.shape) for a in (opening, lash, crease, col))


def _box(mask: np.ndarray) -> tuple[slice, slice]:
    """Row and column slices of the bounding box of ``mask`` (H, W); empty if none is set."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _embed(a: np.ndarray, box: tuple[slice, slice], shape: tuple[int, int]) -> np.ndarray:
    """Place a window ``a`` ((h, w) or (h, w, 3)) into zeros of ``shape`` (+ channels)."""
    out = np.zeros(tuple(shape) + a.shape[2:], _F32)
    out[box] = a
    return out


def _brow(pose: _Pose, g: _Geometry, side: int) -> np.ndarray:
    """Coverage (H, W) of one eyebrow: an arched, tapering band above the eye."""
    u, v, px = pose.u, pose.v, pose.px
    length = 0.235
    d = (u - g.yaw) * side - 0.055
    t = d / length
    tc = np.clip(t, 0, 1)
    centre = g.brow_y - g.brow_arch * np.sin(math.pi * tc ** 0.75) + 0.012 * tc
    half = g.brow_thick * (1 - 0.55 * tc) + 0.003
    sd = np.maximum(np.abs(v - centre) - half, np.maximum(-d, d - length))
    return _cover(sd, px)


def _lips(pose: _Pose, g: _Geometry):
    """Lips: (coverage, mouth-line coverage, upper-lip mask, x-position t in [-1, 1])."""
    u, v, px = pose.u, pose.v, pose.px
    mx = g.yaw * 1.2
    t = (u - mx) / g.mouth_w
    tc = np.clip(t, -1, 1)
    q = np.clip(1 - tc * tc, 0, None)
    mouth = g.mouth_y - 0.012 * g.smile * tc * tc
    top = mouth - g.lip_hu * q ** 0.6 * (1 - 0.22 * np.exp(-0.5 * (tc / 0.12) ** 2))
    bottom = mouth + g.lip_hl * q ** 0.75
    ends = (np.abs(t) - 1) * g.mouth_w
    cover = _cover(np.maximum(np.maximum(top - v, v - bottom), ends), px)
    line = _cover(np.maximum(np.abs(v - mouth) - 0.0025 - 0.002 * q, ends - 0.004), px)
    return cover, line, (v < mouth).astype(_F32), tc


def _nostrils(pose: _Pose, g: _Geometry) -> np.ndarray:
    """Coverage (H, W) of both nostrils: small dark tilted ellipses either side of the tip."""
    u, v = pose.u, pose.v
    nx = g.yaw * 1.6
    out = np.zeros_like(u)
    for side in (-1, 1):
        du, dv = (u - nx - side * g.nostril_dx) * side, v - g.nostril_y
        a, b = du * 0.94 + dv * 0.34, -du * 0.34 + dv * 0.94
        rx = 0.016 + 0.12 * (g.alar - 0.064)
        out = np.maximum(out, _cover(_ellipse_sd(a, b, 0, 0, rx, 0.0075), pose.px))
    return out


def _ears(pose: _Pose, g: _Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ears: (coverage, shading multiplier, height field) of two ellipses beside the head."""
    u, v = pose.u, pose.v
    cover = np.zeros_like(u)
    shade = np.ones_like(u)
    height = np.zeros_like(u)
    for side in (-1, 1):
        ex, ey = side * (g.rx * 0.985 + 0.012), g.eye_y + 0.055
        sd = _ellipse_sd(u, v, ex, ey, 0.055, 0.12)
        cover = np.maximum(cover, _cover(sd, pose.px))
        height += 0.03 * np.sqrt(np.clip(-sd / 0.055, 0, 1))
        inner = _gauss(u, v, ex + side * 0.012, ey + 0.01, 0.02, 0.06)
        rim = _gauss(u, v, ex + side * 0.03, ey - 0.02, 0.015, 0.08)
        shade *= (1 - 0.45 * inner) * (1 + 0.15 * rim)
    return cover, shade, height.astype(_F32)


# --------------------------------------------------------------------------- skin

def _skin_texture(pose: _Pose, g: _Geometry, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative skin texture (H, W) around 1: blotches, fine grain, pores, freckles."""
    size, k = pose.size, pose.size / 256
    fine = min(1.0, k) ** 0.5        # sub-pixel detail averages out in small images
    tex = np.exp(0.06 * _smooth_noise(rng, size, 5) + 0.04 * _smooth_noise(rng, size, 20)
                 + fine * (0.03 * _fine_noise(rng, size, 0.7 * k)
                           + 0.02 * _fine_noise(rng, size, 2.0 * k)))
    pores = ndimage.gaussian_filter((_child(rng).random((size, size)) < 0.03 / k ** 2).astype(_F32),
                                    max(0.6 * k, 0.3))
    tex *= 1 - 0.3 * min(1.0, k) * np.clip(pores, 0, 1)
    density = 0.0 if rng.random() < 0.6 else rng.uniform(0.002, 0.012)
    if density:
        hits = _child(rng).random((size, size)) < density / k ** 2
        dots = ndimage.gaussian_filter(hits.astype(_F32), max(1.1 * k, 0.4))
        where = _gauss(np.abs(pose.u - g.yaw), pose.v, 0.14, 0.0, 0.12, 0.08) \
            + _gauss(pose.u, pose.v, g.yaw * 1.6, -0.02, 0.04, 0.08)
        tex *= 1 - np.clip(4.0 * dots * where, 0, 0.5)
    return tex.astype(_F32)


def _face_details(pose: _Pose, g: _Geometry, crease: np.ndarray) -> np.ndarray:
    """Shading multiplier (H, W) for crease lines, alar grooves and the shadow under the nose."""
    u, v, px = pose.u, pose.v, pose.px
    nx = g.yaw * 1.6
    m = 1 - 0.38 * crease
    for side in (-1, 1):
        cx, cy = nx + side * g.alar * 0.72, g.nostril_y - 0.012
        ring = _ellipse_sd(u, v, cx, cy, 0.034, 0.03)
        outer = np.clip((u - nx) * side / g.alar, 0, 1)
        m *= 1 - 0.35 * _cover(np.abs(ring) - 0.004, px) * outer * (v < cy + 0.02)
        fold = np.abs((u - nx) * side - g.alar - 0.02 - 0.5 * (v - g.nostril_y))
        m *= 1 - 0.08 * _cover(fold - 0.006, px) * _gauss(u, v, nx + side * (g.alar + 0.06),
                                                          g.nostril_y + 0.07, 0.06, 0.06)
    m *= 1 - 0.3 * _gauss(u, v, nx, g.nostril_y + 0.012, 0.05, 0.01)
    m *= 1 - 0.2 * _gauss(u, v, g.yaw * 1.2, g.mouth_y + g.lip_hl + 0.02, 0.07, 0.012)
    return m.astype(_F32)


def _lip_colour(base_srgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Linear lip colour (3,) from the skin's: darker and redder in CIELAB."""
    L, a, b = srgb_to_lab(base_srgb).numpy()
    lab = np.array([L * rng.uniform(0.66, 0.76) + 2, a + 12 + 12 * L / 100 * rng.uniform(0.8, 1.2),
                    b * 0.85 + 3])
    return _to_linear(lab_to_srgb(lab).numpy())


# --------------------------------------------------------------------------- render

def _validate(labels: Mapping) -> None:
    vocab = {"eyelid": EYELIDS, "nose": NOSES, "lips": LIPS, "hair_type": HAIR_TYPES,
             "hair_colour": HAIR_COLOURS}
    for key, allowed in vocab.items():
        if labels[key] not in allowed:
            raise ValueError(f"{key} must be one of {allowed}, got {labels[key]!r}")
    skin_group_of(labels["mst"])


def render_face(labels: Mapping, seed: int, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Render one phantom face.

    Args:
        labels: needs ``mst`` (1..10), ``eyelid``, ``nose``, ``lips``, ``hair_type`` and
            ``hair_colour`` (a dict, a pandas row...).
        seed: the per-face seed (pose, proportions, textures, colours).
        size: image side in pixels (>= 32).
    Returns:
        ``(image, regions)``: ``uint8 (size, size, 3)`` sRGB and ``uint8 (size, size)``
        region codes (:data:`REGIONS`).
    """
    _validate(labels)
    if size < 32:
        raise ValueError(f"size must be >= 32, got {size}")
    rng = np.random.default_rng(seed)
    pose = _pose(size, rng)
    g = _geometry(labels, rng)
    u, v, px = pose.u, pose.v, pose.px
    base_srgb = hex_to_srgb(MST_SRGB[int(labels["mst"]) - 1])
    skin_lin = _to_linear(base_srgb)

    img = _background(pose, rng)
    face_sd, face_r = _face_shape(pose, g)
    face = _cover(face_sd, px)
    neck_w = 0.2 * g.rx / 0.42
    neck_half = neck_w + 0.05 * _smoothstep(0.45, 0.72, v)
    neck = _cover(np.abs(u) - neck_half, px) * (v > g.cy)
    ears, ear_shade, ear_h = _ears(pose, g)
    cloth, cloth_col = _clothing(pose, rng, neck_w)
    hair_front, hair_back, hair_col = _hair(pose, g, labels, rng)
    iris_col = _to_linear(hex_to_srgb(str(rng.choice(_IRIS_SRGB))) * rng.uniform(0.8, 1.1))
    eyes = [_eye(pose, g, s, rng, iris_col) for s in (-1, 1)]
    brows = np.maximum(_brow(pose, g, -1), _brow(pose, g, 1)) * face
    lips, mouth_line, upper_lip, lip_t = _lips(pose, g)
    nostrils = _nostrils(pose, g)

    # Region map, in painting order (later layers win).
    region = np.zeros((size, size), np.uint8)
    layers = [(hair_back, 4), (neck, 1), (ears, 1), (face, 1), (cloth, 0), (nostrils, 0),
              (lips, 2), (eyes[0][0] + eyes[0][1], 3), (eyes[1][0] + eyes[1][1], 3),
              (brows, 4), (hair_front, 4)]
    for cover, code in layers:
        region[cover > 0.5] = code

    # Skin shading S: lit height fields, texture and details; mean S^(1/3) = 1 over the skin.
    n_face = _normals(_face_height(pose, g, face_r), pose)
    amb = float(rng.uniform(0.15, 0.3))
    s_face = _lambert(n_face, pose.light, amb) * (0.6 + 0.4 * n_face[2] ** 2)
    neck_h = 0.6 * neck_half * np.sqrt(np.clip(1 - (u / neck_half) ** 2, 0, 1))
    s_neck = 0.85 * _lambert(_normals(neck_h, pose), pose.light, amb) \
        * (1 - 0.5 * np.exp(-np.clip(face_sd, 0, None) / 0.05))
    s_ear = 0.9 * _lambert(_normals(ear_h, pose), pose.light, amb) * ear_shade
    S = s_neck * (1 - ears) + s_ear * ears
    S = S * (1 - face) + s_face * face
    crease = np.maximum(eyes[0][2], eyes[1][2])
    S *= _face_details(pose, g, crease) * _skin_texture(pose, g, rng)
    blurred_hair = ndimage.gaussian_filter(np.maximum(hair_front, hair_back * (1 - face)),
                                           3.0 * size / 256)
    S *= 1 - 0.35 * blurred_hair
    on_skin = region == REGIONS["skin"]
    if on_skin.any():
        S /= float(np.mean(np.cbrt(S[on_skin]))) ** 3
    blush = float(rng.uniform(0, 1)) * (_gauss(np.abs(u - g.yaw), v, 0.2, 0.06, 0.08, 0.06))
    tint = np.stack([1 + 0.1 * blush, 1 - 0.02 * blush, 1 - 0.02 * blush], -1)
    spec = float(rng.uniform(0.015, 0.05)) * _specular(n_face, pose.light, 30.0) * face
    skin_col = skin_lin * S[..., None] * tint + spec[..., None]

    # Painting.
    _put(img, hair_back, hair_col)
    _put(img, np.maximum(np.maximum(neck, ears), face), skin_col)
    _put(img, cloth, cloth_col)
    _put(img, nostrils, skin_lin * 0.12 * s_face[..., None])
    lip_lin = _lip_colour(base_srgb, rng)
    wrinkles = 1 - 0.1 * (0.5 + 0.5 * np.cos(2 * math.pi * u / 0.011)) * (1 - np.abs(lip_t))
    lip_shade = s_face / max(float(np.mean(s_face[lips > 0.5])) if (lips > 0.5).any() else 1, 1e-3)
    lip_img = lip_lin * ((0.82 + 0.25 * (1 - upper_lip)) * wrinkles * lip_shade)[..., None] \
        + 2.5 * spec[..., None] * (1 - upper_lip)[..., None]
    _put(img, lips, lip_img)
    _put(img, mouth_line * lips.clip(0.3, 1), lip_lin * 0.22)
    for opening, lash, _, col in eyes:
        _put(img, opening, col * (0.5 + 0.5 * s_face)[..., None])
        _put(img, lash, np.array([0.012, 0.01, 0.009], _F32))
    brow_tex = 0.6 + 0.45 * np.tanh(_noise1d(rng, u * 0.8 + v * 0.6, (0.004, 0.01), (0.6, 0.4)))
    brow_col = _to_linear(hex_to_srgb(_HAIR_SRGB[labels["hair_colour"]]) * 0.8)
    _put(img, 0.85 * brows, brow_col * (brow_tex * s_face)[..., None])
    _put(img, hair_front, hair_col)

    # Camera: slight blur and sensor noise, then 8-bit sRGB.
    img = ndimage.gaussian_filter(img, (0.45 * size / 256, 0.45 * size / 256, 0))
    srgb = _to_srgb(img) + _child(rng).normal(0, 1.2 / 255, img.shape).astype(_F32)
    out = np.clip(np.rint(srgb * 255), 0, 255).astype(np.uint8)
    return out, region


# --------------------------------------------------------------------------- files

def _atomic_save_png(arr: np.ndarray, path: Path) -> None:
    """Write ``arr`` as PNG atomically."""
    atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG", compress_level=4))


def _complete(out: Path, meta: dict) -> bool:
    """Whether ``out`` already holds a finished render made with exactly ``meta``."""
    try:
        if json.loads((out / "phantom.json").read_text(encoding="utf-8")) != meta:
            return False
    except (OSError, ValueError):
        return False
    if not (out / "labels.csv").is_file():
        return False
    names = (f"phantom_{i:05d}.png" for i in range(meta["n"]))
    return all((out / "images" / f).is_file() and (out / "masks" / f).is_file() for f in names)


def _render_one(args) -> None:
    """Render face ``i`` and write its image and mask (a picklable unit of work)."""
    row, seed, i, size, out = args
    image, regions = render_face(row, face_seed(seed, i), size)
    _atomic_save_png(image, out / "images" / f"{row['image_id']}.png")
    _atomic_save_png(regions, out / "masks" / f"{row['image_id']}.png")


def render_phantoms(n: int, out: str | Path, seed: int = 0, size: int = 256,
                    balance: str | None = "skin_group", progress: bool = False,
                    processes: int = 1) -> Path:
    """Render ``n`` phantoms into ``out`` and return the path of ``out/labels.csv``.

    Writes ``images/<image_id>.png`` (RGB), ``masks/<image_id>.png`` (8-bit region codes,
    :data:`REGIONS`), ``labels.csv`` (``path``, ``mask_path`` relative to ``out``,
    ``image_id`` and the label columns) and ``phantom.json`` ({n, seed, size, balance,
    version}). A finished render with the same parameters is reused as is. Every file is
    written under a temporary name and renamed, and ``phantom.json`` comes last, so an
    interrupted run never looks finished. ``processes > 1`` renders in that many worker
    processes (same files, same bytes).
    """
    out = Path(out)
    meta = {"n": int(n), "seed": int(seed), "size": int(size), "balance": balance,
            "version": VERSION}
    labels_csv = out / "labels.csv"
    if _complete(out, meta):
        return labels_csv
    labels = sample_labels(n, seed, balance)
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    (out / "phantom.json").unlink(missing_ok=True)
    jobs = [(row, seed, i, size, out) for i, row in enumerate(labels.to_dict("records"))]
    pool = None
    if processes > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(processes)
        items = pool.imap_unordered(_render_one, jobs, chunksize=8)
    else:
        items = map(_render_one, jobs)
    if progress:
        from rich.progress import track
        items = track(items, total=len(jobs), description="rendering phantoms")
    try:
        for _ in items:
            pass
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    table = labels.copy()
    table.insert(0, "mask_path", [f"masks/{i}.png" for i in labels["image_id"]])
    table.insert(0, "path", [f"images/{i}.png" for i in labels["image_id"]])
    atomic_write_text(labels_csv, table.to_csv(index=False))
    atomic_write_text(out / "phantom.json", json.dumps(meta, indent=1))
    return labels_csv
