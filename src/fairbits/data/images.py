"""Reading one image file into the form every other module uses.

The documented conversion to 8-bit sRGB (``load_rgb``):

* EXIF orientation is applied (the pixels are turned the way a viewer shows them);
* ``L``/``1`` (grayscale, bilevel) are replicated to three channels;
* 16-bit and 32-bit integer images (``I;16``, ``I``) are scaled to 8 bits by their
  type's full range (``v * 255 / 65535`` for 16-bit), float images (``F``) are clipped
  to [0, 1] then scaled;
* ``CMYK`` and ``YCbCr``/``LAB`` go through Pillow's own conversion to ``RGB``;
* palette images are expanded; any alpha (``RGBA``, ``LA``, ``PA``, palette transparency)
  is composited over a **white** background (:data:`ALPHA_BACKGROUND`).

Broken files raise :class:`~fairbits.errors.ImageError` with a short reason: missing,
zero bytes, unidentifiable, truncated or corrupt, or more pixels than ``max_pixels``
(Pillow's decompression-bomb guard stays on).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from fairbits.errors import ImageError

ALPHA_BACKGROUND = (255, 255, 255)
DEFAULT_MAX_PIXELS = 40_000_000
_EXIF_ORIENTATION = 0x0112


def file_checksum(path: str | Path, chunk: int = 1 << 20) -> str | None:
    """SHA-256 hex digest of a file's bytes, or None if it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        a = np.asarray(im, dtype=np.float64) * (255.0 / 65535.0)
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    elif mode == "I":
        a = np.asarray(im, dtype=np.float64)
        scale = 255.0 / 65535.0 if a.max(initial=0) > 255 else 1.0
        im = Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        a = np.clip(np.asarray(im, dtype=np.float64), 0.0, 1.0) * 255.0
        im = Image.fromarray(np.rint(a).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        im = Image.alpha_composite(background, rgba)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return im


def load_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as 8-bit sRGB.

    Returns:
        ``uint8`` array of shape ``(H, W, 3)``.
    Raises:
        ImageError: the file is missing, empty, unreadable, truncated or too large.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageError(f"missing file: {p}")
    if p.stat().st_size == 0:
        raise ImageError("zero-byte file")
    try:
        with Image.open(p) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"too large: {w}x{h} pixels > limit {max_pixels}")
            im.load()
            if im.getexif().get(_EXIF_ORIENTATION, 1) != 1:  # transposing copies: only when needed
                im = ImageOps.exif_transpose(im)
            return np.array(_to_rgb(im), dtype=np.uint8)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not a recognised image format") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"too large: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"corrupt or truncated image: {e}") from None


def fit_size(image: np.ndarray, size: int | None) -> np.ndarray:
    """Resize the shorter side to ``size`` (Lanczos) and centre-crop to ``size x size``.

    ``size=None`` returns the image unchanged. Input and output are ``uint8 (H, W, 3)``.
    """
    if size is None:
        return image
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    im = Image.fromarray(image).resize((nw, nh), Image.Resampling.LANCZOS)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8).copy()


def to_tensor(images: list[np.ndarray] | np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """Stack ``uint8 (H, W, 3)`` arrays of one size into ``float32 (N, 3, H, W)`` in [0, 1].

    With ``device``, the bytes travel as uint8 and are converted there (4x less to copy).
    """
    a = np.stack(images) if isinstance(images, list) else images
    if a.ndim == 3:
        a = a[None]
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device is not None:
        t = t.to(device, non_blocking=True)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(batch: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_tensor`: ``(N, 3, H, W)`` in [0, 1] → ``uint8 (N, H, W, 3)``."""
    a = batch.detach().clamp(0, 1).mul(255.0).round().to(torch.uint8)
    return a.permute(0, 2, 3, 1).cpu().numpy()
