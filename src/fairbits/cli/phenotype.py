"""``fairbits train-phenotype``: train a phenotype classifier on original images.

``--data`` is read as by ``fairbits train-codec``
(:func:`fairbits.codecs.train.data.load_training_data`): a dataset mapping or an audit spec
with ``dataset:``. The model is written to ``--out`` (``.npz``) with its JSON card beside
it (see :mod:`fairbits.face.phenotype`). The held-out images are other people than the
training images whenever the data has an identity column (``--identity-column``);
``--group-column`` reports held-out accuracy per group and ``--merge-classes`` merges rare
classes (see :mod:`fairbits.face.phenotype_training`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fairbits.cli.common import exit_on_error


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
    identity_column: str = typer.Option(
        "auto", "--identity-column",
        help="column naming the person in each image; held-out people are never in training "
             "('auto': 'identity' when the dataset has it; 'none': split by image)"),
    group_column: Optional[str] = typer.Option(None, "--group-column",
                                     help="report held-out accuracy per value of this column (e.g. race)"),
    merge_classes: Optional[list[str]] = typer.Option(
        None, "--merge-classes",
        help="merge classes: 'GROUP:A,B' when scoring GROUP (needs --group-column), or 'A,B' for all "
             "images before training; repeat the option or separate merges with ';'"),
    progress: bool = typer.Option(True, help="show progress bars"),
):
    """Train a classifier of one label column on original images (for flip/loss audits)."""
    with exit_on_error():
        from fairbits.codecs.train.data import load_training_data
        from fairbits.face.phenotype_training import train_phenotype

        ds = load_training_data(data)
        _, report = train_phenotype(ds, target, out, features=features, test_fraction=test_fraction,
                                    seed=seed, C=c, progress=progress, identity_column=identity_column,
                                    group_column=group_column, merge_classes=merge_classes)
    counts = ", ".join(f"{k}: {v['train']}+{v['test']}" for k, v in report["class_counts"].items())
    print(f"target {report['target']} ({len(report['classes'])} classes; train+test {counts})")
    split = report["split"]
    if split["by"] == "identity":
        n = split["identities"]
        print(f"split by {split['column']!r}: {n['train']} people in training, {n['test']} held out, none in both")
    elif split["by"] == "image":
        print("split by image (no identity column: held-out images may show people seen in training)")
    if report["n_skipped"]:
        print(f"skipped {report['n_skipped']} unreadable image(s)")
    print(f"held-out accuracy {_fmt(report['held_out_accuracy'])} "
          f"(balanced {_fmt(report['balanced_accuracy'])}, n={report['n_test']})")
    for group, r in (report["by_group"] or {}).items():
        merged = f" (merged {', '.join('+'.join(m) for m in r['merged'])}; unmerged " \
                 f"{_fmt(r['accuracy_unmerged'])})" if r["merged"] else ""
        print(f"  {report['group_column']}={group}: {_fmt(r['accuracy'])} (n={r['n']}){merged}")
    if report["group_gap"] is not None:
        print(f"  gap between groups (max - min): {_fmt(report['group_gap'])}")
    print(report["path"])


def register(app: typer.Typer) -> None:
    """Add ``train-phenotype`` to ``app``."""
    app.command("train-phenotype")(train_phenotype_cmd)


__all__ = ["register", "train_phenotype_cmd"]
