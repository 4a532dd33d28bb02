"""Rate–distortion loss per image, and the terms that extend it.

Images are float32 ``(B, 3, P, P)`` in [0, 1]; a model's ``output`` is CompressAI's
``{"x_hat": (B, 3, P, P), "likelihoods": {name: (B, ...)}}`` (plus ``y_hat`` for the
generative architectures). Every quantity is computed **per image** — a ``(B,)``
tensor — so an objective (:mod:`fairbits.codecs.train.objectives`) can average it over
the batch or weigh it by group.

:class:`RateDistortionLoss` gives, per image,

* ``bpp = -Σ log2(likelihoods) / (P·P)``, bits per pixel;
* ``mse`` of the [0, 1] images and the distortion ``D``: ``255²·mse`` (``"mse"``, the
  CompressAI convention, so its λ grid applies) or ``1 − MS-SSIM`` (``"ms-ssim"``);
* ``loss = bpp + λ·D + Σ_k w_k·T_k`` over its extra :class:`LossTerm` s:
  :class:`PerceptualTerm` (``1 − MS-SSIM`` or LPIPS-AlexNet), :class:`AdversarialTerm`
  (non-saturating generator loss against a discriminator) and :class:`SkinColourTerm`
  (squared CIELAB distance between the mean skin colours of original and reconstruction).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fairbits.colour import srgb_to_lab
from fairbits.errors import CodecUnavailable, SpecError


def bpp_per_image(likelihoods: dict[str, torch.Tensor], n_pixels: int) -> torch.Tensor:
    """Rate in bits per pixel of each image: ``(B,)`` from likelihoods ``{name: (B, ...)}``."""
    bits = sum(torch.log(v.float()).flatten(1).sum(1) for v in likelihoods.values())
    return bits / (-math.log(2) * n_pixels)


def msssim_distance(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``1 − MS-SSIM`` per image, ``(B,)``; Gaussian window sized to the image side.

    Raises:
        SpecError: images of 32 px or less (MS-SSIM's five scales do not fit).
    """
    from pytorch_msssim import ms_ssim

    from fairbits.measures.pixel import ms_ssim_window

    win = ms_ssim_window(min(x.shape[-2:]))
    if win is None:
        raise SpecError(f"MS-SSIM needs patches larger than 32 px, got {min(x.shape[-2:])}")
    return 1.0 - ms_ssim(x_hat.float(), x.float(), data_range=1.0, win_size=win, size_average=False)


def lpips_distance(device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """LPIPS-AlexNet distance per image ``(B,)``, only if it can run offline.

    Raises:
        CodecUnavailable: the ``lpips`` package or the AlexNet weights are missing
            (nothing is downloaded).
    """
    try:
        import lpips  # type: ignore
    except ImportError:
        raise CodecUnavailable("perceptual='lpips' needs the `lpips` package (not installed); "
                               "use perceptual='ms-ssim'") from None
    ckpt = Path(torch.hub.get_dir()) / "checkpoints"
    if not list(ckpt.glob("alexnet-owt-*.pth")):
        raise CodecUnavailable(f"LPIPS needs the torchvision AlexNet weights in {ckpt} "
                               "(alexnet-owt-*.pth; nothing is downloaded); use perceptual='ms-ssim'")
    net = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return lambda x_hat, x: net(x_hat * 2 - 1, x * 2 - 1).flatten(1).mean(1)


def mean_skin_lab(rgb: torch.Tensor, skin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean CIELAB of each image over its skin mask (differentiable in ``rgb``).

    ``rgb`` float ``(B, 3, H, W)`` sRGB, clamped to [0, 1] first as in a stored image (so
    out-of-range pixels pass no gradient); ``skin`` bool ``(B, H, W)``.
    Returns ``(lab (B, 3), pixels (B,))``; rows whose mask is empty hold 0 (not NaN, so
    that no NaN reaches a gradient) and ``pixels == 0``.
    """
    lab = srgb_to_lab(rgb.float().clamp(0, 1))
    m = skin.to(lab.dtype).unsqueeze(1)
    pixels = m.sum(dim=(1, 2, 3))
    return (lab * m).sum(dim=(2, 3)) / pixels.clamp_min(1).unsqueeze(1), pixels


def skin_colour_shift(x_hat: torch.Tensor, x: torch.Tensor, skin: torch.Tensor) -> torch.Tensor:
    """Squared CIELAB distance (ΔE76², Lab units²) between the mean skin colours of ``x``
    and ``x_hat``, per image ``(B,)``; 0 where ``skin`` is empty.

    Same region statistic as the audit's ``skin_tone`` measure (mean of per-pixel Lab over
    the original's skin mask), squared so that it is smooth at 0.
    """
    with torch.no_grad():
        ref, pixels = mean_skin_lab(x, skin)
    rec, _ = mean_skin_lab(x_hat, skin)
    return torch.where(pixels > 0, (rec - ref).pow(2).sum(1), torch.zeros_like(pixels))


# --------------------------------------------------------------------------- terms

class LossTerm(nn.Module):
    """One weighted addition to the rate–distortion loss: ``weight · term(output, x, skin)``.

    Subclasses set ``name`` (the log key) and implement :meth:`forward` returning the
    unweighted term per image, ``(B,)``.
    """

    name = "term"

    def __init__(self, weight: float):
        super().__init__()
        self.weight = float(weight)

    def forward(self, output: dict, x: torch.Tensor, skin: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


class PerceptualTerm(LossTerm):
    """``1 − MS-SSIM`` (``kind="ms-ssim"``, no pretrained network) or LPIPS-AlexNet."""

    name = "perceptual"

    def __init__(self, weight: float, kind: str = "ms-ssim", device: torch.device | None = None):
        super().__init__(weight)
        self.distance = lpips_distance(device or torch.device("cpu")) if kind == "lpips" else msssim_distance

    def forward(self, output, x, skin):
        return self.distance(output["x_hat"].float(), x)


class AdversarialTerm(LossTerm):
    """Non-saturating generator loss ``softplus(−disc(x̂, ŷ))``, mean over each image's patch
    logits. ``ŷ`` (the decoder's latent) is detached: the discriminator only conditions on it.
    The discriminator has its own optimiser (:func:`discriminator_loss`)."""

    name = "g_adv"

    def __init__(self, weight: float, disc: nn.Module):
        super().__init__(weight)
        self.disc = disc

    def forward(self, output, x, skin):
        y_hat = output.get("y_hat")
        if y_hat is None:
            raise CodecUnavailable("the generative model's forward must return 'y_hat' for its discriminator")
        return F.softplus(-self.disc(output["x_hat"].float(), y_hat.detach())).flatten(1).mean(1)


class SkinColourTerm(LossTerm):
    """:func:`skin_colour_shift` of the reconstruction over the batch's skin masks."""

    name = "colour"

    def forward(self, output, x, skin):
        if skin is None:
            raise ValueError("the skin-colour term needs the batch's skin masks")
        return skin_colour_shift(output["x_hat"].float(), x, skin)


def discriminator_loss(disc: nn.Module, x: torch.Tensor, x_hat: torch.Tensor,
                       y_hat: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss ``softplus(−disc(x, ŷ)) + softplus(disc(x̂, ŷ))`` (batch means)
    on detached inputs: real originals against reconstructions."""
    y_hat = y_hat.detach()
    return F.softplus(-disc(x, y_hat)).mean() + F.softplus(disc(x_hat.detach(), y_hat)).mean()


# --------------------------------------------------------------------------- the loss

class RateDistortionLoss(nn.Module):
    """``bpp + λ·D + Σ w_k·T_k`` per image (module docstring).

    Args:
        lmbda: λ, the weight of the distortion.
        distortion: ``mse`` (``D = 255²·MSE``) or ``ms-ssim`` (``D = 1 − MS-SSIM``).
        terms: extra weighted terms (terms of weight 0 are dropped).
    """

    def __init__(self, lmbda: float, distortion: str = "mse", terms: list[LossTerm] = ()):
        super().__init__()
        if distortion not in ("mse", "ms-ssim"):
            raise SpecError(f"distortion must be mse or ms-ssim, got {distortion!r}")
        self.lmbda, self.distortion = float(lmbda), distortion
        self.terms = nn.ModuleList([t for t in terms if t.weight > 0])

    def forward(self, output: dict, x: torch.Tensor, skin: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-image ``(B,)`` tensors: ``bpp``, ``mse``, ``distortion``, each term by its
        ``name`` (unweighted) and ``loss``."""
        x_hat = output["x_hat"].float()
        n_pixels = x.shape[-2] * x.shape[-1]
        out = {"bpp": bpp_per_image(output["likelihoods"], n_pixels),
               "mse": (x_hat - x).pow(2).flatten(1).mean(1)}
        out["distortion"] = 255.0 ** 2 * out["mse"] if self.distortion == "mse" else msssim_distance(x_hat, x)
        loss = out["bpp"] + self.lmbda * out["distortion"]
        for term in self.terms:
            out[term.name] = term(output, x, skin)
            loss = loss + term.weight * out[term.name]
        out["loss"] = loss
        return out


__all__ = ["RateDistortionLoss", "LossTerm", "PerceptualTerm", "AdversarialTerm", "SkinColourTerm",
           "bpp_per_image", "msssim_distance", "lpips_distance", "mean_skin_lab", "skin_colour_shift",
           "discriminator_loss"]
