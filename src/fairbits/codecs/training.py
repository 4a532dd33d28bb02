"""Train a learned (or generative) image codec at one rate–distortion trade-off.

Images are float32 ``(B, 3, P, P)`` tensors in [0, 1] (``P`` = ``patch``, random crops of
images first fitted with :func:`fairbits.data.images.fit_size` to the dataset's ``size``).

Losses (per step, averaged over the batch):

* rate ``bpp = sum(-log2 likelihoods) / (B * P * P)``, in bits per pixel;
* distortion ``D = 255**2 * MSE`` (``distortion="mse"``, MSE of [0, 1] images — the
  CompressAI convention, so CompressAI's λ grid applies) or ``D = 1 - MS-SSIM``
  (``"ms-ssim"``, pytorch_msssim, window sized to the patch);
* codec loss ``bpp + λ·D + perceptual_weight·P + realism_weight·G_adv`` where
  ``P`` is a perceptual distance in [0, ~1]: ``1 - MS-SSIM`` by default (a proxy: no
  pretrained network is needed) or LPIPS-AlexNet when ``perceptual="lpips"`` and the
  ``lpips`` package and the AlexNet weights are installed; ``G_adv`` is the non-saturating
  generator loss ``softplus(-disc(x_hat, y_hat.detach()))`` (generative architectures only);
* the discriminator (generative only) minimises ``softplus(-disc(x, y_hat)) +
  softplus(disc(x_hat, y_hat))`` on detached inputs, with its own Adam, updated right
  after each codec update (alternating);
* CompressAI's auxiliary loss (entropy-bottleneck quantiles) on a separate Adam.

Gradients of the codec and the discriminator are clipped to norm 1.0.

Mixed precision (``amp=True``): only the analysis and synthesis transforms ``g_a`` /
``g_s`` run under bfloat16 autocast, and their outputs are cast back to float32; the
hyper-transforms, the entropy bottleneck and the Gaussian conditional (likelihoods and
hence the rate) always run in float32, since low-precision likelihoods near 0 or 1 make
``-log2`` (the rate) wrong. bfloat16 needs no loss scaling. Default: off (float32).

Resumable training state is written every ``ckpt_every`` steps to ``<out>.train.pt``
(atomically: temporary file + ``os.replace``) with the model, both optimizers, the
discriminator and its optimizer, the step, the sampler state and every RNG state; it is
read with ``torch.load(weights_only=True)``. A resumed run continues at the saved step and
on CPU ends with bit-identical weights to an uninterrupted one. The final codec is written
with :func:`fairbits.codecs.checkpoints.save_checkpoint` to
``out``, and the loss log to ``<out>.log.jsonl`` (one JSON object per ``log_every`` steps:
means over those steps).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from fairbits.data.images import fit_size, load_rgb
from fairbits.errors import CodecUnavailable, DatasetError, FairbitsError, ImageError, SpecError
from fairbits.codecs.checkpoints import save_checkpoint
from fairbits.fileio import atomic_write
from fairbits.spec import DatasetSpec

log = logging.getLogger("fairbits.training")

STATE_FORMAT = "fairbits-train/1"
DISTORTIONS = ("mse", "ms-ssim")
PERCEPTUAL = ("ms-ssim", "lpips")
DEFAULT_REALISM_WEIGHT = 0.15      # β for generative architectures
DEFAULT_PERCEPTUAL_WEIGHT = 1.0    # for generative architectures (0 for the others)
_LOG_KEYS = ("loss", "bpp", "mse", "psnr", "aux", "d_loss", "g_adv")


# --------------------------------------------------------------------------- data

def _manifest_from_spec(ds: DatasetSpec, group_columns: list[str], seed: int) -> pd.DataFrame:
    from fairbits.data.manifest import build_manifest

    if not Path(ds.path).exists():
        raise DatasetError(f"dataset path not found: {ds.path}")
    groups = group_columns if ds.limit_per_group is not None and not ds.balance_by else None
    if ds.limit_per_group is not None and not ds.balance_by and not groups:
        raise SpecError("limit_per_group needs balance_by, a balanced/mix sampler or a mix column")
    return build_manifest(ds.reader, ds.path, options=ds.reader_options, split=ds.split,
                          limit_per_group=ds.limit_per_group, balance_by=ds.balance_by,
                          group_columns=groups, seed=seed)


class ImageSource:
    """Training images of a manifest, fitted to ``size`` and cached as ``uint8 (H, W, 3)``.

    Up to ``cache_bytes`` of decoded images stay in memory; the rest are re-read per batch
    (with ``workers`` threads).
    """

    def __init__(self, manifest: pd.DataFrame, size: int | None, max_pixels: int = 40_000_000,
                 cache_bytes: int = 4 << 30, workers: int = 4):
        self.paths = manifest["path"].astype(str).tolist()
        self.size, self.max_pixels = size, max_pixels
        self.cache: dict[int, np.ndarray] = {}
        self.cache_bytes, self._used = cache_bytes, 0
        self._pool = ThreadPoolExecutor(max_workers=workers)

    def _read(self, i: int) -> np.ndarray:
        try:
            return fit_size(load_rgb(self.paths[i], self.max_pixels), self.size)
        except ImageError as e:
            raise DatasetError(f"training image {self.paths[i]} cannot be used: {e}") from None

    def images(self, rows) -> list[np.ndarray]:
        rows = [int(r) for r in rows]
        missing = sorted({r for r in rows if r not in self.cache})
        loaded = dict(zip(missing, self._pool.map(self._read, missing)))
        for r, a in loaded.items():
            if self._used + a.nbytes <= self.cache_bytes:
                self.cache[r], self._used = a, self._used + a.nbytes
        return [self.cache.get(r, loaded.get(r)) for r in rows]

    def crops(self, rows, patch: int, rng: np.random.Generator) -> torch.Tensor:
        """Random ``patch x patch`` crops: float32 ``(len(rows), 3, patch, patch)`` in [0, 1]."""
        out = []
        for r, a in zip(rows, self.images(rows)):
            h, w = a.shape[:2]
            if h < patch or w < patch:
                raise DatasetError(f"image {self.paths[int(r)]} is {w}x{h}, smaller than patch "
                                   f"{patch}; lower --patch or raise the dataset size")
            top, left = rng.integers(0, h - patch + 1), rng.integers(0, w - patch + 1)
            out.append(a[top:top + patch, left:left + patch])
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div_(255.0)

    def centre_crops(self, rows, patch: int) -> torch.Tensor:
        out = []
        for a in self.images(rows):
            h, w = a.shape[:2]
            top, left = (h - patch) // 2, (w - patch) // 2
            out.append(a[top:top + patch, left:left + patch])
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div_(255.0)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


# --------------------------------------------------------------------------- losses

def _msssim_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``1 - MS-SSIM`` (mean over the batch), window sized to the image side."""
    from pytorch_msssim import ms_ssim

    from fairbits.measures.pixel import ms_ssim_window

    win = ms_ssim_window(min(x.shape[-2:]))
    if win is None:
        raise SpecError(f"MS-SSIM needs patches larger than 32 px, got {min(x.shape[-2:])}")
    return 1.0 - ms_ssim(x_hat.float(), x.float(), data_range=1.0, win_size=win)


def _lpips_loss(device: torch.device) -> Callable:
    """LPIPS-AlexNet distance, only if it can run offline."""
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
    return lambda x_hat, x: net(x_hat * 2 - 1, x * 2 - 1).mean()


def _bpp(likelihoods: dict[str, torch.Tensor], n_pixels: int) -> torch.Tensor:
    return sum(torch.log(v.float()).sum() for v in likelihoods.values()) / (-math.log(2) * n_pixels)


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


def _atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


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


def state_path(out: str | Path) -> Path:
    """Where :func:`train_codec` keeps the resumable state of a run writing ``out``."""
    return Path(out).with_suffix(".train.pt")


def log_path(out: str | Path) -> Path:
    """The JSON-lines loss log of a run writing ``out``."""
    return Path(out).with_suffix(".log.jsonl")


# --------------------------------------------------------------------------- training

def train_codec(
    arch: str,
    lmbda: float,
    data: DatasetSpec | pd.DataFrame,
    *,
    steps: int,
    out: str | Path,
    sampler: str = "natural",
    mix: str | dict | None = None,
    mix_column: str = "skin_group",
    train_size: int | None = None,
    size: int | None = None,
    batch_size: int = 8,
    patch: int = 256,
    lr: float = 1e-4,
    aux_lr: float = 1e-3,
    distortion: str = "mse",
    N: int | None = None,
    M: int | None = None,
    quality: int = 1,
    realism_weight: float | None = None,
    perceptual_weight: float | None = None,
    perceptual: str = "ms-ssim",
    seed: int = 0,
    device: str = "auto",
    amp: bool = False,
    log_every: int = 50,
    ckpt_every: int = 1000,
    resume: bool = True,
    progress: bool = True,
    callback: Callable[[int, dict], None] | None = None,
) -> Path:
    """Train ``arch`` at trade-off ``lmbda`` for ``steps`` steps; returns the codec checkpoint ``out``.

    Args:
        arch: a name from :func:`fairbits.codecs.architectures.architecture_names`.
        lmbda: λ, the weight of the distortion (module docstring for units).
        data: a dataset spec (read with ``build_manifest``) or a manifest DataFrame
            (``path`` column plus labels).
        steps: total optimisation steps (a resumed run continues up to it).
        out: final codec checkpoint path (``.pt``); the training state and loss log sit beside it.
        sampler: ``natural``, ``balanced:<column>`` or ``mix:<column>=80/15/5``
            (:mod:`fairbits.data.samplers`): how each batch is drawn.
        mix: if given, the training *set* is first cut to this group mix of
            ``mix_column`` (:func:`~fairbits.data.samplers.subsample_with_mix`, ``train_size``
            rows, default the most the data allow), then drawn from by ``sampler``.
        size: override the dataset's ``size`` (resize + centre-crop before cropping patches).
        batch_size, patch: images per step and crop side in pixels.
        lr, aux_lr: Adam learning rates of the codec (and discriminator) and of the aux loss.
        distortion: ``mse`` or ``ms-ssim``.
        N, M, quality: widths (default: the zoo's at ``quality``).
        realism_weight: β of the adversarial term (generative only; default 0.15).
        perceptual_weight: weight of the perceptual term (default 1.0 generative, else 0).
        perceptual: ``ms-ssim`` (proxy, default) or ``lpips`` (needs lpips + AlexNet weights).
        seed: seeds model init, sampler, crops and quantisation noise.
        device: ``auto``, ``cpu``, ``cuda``...
        amp: bfloat16 autocast for ``g_a``/``g_s`` only.
        log_every, ckpt_every: steps between log records / training-state checkpoints.
        resume: continue from ``<out>.train.pt`` if it exists (its settings must match).
        progress: show a rich progress bar and periodic log lines.
        callback: called as ``callback(step, metrics)`` after every step.

    Raises:
        FairbitsError: bad options, unusable data, a state file from other settings.
    """
    from fairbits import __version__
    from fairbits.codecs.architectures import architecture, build_model
    from fairbits.data.samplers import make_sampler, subsample_with_mix

    out = Path(out)
    kind = architecture(arch).kind
    generative = kind == "generative"
    _check_numbers(lmbda=lmbda, steps=steps, batch_size=batch_size, patch=patch, lr=lr,
                   aux_lr=aux_lr, log_every=log_every, ckpt_every=ckpt_every)
    if distortion not in DISTORTIONS:
        raise SpecError(f"distortion must be one of {DISTORTIONS}, got {distortion!r}")
    if perceptual not in PERCEPTUAL:
        raise SpecError(f"perceptual must be one of {PERCEPTUAL}, got {perceptual!r}")
    if realism_weight is None:
        realism_weight = DEFAULT_REALISM_WEIGHT if generative else 0.0
    if perceptual_weight is None:
        perceptual_weight = DEFAULT_PERCEPTUAL_WEIGHT if generative else 0.0
    if realism_weight < 0 or perceptual_weight < 0:
        raise SpecError("realism_weight and perceptual_weight must be >= 0")
    if realism_weight > 0 and not generative:
        raise SpecError(f"realism_weight needs a generative architecture; {arch!r} is {kind}")
    dev = _device(device)

    # data
    group_cols = [sampler.split(":", 1)[1].split("=", 1)[0]] if ":" in sampler else []
    if mix is not None:
        group_cols.append(mix_column)
    if isinstance(data, DatasetSpec):
        manifest = _manifest_from_spec(data, group_cols, seed)
        size = size if size is not None else data.size
        max_pixels = data.max_pixels
        desc: dict[str, Any] = {"reader": data.reader, "path": str(data.path), "split": data.split}
    elif isinstance(data, pd.DataFrame):
        manifest, max_pixels = data, 40_000_000
        desc = {"reader": data.attrs.get("reader", "manifest")}
    else:
        raise SpecError(f"data must be a DatasetSpec or a manifest DataFrame, not {type(data).__name__}")
    if "path" not in manifest.columns or manifest.empty:
        raise DatasetError("the training manifest needs rows and a `path` column")
    if "checksum" in manifest.columns and manifest["checksum"].isna().any():
        bad = int(manifest["checksum"].isna().sum())
        warnings.warn(f"{bad} unreadable training image(s) left out", stacklevel=2)
        manifest = manifest[manifest["checksum"].notna()]
    manifest = manifest.reset_index(drop=True)
    if mix is not None:
        manifest = subsample_with_mix(manifest, mix_column, mix, n=train_size, seed=seed)
    elif train_size is not None:
        raise SpecError("train_size is only used with a group mix")
    if size is not None and size < patch:
        raise SpecError(f"patch {patch} is larger than the image size {size}")
    draw = make_sampler(sampler, manifest, seed=seed)
    ids = manifest["image_id"].astype(str) if "image_id" in manifest.columns else manifest["path"].astype(str)
    desc.update(n_images=len(manifest), size=size,
                ids_sha256=hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16])
    for col in dict.fromkeys(group_cols):
        if col in manifest.columns:
            desc[f"counts_{col}"] = {str(k): int(v) for k, v in
                                     manifest[col].astype(str).value_counts().sort_index().items()}

    # model, optimisers
    torch.manual_seed(seed)
    model = build_model(arch, N=N, M=M, quality=quality).to(dev)
    widths = {"N": getattr(model, "N", N), "M": getattr(model, "M", M)}
    _check_patch_fits(model, patch, dev, arch)
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=lr)
    aux_opt = torch.optim.Adam(aux_params, lr=aux_lr) if aux_params else None
    from fairbits.codecs.generative import build_discriminator as build_disc
    disc = disc_opt = None
    if generative:
        disc = build_disc(arch, widths["N"], widths["M"]).to(dev)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=lr)
    percept = None
    if perceptual_weight > 0:
        percept = _lpips_loss(dev) if perceptual == "lpips" else _msssim_loss
    crop_rng = np.random.default_rng([seed, 1])

    config = {"arch": arch, "lmbda": float(lmbda), "N": widths["N"], "M": widths["M"],
              "quality": quality, "distortion": distortion, "sampler": sampler, "mix": mix,
              "mix_column": mix_column if mix is not None else None, "train_size": train_size,
              "batch_size": batch_size, "patch": patch, "lr": lr, "aux_lr": aux_lr,
              "realism_weight": realism_weight, "perceptual_weight": perceptual_weight,
              "perceptual": perceptual if perceptual_weight > 0 else None, "seed": seed,
              "amp": amp, "data": desc}
    config_json = json.dumps(config, sort_keys=True, default=str)

    # resume
    step, elapsed, window = 0, 0.0, _new_window()
    spath, lpath = state_path(out), log_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if resume and spath.is_file():
        st = torch.load(spath, map_location="cpu", weights_only=True)  # RNG states must stay on CPU
        if st.get("format") != STATE_FORMAT:
            raise SpecError(f"{spath} is not a fairbits training state; delete it or use --no-resume")
        if st["config"] != config_json:
            diff = _config_diff(json.loads(st["config"]), json.loads(config_json))
            raise SpecError(f"{spath} was made with other settings ({diff}); delete it, use another "
                            "--out, or use --no-resume to start over")
        if st["step"] > steps:
            raise SpecError(f"{spath} is at step {st['step']}, beyond steps={steps}")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        if aux_opt is not None:
            aux_opt.load_state_dict(st["aux_opt"])
        if disc is not None:
            disc.load_state_dict(st["disc"])
            disc_opt.load_state_dict(st["disc_opt"])
        draw.load_state_dict(st["sampler"])
        crop_rng.bit_generator.state = json.loads(st["crop_rng"])
        torch.set_rng_state(st["torch_rng"])
        if dev.type == "cuda" and st.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(st["cuda_rng"], dev)
        step, elapsed, window = int(st["step"]), float(st["elapsed"]), json.loads(st["window"])
        _rewrite_log(lpath, step)
        log.info("resuming %s from step %d", spath, step)
    else:
        _rewrite_log(lpath, -1)

    def save_state() -> None:
        _atomic_torch_save({
            "format": STATE_FORMAT, "config": config_json, "step": step, "elapsed": elapsed,
            "window": json.dumps(window), "model": model.state_dict(), "opt": opt.state_dict(),
            "aux_opt": aux_opt.state_dict() if aux_opt else None,
            "disc": disc.state_dict() if disc is not None else None,
            "disc_opt": disc_opt.state_dict() if disc_opt is not None else None,
            "sampler": draw.state_dict(), "crop_rng": json.dumps(crop_rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
        }, spath)

    source = ImageSource(manifest, size, max_pixels)
    bar = _Progress(progress, steps, step, f"{arch} λ={lmbda:g}")
    n_pix = batch_size * patch * patch
    t0 = time.perf_counter() - elapsed
    model.train()
    try:
        with bar, _autocast_transforms(model, dev, amp):
            while step < steps:
                x = source.crops(draw.indices(batch_size), patch, crop_rng).to(dev)
                m = _train_step(model, x, lmbda, distortion, n_pix, opt, aux_opt, main_params,
                                aux_params, disc, disc_opt, realism_weight, perceptual_weight, percept)
                step += 1
                elapsed = time.perf_counter() - t0
                for k, v in m.items():
                    if v is not None:
                        window[k] = window.get(k, 0.0) + v
                window["n"] += 1
                if callback is not None:
                    callback(step, m)
                if step % log_every == 0 or step == steps:
                    rec = _flush(window, step, opt.param_groups[0]["lr"], elapsed)
                    window = _new_window()
                    with open(lpath, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                    bar.log(rec)
                bar.advance(m)
                if step % ckpt_every == 0 or step == steps:
                    save_state()
        if not spath.is_file():      # steps already reached by the saved state
            save_state()
        est = estimate_rd(model, source, patch, dev)
    finally:
        source.close()

    meta = {"arch": arch, "lmbda": float(lmbda), "steps": steps, "sampler": sampler,
            "mix": mix, "mix_column": config["mix_column"], "data": desc, "distortion": distortion,
            "batch_size": batch_size, "patch": patch, "lr": lr, "N": widths["N"], "M": widths["M"],
            "realism_weight": realism_weight, "perceptual_weight": perceptual_weight,
            "perceptual": config["perceptual"], "amp": amp, "seed": seed,
            "train_bpp_estimate": est["bpp"], "train_psnr_estimate": est["psnr"],
            "estimate_images": est["n"], "train_seconds": round(elapsed, 2),
            "fairbits_version": __version__}
    model.eval()
    atomic_write(out, lambda tmp: save_checkpoint(model, arch, tmp, meta))
    return out


def _check_numbers(**values) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise SpecError(f"{name} must be a positive number, got {v!r}")
        if name not in ("lmbda", "lr", "aux_lr") and int(v) != v:
            raise SpecError(f"{name} must be a whole number, got {v!r}")


def _check_patch_fits(model: nn.Module, patch: int, dev: torch.device, arch: str) -> None:
    """A forward pass on a zero patch (eval mode, no RNG use); a shape error becomes SpecError."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, patch, patch, device=dev))
        if out["x_hat"].shape[-2:] != (patch, patch):
            raise RuntimeError("output size differs")
    except (RuntimeError, ValueError) as e:
        raise SpecError(f"{arch} cannot code {patch}x{patch} patches ({str(e).splitlines()[0]}); "
                        "use a multiple of 64") from None
    finally:
        model.train(was)


def _train_step(model, x, lmbda, distortion, n_pix, opt, aux_opt, main_params, aux_params,
                disc, disc_opt, beta, pw, percept) -> dict:
    """One codec update (+ aux, + discriminator); returns float metrics of this step."""
    opt.zero_grad(set_to_none=True)
    out = model(x)
    x_hat = out["x_hat"].float()
    bpp = _bpp(out["likelihoods"], n_pix)
    mse = F.mse_loss(x_hat, x)
    dist = 255.0 ** 2 * mse if distortion == "mse" else _msssim_loss(x_hat, x)
    loss = bpp + lmbda * dist
    if percept is not None:
        loss = loss + pw * percept(x_hat, x)
    g_adv = d_loss = None
    if disc is not None:
        y_hat = out.get("y_hat")
        if y_hat is None:
            raise CodecUnavailable("the generative model's forward must return 'y_hat' for its discriminator")
        y_hat = y_hat.detach()
        g_adv_t = F.softplus(-disc(x_hat, y_hat)).mean()
        loss = loss + beta * g_adv_t
        g_adv = float(g_adv_t.detach())
    if not torch.isfinite(loss):
        raise FairbitsError(f"training diverged (loss {float(loss)}); lower lr or λ")
    loss.backward()
    nn.utils.clip_grad_norm_(main_params, 1.0)
    opt.step()
    aux = None
    if aux_opt is not None:
        aux_opt.zero_grad(set_to_none=True)
        aux_t = model.aux_loss()
        aux_t.backward()
        aux_opt.step()
        aux = float(aux_t.detach())
    if disc is not None:
        disc_opt.zero_grad(set_to_none=True)
        d_t = F.softplus(-disc(x, y_hat)).mean() + F.softplus(disc(x_hat.detach(), y_hat)).mean()
        d_t.backward()
        nn.utils.clip_grad_norm_(disc.parameters(), 1.0)
        disc_opt.step()
        d_loss = float(d_t.detach())
    mse_f = float(mse.detach())
    return {"loss": float(loss.detach()), "bpp": float(bpp.detach()), "mse": mse_f,
            "psnr": 10 * math.log10(1.0 / max(mse_f, 1e-12)), "aux": aux, "d_loss": d_loss,
            "g_adv": g_adv}


def _new_window() -> dict:
    return {"n": 0}


def _flush(window: dict, step: int, lr: float, seconds: float) -> dict:
    n = max(window["n"], 1)
    rec: dict[str, Any] = {"step": step}
    for k in _LOG_KEYS:
        rec[k] = window[k] / n if k in window else None
    rec.update(lr=lr, seconds=round(seconds, 3))
    return rec


def _config_diff(old: dict, new: dict) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:4])


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
        for k in range(x.shape[0]):
            lk = {name: v[k:k + 1] for name, v in out["likelihoods"].items()}
            bpps.append(float(_bpp(lk, patch * patch)))
            mses.append(float(F.mse_loss(out["x_hat"][k].float().clamp(0, 1), x[k])))
    model.train(was)
    return {"bpp": float(np.mean(bpps)), "psnr": 10 * math.log10(1.0 / max(np.mean(mses), 1e-12)),
            "n": len(rows)}


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
        line = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in rec.items() if v is not None)
        if self._p is not None:
            self._p.console.print(line, highlight=False)
        log.info(line)

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)
        return False


def sweep_path(out_dir: str | Path, arch: str, lmbda: float) -> Path:
    """``out_dir/<arch>-l<λ>.pt`` (λ in ``%g`` form)."""
    return Path(out_dir) / f"{arch}-l{lmbda:g}.pt"


def train_sweep(arch: str, lmbdas: list[float], data: DatasetSpec | pd.DataFrame, *,
                out_dir: str | Path, **kwargs) -> list[Path]:
    """One :func:`train_codec` run per λ into ``out_dir/<arch>-l<λ>.pt``; same other settings."""
    if not lmbdas:
        raise SpecError("give at least one λ")
    paths = [sweep_path(out_dir, arch, float(l)) for l in lmbdas]
    if len(set(paths)) != len(paths):
        raise SpecError(f"repeated λ values in {lmbdas}")
    return [train_codec(arch, float(l), data, out=p, **kwargs) for l, p in zip(lmbdas, paths)]


__all__ = ["train_codec", "train_sweep", "estimate_rd", "state_path", "log_path", "sweep_path",
           "ImageSource"]
