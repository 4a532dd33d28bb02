"""Per-image measures: a registry of pure functions.

A measure is ``fn(original, recon, context) -> {column: values}`` where ``original`` and
``recon`` are ``float32 (N, 3, H, W)`` in [0, 1] on one device, ``context`` is a dict of
what was computed once per original, and each value is a 1-D tensor or array of length
N. A measure never reads files. Measures with ``needs_faces`` find the originals' face
analysis in ``context["faces"]`` (a :class:`fairbits.audit.faces.FaceBatch`); for the
others the context is empty.

Some measures depend on the spec (e.g. ``phenotype`` on the classifier files it names):
they are registered as *factories* ``factory(spec) -> Measure`` and resolved when an
audit is planned (:func:`resolve_measure`).

Each output column has a direction (:data:`HIGHER_IS_BETTER`) so bias statistics can
name the *worst* group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from fairbits.errors import SpecError

MeasureFn = Callable[[torch.Tensor, torch.Tensor, dict], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Measure:
    name: str
    columns: tuple[str, ...]
    fn: MeasureFn
    description: str = ""
    needs_faces: bool = False
    directions: dict | None = None  # column → higher-is-better, for factory-made measures


_MEASURES: dict[str, Measure] = {}
_FACTORIES: dict[str, tuple[Callable, str]] = {}

# Direction of every result column a measure (or the runner) writes. ``bpp`` is written
# for every cell: fewer bits for the same setting is better.
HIGHER_IS_BETTER: dict[str, bool] = {"bpp": False}


def register_measure(name: str, columns: dict[str, bool], fn: MeasureFn, description: str = "",
                     needs_faces: bool = False) -> None:
    """Register ``fn`` under ``name``; ``columns`` maps each output column to higher-is-better."""
    _MEASURES[name] = Measure(name, tuple(columns), fn, description, needs_faces)
    HIGHER_IS_BETTER.update(columns)


def register_measure_factory(name: str, factory: Callable, description: str = "") -> None:
    """Register ``factory(spec) -> Measure`` under ``name`` (a measure that needs the spec)."""
    _FACTORIES[name] = (factory, description)


def _load_builtins() -> None:
    from fairbits.measures import classifiers, face, pixel  # noqa: F401  (register on import)


def measure_names() -> list[str]:
    _load_builtins()
    return ["bpp", *sorted([*_MEASURES, *_FACTORIES])]


def get_measure(name: str) -> Measure:
    """A measure that needs no spec; raises SpecError for unknown or spec-dependent names."""
    _load_builtins()
    if name in _FACTORIES:
        raise SpecError(f"measure {name!r} depends on the spec; resolve it with resolve_measure")
    if name not in _MEASURES:
        raise SpecError(f"unknown measure {name!r}; known measures: {', '.join(measure_names())}")
    return _MEASURES[name]


def resolve_measure(name: str, spec) -> Measure:
    """The measure ``name`` for an audit spec (factories are called with the spec)."""
    _load_builtins()
    if name in _FACTORIES:
        m = _FACTORIES[name][0](spec)
        HIGHER_IS_BETTER.update(m.directions or {})
        return m
    return get_measure(name)


def higher_is_better(column: str) -> bool:
    """Direction of a result column (True for unknown columns)."""
    _load_builtins()
    return HIGHER_IS_BETTER.get(column, True)
