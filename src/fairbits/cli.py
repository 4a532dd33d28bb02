"""The ``fairbits`` command line: parse, call the library, print."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import typer
from rich.console import Console

from fairbits.errors import FairbitsError, FairbitsWarning

# CompressAI's import-time use of torch.jit.script warns on every run; it is not ours to fix.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Audit demographic bias in face-image codecs.")
console = Console(stderr=True)


def _fail(e: FairbitsError) -> None:
    console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _set_offline(offline: bool) -> None:
    if offline:
        os.environ["FAIRBITS_OFFLINE"] = "1"


_show_warning = warnings.showwarning


def _print_warning(message, category, filename, lineno, file=None, line=None):
    """fairbits' own warnings (repairs, changed labels) as one ``warning:`` line each."""
    if issubclass(category, FairbitsWarning):
        console.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
    else:
        _show_warning(message, category, filename, lineno, file, line)


warnings.showwarning = _print_warning


@app.command()
def audit(spec: Path = typer.Argument(..., help="the audit spec (YAML)"),
          out: Path = typer.Option(..., "--out", "-o", help="run directory (created or resumed)"),
          report: bool = typer.Option(True, help="write statistics and the HTML report at the end"),
          progress: bool = typer.Option(True, help="show a progress bar"),
          offline: bool = typer.Option(False, "--offline", help="never download weights (same as FAIRBITS_OFFLINE=1)"),
          engine: str = typer.Option(None, "--engine", help="local (this process) or ray (a Ray cluster); "
                                     "default: the spec's engine, else local"),
          address: str = typer.Option(None, "--address", help="with --engine ray: the cluster to join "
                                      "(auto, HOST:PORT or ray://HOST:10001); default: a private local cluster")):
    """Run (or resume) an audit described by SPEC into OUT."""
    from fairbits.audit.runner import run_audit
    from fairbits.spec import load_spec

    _set_offline(offline)
    try:
        run_dir = run_audit(load_spec(spec), out, progress=progress, report=report, engine=engine, address=address)
    except FairbitsError as e:
        _fail(e)
    except KeyboardInterrupt:
        console.print(f"[bold yellow]interrupted:[/] the rows written so far are kept in {out}; "
                      "run the same command again to resume", highlight=False, soft_wrap=True)
        raise typer.Exit(130)
    if report:
        print(run_dir / "report.html")


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="a run directory made by `fairbits audit`")):
    """Rebuild bias statistics and the HTML report of a run from its stored rows."""
    from fairbits.audit.runner import rebuild_report

    try:
        print(rebuild_report(run_dir))
    except FairbitsError as e:
        _fail(e)


@app.command()
def phantom(n: int = typer.Option(240, "--n", help="number of faces"),
            out: Path = typer.Option(..., "--out", "-o", help="output folder"),
            seed: int = typer.Option(0, help="random seed"),
            size: int = typer.Option(256, help="image side in pixels"),
            balanced: bool = typer.Option(True, help="equal counts per skin group")):
    """Render synthetic labelled faces (PNG + labels.csv) for tests and demos."""
    from fairbits.data.phantom import render_phantoms

    labels = render_phantoms(n, out, seed=seed, size=size, balance="skin_group" if balanced else None,
                             progress=True)
    print(labels)


@app.command()
def codecs(offline: bool = typer.Option(False, "--offline", help="never download weights")):
    """List every registered codec: name, kind, and whether it can run here."""
    _set_offline(offline)
    from fairbits.codecs.base import available_codecs, get_codec
    from fairbits.codecs.checkpoints import learned_settings_summary

    for name, kind, reason in available_codecs():
        status = "available" if reason is None else "unavailable: " + reason
        if reason is None and kind not in ("classical", "system"):
            ready = bool(get_codec(name).settings)
            status = ("available" if ready else "needs weights") + f" ({learned_settings_summary(name)})"
        print(f"{name:<28} {kind:<11} {status}")


@app.command()
def demo(out: Path = typer.Option(Path("fairbits-demo"), "--out", "-o", help="demo folder"),
         n: int = typer.Option(240, "--n", help="number of phantom faces"),
         seed: int = typer.Option(0, help="random seed")):
    """Phantom faces, jpeg/jpeg444/webp/avif at ~0.1/0.25/0.5 bpp, bias statistics and a report."""
    from fairbits.demo import run_demo

    try:
        path = run_demo(out, n=n, seed=seed, progress=True)
    except FairbitsError as e:
        _fail(e)
    console.print("[bold green]report written:[/]")
    print(path.resolve())


from fairbits import cli_fairgen, cli_phenotype, cli_probe, cli_train  # noqa: E402

cli_train.register(app)
cli_fairgen.register(app)
cli_phenotype.register(app)
cli_probe.register(app)


def main() -> None:  # pragma: no cover
    app()
