"""``RUN_DIR/findings.csv``: the headline of a run.

One row per (codec, setting, measure, attribute) of every ``degradation`` and ``drift``
column of ``bias.csv`` — never a descriptive one — ranked:

1. significant rows (``q_value < 0.05``) first;
2. then by the standardised effect size ``effect_size`` = gap / pooled within-group SD
   (largest first). Unlike gap / pooled mean it cannot explode when the mean is near 0
   (a signed drift) and it compares measures in different units. An infinite effect
   (groups that differ but are each constant) ranks first; rows without a gap last.

``worst_group`` follows the declared direction of a degradation and is the group with
the largest absolute mean change for a drift (see :mod:`fairbits.bias.stats`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fairbits.bias.fdr import SIGNIFICANCE
from fairbits.bias.stats import TESTED_KINDS, read_table

FINDINGS_COLUMNS = ["codec", "setting", "measure", "attribute", "kind", "gap", "gap_ci_low", "gap_ci_high",
                    "effect_size", "worst_group", "best_group", "worst_mean", "best_mean", "p_value", "q_value",
                    "significant", "n_groups", "n", "bpp_mean", "note"]


def findings_table(bias: pd.DataFrame, *, significance: float = SIGNIFICANCE) -> pd.DataFrame:
    """The findings (:data:`FINDINGS_COLUMNS`) from a bias table with ``kind`` and ``q_value``."""
    if bias.empty or "kind" not in bias.columns:
        return pd.DataFrame(columns=FINDINGS_COLUMNS)
    f = bias[bias["kind"].isin(TESTED_KINDS)].copy()
    q = pd.to_numeric(f["q_value"], errors="coerce")
    f["significant"] = (q < significance).to_numpy()
    effect = pd.to_numeric(f["effect_size"], errors="coerce").to_numpy(dtype=float)
    rank_effect = np.where(np.isnan(effect), -np.inf, effect)  # no gap: last
    order = np.lexsort((pd.to_numeric(f["p_value"], errors="coerce").fillna(np.inf).to_numpy(),
                        -rank_effect, ~f["significant"].to_numpy()))
    return f.iloc[order][FINDINGS_COLUMNS].reset_index(drop=True)


def read_findings(run_dir: str | Path) -> pd.DataFrame | None:
    """``RUN_DIR/findings.csv`` (labels as strings), or None when the run has none yet."""
    path = Path(run_dir) / "findings.csv"
    if not path.is_file():
        return None
    f = read_table(path)
    if "significant" in f.columns:
        f["significant"] = f["significant"].astype(str).str.lower().eq("true")
    return f
