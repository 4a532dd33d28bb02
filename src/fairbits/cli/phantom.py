"""``fairbits phantom``: render synthetic labelled faces (see :mod:`fairbits.data.phantom`)."""

from __future__ import annotations

from pathlib import Path

import typer

from fairbits.cli.common import exit_on_error


def phantom(n: int = typer.Option(240, "--n", help="number of faces"),
            out: Path = typer.Option(..., "--out", "-o", help="output folder"),
            seed: int = typer.Option(0, help="random seed"),
            size: int = typer.Option(256, help="image side in pixels"),
            balanced: bool = typer.Option(True, help="equal counts per skin group")):
    """Render synthetic labelled faces (PNG + labels.csv) for tests and demos."""
    from fairbits.data.phantom import render_phantoms

    with exit_on_error():
        labels = render_phantoms(n, out, seed=seed, size=size, balance="skin_group" if balanced else None,
                                 progress=True)
    print(labels)


def register(app: typer.Typer) -> None:
    """Add ``phantom`` to ``app``."""
    app.command()(phantom)


__all__ = ["phantom", "register"]
