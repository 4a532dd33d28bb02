"""Learned codecs (CompressAI and the generative ones) behind the :class:`Codec` protocol.

One :class:`LearnedCodec` is registered per architecture in
:func:`~fairbits.codecs.architectures.architecture_names` (name = architecture name,
kind = its kind). A *setting* is a checkpoint, given as a string:

* a built-in key: ``src/fairbits/weights/<arch>/<key>.pt`` shipped with the package
  (optional ``<key>.json`` beside it; its top-level ``"bpp"`` number orders the keys);
* ``zoo-q1`` .. ``zoo-q8`` (``-q6`` for cheng2020): CompressAI's pretrained MSE weights
  from the torch hub cache (``torch.hub.get_dir()/checkpoints/``), downloaded there on
  first use with a progress bar and a hash check, unless ``FAIRBITS_OFFLINE=1``
  (:func:`~fairbits.codecs.checkpoints.fetch_zoo_weights`);
* a path to a checkpoint file (contains a path separator or ends in ``.pt``, ``.pth``,
  ``.pth.tar`` or ``.tar``): a fairbits checkpoint (:func:`~fairbits.codecs.checkpoints.save_checkpoint`) or a
  CompressAI state dict (plain, or ``{"state_dict": ...}`` as CompressAI's training
  script saves it), widths read from the tensor shapes.

``settings`` lists what runs here without a download: the built-in keys (ascending
measured bpp) then the cached zoo qualities (ascending; an uncached quality still runs
when asked for, after its download). ``builtin_settings`` and ``zoo_settings`` give the
two families separately. They are trained on different data with different lambdas, so
their concatenation need not ascend in rate: a rate search (``target_bpp``) walks
``rate_settings`` instead, **one** family ordered by rate, chosen from what ships with the
package, never from what this machine happens to have cached:

* the architecture has built-in checkpoints: those, ascending in the ``bpp`` their model
  cards (``<key>.json``) measured (a key without one comes last, by name; every shipped
  checkpoint has a card);
* otherwise: **all** its CompressAI zoo qualities ``zoo-q1`` .. ``zoo-q8`` (``-q6`` for
  cheng2020), ascending (each quality is trained for a higher rate), downloaded on first
  use; none for an architecture without zoo weights (the audit plan then refuses
  ``target_bpp``).

:func:`setting_columns` says how a chosen setting is recorded in a result row.

Padding (``padding``, a codec option of the spec): a model codes images whose sides are
multiples of its ``downsampling_factor`` (64 for the hyperprior models, 16 for the
factorized ones), so an image is padded before coding and the reconstruction cropped back,
the same way in exact and fast mode.

* ``"replicate"`` (default): on the right and bottom, to a multiple of the
  ``downsampling_factor``, by **replicating** the edge pixels: fewer bits and milder
  edge artefacts than zeros, so the rate and distortion are those of the image itself.
* ``"zeros"``: CompressAI's own evaluation (``compressai.utils.eval_model``): zeros,
  centred (:func:`compressai.ops.compute_padding`), to a multiple of 64 for every
  architecture. Where an image's sides are not multiples of 64 this changes both rate
  and distortion (at 200 x 200 a review measured 37 % fewer bytes and 0.4-1.7 dB more
  PSNR with replication than with zeros), but the bytes and reconstructions are then
  exactly those behind CompressAI's published figures.

Inference modes:

* exact, :meth:`LearnedCodec.code`: real entropy coding on CPU. The image is padded
  (above), coded with ``model.compress``, packed into one bytes object
  (:mod:`fairbits.codecs.bitstream`), decoded from those bytes with
  ``model.decompress`` and cropped back. ``bpp`` counts every byte, header included.
* fast, :meth:`LearnedCodec.forward_batch`: a batched forward pass on any device, no
  entropy coding; rate is ``-sum(log2 likelihoods)`` over all latents per image.
* exact in parallel, :class:`ExactPool` / :func:`code_many`: worker processes (spawn).

Checkpoints are always read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import copy
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from compressai.models import FactorizedPrior, JointAutoregressiveHierarchicalPriors
from compressai.ops import compute_padding
from torch import nn

from fairbits.codecs import bitstream
from fairbits.codecs.architectures import architecture, architecture_names, unavailable_architectures
from fairbits.codecs.base import Coded, decoded, get_codec, register
from fairbits.codecs.checkpoints import (ZOO_PREFIX, _zoo_urls, builtin_checkpoints, card_variant, load_checkpoint,
                                        read_card, zoo_file)
from fairbits.data.images import to_tensor, to_uint8
from fairbits.errors import CodecUnavailable, FairbitsError, SpecError
from fairbits.spec import is_checkpoint_path

# Autoregressive fast path: a latent row counts as settled when a pass moves no value by
# more than this. A changed rounding moves a value by ~1; float noise in the context
# sums (~1e-6) would otherwise ripple one position per pass along the row.
AR_TOLERANCE = 1e-3


# ---------------------------------------------------------------- the codec

PADDINGS = ("replicate", "zeros")  # see the module docstring
COMPRESSAI_EVAL_MULTIPLE = 64  # compressai.utils.eval_model pads every image to this multiple


def _multiple(model: nn.Module) -> int:
    return int(getattr(model, "downsampling_factor", 64))


def pad_box(h: int, w: int, model: nn.Module, padding: str = "replicate") -> tuple[int, int, int, int]:
    """Pixels ``(left, right, top, bottom)`` added to an ``H x W`` image before coding.

    ``replicate``: right and bottom only, to multiples of the model's ``downsampling_factor``;
    ``zeros``: CompressAI's :func:`~compressai.ops.compute_padding` (centred) to multiples
    of 64 (and of the ``downsampling_factor``).
    """
    f = _multiple(model)
    if padding == "replicate":
        return 0, -w % f, 0, -h % f
    if padding == "zeros":
        pad, _ = compute_padding(h, w, min_div=math.lcm(COMPRESSAI_EVAL_MULTIPLE, f))
        return tuple(int(p) for p in pad)
    raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")


def _pad(x: torch.Tensor, box: tuple[int, int, int, int], padding: str) -> torch.Tensor:
    """Pad ``(N, 3, H, W)`` by ``box`` (:func:`pad_box`): edge replication or zeros."""
    if not any(box):
        return x
    return F.pad(x, box, mode="replicate") if padding == "replicate" else F.pad(x, box, mode="constant", value=0.0)


def _crop(x: torch.Tensor, box: tuple[int, int, int, int], h: int, w: int) -> torch.Tensor:
    """The ``H x W`` image inside a padded ``(N, 3, H', W')``."""
    left, _, top, _ = box
    return x[..., top:top + h, left:left + w]


def _n_streams(model: nn.Module) -> int:
    return 1 if isinstance(model, FactorizedPrior) else 2


def _ar_latents(model: JointAutoregressiveHierarchicalPriors, y: torch.Tensor, params: torch.Tensor,
                max_passes: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The serial decoder's latents, computed one latent row at a time for the whole batch.

    The entropy decoder sets ``y_hat = round(y - mu) + mu`` position by position, ``mu``
    coming from the already decoded neighbours (masked 5x5 context conv, then 1x1 convs
    with the hyperprior ``params``). Here each row ``r`` (rows above it final) is solved
    as the fixed point of that map over the whole row, starting from ``round(y)``: a
    pass recomputes the row's ``mu`` from the current row. Since the in-row context only
    looks left, ``W + 1`` passes always reach the decoder's values; passes stop earlier
    once no value moves by more than :data:`AR_TOLERANCE` (no rounding changed). So the
    cost is about ``H * passes`` small row convolutions instead of ``H * W`` serial steps.

    Args:
        y: ``(B, M, H, W)`` latents; params: ``(B, 2M, H, W)`` hyperprior features.
        max_passes: cap per row (``None``: ``W + 1``, exact); for tests.
    Returns:
        ``(y_hat, scales, means)``, each ``(B, M, H, W)``.
    """
    cp = model.context_prediction
    k = cp.kernel_size[0]
    pad = k // 2
    weight = cp.weight * cp.mask
    b, c, h, w = y.shape
    y_hat = torch.zeros(b, c, h + 2 * pad, w + 2 * pad, dtype=y.dtype, device=y.device)
    quantize = model.gaussian_conditional.quantize
    scales, means = [], []
    for r in range(h):
        strip = y_hat[:, :, r:r + k, :]  # a view: rows r-pad..r+pad, zero-padded
        row = y_hat[:, :, r + pad:r + pad + 1, pad:pad + w]
        row.copy_(torch.round(y[:, :, r:r + 1]))
        for _ in range(max_passes or w + 1):
            ctx = F.conv2d(strip, weight, cp.bias)
            s, mu = model.entropy_parameters(torch.cat((params[:, :, r:r + 1], ctx), dim=1)).chunk(2, 1)
            new = quantize(y[:, :, r:r + 1], "dequantize", mu)
            settled = bool((new - row).abs().max() <= AR_TOLERANCE)
            row.copy_(new)
            if settled:
                break
        scales.append(s)
        means.append(mu)
    return y_hat[:, :, pad:pad + h, pad:pad + w], torch.cat(scales, dim=2), torch.cat(means, dim=2)


def _ar_forward(model: JointAutoregressiveHierarchicalPriors, x: torch.Tensor,
                max_passes: int | None = None) -> dict:
    """Batched eval forward of a context-model codec that decodes like its entropy decoder.

    CompressAI's ``forward`` decodes ``round(y)`` (and rates ``y`` under means computed
    from ``round(y)``), while its ``compress``/``decompress`` use ``round(y - mu) + mu``
    with ``mu`` from the decoded context; this uses :func:`_ar_latents` instead, so the
    reconstruction and the likelihoods are those of the real bitstream (up to float
    rounding).
    """
    y = model.g_a(x)
    z = model.h_a(y)
    z_hat, z_likelihoods = model.entropy_bottleneck(z)
    params = model.h_s(z_hat)
    y_hat, scales, means = _ar_latents(model, y, params, max_passes)
    _, y_likelihoods = model.gaussian_conditional(y, scales, means=means)
    return {"x_hat": model.g_s(y_hat), "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}


class LearnedCodec:
    """A learned codec (one architecture) whose settings are checkpoints.

    Attributes:
        name: architecture / registry name.
        kind: "learned" or "generative".
        padding: ``"replicate"`` (default) or ``"zeros"`` (module docstring).
        settings: what runs here without a download: built-in keys (ascending bpp) then
            cached ``zoo-qK`` (ascending K); not one rate ladder.
        builtin_settings, zoo_settings: the two families separately.
        builtin_variants: ``{built-in key: training variant}`` from the model cards
            (``natural``, ``balanced``, ``group-dro``, ``colour``...).
        rate_settings: the ladder a rate search walks, ascending in rate (module docstring):
            the natural built-ins (variants trained otherwise are not on it), else the zoo.
    """

    def __init__(self, name: str, weights_dir: str | Path | None = None, padding: str = "replicate"):
        arch = architecture(name)
        if padding not in PADDINGS:
            raise SpecError(f"{name}: padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        self.name = name
        self.kind = arch.kind
        self.autoregressive = arch.autoregressive
        self.padding = padding
        self._builtin = {k: p for k, p, _ in builtin_checkpoints(name, weights_dir)}
        self.builtin_settings = tuple(self._builtin)
        self.builtin_variants = {k: card_variant(read_card(p)) for k, p in self._builtin.items()}
        self.zoo_settings = tuple(f"{ZOO_PREFIX}{q}" for q in sorted(_zoo_urls(name))
                                  if zoo_file(name, q)[0].is_file())
        self.settings = self.builtin_settings + self.zoo_settings
        natural = tuple(k for k in self.builtin_settings if self.builtin_variants[k] == "natural")
        self.rate_settings = natural or tuple(f"{ZOO_PREFIX}{q}" for q in sorted(_zoo_urls(name)))
        self._models: dict[tuple[str, str], nn.Module] = {}

    def with_padding(self, padding: str) -> "LearnedCodec":
        """The same codec (settings, loaded models shared) padding images with ``padding``."""
        if padding not in PADDINGS:
            raise SpecError(f"{self.name}: padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        other = copy.copy(self)
        other.padding = padding
        return other

    # -- settings → checkpoint files

    def checkpoint_path(self, setting: Any) -> Path:
        """The file behind ``setting``.

        A zoo setting whose weights are not cached is downloaded first
        (:func:`~fairbits.codecs.checkpoints.fetch_zoo_weights`).

        Raises:
            SpecError: unknown setting or missing checkpoint path.
            CodecUnavailable: a zoo setting whose weights are not cached and cannot be
                downloaded (``FAIRBITS_OFFLINE=1``, no network, hash mismatch).
        """
        s = str(setting)
        if s in self._builtin:
            return self._builtin[s]
        if s.startswith(ZOO_PREFIX) and s[len(ZOO_PREFIX):].isdigit():
            q = int(s[len(ZOO_PREFIX):])
            urls = _zoo_urls(self.name)
            if q not in urls:
                have = f"zoo-q{min(urls)}..zoo-q{max(urls)}" if urls else "none"
                raise SpecError(f"{self.name}: CompressAI has no weights for {s} (available: {have})")
            from fairbits.codecs.checkpoints import fetch_zoo_weights

            return fetch_zoo_weights(self.name, q)
        if isinstance(setting, Path) or is_checkpoint_path(s):
            p = Path(s).expanduser()
            if not p.is_file():
                raise SpecError(f"{self.name}: checkpoint file not found: {p}")
            return p
        known = ", ".join(self.settings) or "none here"
        raise SpecError(f"{self.name}: unknown setting {s!r}; built-in/cached settings: {known}; "
                        f"or give a checkpoint path")

    def check_setting(self, setting: Any) -> None:
        """Raise a FairbitsError if ``setting`` cannot run here (the audit plan calls this).

        The checkpoint is loaded (and kept for the run), so a file that is damaged, not a
        checkpoint, for another architecture, or holds objects other than tensors and plain
        values stops the audit before any work.
        """
        path = self.checkpoint_path(setting)
        try:
            self.model(setting)
        except FairbitsError:
            raise
        except Exception as e:  # a damaged file fails in many ways (KeyError, RuntimeError...)
            raise SpecError(f"{self.name}: checkpoint {path} cannot be loaded "
                            f"({type(e).__name__}: {e})") from None

    def model(self, setting: Any, device: str | torch.device = "cpu") -> nn.Module:
        """The model for ``setting`` on ``device``, loaded once and cached (eval mode)."""
        dev = torch.device(device)
        key = (str(setting), str(dev))
        if key not in self._models:
            cpu_key = (str(setting), "cpu")
            if cpu_key not in self._models:
                self._models[cpu_key], _ = load_checkpoint(self.checkpoint_path(setting), arch=self.name)
            if dev.type != "cpu":
                self._models[key] = copy.deepcopy(self._models[cpu_key]).to(dev)
        return self._models[key]

    # -- exact

    @torch.no_grad()
    def encode(self, image: np.ndarray, setting: Any) -> bytes:
        """Real entropy coding (CPU) of ``uint8 (H, W, 3)`` → the bitstream, without decoding."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{self.name}: expected uint8 (H, W, 3), got shape {image.shape}")
        model = self.model(setting)
        h, w = image.shape[:2]
        x = _pad(to_tensor(image), pad_box(h, w, model, self.padding), self.padding)
        out = model.compress(x)
        if tuple(out["shape"]) != self._latent_shape(model, h, w):
            raise RuntimeError(f"{self.name}: unexpected latent shape {tuple(out['shape'])}")
        return bitstream.pack(h, w, [s[0] for s in out["strings"]])

    def _latent_shape(self, model: nn.Module, h: int, w: int) -> tuple[int, int]:
        """The ``shape`` ``model.compress`` gives for an ``H x W`` image after padding."""
        left, right, top, bottom = pad_box(h, w, model, self.padding)
        f = _multiple(model)
        return (h + top + bottom) // f, (w + left + right) // f

    def code(self, image: np.ndarray, setting: Any) -> Coded:
        """Encode ``uint8 (H, W, 3)`` with real entropy coding (CPU) and decode the bytes."""
        return decoded(self, np.shape(image), setting, self.encode(image, setting))

    @torch.no_grad()
    def decode(self, data: bytes, setting: Any) -> np.ndarray:
        """Decode a bitstream made by :meth:`code` at ``setting`` → ``uint8 (H, W, 3)``."""
        return self._decode(self.model(setting), data)

    def _decode(self, model: nn.Module, data: bytes) -> np.ndarray:
        h, w, streams = bitstream.unpack(data, _n_streams(model))
        x_hat = model.decompress([[s] for s in streams], self._latent_shape(model, h, w))["x_hat"]
        return to_uint8(_crop(x_hat, pad_box(h, w, model, self.padding), h, w))[0]

    # -- fast

    @torch.no_grad()
    def forward_batch(self, images: torch.Tensor, setting: Any,
                      device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Batched forward pass without entropy coding.

        Args:
            images: ``float32 (N, 3, H, W)`` in [0, 1].
        Returns:
            ``(recon float32 (N, 3, H, W) in [0, 1], bpp_est float64 (N,))`` on ``device``;
            ``bpp_est = -sum(log2 likelihoods) / (H * W)`` over all latents of each image.
            For autoregressive models see :func:`_ar_forward`.
        """
        model = self.model(setting, device)
        x = images.to(device=model_device(model), dtype=torch.float32)
        n, _, h, w = x.shape
        box = pad_box(h, w, model, self.padding)
        xp = _pad(x, box, self.padding)
        ar = isinstance(model, JointAutoregressiveHierarchicalPriors)
        out = _ar_forward(model, xp) if ar else model(xp)
        bits = torch.zeros(n, dtype=torch.float64, device=x.device)
        for lik in out["likelihoods"].values():
            bits -= torch.log2(lik.double()).flatten(1).sum(1)
        recon = _crop(out["x_hat"], box, h, w).clamp(0, 1).float()
        return recon, bits / (h * w)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------- worker processes

_WORKER: dict[str, Any] = {}


def _worker_init(codec_name: str, setting: Any, threads: int, padding: str = "replicate") -> None:
    torch.set_num_threads(threads)
    codec = get_codec(codec_name)
    if padding != getattr(codec, "padding", "replicate"):
        codec = codec.with_padding(padding)
    codec.model(setting)  # load once per process
    _WORKER["codec"], _WORKER["setting"] = codec, setting


def _worker_code(image: np.ndarray) -> Coded:
    return _WORKER["codec"].code(image, _WORKER["setting"])


class ExactPool:
    """Exact coding of many images at one setting in ``processes`` worker processes.

    Each worker (started with ``spawn``, or ``forkserver``) loads the model once and uses
    ``threads`` torch threads (default 1). ``codec`` is a registered name or a
    :class:`LearnedCodec`, whose ``padding`` the workers then use. Use as a context manager::

        with ExactPool("mbt2018-mean", "zoo-q3", processes=8) as pool:
            coded = pool.code(images)   # list[Coded], input order

    Workers start on the first ``code`` call (each imports torch and CompressAI: seconds),
    so keep one pool for many images. As with any spawned process, a script that makes
    a pool needs the ``if __name__ == "__main__":`` guard.
    """

    def __init__(self, codec: "str | LearnedCodec", setting: Any, processes: int = 2, threads: int = 1,
                 context: str = "spawn"):
        if context not in ("spawn", "forkserver"):
            raise ValueError("context must be 'spawn' or 'forkserver' (fork is unsafe with torch)")
        if isinstance(codec, str):
            codec = get_codec(codec)
        if isinstance(codec, LearnedCodec):
            codec.checkpoint_path(setting)  # fail here, not as a broken pool
        padding = getattr(codec, "padding", "replicate")
        self.codec_name, self.setting, self.padding = codec.name, setting, padding
        self._executor = ProcessPoolExecutor(
            max_workers=processes, mp_context=multiprocessing.get_context(context),
            initializer=_worker_init, initargs=(codec.name, setting, threads, padding))

    def code(self, images: Sequence[np.ndarray]) -> list[Coded]:
        """Code every ``uint8 (H, W, 3)`` image; results in input order."""
        return list(self._executor.map(_worker_code, images))

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> "ExactPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def code_many(codec: Any, images: Sequence[np.ndarray], setting: Any, processes: int = 1) -> list[Coded]:
    """Exact coding of ``images``: in this process if ``processes <= 1``, else an :class:`ExactPool`."""
    if processes <= 1:
        return [codec.code(im, setting) for im in images]
    with ExactPool(codec, setting, processes=processes) as pool:
        return pool.code(images)


def setting_columns(setting: Any) -> dict[str, Any]:
    """How a result row records the setting a codec ran at (e.g. one a rate search chose).

    Returns ``{"quality": float, "checkpoint": str | None}``: a number (classical quality,
    system setting) → ``quality``; ``zoo-qK`` → ``quality`` K and ``checkpoint`` ``"zoo-qK"``;
    any other string (a built-in key, a checkpoint path) → ``checkpoint``, ``quality`` NaN.
    """
    if isinstance(setting, (int, float, np.integer, np.floating)) and not isinstance(setting, bool):
        return {"quality": float(setting), "checkpoint": None}
    s = str(setting)
    q = s[len(ZOO_PREFIX):]
    return {"quality": float(q) if s.startswith(ZOO_PREFIX) and q.isdigit() else np.nan, "checkpoint": s}


# ---------------------------------------------------------------- registry

def _register_all() -> None:
    """One codec per architecture; one that cannot be built here is listed with the reason."""
    for name in architecture_names():
        a = architecture(name)
        zoo = "CompressAI zoo weights (zoo-qK, downloaded on first use), " if _zoo_urls(name) else ""
        register(name, a.kind, lambda name=name: LearnedCodec(name), lambda: None,
                 f"{name} ({a.kind}); settings: built-in checkpoints, {zoo}or a checkpoint path")
    for name, (kind, reason) in unavailable_architectures().items():
        register(name, kind, lambda name=name: LearnedCodec(name), lambda reason=reason: reason,
                 f"{name} ({kind}); unavailable here")


_register_all()
