"""The ``fairbits`` command line: parse, call the library, print.

:data:`app` is the console script (``fairbits = "fairbits.cli:app"``). One module per
command group, each with a ``register(app)`` that adds its commands:

* :mod:`~fairbits.cli.audit` — ``audit``, ``report``
* :mod:`~fairbits.cli.phantom` — ``phantom``
* :mod:`~fairbits.cli.codecs` — ``codecs``
* :mod:`~fairbits.cli.demo` — ``demo``
* :mod:`~fairbits.cli.train` — ``train-codec``
* :mod:`~fairbits.cli.phenotype` — ``train-phenotype``
* :mod:`~fairbits.cli.fairgen` — ``fairgen fit|sample|study|export``
* :mod:`~fairbits.cli.probe` — ``probe skin-tone``

Every command runs its work inside :func:`fairbits.cli.common.exit_on_error`: a
:class:`~fairbits.errors.FairbitsError` prints ``error: ...`` on stderr and exits with
status 2; an interrupted ``audit`` says how to resume and exits with status 130. Library
modules never import this package.
"""

from __future__ import annotations

import warnings

import typer

from fairbits.cli import audit, codecs, demo, fairgen, phantom, phenotype, probe, train
from fairbits.cli.common import print_warning

# CompressAI's import-time use of torch.jit.script warns on every run; it is not ours to fix.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
warnings.showwarning = print_warning

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Audit demographic bias in face-image codecs.")

# The order of registration is the order of `fairbits --help`.
for group in (audit, phantom, codecs, demo, train, fairgen, phenotype, probe):
    group.register(app)


def main() -> None:  # pragma: no cover
    app()


__all__ = ["app", "main"]
