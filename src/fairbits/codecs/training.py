"""Train a learned (or generative) image codec at one rate–distortion trade-off.

:func:`train` runs one :class:`~fairbits.codecs.train.config.TrainConfig`;
:func:`train_codec` / :func:`train_sweep` build it from keyword arguments (one λ / one
model per λ). Images are float32 ``(B, 3, P, P)`` tensors in [0, 1] (``P`` = ``patch``,
random crops of images first fitted with :func:`fairbits.data.images.fit_size` to the
dataset's ``size``).

One step:

1. draw ``batch_size`` images with the sampler, crop them (and their skin masks when the
   colour term is on);
2. per image, the loss of :class:`~fairbits.codecs.train.losses.RateDistortionLoss`:
   ``bpp + λ·D`` with ``D = 255²·MSE`` (``distortion="mse"``, CompressAI's convention)
   or ``1 − MS-SSIM``, plus ``perceptual_weight·P`` (``1 − MS-SSIM`` proxy, or
   LPIPS-AlexNet when installed), ``realism_weight·G_adv`` (non-saturating generator loss
   against the architecture's discriminator; generative architectures only) and
   ``colour_loss·C`` (squared CIELAB distance between the mean skin colours of original
   and reconstruction, Lab units²);
3. the objective turns the per-image losses into the step's loss: their mean
   (``objective="mean"``) or the group-DRO weighted sum over the groups of a column
   (``"group-dro:<column>"``, weights updated by exponentiated gradient with step
   ``dro_step``; :mod:`fairbits.codecs.train.objectives`);
4. Adam step of the codec (gradients clipped to norm 1.0), then CompressAI's auxiliary
   loss (entropy-bottleneck quantiles) on its own Adam, then — generative only — the
   discriminator's step on ``softplus(−disc(x, ŷ)) + softplus(disc(x̂, ŷ))`` (detached
   inputs, own Adam, clipped to norm 1.0).

Mixed precision (``amp=True``): only the analysis and synthesis transforms ``g_a`` /
``g_s`` run under bfloat16 autocast, and their outputs are cast back to float32; the
hyper-transforms, the entropy bottleneck and the Gaussian conditional (likelihoods and
hence the rate) always run in float32, since low-precision likelihoods near 0 or 1 make
``-log2`` (the rate) wrong. bfloat16 needs no loss scaling. Default: off (float32).

Files, for ``out = runs/x.pt``: the resumable :class:`~fairbits.codecs.train.state.TrainingState`
``runs/x.train.pt`` (every ``ckpt_every`` steps, atomically; a resumed run continues at
the saved step and on CPU ends bit-identical to an uninterrupted one, group-DRO weights
included), the loss log ``runs/x.log.jsonl`` (one JSON object per ``log_every`` steps:
means over those steps of ``loss``, ``bpp``, ``mse``, ``psnr``, ``aux``, ``d_loss``,
``g_adv``, and when used ``perceptual``, ``colour``, ``group_loss`` ``{group: mean}`` and
the current ``group_weight`` ``{group: q}``; then ``lr`` and ``seconds``) and the codec
``runs/x.pt`` (:func:`fairbits.codecs.checkpoints.save_checkpoint`; ``meta`` = the resolved
config's :meth:`~fairbits.codecs.train.config.TrainConfig.to_dict`, ``variant``, ``data``
(counts per group, id hash), the final ``group_weight`` (group-DRO), a train-set bpp/PSNR
estimate, seconds and the fairbits version).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from fairbits.codecs.checkpoints import save_checkpoint
from fairbits.codecs.train.config import TrainConfig
from fairbits.codecs.train.data import ImageSource, SkinMasks, load_training_set
from fairbits.codecs.train.losses import (AdversarialTerm, PerceptualTerm, RateDistortionLoss,
                                          SkinColourTerm, bpp_per_image, discriminator_loss)
from fairbits.codecs.train.state import TrainingState
from fairbits.errors import FairbitsError, SpecError
from fairbits.fileio import atomic_write
from fairbits.spec import DatasetSpec

log = logging.getLogger("fairbits.training")


# --------------------------------------------------------------------------- paths

def state_path(out: str | Path) -> Path:
    """Where :func:`train` keeps the resumable state of a run writing ``out``."""
    return Path(out).with_suffix(".train.pt")


def log_path(out: str | Path) -> Path:
    """The JSON-lines loss log of a run writing ``out``."""
    return Path(out).with_suffix(".log.jsonl")


def sweep_path(out_dir: str | Path, arch: str, lmbda: float) -> Path:
    """``out_dir/<arch>-l<λ>.pt`` (λ in ``%g`` form)."""
    return Path(out_dir) / f"{arch}-l{lmbda:g}.pt"


# --------------------------------------------------------------------------- training

def train(config: TrainConfig, data: DatasetSpec | pd.DataFrame, out: str | Path, *,
          resume: bool = True, progress: bool = True,
          callback: Callable[[int, dict], None] | None = None) -> Path:
    """Run ``config`` on ``data``; returns the codec checkpoint ``out``.

    Args:
        config: the run's settings.
        data: a dataset spec (read with ``build_manifest``) or a manifest DataFrame
            (``path`` column plus labels; ``attrs["root"]`` for relative ``mask_path``).
        out: final codec checkpoint path (``.pt``); the training state and loss log sit beside it.
        resume: continue from ``<out>.train.pt`` if it exists (its settings must match).
        progress: show a rich progress bar and periodic log lines.
        callback: called as ``callback(step, metrics)`` after every step.

    Raises:
        FairbitsError: bad options, unusable data, a state file from other settings.
    """
    from fairbits import __version__

    out = Path(out)
    cfg = config.resolved()
    dev = _device(cfg.device)
    tset = load_training_set(data, cfg)
    state, cfg = TrainingState.create(cfg, tset.manifest, dev)
    criterion = _criterion(cfg, state, dev)
    config_key = json.dumps({**cfg.resume_key(), "data": tset.desc}, sort_keys=True, default=str)

    spath, lpath = state_path(out), log_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if resume and spath.is_file():
        state.restore(spath, config_key, cfg.steps)
        _rewrite_log(lpath, state.step)
        log.info("resuming %s from step %d", spath, state.step)
    else:
        _rewrite_log(lpath, -1)

    source = ImageSource(tset.manifest, tset.size, tset.max_pixels)
    masks = SkinMasks(tset, source) if cfg.colour_loss > 0 else None
    bar = _Progress(progress, cfg.steps, state.step, f"{cfg.arch} λ={cfg.lmbda:g}")
    t0 = time.perf_counter() - state.elapsed
    state.model.train()
    try:
        with bar, _autocast_transforms(state.model, dev, cfg.amp):
            while state.step < cfg.steps:
                rows = state.sampler.indices(cfg.batch_size)
                x, boxes = source.crop_boxes(rows, cfg.patch, state.crop_rng)
                skin = masks.crops(rows, boxes, cfg.patch).to(dev) if masks is not None else None
                m = train_step(state, criterion, x.to(dev), rows, skin)
                state.step += 1
                state.elapsed = time.perf_counter() - t0
                state.window.add(m)
                if callback is not None:
                    callback(state.step, m)
                if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                    rec = {"step": state.step, **state.window.flush(), **state.objective.summary(),
                           "lr": state.opt.param_groups[0]["lr"], "seconds": round(state.elapsed, 3)}
                    with open(lpath, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                    bar.log(rec)
                bar.advance(m)
                if state.step % cfg.ckpt_every == 0 or state.step == cfg.steps:
                    state.save(spath, config_key)
        if not spath.is_file():      # steps already reached by the saved state
            state.save(spath, config_key)
        est = estimate_rd(state.model, source, cfg.patch, dev)
    finally:
        source.close()
        if masks is not None:
            masks.close()

    meta = {**cfg.to_dict(), "variant": cfg.variant(), "data": tset.desc, **state.objective.summary(),
            "train_bpp_estimate": est["bpp"], "train_psnr_estimate": est["psnr"],
            "estimate_images": est["n"], "train_seconds": round(state.elapsed, 2),
            "fairbits_version": __version__}
    if masks is not None:
        meta["skin_masks"] = masks.method
    state.model.eval()
    atomic_write(out, lambda tmp: save_checkpoint(state.model, cfg.arch, tmp, meta))
    return out


def train_codec(arch: str, lmbda: float, data: DatasetSpec | pd.DataFrame, *, steps: int,
                out: str | Path, resume: bool = True, progress: bool = True,
                callback: Callable[[int, dict], None] | None = None, **settings: Any) -> Path:
    """Train ``arch`` at trade-off ``lmbda`` for ``steps`` steps; returns the checkpoint ``out``.

    ``settings`` are the other :class:`~fairbits.codecs.train.config.TrainConfig` fields
    (``sampler``, ``mix``, ``batch_size``, ``patch``, ``lr``, ``objective``,
    ``colour_loss``, ``device``...); the rest as in :func:`train`.
    """
    return train(TrainConfig(arch=arch, lmbda=lmbda, steps=steps, **settings), data, out,
                 resume=resume, progress=progress, callback=callback)


def train_sweep(arch: str, lmbdas: list[float], data: DatasetSpec | pd.DataFrame, *,
                out_dir: str | Path, **kwargs) -> list[Path]:
    """One :func:`train_codec` run per λ into ``out_dir/<arch>-l<λ>.pt``; same other settings."""
    if not lmbdas:
        raise SpecError("give at least one λ")
    paths = [sweep_path(out_dir, arch, float(l)) for l in lmbdas]
    if len(set(paths)) != len(paths):
        raise SpecError(f"repeated λ values in {lmbdas}")
    return [train_codec(arch, float(l), data, out=p, **kwargs) for l, p in zip(lmbdas, paths)]


def _criterion(cfg: TrainConfig, state: TrainingState, dev: torch.device) -> RateDistortionLoss:
    """The per-image loss of resolved ``cfg`` (terms of weight 0 are left out)."""
    terms = []
    if cfg.perceptual_weight > 0:
        terms.append(PerceptualTerm(cfg.perceptual_weight, cfg.perceptual, dev))
    if state.disc is not None:
        terms.append(AdversarialTerm(cfg.realism_weight, state.disc))
    if cfg.colour_loss > 0:
        terms.append(SkinColourTerm(cfg.colour_loss))
    return RateDistortionLoss(cfg.lmbda, cfg.distortion, terms)


def train_step(state: TrainingState, criterion: RateDistortionLoss, x: torch.Tensor,
               rows: np.ndarray, skin: torch.Tensor | None) -> dict[str, Any]:
    """One codec update (+ aux, + discriminator) on images ``x`` (B, 3, P, P) drawn from
    manifest ``rows`` (B,), with skin masks ``skin`` (B, P, P) or None; returns the step's
    metrics (batch means as floats, plus the objective's)."""
    state.opt.zero_grad(set_to_none=True)
    out = state.model(x)
    per_image = criterion(out, x, skin)
    loss, extra = state.objective(per_image["loss"], rows)
    if not torch.isfinite(loss):
        raise FairbitsError(f"training diverged (loss {float(loss)}); lower lr or λ")
    loss.backward()
    nn.utils.clip_grad_norm_(state.main_params, 1.0)
    state.opt.step()
    aux = None
    if state.aux_opt is not None:
        state.aux_opt.zero_grad(set_to_none=True)
        aux_t = state.model.aux_loss()
        aux_t.backward()
        state.aux_opt.step()
        aux = float(aux_t.detach())
    d_loss = None
    if state.disc is not None:
        state.disc_opt.zero_grad(set_to_none=True)
        d_t = discriminator_loss(state.disc, x, out["x_hat"].float(), out["y_hat"])
        d_t.backward()
        nn.utils.clip_grad_norm_(state.disc.parameters(), 1.0)
        state.disc_opt.step()
        d_loss = float(d_t.detach())
    means = {k: float(v.detach().mean()) for k, v in per_image.items() if k not in ("loss", "distortion")}
    mse = means.pop("mse")
    return {"loss": float(loss.detach()), "bpp": means.pop("bpp"), "mse": mse,
            "psnr": 10 * math.log10(1.0 / max(mse, 1e-12)), "aux": aux, "d_loss": d_loss,
            "g_adv": means.pop("g_adv", None), **means, **extra}


# --------------------------------------------------------------------------- helpers

def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise SpecError(f"unknown device {name!r}: use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpecError("device 'cuda' asked for but CUDA is not available here")
    return dev


@contextlib.contextmanager
def _autocast_transforms(model: nn.Module, device: torch.device, enabled: bool):
    """bfloat16 autocast around ``g_a``/``g_s`` only; outputs back to float32."""
    patched = []
    if enabled:
        for name in ("g_a", "g_s"):
            mod = getattr(model, name, None)
            if mod is None:
                continue
            orig = mod.forward

            def fwd(*a, _orig=orig, **k):
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    y = _orig(*a, **k)
                return y.float()

            mod.forward = fwd
            patched.append(mod)
        if not patched:
            warnings.warn("amp: the model has no g_a/g_s; training in float32", stacklevel=3)
    try:
        yield
    finally:
        for mod in patched:
            del mod.forward


def _rewrite_log(path: Path, keep_until: int) -> None:
    """Keep only the log records with ``step <= keep_until`` (atomic rewrite)."""
    lines = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= keep_until:
                    lines.append(line)
            except (ValueError, KeyError):
                continue
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in lines)))


@torch.no_grad()
def estimate_rd(model: nn.Module, source: ImageSource, patch: int, dev: torch.device,
                n: int = 32) -> dict:
    """Rate/quality estimate on the first ``n`` training images (centre ``patch`` crops).

    Eval-mode forward (rounded latents): ``bpp`` from the likelihoods (no bitstream
    overhead), ``psnr`` in dB of the mean MSE over the images, clamped to [0, 1].
    """
    was = model.training
    model.eval()
    rows = list(range(min(n, len(source.paths))))
    bpps, mses = [], []
    for i in range(0, len(rows), 8):
        x = source.centre_crops(rows[i:i + 8], patch).to(dev)
        out = model(x)
        bpps += bpp_per_image(out["likelihoods"], patch * patch).tolist()
        mses += [float(F.mse_loss(out["x_hat"][k].float().clamp(0, 1), x[k])) for k in range(x.shape[0])]
    model.train(was)
    return {"bpp": float(np.mean(bpps)), "psnr": 10 * math.log10(1.0 / max(np.mean(mses), 1e-12)),
            "n": len(rows)}


def _fmt(k: str, v) -> str:
    if isinstance(v, dict):
        return f"{k} " + ",".join(f"{g}={x:.3g}" for g, x in v.items())
    return f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"


class _Progress:
    """A rich progress bar with the latest loss/bpp, plus a log line per record."""

    def __init__(self, enabled: bool, total: int, done: int, title: str):
        self.enabled, self.total, self.done, self.title = enabled, total, done, title
        self._p = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                               TimeRemainingColumn(), console=Console(stderr=True))
            self._p.__enter__()
            self._task = self._p.add_task(self.title, total=self.total, completed=self.done, info="")
        return self

    def advance(self, m: dict) -> None:
        if self._p is not None:
            self._p.update(self._task, advance=1, info=f"loss {m['loss']:.3f} bpp {m['bpp']:.3f} "
                                                       f"psnr {m['psnr']:.1f}")

    def log(self, rec: dict) -> None:
        line = " ".join(_fmt(k, v) for k, v in rec.items() if v is not None)
        if self._p is not None:
            self._p.console.print(line, highlight=False)
        log.info(line)

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)
        return False


__all__ = ["train", "train_codec", "train_sweep", "train_step", "estimate_rd", "state_path",
           "log_path", "sweep_path", "ImageSource", "TrainConfig", "TrainingState"]
