"""Multiple testing: Benjamini–Hochberg q-values over the tests of a run.

A run tests every (codec, setting, measure, attribute): hundreds of tests. The q-value
of a test is the smallest false discovery rate at which the Benjamini–Hochberg step-up
procedure would reject it; "significant" in fairbits means ``q < 0.05``.

Why not Holm or Bonferroni: a permutation p-value is at least ``1 / (n_perm + 1)``
(1/1001 with the default 1000 shuffles). Bonferroni over ``m`` tests needs
``p < 0.05 / m``, which for ``m > 50`` is below that floor, so nothing can ever be
significant, however large the effect; Holm's first step is the same threshold. The
Benjamini–Hochberg threshold for the ``k``-th smallest p-value is ``0.05 k / m``, which
the floor meets once ``k ≥ 20 m / (n_perm + 1)`` tests are that small (14 of 700 tests
with 1000 shuffles): when there are real effects to find, they can be found.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import false_discovery_control

SIGNIFICANCE = 0.05  # q below this is "significant" everywhere in the report


def bh_q_values(p_values) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values) of ``p_values`` ``(m,)``.

    NaN p-values (no test: fewer than two groups) stay NaN and do not count in ``m``.
    Uses :func:`scipy.stats.false_discovery_control` (``method="bh"``).
    """
    p = np.asarray(p_values, dtype=float)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = false_discovery_control(p[ok], method="bh")
    return q
