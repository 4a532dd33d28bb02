"""``fairbits probe``: counterfactual probes that write a dataset an audit can read.

Its one command, ``fairbits probe skin-tone IMAGE --ita 55,40,... --out DIR``, recolours
the skin of one face photo to each target ITA° (see :mod:`fairbits.face.probe`) and prints
the path of the ``labels.csv`` it wrote. An unreadable image, no face or a bad ``--ita``
ends it with exit status 2.
"""

from __future__ import annotations

from pathlib import Path

import typer

from fairbits.cli.common import exit_on_error

_DEFAULT_ITA = "55,40,25,10,-10,-30"


def skin_tone_cmd(
    image: Path = typer.Argument(..., help="a photo with one clearly visible face"),
    ita: str = typer.Option(_DEFAULT_ITA, "--ita",
                            help="target ITA° values in degrees, comma-separated, each in -60..80"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder (PNG files + labels.csv)"),
):
    """Recolour the face skin of IMAGE to each target ITA° and write the series as a dataset.

    Read it in an audit spec with `dataset: {reader: csv, path: OUT/labels.csv,
    path_column: path}` and `groups: {tone: [...]}` (a mapping keeps the light-to-dark order).
    """
    from fairbits.face.probe import parse_itas, skin_tone_series

    with exit_on_error():
        labels = skin_tone_series(image, parse_itas(ita), out)
    print(labels)


def probe_app() -> typer.Typer:
    """A fresh ``probe`` command group holding ``skin-tone``."""
    sub = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="Counterfactual probes: one image varied along one attribute.")
    sub.command("skin-tone")(skin_tone_cmd)
    return sub


def register(app: typer.Typer) -> None:
    """Add the ``probe`` command group to ``app``."""
    app.add_typer(probe_app(), name="probe")


__all__ = ["register", "probe_app", "skin_tone_cmd"]
