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

``settings`` lists the built-in keys (ascending measured bpp) then the cached zoo
qualities (ascending; an uncached quality still runs when asked for, after its download);
the two families are on different rate scales, so
``builtin_settings`` and ``zoo_settings`` are also given separately for rate searches.

Inference modes:

* exact, :meth:`LearnedCodec.code`: real entropy coding on CPU. The image is padded on
  the right and bottom to a multiple of the model's ``downsampling_factor`` (64 for the
  hyperprior models) by **replicating** the edge pixels (fewer bits and milder edge
  artefacts than zeros), coded with ``model.compress``, packed into one bytes object
  (:mod:`fairbits.codecs.bitstream`), decoded from those bytes with
  ``model.decompress`` and cropped back. ``bpp`` counts every byte, header included.
* fast, :meth:`LearnedCodec.forward_batch`: a batched forward pass on any device, no
  entropy coding; rate is ``-sum(log2 likelihoods)`` over all latents per image.
* exact in parallel, :class:`ExactPool` / :func:`code_many`: worker processes (spawn).

Checkpoints are always read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import copy
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from compressai.models import FactorizedPrior, JointAutoregressiveHierarchicalPriors
from torch import nn

from fairbits.codecs import bitstream
from fairbits.codecs.architectures import architecture, architecture_names
from fairbits.codecs.base import Coded, decoded, get_codec, register
from fairbits.codecs.checkpoints import ZOO_PREFIX, _zoo_urls, builtin_checkpoints, load_checkpoint, zoo_file
from fairbits.data.images import to_tensor, to_uint8
from fairbits.errors import CodecUnavailable, FairbitsError, SpecError
from fairbits.spec import is_checkpoint_path

# Autoregressive fast path: a latent row counts as settled when a pass moves no value by
# more than this. A changed rounding moves a value by ~1; float noise in the context
# sums (~1e-6) would otherwise ripple one position per pass along the row.
AR_TOLERANCE = 1e-3


# ---------------------------------------------------------------- the codec

def _pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad ``(N, 3, H, W)`` on the right and bottom to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def _multiple(model: nn.Module) -> int:
    return int(getattr(model, "downsampling_factor", 64))


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
        settings: built-in keys (ascending bpp) then cached ``zoo-qK`` (ascending K).
        builtin_settings, zoo_settings: the two families separately.
    """

    def __init__(self, name: str, weights_dir: str | Path | None = None):
        arch = architecture(name)
        self.name = name
        self.kind = arch.kind
        self.autoregressive = arch.autoregressive
        self._builtin = {k: p for k, p, _ in builtin_checkpoints(name, weights_dir)}
        self.builtin_settings = tuple(self._builtin)
        self.zoo_settings = tuple(f"{ZOO_PREFIX}{q}" for q in sorted(_zoo_urls(name))
                                  if zoo_file(name, q)[0].is_file())
        self.settings = self.builtin_settings + self.zoo_settings
        self._models: dict[tuple[str, str], nn.Module] = {}

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
        x = _pad(to_tensor(image), _multiple(model))
        out = model.compress(x)
        f = _multiple(model)
        if tuple(out["shape"]) != (x.shape[2] // f, x.shape[3] // f):
            raise RuntimeError(f"{self.name}: unexpected latent shape {tuple(out['shape'])}")
        return bitstream.pack(h, w, [s[0] for s in out["strings"]])

    def code(self, image: np.ndarray, setting: Any) -> Coded:
        """Encode ``uint8 (H, W, 3)`` with real entropy coding (CPU) and decode the bytes."""
        return decoded(self, np.shape(image), setting, self.encode(image, setting))

    @torch.no_grad()
    def decode(self, data: bytes, setting: Any) -> np.ndarray:
        """Decode a bitstream made by :meth:`code` at ``setting`` → ``uint8 (H, W, 3)``."""
        return self._decode(self.model(setting), data)

    def _decode(self, model: nn.Module, data: bytes) -> np.ndarray:
        h, w, streams = bitstream.unpack(data, _n_streams(model))
        f = _multiple(model)
        shape = (-(-h // f), -(-w // f))
        x_hat = model.decompress([[s] for s in streams], shape)["x_hat"]
        return to_uint8(x_hat[..., :h, :w])[0]

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
        xp = _pad(x, _multiple(model))
        ar = isinstance(model, JointAutoregressiveHierarchicalPriors)
        out = _ar_forward(model, xp) if ar else model(xp)
        bits = torch.zeros(n, dtype=torch.float64, device=x.device)
        for lik in out["likelihoods"].values():
            bits -= torch.log2(lik.double()).flatten(1).sum(1)
        recon = out["x_hat"][..., :h, :w].clamp(0, 1).float()
        return recon, bits / (h * w)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------- worker processes

_WORKER: dict[str, Any] = {}


def _worker_init(codec_name: str, setting: Any, threads: int) -> None:
    torch.set_num_threads(threads)
    codec = get_codec(codec_name)
    codec.model(setting)  # load once per process
    _WORKER["codec"], _WORKER["setting"] = codec, setting


def _worker_code(image: np.ndarray) -> Coded:
    return _WORKER["codec"].code(image, _WORKER["setting"])


class ExactPool:
    """Exact coding of many images at one setting in ``processes`` worker processes.

    Each worker (started with ``spawn``, or ``forkserver``) loads the model once and uses
    ``threads`` torch threads (default 1). Use as a context manager::

        with ExactPool("mbt2018-mean", "zoo-q3", processes=8) as pool:
            coded = pool.code(images)   # list[Coded], input order

    Workers start on the first ``code`` call (each imports torch and CompressAI: seconds),
    so keep one pool for many images. As with any spawned process, a script that makes
    a pool needs the ``if __name__ == "__main__":`` guard.
    """

    def __init__(self, codec_name: str, setting: Any, processes: int = 2, threads: int = 1,
                 context: str = "spawn"):
        if context not in ("spawn", "forkserver"):
            raise ValueError("context must be 'spawn' or 'forkserver' (fork is unsafe with torch)")
        codec = get_codec(codec_name)
        if isinstance(codec, LearnedCodec):
            codec.checkpoint_path(setting)  # fail here, not as a broken pool
        self.codec_name, self.setting = codec_name, setting
        self._executor = ProcessPoolExecutor(
            max_workers=processes, mp_context=multiprocessing.get_context(context),
            initializer=_worker_init, initargs=(codec_name, setting, threads))

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
    with ExactPool(codec.name, setting, processes=processes) as pool:
        return pool.code(images)


# ---------------------------------------------------------------- registry

def _register_all() -> None:
    for name in architecture_names():
        a = architecture(name)
        zoo = "CompressAI zoo weights (zoo-qK, downloaded on first use), " if _zoo_urls(name) else ""
        register(name, a.kind, lambda name=name: LearnedCodec(name), lambda: None,
                 f"{name} ({a.kind}); settings: built-in checkpoints, {zoo}or a checkpoint path")


_register_all()
