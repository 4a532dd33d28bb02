"""Per-image measures (pixel fidelity now; phenotype, identity and realism later)."""

from fairbits.measures.base import Measure, get_measure, higher_is_better, measure_names, register_measure

__all__ = ["Measure", "get_measure", "higher_is_better", "measure_names", "register_measure"]
