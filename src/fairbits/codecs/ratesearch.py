"""Per-image rate matching: code each image at the setting whose real bpp is nearest a target.

The rule (:func:`search_rate`): among the codec's rate grid (:func:`rate_grid`:
``codec.rate_settings`` where the codec has one, else ``codec.settings``) pick the setting
whose bpp, ``8 * bytes / (H * W)``, is closest to ``target_bpp``; on a tie take the one
with fewer bits. The grid is searched by bisection (bpp rises with the setting, nearly always), then
the :data:`NEIGHBOURS` settings either side of the crossing are also coded, so a small
non-monotone step in the codec's rate curve cannot hide the nearest setting.

What a search costs: every setting the rule looks at is *encoded*, and only the chosen one
is *decoded* (for a :class:`~fairbits.codecs.base.SplitCodec`; a codec without a separate
encoder is coded in full). Byte counts go into ``cache``, which the audit shares between
all targets of a codec on one image, so a later target reads the settings an earlier one
already sized (the first bisection steps are common to every target) instead of encoding
them again.
"""

from __future__ import annotations

import hashlib
from typing import Any, Hashable

import numpy as np

from fairbits.codecs.base import Codec, Coded, decode_coded, encode_only

NEIGHBOURS = 2  # settings checked on each side of the bisection's crossing point


def rate_grid(codec: Codec) -> tuple:
    """The settings a rate search walks, lowest rate first: ``codec.rate_settings`` when the
    codec has them (a learned codec, whose ``settings`` mix two families of checkpoints on
    different rate scales), else ``codec.settings``."""
    grid = getattr(codec, "rate_settings", None)
    return tuple(codec.settings if grid is None else grid)


def image_key(image: np.ndarray) -> str:
    """A checksum of an image's pixels and shape, usable as the ``key`` of a rate cache."""
    h = hashlib.sha1(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


class RateCurve:
    """What is known of one image's rate curve under one codec, probed on demand.

    Attributes:
        bpp: ``{setting index: bpp}`` for every setting whose bytes are known (from the
            cache or encoded here).
    """

    def __init__(self, codec: Codec, image: np.ndarray, cache: dict | None = None,
                 key: Hashable | None = None):
        self.codec, self.image = codec, image
        self.settings = rate_grid(codec)
        self.pixels = image.shape[0] * image.shape[1]
        self.cache = cache
        if cache is not None and key is None:
            key = image_key(image)
        self.key = (codec.name, key)  # one cache dict can then serve several codecs
        self.bpp: dict[int, float] = {}
        if cache is not None:
            for i, s in enumerate(self.settings):
                n = cache.get((self.key, s))
                if n is not None:
                    self.bpp[i] = 8.0 * n / self.pixels
        self._encoded: dict[int, bytes | Coded] = {}  # what this search encoded, by index

    def probe(self, i: int) -> float:
        """bpp of setting index ``i``, encoding it if it is not known yet."""
        if i not in self.bpp:
            out = encode_only(self.codec, self.image, self.settings[i])
            num_bytes = out.num_bytes if isinstance(out, Coded) else float(len(out))
            self._encoded[i] = out
            self.bpp[i] = 8.0 * num_bytes / self.pixels
            if self.cache is not None:
                self.cache[(self.key, self.settings[i])] = num_bytes
        return self.bpp[i]

    def coded(self, i: int) -> Coded:
        """The :class:`Coded` of setting index ``i``: equal to ``codec.code(image, setting)``."""
        setting = self.settings[i]
        out = self._encoded.get(i)
        if out is None:  # its byte count came from the cache: encode once more
            out = encode_only(self.codec, self.image, setting)
        return decode_coded(self.codec, self.image, setting, out)


def choose_setting(curve: RateCurve, target_bpp: float) -> int:
    """Index of the setting :func:`search_rate` keeps (the rule in the module docstring)."""
    lo, hi = 0, len(curve.settings) - 1
    while lo < hi:  # first index whose bpp >= target (or the last one)
        mid = (lo + hi) // 2
        if curve.probe(mid) < target_bpp:
            lo = mid + 1
        else:
            hi = mid
    candidates = range(max(0, lo - 1 - NEIGHBOURS), min(len(curve.settings), lo + 1 + NEIGHBOURS))
    return min(candidates, key=lambda i: (abs(curve.probe(i) - target_bpp), curve.probe(i)))


def search_rate(codec: Codec, image: np.ndarray, target_bpp: float,
                cache: dict | None = None, key: Hashable | None = None) -> Coded:
    """Code ``image`` at the setting of ``codec`` whose bpp is nearest ``target_bpp``.

    Args:
        codec: any :class:`~fairbits.codecs.base.Codec`; its :func:`rate_grid` ascends in rate.
        image: ``uint8 (H, W, 3)``.
        target_bpp: wanted rate in bits per pixel.
        cache: optional dict filled with ``((codec.name, key), setting) -> num_bytes``;
            pass the same dict for several targets on one image to reuse encodes.
        key: identifies the image in ``cache`` (default: :func:`image_key` of the pixels).

    Returns:
        the :class:`Coded` at the chosen setting, equal to ``codec.code(image, setting)``.
        Nearest is by ``|bpp - target|``; ties go to the lower rate.
    """
    if not rate_grid(codec):
        raise ValueError(f"codec {codec.name!r} has no settings ordered by rate to search")
    curve = RateCurve(codec, image, cache, key)
    return curve.coded(choose_setting(curve, target_bpp))


def rate_curve(codec: Codec, image: np.ndarray, settings=None) -> list[tuple[Any, float]]:
    """``[(setting, bpp), ...]`` for ``image`` over ``settings`` (default: its :func:`rate_grid`)."""
    pixels = image.shape[0] * image.shape[1]
    out = []
    for s in (rate_grid(codec) if settings is None else settings):
        encoded = encode_only(codec, image, s)
        num_bytes = encoded.num_bytes if isinstance(encoded, Coded) else len(encoded)
        out.append((s, 8.0 * num_bytes / pixels))
    return out
