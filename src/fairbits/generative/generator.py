"""The interface fairbits programs against for face generators, and an adapter for torch models.

fairbits never imports a generator's code. Anything that provides :class:`Generator`
works: the built-in VAE (:func:`fairbits.generative.vae.builtin_generator`) or a user's own
model wrapped with :class:`TorchGenerator` (a torch module or any Python callable). How to
wrap a StyleGAN2-ADA pickle or a rosinality StyleGAN2 checkpoint: ``docs/generators.md``.

Conventions: latents are numpy ``float32`` arrays, one row per image; ``z`` is drawn from
the generator's prior, ``w = mapping(z)`` (``w = z`` when there is no mapping network,
``w_dim is None``); images are ``torch.float32 (n, 3, H, W)`` sRGB in ``[0, 1]`` on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

Prior = str | Callable[[int, np.random.Generator], np.ndarray]


@runtime_checkable
class Generator(Protocol):
    """A face generator with a latent space.

    Attributes:
        latent_dim: size of z (the prior's space).
        w_dim: size of w (the mapping network's output), or None when there is no mapping
            network and w = z.
        image_size: side H = W of the square images, in pixels.
    """

    latent_dim: int
    w_dim: int | None
    image_size: int

    def sample_latents(self, n: int, seed: int) -> np.ndarray:
        """``n`` draws of z from the prior: ``float32 (n, latent_dim)``; the same for the same seed."""
        ...

    def mapping(self, z: np.ndarray) -> np.ndarray:
        """w for z ``(n, latent_dim)``: ``float32 (n, w_dim or latent_dim)``."""
        ...

    def synthesize(self, w: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        """Images for w ``(n, w_dim or latent_dim)``: ``float32 (n, 3, H, W)`` in [0, 1], on CPU."""
        ...


def generate(gen: Generator, n: int, seed: int, space: str = "z") -> tuple[np.ndarray, torch.Tensor]:
    """Draw ``n`` images from ``gen``'s prior.

    Returns ``(latents, images)``: latents are z ``(n, latent_dim)`` for ``space="z"`` or
    w ``(n, w_dim or latent_dim)`` for ``space="w"``; images ``float32 (n, 3, H, W)`` in [0, 1].
    """
    if space not in ("z", "w"):
        raise ValueError(f"space must be 'z' or 'w', got {space!r}")
    z = gen.sample_latents(n, seed)
    w = gen.mapping(z)
    return (z if space == "z" else w), gen.synthesize(w)


def _eval_owner(fn) -> None:
    """Put ``fn`` in eval mode if it is a module or a bound method of one."""
    for obj in (fn, getattr(fn, "__self__", None)):
        if isinstance(obj, nn.Module):
            obj.eval()


class TorchGenerator:
    """Turn a torch synthesis network (and optional mapping network) into a :class:`Generator`.

    Args:
        synthesis: module or callable taking a float32 tensor ``(b, w_dim or latent_dim)`` on
            ``device`` and returning images ``(b, 3, image_size, image_size)`` with values in
            ``output_range``.
        latent_dim: size of z.
        mapping: module or callable taking z ``(b, latent_dim)`` and returning w
            ``(b, w_dim)``; None means w = z.
        w_dim: size of w; required with ``mapping``, must be None without one.
        image_size: side of the images, in pixels.
        output_range: ``(low, high)`` of the synthesis output; mapped linearly to [0, 1]
            and clamped.
        device: where the networks run; latents are moved there, images come back on CPU.
        prior: ``"normal"`` (N(0, I)), ``"uniform"`` (U[-1, 1] per dimension) or a callable
            ``(n, numpy Generator) -> (n, latent_dim)``.

    Networks are put in eval mode (also the owner of a bound method such as
    ``model.decode``) and run under ``torch.no_grad``, in batches.
    """

    def __init__(self, synthesis: Callable[[torch.Tensor], torch.Tensor], latent_dim: int, *,
                 mapping: Callable[[torch.Tensor], torch.Tensor] | None = None, w_dim: int | None = None,
                 image_size: int, output_range: tuple[float, float] = (-1.0, 1.0),
                 device: str | torch.device = "cpu", prior: Prior = "normal"):
        if (mapping is None) != (w_dim is None):
            raise ValueError("give both mapping and w_dim, or neither (then w = z)")
        lo, hi = (float(v) for v in output_range)
        if not hi > lo:
            raise ValueError(f"output_range must be (low, high) with high > low, got {output_range!r}")
        if not (callable(prior) or prior in ("normal", "uniform")):
            raise ValueError(f"prior must be 'normal', 'uniform' or a callable, got {prior!r}")
        self.latent_dim, self.image_size = int(latent_dim), int(image_size)
        self.w_dim = None if w_dim is None else int(w_dim)
        self.output_range = (lo, hi)
        self.device = torch.device(device)
        self.prior = prior
        self._synthesis, self._mapping = synthesis, mapping
        for fn in (synthesis, mapping):
            _eval_owner(fn)

    def __repr__(self) -> str:
        return (f"TorchGenerator(latent_dim={self.latent_dim}, w_dim={self.w_dim}, "
                f"image_size={self.image_size}, device={str(self.device)!r})")

    def sample_latents(self, n: int, seed: int) -> np.ndarray:
        """``float32 (n, latent_dim)`` from the prior, drawn with ``numpy.random.default_rng(seed)``."""
        rng = np.random.default_rng(seed)
        if self.prior == "normal":
            z = rng.standard_normal((n, self.latent_dim))
        elif self.prior == "uniform":
            z = rng.uniform(-1.0, 1.0, (n, self.latent_dim))
        else:
            z = np.asarray(self.prior(n, rng))
        return self._check(z, self.latent_dim, "prior sample")

    @staticmethod
    def _check(a, dim: int, what: str) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32)
        if a.ndim != 2 or a.shape[1] != dim:
            raise ValueError(f"{what} must have shape (n, {dim}), got {a.shape}")
        return a

    def _run(self, fn, x: np.ndarray, batch_size: int) -> list[torch.Tensor]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                t = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])).to(self.device)
                out.append(fn(t).detach().float().cpu())
        return out

    def mapping(self, z: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """w ``float32 (n, w_dim)`` for z ``(n, latent_dim)``; a float32 copy of z without a mapping network."""
        z = self._check(z, self.latent_dim, "z")
        if self._mapping is None:
            return z.copy()
        parts = self._run(self._mapping, z, batch_size)
        w = torch.cat(parts).numpy() if parts else np.zeros((0, self.w_dim), np.float32)
        return self._check(w, self.w_dim, "mapping output")

    def synthesize(self, w: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        """Images ``float32 (n, 3, image_size, image_size)`` in [0, 1] on CPU for w ``(n, w_dim or latent_dim)``."""
        w = self._check(w, self.w_dim or self.latent_dim, "w")
        lo, hi = self.output_range
        s = self.image_size
        parts = self._run(self._synthesis, w, batch_size)
        for p in parts:
            if tuple(p.shape[1:]) != (3, s, s):
                raise ValueError(f"synthesis returned shape {tuple(p.shape)}, expected (b, 3, {s}, {s})")
        if not parts:
            return torch.zeros((0, 3, s, s), dtype=torch.float32)
        return ((torch.cat(parts) - lo) / (hi - lo)).clamp_(0.0, 1.0)
