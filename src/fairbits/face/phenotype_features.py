"""Image features of the phenotype classifiers: components joined with ``+``.

``sface`` (SFace embedding of the central 80 % square: the whole head), ``sface-inner``
(SFace of the central 40 % square: eyes, nose and mouth enlarged), ``colour`` (CIELAB
statistics of the central face area, :func:`colour_features`), ``pixels`` (16×16
thumbnail) and ``inception`` (where its weights are on disk). See
:mod:`fairbits.face.phenotype` for what each is good at.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fairbits.errors import SpecError

DEFAULT_FEATURES = "sface+sface-inner+colour"
FEATURE_COMPONENTS = ("sface", "sface-inner", "colour", "pixels", "inception")
INNER_CROP = 0.4    # central square of the sface-inner embedding
COLOUR_CROP = 0.6    # central square (fraction of the shorter side) of the colour statistics
COLOUR_GRID = 4      # cells per side of the colour grid
_BATCH = 64

def colour_features(images: torch.Tensor, crop: float = COLOUR_CROP, grid: int = COLOUR_GRID) -> np.ndarray:
    """CIELAB statistics of the central face area: ``(N, 3·g² + 3 + g²)`` float32.

    Of the central square (``crop`` of the shorter side): the mean L*, a*, b* of each cell
    of a ``grid × grid`` partition (3·g² values), the standard deviation of L*, a*, b* over
    the whole square (3) and the mean magnitude of the L* gradient per cell (g², a texture
    cue: hair coils, lash lines, creases).
    """
    from fairbits.colour import srgb_to_lab
    from fairbits.measures.features import _centre_crop, _check_images

    x = _check_images(images)
    n_out = 3 * grid * grid + 3 + grid * grid
    if len(x) == 0:
        return np.zeros((0, n_out), np.float32)
    out = []
    for start in range(0, len(x), _BATCH):
        lab = srgb_to_lab(_centre_crop(x[start:start + _BATCH], crop).double())
        means = F.adaptive_avg_pool2d(lab, grid).flatten(1)
        spread = lab.flatten(2).std(dim=2)
        L = lab[:, :1]
        gy = F.pad((L[..., 1:, :] - L[..., :-1, :]).abs(), (0, 0, 0, 1))
        gx = F.pad((L[..., :, 1:] - L[..., :, :-1]).abs(), (0, 1, 0, 0))
        texture = F.adaptive_avg_pool2d(gx + gy, grid).flatten(1)
        out.append(torch.cat([means, spread, texture], 1).float())
    return torch.cat(out).numpy()


class ColourExtractor:
    """:func:`colour_features` in the extractor interface (``name``, ``dim``, ``__call__``)."""

    def __init__(self, crop: float = COLOUR_CROP, grid: int = COLOUR_GRID):
        self.name = "colour"
        self.crop, self.grid = float(crop), int(grid)
        self.dim = 3 * self.grid ** 2 + 3 + self.grid ** 2

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return colour_features(images, self.crop, self.grid)


def parse_features(features: str) -> tuple[str, ...]:
    """``"sface+colour"`` → ``("sface", "colour")``, checked against :data:`FEATURE_COMPONENTS`.

    Raises:
        SpecError: empty, repeated or unknown component.
    """
    parts = tuple(p.strip().lower() for p in str(features).split("+"))
    parts = tuple("colour" if p == "color" else p for p in parts)
    if not parts or any(not p for p in parts):
        raise SpecError(f"features {features!r}: expected names joined by '+', e.g. {DEFAULT_FEATURES!r}")
    unknown = [p for p in parts if p not in FEATURE_COMPONENTS]
    if unknown:
        raise SpecError(f"features {features!r}: unknown component(s) {unknown}; "
                        f"known: {', '.join(FEATURE_COMPONENTS)} (join several with '+')")
    if len(set(parts)) != len(parts):
        raise SpecError(f"features {features!r}: a component is repeated")
    return parts


@functools.lru_cache(maxsize=None)
def _extractor(name: str):
    if name == "colour":
        return ColourExtractor()
    from fairbits.measures.features import get_extractor

    if name == "sface-inner":
        ext = get_extractor("sface", crop=INNER_CROP)
        ext.name = "sface-inner"
        return ext

    return get_extractor(name)


def extract_features(images: torch.Tensor, features: str = DEFAULT_FEATURES,
                     run: Callable[[Any, torch.Tensor], np.ndarray] | None = None) -> np.ndarray:
    """Feature matrix of a batch: ``float (N, 3, H, W)`` in [0, 1] → ``float32 (N, D)``.

    The components of ``features`` are concatenated in the order named. ``run(extractor,
    images)`` computes one component (default ``extractor(images)``); the phenotype measure
    passes one that reuses the audit batch's memo (:mod:`fairbits.measures.memo`).
    """
    parts = parse_features(features)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"images must be a (N, 3, H, W) tensor in [0, 1], got {shape}")
    run = run or (lambda extractor, x: extractor(x))
    return np.concatenate([run(_extractor(p), images) for p in parts], axis=1).astype(np.float32)


def features_of_arrays(arrays: Sequence[np.ndarray], features: str = DEFAULT_FEATURES,
                       progress: bool = False) -> np.ndarray:
    """Features of ``uint8 (H, W, 3)`` images that may differ in size (batched by shape)."""
    from fairbits.data.images import to_tensor

    parse_features(features)
    by_shape: dict[tuple, list[int]] = {}
    for i, a in enumerate(arrays):
        by_shape.setdefault(a.shape, []).append(i)
    chunks = [idx[s:s + _BATCH] for idx in by_shape.values() for s in range(0, len(idx), _BATCH)]
    out: np.ndarray | None = None
    it = chunks
    if progress:
        from rich.progress import track
        it = track(chunks, description=f"features ({features})")
    for rows in it:
        f = extract_features(to_tensor([arrays[i] for i in rows]), features)
        if out is None:
            out = np.zeros((len(arrays), f.shape[1]), np.float32)
        out[rows] = f
    if out is None:
        raise ValueError("no images to extract features from")
    return out
