"""The built-in face generator: a small convolutional VAE trained on phantom faces.

:class:`PhantomVAE` maps 64x64 sRGB images (``float32 (n, 3, 64, 64)`` in ``[0, 1]``) to a
Gaussian posterior over ``latent_dim`` latents and decodes latents back to images. Its prior
is ``N(0, I)`` and there is no mapping network, so as a :class:`~fairbits.generative.generator.Generator`
it works in z space (``w_dim is None``).

The shipped weights (``src/fairbits/weights/fairgen-phantom-vae/model.pt``, fp16 state dict,
with ``card.json`` and ``README.md`` beside it) were made by ``scripts/train_generator.py``
on phantom faces drawn with a deliberately skewed mix (mostly light skin, few curly-haired
faces), so that FairGen has a biased generator to rebalance. It has never seen a real face.

Architecture (``w`` = ``width``): encoder = four stride-2 4x4 convolutions
(3 → w → 2w → 4w → 8w channels, 64 → 4 pixels, SiLU) and a linear layer to
``2 * latent_dim`` (mean and log-variance); decoder = a linear layer to ``8w x 4 x 4`` and
four stride-2 4x4 transposed convolutions (8w → 4w → 2w → w → 3, SiLU between) giving RGB
logits, then a sigmoid. About 2.2 M parameters at ``width=32``, ``latent_dim=64``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fairbits.errors import FairbitsError
from fairbits.generative.generator import TorchGenerator

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights" / "fairgen-phantom-vae"
IMAGE_SIZE = 64
LATENT_DIM = 64
WIDTH = 32


class PhantomVAE(nn.Module):
    """Convolutional VAE for 64x64 RGB images in ``[0, 1]``.

    Args:
        latent_dim: size of the latent code z.
        width: channels of the first encoder layer (the others are 2x, 4x, 8x that).
    """

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = WIDTH):
        super().__init__()
        self.latent_dim, self.width = int(latent_dim), int(width)
        w = self.width
        chans = [3, w, 2 * w, 4 * w, 8 * w]
        enc: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            enc += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.SiLU()]
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(8 * w * 16, 2 * self.latent_dim))
        self.fc = nn.Linear(self.latent_dim, 8 * w * 16)
        dec: list[nn.Module] = []
        for cin, cout in zip(chans[:1:-1], chans[-2:0:-1]):
            dec += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.SiLU()]
        self.decoder = nn.Sequential(*dec, nn.ConvTranspose2d(w, 3, 4, stride=2, padding=1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior of images ``x`` ``(n, 3, 64, 64)`` in [0, 1]: ``(mean, log_variance)``, each ``(n, latent_dim)``."""
        h = self.encoder(x * 2 - 1)
        return h[:, : self.latent_dim], h[:, self.latent_dim:].clamp(-12.0, 8.0)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid decoder output ``(n, 3, 64, 64)`` for latents ``z`` ``(n, latent_dim)``."""
        h = self.fc(z).view(-1, 8 * self.width, 4, 4)
        return self.decoder(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(n, 3, 64, 64)`` in [0, 1] for latents ``z`` ``(n, latent_dim)``."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor, sample: bool = True):
        """``(reconstruction (n, 3, 64, 64) in [0, 1], mean, log_variance)``; z drawn from the posterior if ``sample``."""
        mean, logvar = self.encode(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar) if sample else mean
        return self.decode(z), mean, logvar


def vae_loss(x: torch.Tensor, recon: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
             beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-batch VAE objective.

    Returns ``(loss, sse, kl)``: ``sse`` is the squared error summed over the pixels and
    channels of an image (values in [0, 1]) and ``kl`` is ``KL(q(z|x) || N(0, I))`` in nats,
    both averaged over the batch; ``loss = sse + beta * kl`` (a Gaussian likelihood with
    variance ``beta / 2`` per pixel, up to a constant and a scale).
    """
    sse = ((recon - x) ** 2).flatten(1).sum(1).mean()
    kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum(1).mean()
    return sse + beta * kl, sse, kl


def load_phantom_vae(weights_dir: str | Path | None = None) -> PhantomVAE:
    """The shipped VAE in eval mode, float32 on CPU.

    ``weights_dir`` defaults to :data:`WEIGHTS_DIR`; it must hold ``model.pt`` (a state dict,
    read with ``weights_only=True``; sizes are read from the tensor shapes).

    Raises:
        FairbitsError: the folder or ``model.pt`` is missing or does not fit the architecture.
    """
    d = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    path = d / "model.pt"
    if not path.is_file():
        raise FairbitsError(f"built-in generator weights not found: {path} is missing. Reinstall fairbits, "
                            f"or train them with `python scripts/train_generator.py --out {d}`.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise FairbitsError(f"cannot read {path} as a weights-only torch file: {e}") from e
    try:
        latent_dim = state["encoder.9.weight"].shape[0] // 2
        width = state["encoder.0.weight"].shape[0]
        model = PhantomVAE(latent_dim, width)
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except (KeyError, RuntimeError, AttributeError, TypeError, IndexError) as e:
        raise FairbitsError(f"{path} is not a PhantomVAE state dict: {e}") from e
    return model.eval()


def builtin_generator(weights_dir: str | Path | None = None) -> TorchGenerator:
    """fairbits' built-in face generator (64x64 RGB, z space, prior ``N(0, I)``).

    A :class:`TorchGenerator` around the decoder of :func:`load_phantom_vae`; the VAE
    itself (for its encoder) is available as ``.vae``.
    """
    vae = load_phantom_vae(weights_dir)
    gen = TorchGenerator(vae.decode, vae.latent_dim, image_size=IMAGE_SIZE, output_range=(0.0, 1.0))
    gen.vae = vae
    return gen
