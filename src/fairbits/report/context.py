"""What the report's sections read: :class:`ReportContext`, the run's tables and where figures go.

A section is made by a *builder*, ``builder(ctx: ReportContext) -> Section | None``
(:data:`SectionBuilder`); None leaves the section out (e.g. a run without labels has no
accuracy section). The optional tables of a run (``equal_rate.csv``, ``realism.csv``,
``attribution.csv``, ``accuracy_*.csv``) are read once, on first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from fairbits.bias.findings import findings_table
from fairbits.bias.kinds import ColumnKind, resolve_kinds
from fairbits.bias.stats import run_min_group_n
from fairbits.report.figures import safe_name, save_png
from fairbits.report.kit import Section, figure_html


@dataclass
class ReportContext:
    """The run's tables (``results`` one row per image and cell; ``summary``/``bias``/
    ``pairwise``/``findings`` as in the run's CSVs), its ``run.json`` and the figures folder."""

    run_dir: Path
    results: pd.DataFrame
    manifest: pd.DataFrame
    run_info: dict
    summary: pd.DataFrame
    bias: pd.DataFrame
    pairwise: pd.DataFrame
    figures_dir: Path
    figure_files: list[Path] = field(default_factory=list)
    findings: pd.DataFrame | None = None
    kinds: dict[str, ColumnKind] = field(default_factory=dict)

    def __post_init__(self):
        self.run_dir = Path(self.run_dir)
        # the same resolution as the statistics (run.json's column_kinds first)
        cols = [c for c in self.measures if c not in self.kinds]
        self.kinds.update(resolve_kinds(cols, run_info=self.run_info))
        if self.findings is None:  # tables from before findings.csv existed have no kind: no findings
            self.findings = findings_table(self.bias)

    # ------------------------------------------------------------------ columns and groups
    def kind(self, column: str) -> ColumnKind:
        """The kind of a column (descriptive when nothing declares it)."""
        if column not in self.kinds:
            self.kinds[column] = resolve_kinds([column], run_info=self.run_info)[column]
        return self.kinds[column]

    def direction(self, column: str) -> bool | None:
        """Higher-is-better of a degradation column; None for drift and descriptive columns."""
        return self.kind(column).higher_is_better

    @property
    def min_group_n(self) -> int:
        return run_min_group_n(self.run_info)

    @property
    def measures(self) -> list[str]:
        """Measure columns in the bias table, in order (``bpp`` included)."""
        return list(dict.fromkeys(self.bias["measure"])) if len(self.bias) else []

    @property
    def face_columns(self) -> set[str]:
        """Columns of face measures (shown in the phenotype section, not the pixel ones)."""
        from fairbits.measures.classifiers import is_classifier_column

        cols = set(self.run_info.get("face_columns", [])) | {"identity_nonmatch"}
        return cols | {m for m in self.measures if is_classifier_column(m)}

    @property
    def pixel_measures(self) -> list[str]:
        """:attr:`measures` without the face measures' columns."""
        return [m for m in self.measures if m not in self.face_columns]

    @property
    def attributes(self) -> list[str]:
        """Group columns audited."""
        groups = self.run_info.get("groups") or []
        found = list(dict.fromkeys(self.bias["attribute"])) if len(self.bias) else []
        return [g for g in groups if g in found] + [g for g in found if g not in groups] or list(groups)

    def image_groups(self, attribute: str) -> pd.Series:
        """The group label of every image for ``attribute`` (index ``image_id``; from the
        manifest, else the results; a missing label reads ``(missing)``)."""
        if attribute in self.manifest.columns and "image_id" in self.manifest.columns:
            src = self.manifest
        else:
            src = self.results.drop_duplicates("image_id")
        return src.set_index("image_id")[attribute].astype("string").fillna("(missing)")

    def is_rate(self, column: str) -> bool:
        """Whether ``column`` is a 0/1 outcome (a flip, a changed category, a correct answer):
        every finite value in the results is 0 or 1; columns derived later by name."""
        if column in self.results.columns and pd.api.types.is_numeric_dtype(self.results[column]):
            v = self.results[column].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            return bool(v.size) and bool(np.isin(v, (0.0, 1.0)).all())
        return column == "identity_nonmatch" or column.endswith(("_flip", "_changed"))

    # ------------------------------------------------------------------ optional tables
    @cached_property
    def equal_rate(self) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        """``(equal_rate.csv, equal_rate_curves.csv)`` or None."""
        from fairbits.bias.equal_rate import read_equal_rate

        return read_equal_rate(self.run_dir)

    @cached_property
    def accuracy(self) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        """``(accuracy_groups.csv, accuracy_bias.csv)`` or None (no classifier with labels)."""
        from fairbits.bias.accuracy import read_accuracy

        return read_accuracy(self.run_dir)

    @cached_property
    def realism(self) -> pd.DataFrame | None:
        """``realism.csv`` (group labels as text) or None."""
        path = self.run_dir / "realism.csv"
        if not path.is_file():
            return None
        table = pd.read_csv(path, dtype={"group": str, "attribute": str, "setting": str, "codec": str})
        return None if table.empty else table

    @cached_property
    def attribution(self) -> pd.DataFrame | None:
        """``attribution.csv`` (labels as text) or None."""
        path = self.run_dir / "attribution.csv"
        if not path.is_file():
            return None
        table = pd.read_csv(path, dtype={"group_a": str, "group_b": str, "attribute": str, "setting": str,
                                         "codec": str, "target": str, "flip_worst_group": str})
        return None if table.empty else table

    # ------------------------------------------------------------------ figures
    def figure(self, fig, name: str, caption: str = "") -> str:
        """Save ``fig`` as ``figures/<name>.png`` and return an ``<figure>`` embedding it."""
        path = self.figures_dir / f"{safe_name(name)}.png"
        data = save_png(fig, path)
        self.figure_files.append(path)
        return figure_html(data, caption, alt=name)


SectionBuilder = Callable[[ReportContext], "Section | None"]
