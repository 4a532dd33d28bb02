"""Per-image measures: a registry of pure functions.

A measure is ``fn(original, recon, context) -> {column: values}`` where ``original`` and
``recon`` are ``float32 (N, 3, H, W)`` in [0, 1] on one device, ``context`` is a dict of
what was computed once per original (empty for pixel measures), and each value is a
1-D tensor or array of length N. A measure never reads files.

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


_MEASURES: dict[str, Measure] = {}

# Direction of every result column a measure (or the runner) writes. ``bpp`` is written
# for every cell: fewer bits for the same setting is better.
HIGHER_IS_BETTER: dict[str, bool] = {"bpp": False}


def register_measure(name: str, columns: dict[str, bool], fn: MeasureFn, description: str = "") -> None:
    """Register ``fn`` under ``name``; ``columns`` maps each output column to higher-is-better."""
    _MEASURES[name] = Measure(name, tuple(columns), fn, description)
    HIGHER_IS_BETTER.update(columns)


def _load_builtins() -> None:
    from fairbits.measures import pixel  # noqa: F401  (registers on import)


def measure_names() -> list[str]:
    _load_builtins()
    return ["bpp", *sorted(_MEASURES)]


def get_measure(name: str) -> Measure:
    _load_builtins()
    if name not in _MEASURES:
        raise SpecError(f"unknown measure {name!r}; known measures: {', '.join(measure_names())}")
    return _MEASURES[name]


def higher_is_better(column: str) -> bool:
    """Direction of a result column (True for unknown columns)."""
    _load_builtins()
    return HIGHER_IS_BETTER.get(column, True)
