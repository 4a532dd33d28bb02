"""What every command shares: the stderr console, the error exit, ``--offline``.

Results go to stdout with ``print``; everything else goes to stderr through
:data:`console`: ``error:`` and ``interrupted:`` lines, ``warning:`` lines for fairbits'
own warnings (:func:`print_warning`, installed by :mod:`fairbits.cli`) and notes
(:func:`say`). Text from messages is printed as it is (rich markup in it is escaped).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from fairbits.errors import FairbitsError, FairbitsWarning

EXIT_ERROR = 2          # a FairbitsError: bad configuration or input the user can fix
EXIT_INTERRUPTED = 130  # Ctrl-C where the command says how to resume (128 + SIGINT)

console = Console(stderr=True)


def say(message: str) -> None:
    """A note on stderr (rich markup in ``message`` is interpreted)."""
    console.print(message, highlight=False, soft_wrap=True)


@contextmanager
def exit_on_error(*, interrupted: str | None = None) -> Iterator[None]:
    """Run a command's work; end the command on an error the user can act on.

    A :class:`~fairbits.errors.FairbitsError` prints ``error: <message>`` on stderr and
    exits with status 2. With ``interrupted`` (what is kept and how to go on), Ctrl-C
    prints ``interrupted: <interrupted>`` and exits with status 130; without it, Ctrl-C
    propagates to typer, which exits with status 130 and no message.
    """
    try:
        yield
    except FairbitsError as e:
        say(f"[bold red]error:[/] {escape(str(e))}")
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        say(f"[bold yellow]interrupted:[/] {escape(interrupted)}")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def set_offline(offline: bool) -> None:
    """``--offline``: forbid downloads for this process (as ``FAIRBITS_OFFLINE=1``)."""
    if offline:
        os.environ["FAIRBITS_OFFLINE"] = "1"


_show_warning = warnings.showwarning


def print_warning(message, category, filename, lineno, file=None, line=None):
    """fairbits' own warnings (repairs, changed labels) as one ``warning:`` line each;
    others as Python shows them. A drop-in for :func:`warnings.showwarning`."""
    if issubclass(category, FairbitsWarning):
        say(f"[bold yellow]warning:[/] {escape(str(message))}")
    else:
        _show_warning(message, category, filename, lineno, file, line)


__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "console", "exit_on_error", "print_warning", "say", "set_offline"]
