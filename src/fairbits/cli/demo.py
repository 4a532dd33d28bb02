"""``fairbits demo``: the whole pipeline on phantom faces (see :mod:`fairbits.demo`)."""

from __future__ import annotations

from pathlib import Path

import typer

from fairbits.cli.common import exit_on_error, say


def demo(out: Path = typer.Option(Path("fairbits-demo"), "--out", "-o", help="demo folder"),
         n: int = typer.Option(240, "--n", help="number of phantom faces"),
         seed: int = typer.Option(0, help="random seed")):
    """Phantom faces, jpeg/jpeg444/webp/avif at ~0.1/0.25/0.5 bpp, bias statistics and a report."""
    from fairbits.demo import run_demo

    with exit_on_error():
        path = run_demo(out, n=n, seed=seed, progress=True)
    say("[bold green]report written:[/]")
    print(path.resolve())


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""
    app.command()(demo)


__all__ = ["demo", "register"]
