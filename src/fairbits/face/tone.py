"""Colour of a face region: mean CIELAB over a mask, ITA°, hue angle, ΔE2000.

One definition serves the ``skin_tone`` measure and the skin-tone probe, so what the
probe aims at is exactly what the audit measures:

* the region colour is the **mean of per-pixel CIELAB** over the mask (L*, a*, b*);
* ITA° = ``atan2(L* − 50, b*)`` of that mean, in degrees (higher = lighter);
* hue angle h = ``atan2(b*, a*)`` in degrees;
* the region colour difference is ΔE2000 between the two mean colours.

An empty mask gives NaN for every statistic. Everything is batched torch code that runs
on the images' device.
"""

from __future__ import annotations

import torch

from fairbits.colour import ciede2000, ita_degrees, srgb_to_lab


def region_lab(lab: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean CIELAB over a mask. ``lab`` (N, 3, H, W), ``mask`` bool (N, H, W) → (N, 3).

    Rows whose mask is empty are NaN.
    """
    m = mask.to(lab.dtype).unsqueeze(1)
    count = m.sum(dim=(2, 3))
    total = (lab * m).sum(dim=(2, 3))
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def tone_stats(lab_mean: torch.Tensor) -> dict[str, torch.Tensor]:
    """``L``, ``a``, ``b``, ``ita`` (degrees) and ``hue`` (degrees) of mean colours (N, 3)."""
    L, a, b = lab_mean.unbind(-1)
    return {"L": L, "a": a, "b": b, "ita": ita_degrees(L, b),
            "hue": torch.rad2deg(torch.atan2(b, a))}


def skin_tone(rgb: torch.Tensor, skin: torch.Tensor) -> dict[str, torch.Tensor]:
    """Skin statistics of sRGB images ``(N, 3, H, W)`` in [0, 1] over ``skin`` (N, H, W).

    Returns :func:`tone_stats` keys, each a tensor (N,).
    """
    return tone_stats(region_lab(srgb_to_lab(rgb.double()), skin))


def region_delta_e(lab1: torch.Tensor, lab2: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ΔE2000 between the mean colours of two images over one mask: (N,), NaN if empty."""
    return ciede2000(region_lab(lab1, mask), region_lab(lab2, mask))
