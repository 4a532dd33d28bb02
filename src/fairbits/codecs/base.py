"""The ``Codec`` protocol and the name registry.

A codec turns one 8-bit RGB image into real bytes and decodes them back. Every codec,
classical (Pillow) or learned (CompressAI, issue 3), is reached by name through
:func:`get_codec`; ``fairbits codecs`` lists :func:`available_codecs`.

Rate is always measured from the real bytes: ``bpp = 8 * len(data) / (H * W)`` of the
unpadded image that was coded.

A codec whose encoder runs without its decoder is also a :class:`SplitCodec`
(``encode`` → bytes, ``decode`` → pixels); the rate search then counts the bytes of every
setting it tries and decodes only the one it keeps. :func:`encode_only` and
:func:`decode_coded` serve both kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

import numpy as np

from fairbits.errors import CodecUnavailable, SpecError


@dataclass(frozen=True)
class Coded:
    """One coded image.

    Attributes:
        data: the encoded bitstream.
        recon: decoded image, ``uint8 (H, W, 3)``, same size as the input.
        setting: the codec setting that produced it (e.g. quality 30).
        rated: False for a system without a bitstream (rate and size are then NaN).
    """

    data: bytes
    recon: np.ndarray
    setting: Any
    rated: bool = True

    @property
    def num_bytes(self) -> float:
        return float(len(self.data)) if self.rated else float("nan")

    @property
    def bpp(self) -> float:
        """Bits per pixel of the coded (unpadded) image; NaN for an unrated system."""
        h, w = self.recon.shape[:2]
        return 8.0 * len(self.data) / (h * w) if self.rated else float("nan")


@runtime_checkable
class Codec(Protocol):
    """What the audit needs from a codec.

    ``settings`` is the codec's full ordered grid of settings, from lowest to highest
    rate (for quality-driven codecs: qualities ascending); the rate search walks it. A
    codec whose settings are not one rate ladder (a learned codec's checkpoints) also has
    ``rate_settings``, which the rate search walks instead
    (:func:`fairbits.codecs.ratesearch.rate_grid`).
    """

    name: str
    kind: str  # "classical" | "learned" | "generative" | "system"
    settings: tuple

    def code(self, image: np.ndarray, setting: Any) -> Coded:
        """Encode ``uint8 (H, W, 3)`` at ``setting`` and decode the bytes."""
        ...


@runtime_checkable
class SplitCodec(Codec, Protocol):
    """A :class:`Codec` whose ``code`` is ``encode`` followed by ``decode`` of those bytes.

    ``code(image, s)`` must equal ``decoded(codec, image.shape, s, codec.encode(image, s))``.
    """

    def encode(self, image: np.ndarray, setting: Any) -> bytes:
        """``uint8 (H, W, 3)`` → the bitstream at ``setting``."""
        ...

    def decode(self, data: bytes, setting: Any) -> np.ndarray:
        """A bitstream made by :meth:`encode` at ``setting`` → ``uint8 (H, W, 3)``."""
        ...


def decoded(codec: SplitCodec, shape: tuple, setting: Any, data: bytes) -> Coded:
    """The :class:`Coded` of ``data``, decoded by ``codec``; ``shape`` is the input image's."""
    recon = codec.decode(data, setting)
    if recon.shape != tuple(shape):
        raise RuntimeError(f"{codec.name}: decoded {recon.shape}, expected {tuple(shape)}")
    return Coded(data=data, recon=recon, setting=setting)


def encode_only(codec: Codec, image: np.ndarray, setting: Any) -> bytes | Coded:
    """The bitstream of ``image`` at ``setting``, without decoding where the codec allows.

    Returns:
        ``bytes`` for a :class:`SplitCodec`; otherwise the full :class:`Coded` from
        ``codec.code`` (its decode could not be skipped, so it is kept for :func:`decode_coded`).
    """
    if isinstance(codec, SplitCodec):
        return codec.encode(image, setting)
    return codec.code(image, setting)


def decode_coded(codec: Codec, image: np.ndarray, setting: Any, encoded: bytes | Coded) -> Coded:
    """Finish :func:`encode_only`: the same :class:`Coded` as ``codec.code(image, setting)``."""
    if isinstance(encoded, Coded):
        return encoded
    return decoded(codec, image.shape, setting, encoded)


@dataclass(frozen=True)
class CodecInfo:
    name: str
    kind: str
    factory: Callable[[], Codec]
    check: Callable[[], str | None]  # None if it can run here, else the reason why not
    description: str = ""


_REGISTRY: dict[str, CodecInfo] = {}


def register(name: str, kind: str, factory: Callable[[], Codec],
             check: Callable[[], str | None] = lambda: None, description: str = "",
             *, replace: bool = False) -> None:
    """Add a codec to the registry under ``name``.

    Raises:
        SpecError: ``name`` is taken and ``replace`` is False: one codec would silently
            stand in for another.
    """
    if name in _REGISTRY and not replace:
        raise SpecError(f"codec name {name!r} is already taken by a {_REGISTRY[name].kind} codec "
                        f"({_REGISTRY[name].description or name}); choose another name")
    _REGISTRY[name] = CodecInfo(name, kind, factory, check, description)


def load_builtins() -> None:
    """Register fairbits' own codecs now (otherwise done on the first look-up), so that a
    codec registered afterwards can neither shadow them nor be shadowed by them."""
    _load_builtins()


def codec_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def codec_info(name: str) -> CodecInfo:
    _load_builtins()
    if name not in _REGISTRY:
        raise SpecError(f"unknown codec {name!r}; known codecs: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get_codec(name: str) -> Codec:
    """The codec registered as ``name``, ready to use.

    Raises:
        SpecError: no such codec.
        CodecUnavailable: it is registered but cannot run here (the message says why).
    """
    info = codec_info(name)
    reason = info.check()
    if reason is not None:
        raise CodecUnavailable(f"codec {name!r} cannot run here: {reason}")
    return info.factory()


def available_codecs() -> list[tuple[str, str, str | None]]:
    """``(name, kind, reason-or-None)`` for every registered codec."""
    _load_builtins()
    return [(i.name, i.kind, i.check()) for i in sorted(_REGISTRY.values(), key=lambda i: i.name)]


class _Builtins:
    loaded: ClassVar[bool] = False


def _load_builtins() -> None:
    if _Builtins.loaded:
        return
    _Builtins.loaded = True
    from fairbits.codecs import classical  # noqa: F401  (registers on import)
    from fairbits.codecs import learned  # noqa: F401  (registers one codec per architecture)
    from fairbits.codecs import systems  # noqa: F401  (image-to-image systems)
