"""Learned-codec architectures by name, built on CompressAI.

``build_model(arch, N=..., M=...)`` returns an untrained ``CompressionModel``; the widths
default to those of CompressAI's zoo at the given ``quality``. The generative
(realism-oriented) architectures are added to :data:`ARCHITECTURES` by
``fairbits.codecs.generative``, each with the discriminator it is trained against on
its entry (:attr:`Architecture.discriminator`, built by :func:`build_discriminator`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from fairbits.errors import SpecError


@dataclass(frozen=True)
class Architecture:
    """How to build one architecture.

    Attributes:
        name: registry name (CompressAI's zoo spelling for the seven standard ones).
        build: ``build(N, M) -> CompressionModel`` (``M`` ignored where the model has none).
        widths: default ``(N, M)`` per zoo quality 1..8 (or a single pair for all qualities).
        kind: "learned" or "generative".
        autoregressive: serial context model (slow exact decoding).
        zoo_name: name in ``compressai.zoo.image_models``, or None if CompressAI has no weights.
        discriminator: ``discriminator(N, M) -> nn.Module`` called as ``disc(x, y_hat) ->
            logits (B, L)``, the adversary a generative architecture is trained against;
            None for the others.
    """

    name: str
    build: Callable[[int, int], nn.Module]
    widths: dict[int, tuple[int, int]]
    kind: str = "learned"
    autoregressive: bool = False
    zoo_name: str | None = None
    discriminator: Callable[[int, int], nn.Module] | None = None


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> None:
    ARCHITECTURES[arch.name] = arch


def _register_compressai() -> None:
    from compressai import models as m

    def narrow(lo, hi, split):
        return {q: (lo if q <= split else hi) for q in range(1, 9)}

    std = narrow((128, 192), (192, 320), 5)
    for name, cls, widths, ar in [
        ("bmshj2018-factorized", m.FactorizedPrior, std, False),
        ("bmshj2018-factorized-relu", m.FactorizedPriorReLU, std, False),
        ("bmshj2018-hyperprior", m.ScaleHyperprior, std, False),
        ("mbt2018-mean", m.MeanScaleHyperprior, narrow((128, 192), (192, 320), 4), False),
        ("mbt2018", m.JointAutoregressiveHierarchicalPriors, narrow((192, 192), (192, 320), 4), True),
    ]:
        register_architecture(Architecture(name, lambda N, M, cls=cls: cls(N, M), widths,
                                           autoregressive=ar, zoo_name=name))
    cheng = {q: ((128, 128) if q <= 3 else (192, 192)) for q in range(1, 7)}
    register_architecture(Architecture("cheng2020-anchor", lambda N, M: m.Cheng2020Anchor(N), cheng,
                                       autoregressive=True, zoo_name="cheng2020-anchor"))
    register_architecture(Architecture("cheng2020-attn", lambda N, M: m.Cheng2020Attention(N), cheng,
                                       autoregressive=True, zoo_name="cheng2020-attn"))


def _load() -> None:
    if not ARCHITECTURES:
        _register_compressai()
        try:
            from fairbits.codecs import generative  # noqa: F401  (registers on import)
        except ImportError:
            pass


def architecture(name: str) -> Architecture:
    _load()
    if name not in ARCHITECTURES:
        raise SpecError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name]


def architecture_names() -> list[str]:
    _load()
    return list(ARCHITECTURES)


def build_model(arch: str, N: int | None = None, M: int | None = None, quality: int = 1) -> nn.Module:
    """An untrained model of ``arch``; widths default to the zoo's at ``quality``."""
    a = architecture(name=arch)
    dN, dM = a.widths.get(quality, next(iter(a.widths.values())))
    return a.build(N or dN, M or dM)


def build_discriminator(arch: str, N: int, M: int) -> nn.Module:
    """The discriminator registered on ``arch``'s entry, for a model of widths ``(N, M)``.

    Raises:
        SpecError: ``arch`` is unknown or has no discriminator (not a generative architecture).
    """
    a = architecture(arch)
    if a.discriminator is None:
        gan = sorted(n for n, e in ARCHITECTURES.items() if e.discriminator is not None)
        raise SpecError(f"no discriminator for architecture {arch!r}; generative ones: {', '.join(gan)}")
    return a.discriminator(int(N), int(M))
