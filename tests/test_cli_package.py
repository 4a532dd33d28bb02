"""The command line as a package: every command's help, one error exit, the console script.

The error cases use inputs that fail before any real work (a missing file, an out-of-range
option). ``phantom``, ``codecs`` and ``demo`` have no such input that raises a
FairbitsError (bad ``phantom`` sizes raise ValueError in :mod:`fairbits.data.phantom`), so
there the library call they make is made to raise one.
"""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import fairbits
from fairbits.cli import app
from fairbits.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, exit_on_error
from fairbits.errors import DatasetError, SpecError

SRC = Path(fairbits.__file__).resolve().parent
ROOT = SRC.parents[1]

TOP_LEVEL = ["audit", "report", "phantom", "codecs", "demo", "train-codec", "train-phenotype", "fairgen", "probe"]
COMMANDS = {"audit", "report", "phantom", "codecs", "demo", "train-codec", "train-phenotype",
            "fairgen fit", "fairgen sample", "fairgen study", "fairgen export", "probe skin-tone"}


def _leaves(cmd, path: tuple[str, ...] = ()):
    """``(path, command)`` of every runnable command under ``cmd`` (typer's own click objects)."""
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _leaves(sub, path + (name,))
    else:
        yield path, cmd


def test_commands_and_their_order():
    root = typer.main.get_command(app)
    assert list(root.commands) == TOP_LEVEL
    assert {" ".join(p) for p, _ in _leaves(root)} == COMMANDS


@pytest.mark.parametrize("path", sorted(COMMANDS) + ["fairgen", "probe", ""])
def test_every_help_works(path):
    args = path.split()
    r = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output and ("--help" in r.output)
    cmd = typer.main.get_command(app)
    for name in args:
        cmd = cmd.commands[name]
    summary = (cmd.help or "").strip().splitlines()[0]
    assert summary and summary in r.output


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """Command → (arguments that fail with a FairbitsError, a phrase of its message)."""
    (tmp / "bad.yaml").write_text("dataset: 3\n")
    (tmp / "norun").mkdir()
    return {
        "audit": (["audit", str(tmp / "missing.yaml"), "--out", str(tmp / "run")], "spec file not found"),
        "report": (["report", str(tmp / "norun")], "not a fairbits run directory"),
        "train-codec": (["train-codec", "--arch", "bmshj2018-factorized", "--lmbda", "-1", "--data",
                         str(tmp / "bad.yaml"), "--steps", "1", "--out", str(tmp / "c.pt")], "--lmbda values"),
        "train-phenotype": (["train-phenotype", "--data", str(tmp / "bad.yaml"), "--target", "x",
                             "--out", str(tmp / "m.npz")], "invalid dataset"),
        "fairgen fit": (["fairgen", "fit", "--scorer", "ita", "--n", "5", "--out", str(tmp / "s.npz")],
                        "at least 20"),
        "fairgen sample": (["fairgen", "sample", "--sampler", str(tmp / "s.npz"), "--out", str(tmp / "o")],
                           "not found"),
        "fairgen study": (["fairgen", "study", "--n", "1", "--out", str(tmp / "o")], "at least 2"),
        "fairgen export": (["fairgen", "export", "--sampler", str(tmp / "s.npz"), "--out", str(tmp / "o")],
                           "nothing to export"),
        "probe skin-tone": (["probe", "skin-tone", str(tmp / "face.png"), "--ita", "abc", "--out", str(tmp / "p")],
                            "is not a number"),
    }


def _raise(error):
    def fail(*args, **kwargs):
        raise error
    return fail


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_fairbits_error_exits_2(command, tmp_path, monkeypatch):
    cases = _bad_inputs(tmp_path)
    if command in cases:
        args, phrase = cases[command]
    else:                           # no cheap input raises a FairbitsError: make the library call raise
        module, name, args = {
            "phantom": ("fairbits.data.phantom", "render_phantoms", ["phantom", "--out", str(tmp_path / "ph")]),
            "codecs": ("fairbits.codecs.base", "available_codecs", ["codecs"]),
            "demo": ("fairbits.demo", "run_demo", ["demo", "--out", str(tmp_path / "demo")]),
        }[command]
        phrase = f"{command} cannot run: fix the input"
        monkeypatch.setattr(f"{module}.{name}", _raise(DatasetError(phrase)))
    r = CliRunner().invoke(app, args)
    assert r.exit_code == EXIT_ERROR == 2, (r.output, r.exception)
    assert r.stderr.startswith("error: ") and phrase in r.stderr, r.stderr
    assert r.stdout == ""           # no result path printed after an error
    assert not isinstance(r.exception, (DatasetError, SpecError))


def test_error_text_is_printed_as_is(tmp_path):
    """A path with square brackets is not read as rich markup (it used to lose ``[b]``)."""
    spec = tmp_path / "[b]old [/i]" / "spec.yaml"
    r = CliRunner().invoke(app, ["audit", str(spec), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2
    assert r.stderr == f"error: spec file not found: {spec}\n"


def _tiny_app(error: BaseException, interrupted: str | None) -> typer.Typer:
    sub = typer.Typer()

    @sub.command()
    def work():
        with exit_on_error(interrupted=interrupted):
            raise error
        print("not reached")

    @sub.command()
    def other():
        pass

    return sub


def test_interrupt_exits_130_with_how_to_resume():
    r = CliRunner().invoke(_tiny_app(KeyboardInterrupt(), "rows kept in run/; run it again"), ["work"])
    assert r.exit_code == EXIT_INTERRUPTED == 130
    assert r.stderr == "interrupted: rows kept in run/; run it again\n" and r.stdout == ""


def test_interrupt_without_resume_is_left_to_typer():
    r = CliRunner().invoke(_tiny_app(KeyboardInterrupt(), None), ["work"])
    assert r.exit_code == 130 and r.stderr == "" and r.stdout == ""


def test_other_errors_are_not_swallowed():
    r = CliRunner().invoke(_tiny_app(ValueError("a bug"), None), ["work"])
    assert r.exit_code == 1 and isinstance(r.exception, ValueError)


def test_console_script_entry_resolves():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fairbits"] == "fairbits.cli:app"
    ep = importlib.metadata.EntryPoint(name="fairbits", value=scripts["fairbits"], group="console_scripts")
    assert ep.load() is app
    installed = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "fairbits"]
    assert [e.value for e in installed] == ["fairbits.cli:app"]


def test_installed_script_runs():
    script = Path(sys.executable).with_name("fairbits")
    if not script.exists():
        pytest.skip("no installed fairbits script beside this Python")
    proc = subprocess.run([str(script), "report", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Rebuild bias statistics" in proc.stdout


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    found |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    found |= {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
              for a in n.names}
    return found


def test_library_never_imports_the_cli():
    cli = SRC / "cli"
    offenders = {str(p.relative_to(SRC)): sorted(m for m in _imports(p) if m == "fairbits.cli"
                                                  or m.startswith(("fairbits.cli.", "fairbits.cli_")))
                 for p in SRC.rglob("*.py") if cli not in p.parents}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert not list(SRC.glob("cli_*.py")) and not (SRC / "cli.py").exists()


def test_one_error_exit():
    """Only cli/common.py catches FairbitsError or raises typer.Exit."""
    for p in (SRC / "cli").glob("*.py"):
        if p.name == "common.py":
            continue
        tree = ast.parse(p.read_text())
        handlers = [ast.unparse(h.type) for h in ast.walk(tree) if isinstance(h, ast.ExceptHandler) and h.type]
        assert not [h for h in handlers if "FairbitsError" in h or "KeyboardInterrupt" in h], p.name
        assert "typer.Exit" not in p.read_text(), p.name
