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
not a regular file (a FIFO, device, directory or socket is never opened for reading),
zero bytes, not one of the raster :data:`IMAGE_FORMATS` (formats Pillow opens through
another program, such as EPS with Ghostscript, are never tried), truncated or corrupt,
or more pixels than ``max_pixels`` (Pillow's decompression-bomb guard stays on).

An audit reads its originals with :func:`load_original`: :func:`load_rgb`, a cheap
reduction of large originals when a target ``size`` is set (JPEG DCT scaling with
``Image.draft``, else ``Image.reduce`` by an integer factor, always keeping the short
side at least ``size``), :func:`fit_size`, then the minimum-size check
(:data:`MIN_SIDE`). :func:`load_cropped_original` does the same with a ``crop`` (such as
:class:`fairbits.face.crop.FaceCrop`) applied to the full-resolution decode before the
resize, and returns the crop's box too.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fairbits.errors import ImageError

if TYPE_CHECKING:  # torch is imported where it is used: the spec reads this module's limits
    import torch

# A crop's box in pixels of the decoded original: (x, y, w, h), left, top, width, height.
Box = tuple[int, int, int, int]
# A crop of a decoded original: uint8 (H, W, 3) -> (uint8 (h, w, 3), its Box); raises
# ImageError when the image cannot be cropped (e.g. no face).
Crop = Callable[[np.ndarray], tuple[np.ndarray, Box]]

ALPHA_BACKGROUND = (255, 255, 255)
# load_rgb's default limit, and the limit on originals that are decoded to be resized
# (``size`` set): decoding costs a few bytes per pixel, the measures far more.
DEFAULT_MAX_PIXELS = 40_000_000
# Peak memory (GiB) the pixel measures (PSNR, SSIM, MS-SSIM, CIEDE2000) add per
# megapixel of each image measured, on CPU; measured through whole audits of one image
# of 1 to 8 megapixels (0.31 to 0.35; tests/attacks/test_inputs.py checks it).
GIB_PER_MEGAPIXEL = 0.35
# The default limit on an image measured at full size (an audit without ``size``):
# 2048 x 2048, so about 1.5 GiB for one image at this limit.
AUDIT_MAX_PIXELS = 2048 * 2048
# The smallest short side (pixels) an audited image may have: MS-SSIM's five scales
# need more than 32 px (see fairbits.measures.pixel.ms_ssim_window); smaller images
# give a NaN MS-SSIM and rates inflated by the container's fixed header bytes.
MIN_SIDE = 33
# The largest ``dataset.size`` a spec may ask for (an audited image is size x size).
MAX_SIZE = 4096
# Raster formats an original may have. Pillow can open more, some through an external
# program (EPS runs Ghostscript); a file is never identified as one of those.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "HEIF", "JXL", "JPEG2000", "TIFF", "BMP", "DIB", "GIF", "PPM",
                 "TGA", "QOI", "SGI", "PCX", "PSD")
_EXIF_ORIENTATION = 0x0112
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "an unknown kind of file")


def _open_regular(path: str | Path) -> BinaryIO:
    """Open a regular file for reading, never anything else.

    The path is checked with ``stat`` before opening (a FIFO, device, directory or
    socket is never opened), then opened non-blocking and checked again on the open
    descriptor (a file swapped in between is refused too).

    Raises:
        FileNotFoundError: nothing at ``path``.
        ImageError: ``path`` is not a regular file (``"not a regular file: a FIFO"``).
        OSError: it cannot be read.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise ImageError(f"not a regular file: {_kind(mode)}")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ImageError(f"not a regular file: {_kind(mode)}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_checksum(path: str | Path, chunk: int = 1 << 20) -> str | None:
    """SHA-256 hex digest of a regular file's bytes; None if it is missing, unreadable
    or not a regular file (a FIFO, device or directory is never read)."""
    h = hashlib.sha256()
    try:
        with _open_regular(path) as f:
            while block := f.read(chunk):
                h.update(block)
    except (OSError, ImageError):
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


@functools.cache
def register_plugins() -> tuple[str, ...]:
    """Register the optional Pillow plugins that are installed (HEIF: ``pillow-heif``, JPEG XL:
    ``pillow-jxl-plugin``), once per process, so that every process of a run — the driver, a
    Ray worker — reads the same formats. Returns the plugins registered."""
    loaded = []
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        loaded.append("HEIF")
    except Exception:  # not installed, or a broken native library: those files are not readable
        pass
    try:
        import pillow_jxl  # noqa: F401  (registers JPEG XL with Pillow on import)

        loaded.append("JXL")
    except Exception:
        pass
    return tuple(loaded)


def _formats() -> list[str]:
    """:data:`IMAGE_FORMATS` that Pillow can open here (with every installed plugin)."""
    register_plugins()
    Image.init()
    return [f for f in IMAGE_FORMATS if f in Image.OPEN]


def _reduce_for(im: Image.Image, size: int) -> Image.Image:
    """``im`` shrunk by the largest integer factor that keeps its short side >= ``size``
    (box average, :meth:`PIL.Image.Image.reduce`); unchanged when that factor is 1."""
    factor = min(im.size) // size
    return im.reduce(factor) if factor >= 2 else im


def load_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, *, reduce_to: int | None = None) -> np.ndarray:
    """Read an image file as 8-bit sRGB.

    ``max_pixels`` bounds the file's own width x height. With ``reduce_to``, a large
    image is decoded at a smaller scale whose short side is still at least
    ``reduce_to`` pixels: JPEGs through DCT scaling (``Image.draft``, 1/2, 1/4 or 1/8),
    then any image by an integer box reduction (``Image.reduce``) after the conversion
    to RGB. The result is then meant for :func:`fit_size` to ``reduce_to``.

    Returns:
        ``uint8`` array of shape ``(H, W, 3)``.
    Raises:
        ImageError: the file is missing, not a regular file, empty, unreadable,
            truncated or too large.
    """
    p = Path(path)
    try:
        f = _open_regular(p)
    except FileNotFoundError:
        raise ImageError(f"missing file: {p}") from None
    except OSError as e:
        raise ImageError(f"unreadable file: {e.strerror or e}") from None
    with f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ImageError("zero-byte file")
        try:
            with Image.open(f, formats=_formats()) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageError(f"too large: {w}x{h} pixels > limit {max_pixels}")
                if reduce_to is not None:  # JPEG: DCT scaling with short side / scale >= reduce_to; others: no-op
                    im.draft(None, (reduce_to, reduce_to))
                im.load()
                if im.getexif().get(_EXIF_ORIENTATION, 1) != 1:  # transposing copies: only when needed
                    im = ImageOps.exif_transpose(im)
                rgb = _to_rgb(im)
                if reduce_to is not None:
                    rgb = _reduce_for(rgb, reduce_to)
                return np.array(rgb, dtype=np.uint8)
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError(f"not a recognised image format (readable: {', '.join(_formats())})") from None
        except Image.DecompressionBombError as e:
            raise ImageError(f"too large: {e}") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError(f"corrupt or truncated image: {e}") from None


def load_original(path: str | Path, *, max_pixels: int = AUDIT_MAX_PIXELS, size: int | None = None,
                  min_side: int = MIN_SIDE) -> np.ndarray:
    """An audit's original image: decoded, resized to ``size`` if set, and checked.

    Without ``size`` the image is audited at full size, so ``max_pixels`` bounds its
    width x height (and with it the memory of the measures, see
    :data:`AUDIT_MAX_PIXELS`). With ``size``, originals up to
    ``max(max_pixels, DEFAULT_MAX_PIXELS)`` are decoded at a reduced scale
    (:func:`load_rgb` with ``reduce_to=size``), then resized and centre-cropped to
    ``size x size`` (:func:`fit_size`).

    Returns:
        ``uint8`` array ``(H, W, 3)``, ``(size, size, 3)`` when ``size`` is set.
    Raises:
        ImageError: the file cannot be used (see :func:`load_rgb`), is too large, or
            its short side is below ``min_side`` pixels after resizing.
    """
    if size is None:
        try:
            image = load_rgb(path, max_pixels)
        except ImageError as e:
            if not str(e).startswith("too large"):
                raise
            raise ImageError(f"{e}; set dataset.size to audit a resized copy, or raise dataset.max_pixels "
                             f"(the measures need about {GIB_PER_MEGAPIXEL} GiB per megapixel)") from None
    else:
        image = fit_size(load_rgb(path, max(max_pixels, DEFAULT_MAX_PIXELS), reduce_to=size), size)
    _check_min_side(image, min_side)
    return image


def load_cropped_original(path: str | Path, *, max_pixels: int = AUDIT_MAX_PIXELS, size: int | None = None,
                          crop: Crop | None = None, min_side: int = MIN_SIDE) -> tuple[np.ndarray, Box | None]:
    """An audit's original, cropped by ``crop`` before it is resized to ``size``.

    Without ``crop`` this is :func:`load_original` with a box of None. With ``crop``, the
    original (up to ``max(max_pixels, DEFAULT_MAX_PIXELS)`` pixels) is decoded at full
    resolution, never at a reduced scale (a face may be small in the frame), then
    cropped; with ``size`` the crop is resized to ``size x size`` (:func:`fit_size`),
    without it the crop itself must have at most ``max_pixels`` pixels (the measures see
    only the crop). The minimum-size check applies to the result, so the rate of a coded
    image is over the cropped (and resized) pixels.

    Returns:
        ``(image, box)``: ``uint8 (H, W, 3)`` (``(size, size, 3)`` with ``size``) and the
        crop's ``(x, y, w, h)`` in pixels of the decoded original (after its EXIF
        orientation), or None without ``crop``.
    Raises:
        ImageError: the file cannot be used (see :func:`load_rgb`), ``crop`` refuses the
            image (its message is kept), or the result is too large or too small.
    """
    if crop is None:
        return load_original(path, max_pixels=max_pixels, size=size, min_side=min_side), None
    image, box = crop(load_rgb(path, max(max_pixels, DEFAULT_MAX_PIXELS)))
    h, w = image.shape[:2]
    if size is not None:
        image = fit_size(image, size)
    elif h * w > max_pixels:
        raise ImageError(f"too large: the crop is {w}x{h} pixels > limit {max_pixels}; set dataset.size to "
                         f"audit a resized copy, or raise dataset.max_pixels "
                         f"(the measures need about {GIB_PER_MEGAPIXEL} GiB per megapixel)")
    _check_min_side(image, min_side, " after the crop")
    return image, tuple(int(v) for v in box)


def _check_min_side(image: np.ndarray, min_side: int, where: str = "") -> None:
    h, w = image.shape[:2]
    if min(h, w) < min_side:
        raise ImageError(f"too small: {w}x{h} pixels{where}; the minimum is {min_side} on the short side")


def fit_size(image: np.ndarray, size: int | None,
             resample: Image.Resampling = Image.Resampling.LANCZOS) -> np.ndarray:
    """Resize the shorter side to ``size`` and centre-crop to ``size x size``.

    ``size=None`` returns the image unchanged. Input and output are ``uint8 (H, W, 3)``, or
    ``(H, W)`` label images with ``resample=NEAREST`` (so codes stay codes).
    """
    if size is None:
        return image
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    im = Image.fromarray(image).resize((nw, nh), resample)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8).copy()


def to_tensor(images: list[np.ndarray] | np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """Stack ``uint8 (H, W, 3)`` arrays of one size into ``float32 (N, 3, H, W)`` in [0, 1].

    With ``device``, the bytes travel as uint8 and are converted there (4x less to copy).
    """
    import torch

    a = np.stack(images) if isinstance(images, list) else images
    if a.ndim == 3:
        a = a[None]
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device is not None:
        t = t.to(device, non_blocking=True)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(batch: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_tensor`: ``(N, 3, H, W)`` in [0, 1] → ``uint8 (N, H, W, 3)``."""
    import torch

    a = batch.detach().clamp(0, 1).mul(255.0).round().to(torch.uint8)
    return a.permute(0, 2, 3, 1).cpu().numpy()
