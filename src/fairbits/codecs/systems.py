"""Image-to-image systems audited like codecs: the output is compared with the input.

A *system* maps one ``uint8 (H, W, 3)`` RGB image to an image of the same size — a
super-resolution model fed a downscaled copy, a denoiser, a face restorer. It has no
bitstream, so its rows have no rate (``bpp`` is NaN); every other measure and all bias
statistics work as for codecs, per group.

Built in: ``resample-bicubic``, whose setting is a scale factor ``s`` (2, 3, 4, 8): the
image is box-downscaled by ``s`` and upscaled back with bicubic interpolation (the usual
baseline of a ×s super-resolution study). A user's system is named in a spec with
``entry: "package.module:function"`` (see :func:`fairbits.entrypoints.load_entry_point`); the function gets
one image (``uint8 (H, W, 3)``) and returns ``uint8`` or float in [0, 1] of the same shape.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from PIL import Image

from fairbits.codecs.base import Coded, codec_info, codec_names, load_builtins, register
from fairbits.entrypoints import load_entry_point
from fairbits.errors import ImageError, SpecError


class ImageSystem:
    """A Codec-shaped wrapper of ``fn(image, setting) -> image`` (no bitstream)."""

    kind = "system"

    def __init__(self, name: str, fn: Callable[[np.ndarray, Any], np.ndarray], settings: tuple = (1,)):
        self.name, self.fn, self.settings = name, fn, tuple(settings)

    def code(self, image: np.ndarray, setting: Any) -> Coded:
        out = np.asarray(self.fn(image, setting))
        if out.shape != image.shape:
            raise ImageError(f"system {self.name!r} returned shape {out.shape} for an input of shape {image.shape}")
        if out.dtype != np.uint8:
            out = (np.clip(out.astype(np.float64), 0.0, 1.0) * 255.0).round().astype(np.uint8)
        return Coded(b"", out, setting, rated=False)


def resample_bicubic(image: np.ndarray, scale: int) -> np.ndarray:
    """Box-downscale by ``scale`` and bicubic-upscale back to the input size: uint8 (H, W, 3)."""
    h, w = image.shape[:2]
    im = Image.fromarray(image)
    small = im.resize((max(1, w // scale), max(1, h // scale)), Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC))


_ENTRY_SYSTEMS: set[str] = set()  # names registered by register_entry_system (may be re-registered)


def register_entry_system(name: str, entry: str) -> None:
    """Register the user's callable under ``name`` as a system with the one setting 1.

    The same name may be registered again (another audit in this process); fairbits' own
    codecs are registered first, so a name they use is refused instead of one codec
    silently replacing the other.

    Raises:
        SpecError: ``name`` is a built-in codec's, or ``entry`` cannot be loaded.
    """
    load_builtins()
    if name in codec_names() and name not in _ENTRY_SYSTEMS:
        info = codec_info(name)
        raise SpecError(f"codec {name!r}: a system given by `entry` cannot take the name of the built-in "
                        f"{info.kind} codec {name!r}; choose another name for it (e.g. {name + '-user'!r})")
    fn = load_entry_point(entry)
    register(name, "system", lambda: ImageSystem(name, lambda image, _s: fn(image)),
             description=f"image-to-image system {entry}", replace=True)
    _ENTRY_SYSTEMS.add(name)


register("resample-bicubic", "system", lambda: ImageSystem("resample-bicubic", resample_bicubic, (2, 3, 4, 8)),
         description="box downscale by the setting (2/3/4/8), bicubic upscale back: a x-s super-resolution baseline")
