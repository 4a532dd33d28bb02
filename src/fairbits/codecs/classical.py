"""Classical codecs through Pillow: JPEG (4:2:0 and 4:4:4), WebP, AVIF, JPEG 2000, HEIC, JPEG XL.

Every codec is one :class:`PillowCodec`: a Pillow format name plus a function that turns
a setting into ``Image.save`` keyword arguments. ``code`` writes the real bitstream to
memory, and the reconstruction is what Pillow decodes from exactly those bytes; ``encode``
alone gives the bytes (the rate search sizes settings with it, see
:class:`~fairbits.codecs.base.SplitCodec`).

Settings (all ascend in rate):

* ``jpeg`` / ``jpeg444``: quality 1..95, chroma 4:2:0 / 4:4:4, Huffman tables optimised.
* ``webp``: lossy quality 0..100, ``method=4``.
* ``avif``: quality 0..100 (Pillow's libavif), ``speed=8`` (:data:`AVIF_SPEED`), 4:2:0.
* ``jpeg2000``: setting 1..100 picks a compression ratio on a log scale, see
  :func:`jpeg2000_ratio`; raw ``.j2k`` codestream, irreversible 9/7 wavelet with the
  colour transform (``mct=1``).
* ``heic`` (pillow-heif): quality 0..100. ``jxl`` (pillow-jxl-plugin): quality 0..99, lossy,
  ``effort=7`` (libjxl maps quality 100 to distance 0, which it only accepts in lossless
  mode). Both are always registered; when their plugin is missing ``get_codec`` says how
  to install it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image, features

from fairbits.codecs.base import Coded, decoded, register

AVIF_SPEED = 8  # libavif speed 0 (slowest, best) .. 10; 8 keeps a 256 px face well under 0.1 s
WEBP_METHOD = 4  # libwebp effort 0..6
JXL_EFFORT = 7  # libjxl effort 1..9 (its default)

# JPEG 2000 setting s in 1..100 → compression ratio on a log scale from 400:1 (s = 1,
# 0.06 bpp for 24-bit RGB) down to 4:1 (s = 100, 6 bpp). Higher setting = more bits.
J2K_RATIO_MAX = 400.0
J2K_RATIO_MIN = 4.0
J2K_SETTINGS = tuple(range(1, 101))


def jpeg2000_ratio(setting: int) -> float:
    """Compression ratio (uncompressed 24-bit size / target size) for JPEG 2000 ``setting`` 1..100."""
    t = (setting - J2K_SETTINGS[0]) / (J2K_SETTINGS[-1] - J2K_SETTINGS[0])
    return float(J2K_RATIO_MAX * (J2K_RATIO_MIN / J2K_RATIO_MAX) ** t)


@dataclass
class PillowCodec:
    """A codec that is one Pillow format plus per-setting ``save`` arguments.

    Attributes:
        name: registry name.
        format: Pillow format name used for saving (``"JPEG"``, ``"WEBP"``...).
        settings: ordered grid of settings, lowest rate first.
        save_args: ``setting -> dict`` of keyword arguments for ``Image.save``.
        prepare: called once before the first encode (e.g. to register a plugin).
    """

    name: str
    format: str
    settings: tuple
    save_args: Callable[[Any], dict]
    prepare: Callable[[], None] | None = None
    kind: str = "classical"
    _ready: bool = field(default=False, repr=False)

    def encode(self, image: np.ndarray, setting: Any) -> bytes:
        """``uint8 (H, W, 3)`` → the encoded bytes at ``setting``."""
        if not self._ready:
            if self.prepare is not None:
                self.prepare()
            self._ready = True
        if setting not in self.settings:
            raise ValueError(f"{self.name}: setting {setting!r} not in {self.settings[0]}..{self.settings[-1]}")
        image = np.ascontiguousarray(image, dtype=np.uint8)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{self.name}: expected uint8 (H, W, 3), got shape {image.shape}")
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format=self.format, **self.save_args(setting))
        return buf.getvalue()

    def decode(self, data: bytes, setting: Any = None) -> np.ndarray:
        """Bytes from :meth:`encode` → ``uint8 (H, W, 3)`` (the setting is in the bitstream)."""
        return decode(data)

    def code(self, image: np.ndarray, setting: Any) -> Coded:
        """Encode ``uint8 (H, W, 3)`` at ``setting``; the recon is decoded from the bytes."""
        return decoded(self, np.shape(image), setting, self.encode(image, setting))


def decode(data: bytes) -> np.ndarray:
    """Decode any bitstream Pillow (with the loaded plugins) can read → ``uint8 (H, W, 3)``."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


# ---------------------------------------------------------------- availability checks

def _check_feature(feature: str, what: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if features.check(feature) else f"this Pillow build has no {what} support"
    return check


def _import_heif() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()


def _import_jxl() -> None:
    import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow on import)


def _check_plugin(load: Callable[[], None], package: str) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            load()
        except Exception as e:  # ImportError, or a broken native library
            return f"{package} is not installed or does not load ({e}): pip install {package}"
        return None
    return check


# ---------------------------------------------------------------- the registry

def _jpeg(subsampling: int) -> Callable[[Any], dict]:
    return lambda q: {"quality": q, "subsampling": subsampling, "optimize": True}


_CODECS: dict[str, tuple[Callable[[], PillowCodec], Callable[[], str | None], str]] = {
    "jpeg": (lambda: PillowCodec("jpeg", "JPEG", tuple(range(1, 96)), _jpeg(2)),
             _check_feature("jpg", "JPEG"), "JPEG (libjpeg), 4:2:0 chroma, quality 1-95"),
    "jpeg444": (lambda: PillowCodec("jpeg444", "JPEG", tuple(range(1, 96)), _jpeg(0)),
                _check_feature("jpg", "JPEG"), "JPEG (libjpeg), 4:4:4 chroma, quality 1-95"),
    "webp": (lambda: PillowCodec("webp", "WEBP", tuple(range(0, 101)),
                                 lambda q: {"quality": q, "method": WEBP_METHOD, "lossless": False}),
             _check_feature("webp", "WebP"), "WebP lossy (libwebp), quality 0-100"),
    "avif": (lambda: PillowCodec("avif", "AVIF", tuple(range(0, 101)),
                                 lambda q: {"quality": q, "speed": AVIF_SPEED, "subsampling": "4:2:0"}),
             _check_feature("avif", "AVIF"), f"AVIF (libavif), quality 0-100, speed {AVIF_SPEED}"),
    "jpeg2000": (lambda: PillowCodec("jpeg2000", "JPEG2000", J2K_SETTINGS,
                                     lambda s: {"no_jp2": True, "irreversible": True, "mct": 1,
                                                "quality_mode": "rates",
                                                "quality_layers": [jpeg2000_ratio(s)]}),
                 _check_feature("jpg_2000", "JPEG 2000"),
                 "JPEG 2000 (OpenJPEG) .j2k, setting 1-100 = ratio 400:1 to 4:1 (log scale)"),
    "heic": (lambda: PillowCodec("heic", "HEIF", tuple(range(0, 101)),
                                 lambda q: {"quality": q}, prepare=_import_heif),
             _check_plugin(_import_heif, "pillow-heif"), "HEIC/HEVC (pillow-heif), quality 0-100"),
    "jxl": (lambda: PillowCodec("jxl", "JXL", tuple(range(0, 100)),
                                lambda q: {"quality": q, "lossless": False, "effort": JXL_EFFORT},
                                prepare=_import_jxl),
            _check_plugin(_import_jxl, "pillow-jxl-plugin"), "JPEG XL (pillow-jxl-plugin), quality 0-99"),
}

for _name, (_factory, _check, _desc) in _CODECS.items():
    register(_name, "classical", _factory, _check, _desc)
