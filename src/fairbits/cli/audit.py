"""``fairbits audit`` and ``fairbits report``: run (or resume) an audit, rebuild its report.

``audit`` prints the path of ``report.html`` when it writes one; Ctrl-C keeps the rows
stored so far and says how to resume (exit status 130). ``report`` prints the path of the
rebuilt report.
"""

from __future__ import annotations

from pathlib import Path

import typer

from fairbits.cli.common import exit_on_error, set_offline


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

    set_offline(offline)
    with exit_on_error(interrupted=f"the rows written so far are kept in {out}; "
                                   "run the same command again to resume"):
        run_dir = run_audit(load_spec(spec), out, progress=progress, report=report, engine=engine, address=address)
    if report:
        print(run_dir / "report.html")


def report_cmd(run_dir: Path = typer.Argument(..., help="a run directory made by `fairbits audit`")):
    """Rebuild bias statistics and the HTML report of a run from its stored rows."""
    from fairbits.audit.runner import rebuild_report

    with exit_on_error():
        print(rebuild_report(run_dir))


def register(app: typer.Typer) -> None:
    """Add ``audit`` and ``report`` to ``app``."""
    app.command()(audit)
    app.command("report")(report_cmd)


__all__ = ["audit", "register", "report_cmd"]
