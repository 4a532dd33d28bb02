"""Learned-codec architectures by name, built on CompressAI.

``build_model(arch, N=..., M=...)`` returns an untrained ``CompressionModel``; the widths
default to those of CompressAI's zoo at the given ``quality``. The generative
(realism-oriented) architectures are added to :data:`ARCHITECTURES` by
``fairbits.codecs.generative``, each with the discriminator it is trained against on
its entry (:attr:`Architecture.discriminator`, built by :func:`build_discriminator`).

Modules that add architectures (:data:`EXTENSIONS`) are imported on first use. One that
cannot be imported because a third-party package is not installed leaves its
architectures in :data:`UNAVAILABLE` with the reason (``fairbits codecs`` lists them as
unavailable); any other ``ImportError`` (a bug in fairbits itself, such as an import of a
name that does not exist) propagates.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from torch import nn

from fairbits.errors import CodecUnavailable, SpecError


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
# module → (kind, the architectures it registers), imported by _load
EXTENSIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "fairbits.codecs.generative": ("generative", ("hific", "mbt2018-mean-gan")),
}
UNAVAILABLE: dict[str, tuple[str, str]] = {}  # architecture → (kind, why it cannot be built here)


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


def _missing_package(e: ImportError) -> str | None:
    """The top-level name of the third-party package whose absence caused ``e``, or None
    when ``e`` is anything else (fairbits' own code, or a name missing from a module)."""
    if not isinstance(e, ModuleNotFoundError) or not e.name:
        return None
    top = e.name.split(".")[0]
    return None if top == "fairbits" else top


class _State:
    loaded = False   # every architecture registered (or listed in UNAVAILABLE)
    loading = False  # _load is running (an extension module calls it again on import)


def _load() -> None:
    """Register CompressAI's architectures and import :data:`EXTENSIONS`, once. A failed
    import (raised) leaves nothing marked loaded, so the next call raises again."""
    if _State.loaded or _State.loading:
        return
    _State.loading = True
    try:
        _register_compressai()
        for module, (kind, names) in EXTENSIONS.items():
            try:
                importlib.import_module(module)  # registers on import
            except ImportError as e:
                package = _missing_package(e)
                if package is None:
                    raise
                reason = f"needs the Python package {package!r}, which is not installed ({e})"
                UNAVAILABLE.update({n: (kind, reason) for n in names})
        _State.loaded = True
    finally:
        _State.loading = False


def architecture(name: str) -> Architecture:
    """The architecture registered as ``name``.

    Raises:
        CodecUnavailable: its module needs a package that is not installed (the message says which).
        SpecError: no such architecture.
    """
    _load()
    if name in UNAVAILABLE and name not in ARCHITECTURES:
        raise CodecUnavailable(f"architecture {name!r} cannot be built here: {UNAVAILABLE[name][1]}")
    if name not in ARCHITECTURES:
        raise SpecError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name]


def architecture_names() -> list[str]:
    """Architectures that can be built here (see :func:`unavailable_architectures` for the rest)."""
    _load()
    return list(ARCHITECTURES)


def unavailable_architectures() -> dict[str, tuple[str, str]]:
    """``{name: (kind, reason)}`` of architectures whose module could not be imported."""
    _load()
    return {n: v for n, v in UNAVAILABLE.items() if n not in ARCHITECTURES}


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
