"""Per-image measures: pixel fidelity, face measures, classifiers (realism is per group).

Importing the package imports the implementations, which register themselves in the
leaf registry :mod:`fairbits.measures.base` (as CompressAI's ``models`` package does).
"""

from fairbits.measures.base import (ColumnKind, Measure, column_kind, get_measure, higher_is_better,
                                    measure_kinds, measure_names, register_measure)
from fairbits.measures import classifiers, face, pixel  # noqa: F401,E402  (register on import)

__all__ = ["ColumnKind", "Measure", "column_kind", "get_measure", "higher_is_better", "measure_kinds",
           "measure_names", "register_measure"]
