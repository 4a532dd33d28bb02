"""``fairbits train-codec``: train learned codecs from the command line.

The options become one :class:`~fairbits.codecs.train.config.TrainConfig` per λ (see
:mod:`fairbits.codecs.training` for what is optimised). Besides natural, balanced or
mixed sampling, ``--objective group-dro:<column> [--dro-step η]`` trains against the
worst group's rate–distortion loss (group DRO; ``--dro-relative`` for a scale-free
step) and ``--colour-loss WEIGHT`` adds a term that penalises the shift of the mean skin
colour (CIELAB). ``--data`` names a YAML file whose top level is either a dataset mapping
(``reader``, ``path``, reader options, ``size``…) or a whole audit spec with a ``dataset:``
key; relative paths are read from the YAML file's folder
(:func:`fairbits.codecs.train.data.load_training_data`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fairbits.cli.common import exit_on_error
from fairbits.codecs.train.config import TrainConfig
from fairbits.errors import SpecError


def train_codec_cmd(
    arch: str = typer.Option(..., "--arch", help="architecture (see `fairbits codecs`)"),
    lmbda: list[float] = typer.Option(..., "--lmbda", help="λ (repeat for a sweep: one model per λ)"),
    data: Path = typer.Option(..., "--data", help="YAML: a dataset mapping or an audit spec with `dataset:`"),
    steps: int = typer.Option(..., "--steps", help="optimisation steps per model"),
    out: Path = typer.Option(..., "--out", "-o",
                             help="checkpoint file (.pt) for one λ, or a folder (<arch>-l<λ>.pt per λ)"),
    sampler: str = typer.Option("natural", help="natural | balanced:<column> | mix:<column>=80/15/5"),
    group_mix: Optional[str] = typer.Option(None, "--group-mix",
                                            help="cut the training set to this group mix first, e.g. 80/15/5"),
    mix_column: str = typer.Option("skin_group", "--mix-column", help="column of --group-mix"),
    train_size: Optional[int] = typer.Option(None, "--train-size", help="images kept by --group-mix"),
    size: Optional[int] = typer.Option(None, help="override the dataset's resize+crop size"),
    batch_size: int = typer.Option(8, "--batch-size"),
    patch: int = typer.Option(256, help="random crop side in pixels (multiple of 64)"),
    lr: float = typer.Option(1e-4),
    aux_lr: float = typer.Option(1e-3, "--aux-lr"),
    distortion: str = typer.Option("mse", help="mse | ms-ssim"),
    n_ch: Optional[int] = typer.Option(None, "--n-ch", help="width N (default: the zoo's at --quality)"),
    m_ch: Optional[int] = typer.Option(None, "--m-ch", help="width M"),
    quality: int = typer.Option(1, help="zoo quality whose widths are the default"),
    realism_weight: Optional[float] = typer.Option(None, "--realism-weight",
                                                   help="β of the GAN term (generative; default 0.15)"),
    perceptual_weight: Optional[float] = typer.Option(None, "--perceptual-weight",
                                                      help="default 1.0 for generative, else 0"),
    perceptual: str = typer.Option("ms-ssim", help="ms-ssim (proxy) | lpips (needs lpips + AlexNet weights)"),
    objective: str = typer.Option("mean", help="mean | group-dro:<column> (weigh the worst group's loss)"),
    dro_step: Optional[float] = typer.Option(None, "--dro-step",
                                             help="η of the group-DRO weight update (default 0.01)"),
    dro_relative: bool = typer.Option(False, "--dro-relative",
                                      help="group-DRO steps on each group's relative excess loss "
                                           "(L_g − mean)/mean: scale-free; lone groups move no weight"),
    colour_loss: float = typer.Option(0.0, "--colour-loss",
                                      help="weight of the skin-colour term (squared CIELAB shift "
                                           "of the mean skin colour; 0 = off)"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    amp: bool = typer.Option(False, help="bfloat16 autocast for g_a/g_s only"),
    log_every: int = typer.Option(50, "--log-every"),
    ckpt_every: int = typer.Option(1000, "--ckpt-every"),
    resume: bool = typer.Option(True, help="continue from <out>.train.pt when present"),
    progress: bool = typer.Option(True, help="show a progress bar"),
):
    """Train a learned codec per λ on a dataset: natural, balanced or mixed sampling,
    optionally group-robust (group DRO) or colour-preserving."""
    with exit_on_error():
        if train_size is not None and group_mix is None:
            raise SpecError("--train-size only applies with --group-mix")
        if any(not (l > 0) for l in lmbda):
            raise SpecError(f"--lmbda values must be > 0, got {lmbda}")
        config = TrainConfig(
            arch=arch, lmbda=lmbda[0], steps=steps, sampler=sampler, mix=group_mix,
            mix_column=mix_column, train_size=train_size, size=size, batch_size=batch_size,
            patch=patch, lr=lr, aux_lr=aux_lr, distortion=distortion, N=n_ch, M=m_ch,
            quality=quality, realism_weight=realism_weight, perceptual_weight=perceptual_weight,
            perceptual=perceptual, objective=objective, dro_step=dro_step, dro_relative=dro_relative,
            colour_loss=colour_loss,
            seed=seed, device=device, amp=amp, log_every=log_every, ckpt_every=ckpt_every)
        paths = _run(config, lmbda, data, out, resume=resume, progress=progress)
    for p in paths:
        print(p)


def _run(config: TrainConfig, lmbdas: list[float], data: Path, out: Path, *, resume: bool,
         progress: bool) -> list[Path]:
    """Validate the cheap things first, then train one file, or one model per λ into a folder."""
    from fairbits.codecs.train.data import load_training_data
    from fairbits.codecs.training import train, train_sweep

    config.resolved()                 # unknown architecture, weights it cannot take
    ds = load_training_data(data)
    as_file = out.suffix in (".pt", ".pth")
    if len(lmbdas) > 1 and as_file:
        raise SpecError(f"{len(lmbdas)} λ values train {len(lmbdas)} models: --out must be a folder, not {out}")
    if as_file:
        return [train(config, ds, out, resume=resume, progress=progress)]
    settings = {k: v for k, v in config.to_dict().items() if k not in ("arch", "lmbda")}
    return train_sweep(config.arch, lmbdas, ds, out_dir=out, resume=resume, progress=progress, **settings)


def register(app: typer.Typer) -> None:
    """Add ``train-codec`` to ``app``."""
    app.command("train-codec")(train_codec_cmd)


__all__ = ["register", "train_codec_cmd"]
