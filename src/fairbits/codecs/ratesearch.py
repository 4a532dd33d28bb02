"""Per-image rate matching: code each image at the setting whose real bpp is nearest a target.

The rule (:func:`search_rate`): among ``codec.settings`` pick the setting whose bpp,
``8 * bytes / (H * W)``, is closest to ``target_bpp``; on a tie take the one with fewer
bits. The grid is searched by bisection (bpp rises with the setting, nearly always), then
the :data:`NEIGHBOURS` settings either side of the crossing are also coded, so a small
non-monotone step in the codec's rate curve cannot hide the nearest setting.
"""

from __future__ import annotations

import hashlib
from typing import Any, Hashable

import numpy as np

from fairbits.codecs.base import Codec, Coded

NEIGHBOURS = 2  # settings checked on each side of the bisection's crossing point


def image_key(image: np.ndarray) -> str:
    """A checksum of an image's pixels and shape, usable as the ``key`` of a rate cache."""
    h = hashlib.sha1(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


class _Prober:
    """Codes one image at settings on demand; remembers byte counts (and the last Coded of each)."""

    def __init__(self, codec: Codec, image: np.ndarray, cache: dict | None, key: Hashable | None):
        self.codec, self.image = codec, image
        self.pixels = image.shape[0] * image.shape[1]
        self.cache = cache
        if cache is not None and key is None:
            key = image_key(image)
        self.key = (codec.name, key)  # one cache dict can then serve several codecs
        self.coded: dict[Any, Coded] = {}

    def num_bytes(self, setting: Any) -> int:
        if self.cache is not None and (self.key, setting) in self.cache:
            return self.cache[(self.key, setting)]
        return self.get(setting).num_bytes

    def bpp(self, setting: Any) -> float:
        return 8.0 * self.num_bytes(setting) / self.pixels

    def get(self, setting: Any) -> Coded:
        if setting not in self.coded:
            coded = self.codec.code(self.image, setting)
            self.coded[setting] = coded
            if self.cache is not None:
                self.cache[(self.key, setting)] = coded.num_bytes
        return self.coded[setting]


def search_rate(codec: Codec, image: np.ndarray, target_bpp: float,
                cache: dict | None = None, key: Hashable | None = None) -> Coded:
    """Code ``image`` at the setting of ``codec`` whose bpp is nearest ``target_bpp``.

    Args:
        codec: any :class:`~fairbits.codecs.base.Codec`; ``codec.settings`` ascends in rate.
        image: ``uint8 (H, W, 3)``.
        target_bpp: wanted rate in bits per pixel.
        cache: optional dict filled with ``((codec.name, key), setting) -> num_bytes``;
            pass the same dict for several targets on one image to reuse encodes.
        key: identifies the image in ``cache`` (default: :func:`image_key` of the pixels).

    Returns:
        the :class:`Coded` at the chosen setting. Nearest is by ``|bpp - target|``; ties go
        to the lower rate.
    """
    settings = tuple(codec.settings)
    if not settings:
        raise ValueError(f"codec {codec.name!r} has no settings")
    probe = _Prober(codec, image, cache, key)
    lo, hi = 0, len(settings) - 1
    while lo < hi:  # first index whose bpp >= target (or the last one)
        mid = (lo + hi) // 2
        if probe.bpp(settings[mid]) < target_bpp:
            lo = mid + 1
        else:
            hi = mid
    candidates = settings[max(0, lo - 1 - NEIGHBOURS): lo + 1 + NEIGHBOURS]
    best = min(candidates, key=lambda s: (abs(probe.bpp(s) - target_bpp), probe.bpp(s)))
    return probe.get(best)


def rate_curve(codec: Codec, image: np.ndarray, settings=None) -> list[tuple[Any, float]]:
    """``[(setting, bpp), ...]`` for ``image`` over ``settings`` (default: all of the codec's)."""
    pixels = image.shape[0] * image.shape[1]
    return [(s, 8.0 * codec.code(image, s).num_bytes / pixels)
            for s in (codec.settings if settings is None else settings)]
