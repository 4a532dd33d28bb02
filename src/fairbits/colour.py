"""Colour science in one place: sRGB ↔ linear ↔ XYZ ↔ CIELAB, luma, CIEDE2000, ITA.

All functions are vectorised torch code that runs on CPU or GPU alike. Channel axis is
``dim=-3`` (so ``(3, H, W)`` and ``(N, 3, H, W)`` both work); sRGB values are in [0, 1];
L* is in [0, 100]. The white point is D65 (sRGB's own). The piecewise curves only ever
evaluate each branch on inputs of its own domain, so gradients are finite everywhere and
:func:`srgb_to_lab` also serves training losses (float32 stays float32).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

D65_WHITE = (0.95047, 1.0, 1.08883)
_RGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
_BT601_LUMA = (0.299, 0.587, 0.114)


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.double()
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _mix(x: torch.Tensor, matrix) -> torch.Tensor:
    m = torch.tensor(matrix, dtype=x.dtype, device=x.device)
    return torch.einsum("ij,...jhw->...ihw", m, x) if x.dim() >= 3 and x.shape[-3] == 3 \
        else torch.einsum("ij,...j->...i", m, x)


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """Undo the sRGB transfer curve (IEC 61966-2-1); values in [0, 1]."""
    rgb = _as_tensor(rgb)
    # the power branch sees only its own domain: no NaN (negative base) to leak into a gradient
    return torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(lin: torch.Tensor) -> torch.Tensor:
    """Apply the sRGB transfer curve; values in [0, 1]."""
    lin = _as_tensor(lin).clamp(0, 1)
    return torch.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)


def _lab_f(t: torch.Tensor) -> torch.Tensor:
    d = 6 / 29
    return torch.where(t > d**3, t.clamp_min(d**3) ** (1 / 3), t / (3 * d * d) + 4 / 29)


def _lab_f_inv(t: torch.Tensor) -> torch.Tensor:
    d = 6 / 29
    return torch.where(t > d, t**3, 3 * d * d * (t - 4 / 29))


def _channels_last(x: torch.Tensor) -> bool:
    return not (x.dim() >= 3 and x.shape[-3] == 3)


def _split(x: torch.Tensor):
    return x.unbind(-1) if _channels_last(x) else x.unbind(-3)


def _join(parts, like: torch.Tensor) -> torch.Tensor:
    return torch.stack(parts, -1) if _channels_last(like) else torch.stack(parts, -3)


def srgb_to_lab(rgb) -> torch.Tensor:
    """sRGB in [0, 1] → CIELAB (D65). Accepts ``(..., 3, H, W)`` or ``(..., 3)``.

    A float tensor keeps its dtype and device; gradients are finite everywhere (values
    outside [0, 1] are converted as they are, not clamped).

    Raises:
        ValueError: no channel axis of length 3.
    """
    rgb = _as_tensor(rgb)
    if _channels_last(rgb) and (rgb.dim() == 0 or rgb.shape[-1] != 3):
        raise ValueError(f"expected (..., 3, H, W) or (..., 3) sRGB, got shape {tuple(rgb.shape)}")
    xyz = _mix(srgb_to_linear(rgb), _RGB_TO_XYZ)
    x, y, z = _split(xyz)
    fx, fy, fz = (_lab_f(c / w) for c, w in zip((x, y, z), D65_WHITE))
    return _join((116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)), xyz)


def lab_to_srgb(lab) -> torch.Tensor:
    """CIELAB (D65) → sRGB in [0, 1] (clipped). Same layouts as :func:`srgb_to_lab`."""
    lab = _as_tensor(lab)
    L, a, b = _split(lab)
    fy = (L + 16) / 116
    xyz = _join(tuple(_lab_f_inv(f) * w for f, w in
                      zip((fy + a / 500, fy, fy - b / 200), D65_WHITE)), lab)
    inv = torch.linalg.inv(torch.tensor(_RGB_TO_XYZ, dtype=torch.float64)).tolist()
    return linear_to_srgb(_mix(xyz, inv))


def luma_bt601(rgb) -> torch.Tensor:
    """Y' of BT.601 (the Y that JPEG codes), from gamma-encoded sRGB; drops the channel axis."""
    rgb = _as_tensor(rgb)
    r, g, b = _split(rgb)
    w = _BT601_LUMA
    return w[0] * r + w[1] * g + w[2] * b


def ciede2000(lab1: torch.Tensor, lab2: torch.Tensor) -> torch.Tensor:
    """CIEDE2000 colour difference (kL = kC = kH = 1) between two Lab tensors.

    Inputs share a layout (channel axis ``-3`` or last); the channel axis is dropped.
    """
    L1, a1, b1 = _split(_as_tensor(lab1))
    L2, a2, b2 = _split(_as_tensor(lab2))
    C1 = torch.hypot(a1, b1)
    C2 = torch.hypot(a2, b2)
    Cbar7 = ((C1 + C2) / 2) ** 7
    G = 0.5 * (1 - torch.sqrt(Cbar7 / (Cbar7 + 25.0**7)))
    a1p, a2p = (1 + G) * a1, (1 + G) * a2
    C1p, C2p = torch.hypot(a1p, b1), torch.hypot(a2p, b2)
    h1p = torch.remainder(torch.atan2(b1, a1p), 2 * math.pi)
    h2p = torch.remainder(torch.atan2(b2, a2p), 2 * math.pi)
    dLp = L2 - L1
    dCp = C2p - C1p
    zero = (C1p * C2p) == 0
    dh = h2p - h1p
    dh = torch.where(dh > math.pi, dh - 2 * math.pi, dh)
    dh = torch.where(dh < -math.pi, dh + 2 * math.pi, dh)
    dh = torch.where(zero, torch.zeros_like(dh), dh)
    dHp = 2 * torch.sqrt(C1p * C2p) * torch.sin(dh / 2)
    Lbp = (L1 + L2) / 2
    Cbp = (C1p + C2p) / 2
    hsum = h1p + h2p
    hbp = torch.where((h1p - h2p).abs() > math.pi,
                      torch.where(hsum < 2 * math.pi, hsum + 2 * math.pi, hsum - 2 * math.pi),
                      hsum) / 2
    hbp = torch.where(zero, hsum, hbp)
    T = (1 - 0.17 * torch.cos(hbp - math.radians(30)) + 0.24 * torch.cos(2 * hbp)
         + 0.32 * torch.cos(3 * hbp + math.radians(6)) - 0.20 * torch.cos(4 * hbp - math.radians(63)))
    dtheta = math.radians(30) * torch.exp(-(((torch.rad2deg(hbp) - 275) / 25) ** 2))
    Cbp7 = Cbp**7
    Rc = 2 * torch.sqrt(Cbp7 / (Cbp7 + 25.0**7))
    Sl = 1 + 0.015 * (Lbp - 50) ** 2 / torch.sqrt(20 + (Lbp - 50) ** 2)
    Sc = 1 + 0.045 * Cbp
    Sh = 1 + 0.015 * Cbp * T
    Rt = -torch.sin(2 * dtheta) * Rc
    tl, tc, th = dLp / Sl, dCp / Sc, dHp / Sh
    return torch.sqrt((tl**2 + tc**2 + th**2 + Rt * tc * th).clamp_min(0))


def ita_degrees(L: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Individual Typology Angle, ``atan2(L* - 50, b*)`` in degrees (= arctan((L*-50)/b*) for b* > 0)."""
    return torch.rad2deg(torch.atan2(_as_tensor(L) - 50, _as_tensor(b)))


# Del Bino et al. ITA° bounds: > 55 very light (I), 41–55 light (II), 28–41 intermediate (III),
# 10–28 tan (IV), −30–10 brown (V), < −30 dark (VI).
ITA_FITZPATRICK_BOUNDS = (55.0, 41.0, 28.0, 10.0, -30.0)


def ita_to_fitzpatrick(ita) -> np.ndarray:
    """Fitzpatrick type 1–6 from ITA° (Del Bino's bins); works on scalars and arrays.

    NaN ITA (no skin measured) gives 0.
    """
    ita = np.asarray(ita, dtype=np.float64)
    out = 1 + np.sum(ita[..., None] <= np.array(ITA_FITZPATRICK_BOUNDS), axis=-1)
    return np.where(np.isnan(ita), 0, out)


# Monk Skin Tone scale swatches, MST 1 (lightest) .. MST 10 (darkest), as sRGB hex.
MST_SRGB: tuple[str, ...] = ("f6ede4", "f3e7db", "f7ead0", "eadaba", "d7bd96",
                             "a07e56", "825c43", "604134", "3a312a", "292420")


def hex_to_srgb(h: str) -> np.ndarray:
    """``"rrggbb"`` → sRGB float array (3,) in [0, 1]."""
    return np.array([int(h[i:i + 2], 16) for i in (0, 2, 4)], dtype=np.float64) / 255.0


@functools.cache
def mst_ita() -> tuple[float, ...]:
    """ITA° of each Monk swatch (index 0 = MST 1), decreasing from light to dark."""
    lab = srgb_to_lab(np.stack([hex_to_srgb(h) for h in MST_SRGB])).numpy()
    return tuple(float(x) for x in ita_degrees(lab[:, 0], lab[:, 2]).numpy())


def ita_to_monk(ita) -> np.ndarray:
    """Monk category 1–10 of an ITA°: the swatch whose ITA is nearest; NaN gives 0."""
    ita = np.asarray(ita, dtype=np.float64)
    out = 1 + np.argmin(np.abs(np.nan_to_num(ita)[..., None] - np.array(mst_ita())), axis=-1)
    return np.where(np.isnan(ita), 0, out)
