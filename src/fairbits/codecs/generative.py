"""Generative (realism-oriented) learned codecs on CompressAI, plus their discriminators.

Two architectures are added to :data:`fairbits.codecs.architectures.ARCHITECTURES` with
``kind="generative"`` when this module is imported (no pretrained weights: ``zoo_name=None``):

* ``hific`` (:class:`HiFiC`): HiFiC-style. Mean-scale hyperprior entropy model (``g_a``,
  ``h_a``, ``h_s``, an ``EntropyBottleneck`` for ``z`` and a ``GaussianConditional`` for
  ``y``) with a larger GDN-free generator as ``g_s``: a 3x3 conv head at latent
  resolution, ``n_res`` residual blocks with a global skip, then four nearest-neighbour
  x2 upsampling + 3x3 conv stages and a 7x7 output conv. All generator and encoder
  layers use :class:`ChannelNorm2d` (per-pixel normalisation across channels), which
  depends on neither the batch nor the image size, so batched and single-image decoding
  agree. Its discriminator (:class:`ConditionalPatchDiscriminator`) is a PatchGAN with
  spectral norm conditioned on the quantised latent ``y_hat`` upsampled to image size.
* ``mbt2018-mean-gan`` (:class:`MeanScaleGAN`): see its docstring.

Both are ``compressai.models.CompressionModel`` subclasses with CompressAI's interface:
``forward(x) -> {"x_hat", "likelihoods": {"y", "z"}, "y_hat"}``,
``compress(x) -> {"strings": [y_strings, z_strings], "shape": z size}``,
``decompress(strings, shape) -> {"x_hat"}``, ``update()``, ``aux_loss()``. Images are
``float32 (N, 3, H, W)`` in [0, 1] with H and W multiples of 64
(``downsampling_factor``); ``y`` is ``(N, M, H/16, W/16)``, ``z`` is ``(N, N, H/64, W/64)``.

``forward`` also returns ``y_hat``, the latent the decoder received, so a trainer can
condition the discriminator on it. With ``decoder_ste=True`` (the default for both), in
training mode the decoder gets ``round(y - mean) + mean`` with a straight-through
gradient (the same values it sees at test time) while the rate term still uses additive
noise; in eval mode both are the rounded latent, as in CompressAI.

Discriminators are registered on each architecture's entry
(``Architecture.discriminator``); ``build_discriminator(arch, N, M)`` returns one, called as
``disc(x, y_hat) -> logits`` with ``x`` ``(B, 3, H, W)`` in [0, 1], ``y_hat``
``(B, M, H/16, W/16)`` and ``logits`` ``float32 (B, L)``: one real/fake logit per image
patch (all scales concatenated), for use with any element-wise GAN loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models import CompressionModel, MeanScaleHyperprior
from compressai.ops import quantize_ste
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from fairbits.codecs import architectures

GENERATIVE = ("hific", "mbt2018-mean-gan")

# default (N, M) per quality, like the zoo's mean-scale hyperprior
_WIDTHS = {q: ((128, 192) if q <= 4 else (192, 320)) for q in range(1, 9)}


class ChannelNorm2d(nn.Module):
    """Normalise each pixel's C-vector to zero mean and unit variance, then scale and shift.

    ``(B, C, H, W) -> (B, C, H, W)``. Statistics are over channels only, so the output at
    a pixel never depends on other pixels or other images in the batch.
    """

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.gamma + self.beta


class ResidualBlock(nn.Module):
    """``x + CN(conv3x3(ReLU(CN(conv3x3(x)))))`` at constant width ``C``."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), ChannelNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), ChannelNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """HiFiC-style decoder ``(B, M, h, w) -> (B, 3, 16h, 16w)`` (unclamped RGB).

    ``head`` (conv3x3 to width M + ChannelNorm), ``res`` (``n_res`` residual blocks,
    added back to the head output), ``up`` (4 x [nearest x2, conv3x3, ChannelNorm, ReLU]
    with widths N, N, N/2, N/2), ``tail`` (7x7 conv to RGB).
    """

    def __init__(self, N: int, M: int, n_res: int = 6):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(M, M, 3, padding=1), ChannelNorm2d(M))
        self.res = nn.Sequential(*[ResidualBlock(M) for _ in range(n_res)])
        widths = [M, N, N, N // 2, N // 2]
        up = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1),
                   ChannelNorm2d(cout), nn.ReLU(inplace=True)]
        self.up = nn.Sequential(*up)
        self.tail = nn.Conv2d(widths[-1], 3, 7, padding=3)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        h = self.head(y_hat)
        h = h + self.res(h)
        return self.tail(self.up(h))


def _encoder(N: int, M: int) -> nn.Sequential:
    """``(B, 3, H, W) -> (B, M, H/16, W/16)``: four 5x5 stride-2 convs with ChannelNorm + ReLU."""
    layers: list[nn.Module] = []
    for cin, cout in [(3, N), (N, N), (N, N)]:
        layers += [nn.Conv2d(cin, cout, 5, stride=2, padding=2), ChannelNorm2d(cout), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(N, M, 5, stride=2, padding=2))
    return nn.Sequential(*layers)


def _hyper_analysis(N: int, M: int) -> nn.Sequential:
    """``(B, M, h, w) -> (B, N, h/4, w/4)`` (as CompressAI's mean-scale ``h_a``)."""
    return nn.Sequential(
        nn.Conv2d(M, N, 3, padding=1), nn.LeakyReLU(inplace=True),
        nn.Conv2d(N, N, 5, stride=2, padding=2), nn.LeakyReLU(inplace=True),
        nn.Conv2d(N, N, 5, stride=2, padding=2),
    )


def _hyper_synthesis(N: int, M: int) -> nn.Sequential:
    """``(B, N, h, w) -> (B, 2M, 4h, 4w)``: scales then means (as CompressAI's ``h_s``)."""
    return nn.Sequential(
        nn.ConvTranspose2d(N, M, 5, stride=2, padding=2, output_padding=1), nn.LeakyReLU(inplace=True),
        nn.ConvTranspose2d(M, M * 3 // 2, 5, stride=2, padding=2, output_padding=1),
        nn.LeakyReLU(inplace=True),
        nn.Conv2d(M * 3 // 2, M * 2, 3, padding=1),
    )


def _decoder_input(model: CompressionModel, y: torch.Tensor, y_hat: torch.Tensor,
                   means: torch.Tensor | None) -> torch.Tensor:
    """What ``g_s`` sees: the STE-rounded latent in training (if enabled), else ``y_hat``."""
    if model.training and getattr(model, "decoder_ste", False):
        if means is None:
            return quantize_ste(y)
        return quantize_ste(y - means) + means
    return y_hat


def _mean_scale_forward(model, x: torch.Tensor) -> dict:
    """Training/fast forward of a mean-scale hyperprior that also returns the decoder's input.

    ``x``: ``(B, 3, H, W)`` in [0, 1]. Returns ``x_hat`` ``(B, 3, H, W)``, the likelihoods of
    ``y`` and ``z``, and ``y_hat`` (what ``g_s`` received).
    """
    y = model.g_a(x)
    z = model.h_a(y)
    z_hat, z_likelihoods = model.entropy_bottleneck(z)
    scales_hat, means_hat = model.h_s(z_hat).chunk(2, 1)
    y_hat, y_likelihoods = model.gaussian_conditional(y, scales_hat, means=means_hat)
    y_dec = _decoder_input(model, y, y_hat, means_hat)
    return {"x_hat": model.g_s(y_dec), "likelihoods": {"y": y_likelihoods, "z": z_likelihoods},
            "y_hat": y_dec}


class HiFiC(CompressionModel):
    """HiFiC-style codec: mean-scale hyperprior + large ChannelNorm generator.

    Args:
        N: width of the encoder, hyperprior and upsampling stages (``z`` has N channels).
        M: latent channels of ``y`` (also the width of the generator's residual blocks).
        n_res: residual blocks in the generator.
    """

    def __init__(self, N: int = 128, M: int = 192, n_res: int = 6, decoder_ste: bool = True):
        super().__init__()
        self.N, self.M, self.n_res = int(N), int(M), int(n_res)
        self.decoder_ste = decoder_ste
        self.g_a = _encoder(N, M)
        self.g_s = Generator(N, M, n_res)
        self.h_a = _hyper_analysis(N, M)
        self.h_s = _hyper_synthesis(N, M)
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (4 + 2)

    forward = _mean_scale_forward

    def compress(self, x: torch.Tensor) -> dict:
        y = self.g_a(x)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        scales_hat, means_hat = self.h_s(z_hat).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales_hat)
        y_strings = self.gaussian_conditional.compress(y, indexes, means=means_hat)
        return {"strings": [y_strings, z_strings], "shape": z.size()[-2:]}

    def decompress(self, strings, shape) -> dict:
        assert isinstance(strings, list) and len(strings) == 2
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        scales_hat, means_hat = self.h_s(z_hat).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales_hat)
        y_hat = self.gaussian_conditional.decompress(strings[0], indexes, means=means_hat)
        return {"x_hat": self.g_s(y_hat).clamp_(0, 1)}

    @classmethod
    def from_state_dict(cls, state_dict: dict) -> "HiFiC":
        """A model whose widths are read from the tensor shapes of ``state_dict``."""
        N = state_dict["g_a.0.weight"].size(0)
        M = state_dict["h_a.0.weight"].size(1)
        n_res = len({k.split(".")[2] for k in state_dict if k.startswith("g_s.res.")})
        net = cls(N, M, n_res)
        net.load_state_dict(state_dict)
        return net


class MeanScaleGAN(MeanScaleHyperprior):
    """``mbt2018-mean-gan``: CompressAI's mean-scale hyperprior trained with a GAN term.

    What differs from ``hific``: the network is exactly CompressAI's ``mbt2018-mean``
    (GDN encoder, GDN transposed-conv decoder of the usual size, so zoo ``mbt2018-mean``
    weights can warm-start it); realism comes only from training, against an
    *unconditional multi-scale* PatchGAN (:class:`MultiScaleDiscriminator`, image at
    full, 1/2 and 1/4 resolution) instead of hific's latent-conditioned single-scale one
    and large ChannelNorm generator. Adds ``y_hat`` to the ``forward`` output and the
    straight-through decoder input (``decoder_ste``).
    """

    def __init__(self, N: int = 128, M: int = 192, decoder_ste: bool = True, **kwargs):
        super().__init__(N=N, M=M, **kwargs)
        self.decoder_ste = decoder_ste

    forward = _mean_scale_forward


# ---------------------------------------------------------------- discriminators

def _patch_layers(cin: int, ch: int, n_down: int = 3) -> nn.Sequential:
    """PatchGAN body with spectral norm: ``(B, cin, H, W) -> (B, 1, ~H/2^n_down, ~W/2^n_down)``."""
    layers: list[nn.Module] = []
    c = cin
    for i in range(n_down):
        cout = ch * 2 ** i
        layers += [spectral_norm(nn.Conv2d(c, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
        c = cout
    layers += [spectral_norm(nn.Conv2d(c, c, 3, padding=1)), nn.LeakyReLU(0.2, inplace=True),
               spectral_norm(nn.Conv2d(c, 1, 1))]
    return nn.Sequential(*layers)


class ConditionalPatchDiscriminator(nn.Module):
    """hific's discriminator: PatchGAN on ``[x, upsample(embed(y_hat))]``.

    ``y_hat (B, M, h, w)`` goes through a spectral-normed 3x3 conv to ``cond_ch`` channels
    and LeakyReLU, is upsampled (nearest) to the size of ``x (B, 3, H, W)`` and
    concatenated with it. Returns ``(B, L)`` patch logits.
    """

    def __init__(self, M: int, ch: int = 64, cond_ch: int = 12):
        super().__init__()
        self.embed = spectral_norm(nn.Conv2d(M, cond_ch, 3, padding=1))
        self.body = _patch_layers(3 + cond_ch, ch)

    def forward(self, x: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        c = F.leaky_relu(self.embed(y_hat), 0.2)
        c = F.interpolate(c, size=x.shape[-2:], mode="nearest")
        return self.body(torch.cat([x, c], dim=1)).flatten(1)


class MultiScaleDiscriminator(nn.Module):
    """mbt2018-mean-gan's discriminator: unconditional PatchGANs at ``scales`` resolutions.

    ``x (B, 3, H, W)`` is average-pooled by 2 between scales. ``y_hat`` is accepted for the
    common call form and ignored. Returns the ``(B, L)`` patch logits of all scales
    concatenated.
    """

    def __init__(self, ch: int = 64, scales: int = 3):
        super().__init__()
        self.nets = nn.ModuleList([_patch_layers(3, ch) for _ in range(scales)])

    def forward(self, x: torch.Tensor, y_hat: torch.Tensor | None = None) -> torch.Tensor:
        out = []
        for i, net in enumerate(self.nets):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(net(x).flatten(1))
        return torch.cat(out, dim=1)


def build_discriminator(arch: str, N: int, M: int) -> nn.Module:
    """The discriminator used to train generative ``arch`` at widths ``(N, M)``.

    Called as ``disc(x, y_hat) -> logits (B, L)``; base width is ``min(N, 64)``. Reads the
    architecture entry (:func:`fairbits.codecs.architectures.build_discriminator`).
    """
    return architectures.build_discriminator(arch, N, M)


def _register() -> None:
    architectures._load()  # the CompressAI ones first, even when this module is imported first
    architectures.register_architecture(architectures.Architecture(
        "hific", lambda N, M: HiFiC(N, M), dict(_WIDTHS), kind="generative",
        discriminator=lambda N, M: ConditionalPatchDiscriminator(int(M), ch=min(int(N), 64))))
    architectures.register_architecture(architectures.Architecture(
        "mbt2018-mean-gan", lambda N, M: MeanScaleGAN(N, M), dict(_WIDTHS), kind="generative",
        discriminator=lambda N, M: MultiScaleDiscriminator(ch=min(int(N), 64))))


_register()
