"""Per-image measures: a leaf registry of pure functions and the kind of every column.

A measure is ``fn(original, recon, context) -> {column: values}`` where ``original`` and
``recon`` are ``float32 (N, 3, H, W)`` in [0, 1] on one device, ``context`` is a dict of
what was computed once per original, and each value is a 1-D tensor or array of length
N. A measure never reads files. Measures with ``needs_faces`` find the originals' face
analysis in ``context["faces"]`` (a :class:`fairbits.audit.faces.FaceBatch`); for the
others the context is empty.

Some measures depend on the spec (e.g. ``phenotype`` on the classifier files it names):
they are registered as *factories* ``factory(spec) -> Measure`` and resolved when an
audit is planned (:func:`resolve_measure`).

Every column a measure writes is declared with its :class:`ColumnKind`, so the bias
statistics know what a difference between groups means:

``degradation``
    what the system did to the image, with a direction (``higher_is_better``): PSNR,
    ΔE, a classifier's accuracy or loss on reconstructions, a flip. Gaps in these are
    the findings; the *worst* group follows the direction.
``drift``
    a signed change where 0 is ideal (``delta_ita``, ``delta_age``…); the *worst* group
    is the one with the largest absolute mean change.
``descriptive``
    a property of the original or of the reconstruction alone (``ita_orig``,
    ``monk_recon``, ``*_pred_*``, a classifier's accuracy on originals); shown per group,
    never ranked as bias.

This module is a leaf: it imports no implementation. ``fairbits.measures`` imports the
implementations (:mod:`.pixel`, :mod:`.face`, :mod:`.classifiers`), which register
themselves, so importing the package fills the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

from fairbits.errors import SpecError

MeasureFn = Callable[..., dict]

DEGRADATION, DRIFT, DESCRIPTIVE = "degradation", "drift", "descriptive"
KINDS = (DEGRADATION, DRIFT, DESCRIPTIVE)


@dataclass(frozen=True)
class ColumnKind:
    """What a result column is: ``kind`` (one of :data:`KINDS`) and, for a degradation,
    whether higher values are better (``None`` for drift and descriptive columns)."""

    kind: str
    higher_is_better: bool | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"column kind must be one of {KINDS}, got {self.kind!r}")
        if (self.kind == DEGRADATION) != isinstance(self.higher_is_better, bool):
            raise ValueError("a degradation column needs higher_is_better True/False; "
                             "drift and descriptive columns take None")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "higher_is_better": self.higher_is_better}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ColumnKind":
        hib = d.get("higher_is_better")
        return cls(str(d["kind"]), None if hib is None else bool(hib))


HIGHER = ColumnKind(DEGRADATION, True)      # a degradation where higher is better (PSNR)
LOWER = ColumnKind(DEGRADATION, False)      # a degradation where lower is better (ΔE, flips)
SIGNED = ColumnKind(DRIFT)                  # a signed change, 0 is ideal
PROPERTY = ColumnKind(DESCRIPTIVE)          # a property of one image


def degradation(higher_is_better: bool) -> ColumnKind:
    """:data:`HIGHER` or :data:`LOWER`."""
    return HIGHER if higher_is_better else LOWER


# Columns the runner writes for every cell, whatever the measures: the rate each group
# gets at a setting describes the operating point, and whether a face was found on the
# original describes the dataset.
RUNNER_COLUMNS: Mapping[str, ColumnKind] = MappingProxyType({"bpp": PROPERTY, "face_found": PROPERTY})


@dataclass(frozen=True)
class Measure:
    """A registered per-image measure.

    ``columns`` are the columns ``fn`` writes, in order; ``kinds`` maps each of them (and
    any ``derived`` column computed from them at statistics time, e.g.
    ``identity_nonmatch``) to its :class:`ColumnKind`.
    """

    name: str
    columns: tuple[str, ...]
    fn: MeasureFn
    description: str = ""
    needs_faces: bool = False
    kinds: Mapping[str, ColumnKind] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self):
        missing = [c for c in self.columns if c not in self.kinds]
        if missing:
            raise ValueError(f"measure {self.name!r} declares no kind for column(s) {missing}")


_MEASURES: dict[str, Measure] = {}
_FACTORIES: dict[str, tuple[Callable, str, Callable[[str], "ColumnKind | None"] | None]] = {}


def register_measure(name: str, columns: Mapping[str, ColumnKind], fn: MeasureFn, description: str = "",
                     needs_faces: bool = False, derived: Mapping[str, ColumnKind] | None = None) -> None:
    """Register ``fn`` under ``name``; ``columns`` maps each column it writes to its kind,
    ``derived`` the columns computed later from them (not written by ``fn``)."""
    kinds = MappingProxyType({**columns, **(derived or {})})
    _MEASURES[name] = Measure(name, tuple(columns), fn, description, needs_faces, kinds)


def register_measure_factory(name: str, factory: Callable, description: str = "",
                             column_kind: Callable[[str], ColumnKind | None] | None = None) -> None:
    """Register ``factory(spec) -> Measure`` under ``name`` (a measure that needs the spec).

    Its columns depend on the spec, so ``column_kind(column)`` says the kind of a column
    such a measure may write (None for columns it never writes); it lets stored rows be
    read without the spec.
    """
    _FACTORIES[name] = (factory, description, column_kind)


def measure_names() -> list[str]:
    return ["bpp", *sorted([*_MEASURES, *_FACTORIES])]


def get_measure(name: str) -> Measure:
    """A measure that needs no spec; raises SpecError for unknown or spec-dependent names."""
    if name in _FACTORIES:
        raise SpecError(f"measure {name!r} depends on the spec; resolve it with resolve_measure")
    if name not in _MEASURES:
        raise SpecError(f"unknown measure {name!r}; known measures: {', '.join(measure_names())}")
    return _MEASURES[name]


def resolve_measure(name: str, spec) -> Measure:
    """The measure ``name`` for an audit spec (factories are called with the spec)."""
    if name in _FACTORIES:
        return _FACTORIES[name][0](spec)
    return get_measure(name)


def column_kind(column: str) -> ColumnKind | None:
    """The declared kind of a result column, from the runner's columns, the registered
    measures (their columns and derived columns) and the factories; None if undeclared."""
    if column in RUNNER_COLUMNS:
        return RUNNER_COLUMNS[column]
    for m in _MEASURES.values():
        if column in m.kinds:
            return m.kinds[column]
    for _, _, kind_of in _FACTORIES.values():
        found = kind_of(column) if kind_of is not None else None
        if found is not None:
            return found
    return None


def measure_kinds(measures) -> dict[str, ColumnKind]:
    """Kinds of every column a set of measures leads to: the runner's columns (``bpp``,
    and ``face_found`` when a measure needs faces), then each measure's declared and
    derived columns, in order."""
    measures = list(measures)
    out = {"bpp": RUNNER_COLUMNS["bpp"]}
    if any(m.needs_faces for m in measures):
        out["face_found"] = RUNNER_COLUMNS["face_found"]
    for m in measures:
        for c in (*m.columns, *m.kinds):
            out.setdefault(c, m.kinds[c])
    return out


def higher_is_better(column: str) -> bool | None:
    """The declared direction of a column: True/False for a degradation, None for drift
    and descriptive columns, True for an undeclared column (kept for callers of the old
    API; statistics use :func:`column_kind`)."""
    kind = column_kind(column)
    return True if kind is None else kind.higher_is_better
