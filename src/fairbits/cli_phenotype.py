"""``fairbits train-phenotype``: train a phenotype classifier on original images.

The main CLI calls :func:`register` to add the command. ``--data`` is read as by
``fairbits train-codec`` (:func:`fairbits.cli_train.load_training_data`): a dataset
mapping or an audit spec with ``dataset:``. The model is written to ``--out`` (``.npz``)
with its JSON card beside it (see :mod:`fairbits.face.phenotype`). A
:class:`~fairbits.errors.FairbitsError` is printed and ends the command with exit status 2.
"""

from __future__ import annotations

from pathlib import Path

import typer

from fairbits.errors import FairbitsError


def _fail(e: FairbitsError) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def train_phenotype_cmd(
    data: Path = typer.Option(..., "--data", help="YAML: a dataset mapping or an audit spec with `dataset:`"),
    target: str = typer.Option(..., "--target", help="label column to predict, e.g. skin_group, hair_type"),
    out: Path = typer.Option(..., "--out", "-o", help="model file (.npz); its card goes to .json beside it"),
    features: str = typer.Option("sface+sface-inner+colour", "--features",
                                 help="feature components joined by '+': sface, sface-inner, colour, "
                                      "pixels, inception"),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="stratified held-out fraction (0: none)"),
    seed: int = typer.Option(0, help="seed of the subsampling and the split"),
    c: float = typer.Option(1.0, "--C", help="inverse L2 regularisation of the logistic regression"),
    progress: bool = typer.Option(True, help="show progress bars"),
):
    """Train a classifier of one label column on original images (for flip/loss audits)."""
    try:
        from fairbits.cli_train import load_training_data
        from fairbits.face.phenotype import train_phenotype

        ds = load_training_data(data)
        _, report = train_phenotype(ds, target, out, features=features, test_fraction=test_fraction,
                                    seed=seed, C=c, progress=progress)
    except FairbitsError as e:
        _fail(e)
    counts = ", ".join(f"{k}: {v['train']}+{v['test']}" for k, v in report["class_counts"].items())
    print(f"target {report['target']} ({len(report['classes'])} classes; train+test {counts})")
    if report["n_skipped"]:
        print(f"skipped {report['n_skipped']} unreadable image(s)")
    print(f"held-out accuracy {_fmt(report['held_out_accuracy'])} "
          f"(balanced {_fmt(report['balanced_accuracy'])}, n={report['n_test']})")
    print(report["path"])


def register(app: typer.Typer) -> None:
    """Add ``train-phenotype`` to ``app``."""
    app.command("train-phenotype")(train_phenotype_cmd)


__all__ = ["register", "train_phenotype_cmd"]
