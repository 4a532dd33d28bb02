"""Pixel-fidelity measures: PSNR (RGB and luma), SSIM, MS-SSIM and mean CIEDE2000.

Every function takes ``original`` and ``recon`` as ``float32 (N, 3, H, W)`` in [0, 1] on any
one device and returns a ``float64`` CPU tensor of shape ``(N,)``, one value per image.
The work runs on the input's device in float32; CIEDE2000 runs in float64 there (float32
where the device has no float64, i.e. Apple MPS).

Rules for edge cases:

* PSNR is capped at :data:`PSNR_CAP_DB` (100 dB), so identical images give 100, not inf.
* SSIM uses an 11-pixel Gaussian window (sigma 1.5); images with a side under 11 get NaN.
* MS-SSIM (5 scales) needs ``(win - 1) * 2**4 < min(H, W)``. The window is the largest odd
  ``win <= 11`` that fits (:func:`ms_ssim_window`); images with ``min(H, W) <=``
  :data:`MS_SSIM_MIN_SIDE` (32, where even ``win = 3`` does not fit) get NaN.
"""

from __future__ import annotations

import math

import torch
from pytorch_msssim import ms_ssim as _ms_ssim
from pytorch_msssim import ssim as _ssim

from fairbits.colour import ciede2000 as _ciede2000
from fairbits.colour import luma_bt601
from fairbits.measures.base import HIGHER, LOWER, register_measure
from fairbits.measures.memo import cielab

PSNR_CAP_DB = 100.0
SSIM_WIN = 11
MS_SSIM_SCALES = 5  # pytorch_msssim's default weights
MS_SSIM_MIN_SIDE = 32  # at or below this, MS-SSIM is NaN (win 3 needs min side > 32)


def _out(values: torch.Tensor) -> torch.Tensor:
    return values.detach().to(device="cpu", dtype=torch.float64)


def _nan(batch: torch.Tensor) -> torch.Tensor:
    return torch.full((batch.shape[0],), math.nan, dtype=torch.float64)


def _psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for peak 1 from per-image MSE ``(N,)``, capped at :data:`PSNR_CAP_DB`."""
    return (10.0 * torch.log10(1.0 / mse)).clamp(max=PSNR_CAP_DB)


def psnr(original: torch.Tensor, recon: torch.Tensor, context: dict | None = None) -> dict:
    """RGB PSNR in dB: ``10 log10(1 / MSE)``, MSE over all 3 channels and pixels of each image."""
    mse = (original - recon).square().flatten(1).mean(1)
    return {"psnr": _out(_psnr_from_mse(mse))}


def psnr_y(original: torch.Tensor, recon: torch.Tensor, context: dict | None = None) -> dict:
    """Luma PSNR in dB on full-range BT.601 Y' = 0.299 R' + 0.587 G' + 0.114 B'.

    Y' is computed from the [0, 1] sRGB values and is **not** rounded to 8 bits, so the
    peak is 1 and no quantisation of the luma is added (a pure function of the RGB).
    """
    mse = (luma_bt601(original) - luma_bt601(recon)).square().flatten(1).mean(1)
    return {"psnr_y": _out(_psnr_from_mse(mse))}


def ssim(original: torch.Tensor, recon: torch.Tensor, context: dict | None = None) -> dict:
    """SSIM (pytorch_msssim, Gaussian window 11, sigma 1.5, data range 1), mean over RGB.

    NaN for images with ``min(H, W) < 11``.
    """
    if min(original.shape[-2:]) < SSIM_WIN:
        return {"ssim": _nan(original)}
    values = _ssim(original, recon, data_range=1.0, size_average=False, win_size=SSIM_WIN)
    return {"ssim": _out(values)}


def ms_ssim_window(min_side: int) -> int | None:
    """MS-SSIM Gaussian window for an image whose shorter side is ``min_side`` pixels.

    The largest odd ``win`` in 3..11 with ``(win - 1) * 2**(scales - 1) < min_side``, i.e.
    11 from 161 px, 9 from 129, 7 from 97, 5 from 65, 3 from 33; None at 32 px or less.
    """
    step = 2 ** (MS_SSIM_SCALES - 1)
    win = min(SSIM_WIN, 2 * ((min_side - 1) // (2 * step)) + 1)
    return win if win >= 3 else None


def ms_ssim(original: torch.Tensor, recon: torch.Tensor, context: dict | None = None) -> dict:
    """MS-SSIM (pytorch_msssim, 5 scales, data range 1); window from :func:`ms_ssim_window`.

    NaN for images with ``min(H, W) <= 32``.
    """
    win = ms_ssim_window(min(original.shape[-2:]))
    if win is None:
        return {"ms_ssim": _nan(original)}
    values = _ms_ssim(original, recon, data_range=1.0, size_average=False, win_size=win)
    return {"ms_ssim": _out(values)}


def ciede2000(original: torch.Tensor, recon: torch.Tensor, context: dict | None = None) -> dict:
    """Mean CIEDE2000 colour difference over the pixels of each image (sRGB → Lab D65).

    The CIELAB images come from ``context["memo"]`` when the engine passes one
    (:func:`fairbits.measures.memo.cielab`): shared with ``skin_tone``, originals once per batch.
    """
    wide = torch.float32 if original.device.type == "mps" else torch.float64
    lab_o = cielab(original, context, recon=False, dtype=wide)
    de = _ciede2000(lab_o, cielab(recon, context, recon=True, dtype=wide))
    return {"ciede2000": _out(de.flatten(1).mean(1))}


register_measure("psnr", {"psnr": HIGHER}, psnr, "RGB PSNR in dB (peak 1, capped at 100 dB)")
register_measure("psnr_y", {"psnr_y": HIGHER}, psnr_y, "BT.601 luma PSNR in dB (unrounded Y', capped at 100 dB)")
register_measure("ssim", {"ssim": HIGHER}, ssim, "SSIM, Gaussian window 11 (NaN below 11 px)")
register_measure("ms_ssim", {"ms_ssim": HIGHER}, ms_ssim,
                 "MS-SSIM, 5 scales, window shrunk for small images (NaN at 32 px or less)")
register_measure("ciede2000", {"ciede2000": LOWER}, ciede2000, "mean CIEDE2000 over pixels (lower is better)")
