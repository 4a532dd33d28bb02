"""The kind of every column the statistics are made of (see :class:`fairbits.measures.base.ColumnKind`).

Where a kind comes from, first match wins:

1. ``kinds`` given by the caller;
2. ``run.json``'s ``column_kinds`` (``{column: {"kind", "higher_is_better"}}``), recorded
   when the audit was planned, so ``fairbits report`` works from stored rows;
3. ``directions`` given by the caller (``{column: higher_is_better}``): a degradation;
4. the measures' declarations (:func:`fairbits.measures.base.column_kind`);
5. an old ``run.json`` that only has ``directions``: a degradation in that direction
   (its directions were recorded for every column, drift and descriptive ones too,
   so the declarations win over them);
6. otherwise ``descriptive``: an undeclared column is shown, never ranked as bias.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from fairbits.measures.base import DEGRADATION, DESCRIPTIVE, DRIFT, PROPERTY, ColumnKind, column_kind, degradation

__all__ = ["DEGRADATION", "DESCRIPTIVE", "DRIFT", "ColumnKind", "recorded_kinds", "resolve_kinds"]


def recorded_kinds(run_info: Mapping | None) -> dict[str, ColumnKind]:
    """The ``column_kinds`` record of a ``run.json`` (empty for runs that predate it)."""
    raw = (run_info or {}).get("column_kinds") or {}
    return {str(c): ColumnKind.from_dict(d) for c, d in raw.items()}


def resolve_kinds(columns: Iterable[str], *, kinds: Mapping[str, ColumnKind] | None = None,
                  directions: Mapping[str, bool] | None = None,
                  run_info: Mapping | None = None) -> dict[str, ColumnKind]:
    """``{column: ColumnKind}`` for ``columns`` by the rules of this module."""
    recorded = recorded_kinds(run_info)
    old = dict((run_info or {}).get("directions") or {})
    out = {}
    for c in columns:
        if kinds is not None and c in kinds:
            out[c] = kinds[c]
        elif c in recorded:
            out[c] = recorded[c]
        elif directions is not None and c in directions:
            out[c] = degradation(bool(directions[c]))
        elif (declared := column_kind(c)) is not None:
            out[c] = declared
        elif c in old and isinstance(old[c], bool):
            out[c] = degradation(old[c])
        else:
            out[c] = PROPERTY
    return out
