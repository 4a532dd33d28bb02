"""Paired (counterfactual) effects: the same face with one attribute changed.

A counterfactual dataset (``fairbits fairgen export --counterfactual``, or any CSV with
a ``pair_id`` column) holds pairs of images that differ in one attribute only. For a
group column ``G`` whose two values split pairs, the paired effect of ``G`` on a
measure in a cell is the mean over pairs of ``value(G = b) − value(G = a)`` (``a`` and
``b`` in sorted order). Pairing removes everything the two images share, so the effect
is that of the attribute alone — far tighter than comparing two unpaired groups.

Intervals are percentile bootstrap intervals over pairs; the p-value is a two-sided
sign-flip permutation test of "no effect" (each pair's difference flips sign at random).
Each row carries its column's ``kind``; the ``q_value`` (Benjamini–Hochberg) is set by
:func:`fairbits.bias.stats.write_stats` over the tests of ``bias.csv`` and ``paired.csv``
together (degradation and drift rows only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from fairbits.bias.intervals import bootstrap_means, percentile_interval
from fairbits.bias.kinds import ColumnKind, resolve_kinds
from fairbits.bias.stats import error_mask, with_q_values
from fairbits.fileio import atomic_write
from fairbits.seeding import keyed_seed

PAIR_COLUMN = "pair_id"
COLUMNS = ["codec", "setting", "measure", "attribute", "kind", "group_a", "group_b", "n_pairs", "mean_a", "mean_b",
           "effect", "ci_low", "ci_high", "p_value", "q_value"]


def pair_differences(frame: pd.DataFrame, group_col: str, measure: str) -> tuple[str, str, pd.DataFrame] | None:
    """Per pair, the measure on each side: ``(a, b, DataFrame[pair_id, a, b])`` for the
    pairs whose two members have the two values of ``group_col``; None if no such pairs."""
    used = frame[frame[PAIR_COLUMN].notna() & frame[group_col].notna()][[PAIR_COLUMN, group_col, measure]]
    values = sorted(used[group_col].astype(str).unique())
    if len(values) != 2:
        return None
    a, b = values
    wide = used.assign(**{group_col: used[group_col].astype(str)}).pivot_table(
        index=PAIR_COLUMN, columns=group_col, values=measure, aggfunc="first")
    if a not in wide or b not in wide:
        return None
    wide = wide[[a, b]].apply(pd.to_numeric, errors="coerce").replace([np.inf, -np.inf], np.nan).dropna()
    return (a, b, wide) if len(wide) else None


def paired_effect(diffs: np.ndarray, *, n_boot: int, n_perm: int, rng: np.random.Generator,
                  ci: float = 0.95) -> tuple[float, float, float, float]:
    """``(mean, ci_low, ci_high, p_value)`` of paired differences ``(n,)``."""
    mean = float(diffs.mean())
    lo, hi = percentile_interval(bootstrap_means(diffs, n_boot, rng), ci)
    signs = rng.choice([-1.0, 1.0], size=(n_perm, len(diffs)))
    null = np.abs((signs * diffs).mean(axis=1))
    p = (1 + np.sum(null >= abs(mean) - 1e-12)) / (n_perm + 1)
    return mean, float(lo), float(hi), float(p)


def paired_table(results: pd.DataFrame, group_cols, measures, *, n_boot: int = 1000, n_perm: int = 1000,
                 seed: int = 0, ci: float = 0.95, kinds: Mapping[str, ColumnKind] | None = None) -> pd.DataFrame:
    """Paired effects (:data:`COLUMNS`) per cell, measure and group column; ``kinds`` as
    :func:`fairbits.bias.kinds.resolve_kinds` takes them (the declarations by default).
    ``q_value`` is NaN here (see the module docstring)."""
    if PAIR_COLUMN not in results.columns:
        return pd.DataFrame(columns=COLUMNS)
    kinds = resolve_kinds([m for m in measures if m in results.columns], kinds=kinds)
    ok = results[~error_mask(results)]
    rows = []
    for (codec, setting), frame in ok.groupby(["codec", "setting"], sort=False):
        for col in group_cols:
            for m in measures:
                if m not in frame.columns:
                    continue
                found = pair_differences(frame, col, m)
                if found is None:
                    continue
                a, b, wide = found
                rng = np.random.default_rng(keyed_seed(seed, "paired", codec, setting, col, m))
                effect = paired_effect((wide[b] - wide[a]).to_numpy(float), n_boot=n_boot, n_perm=n_perm,
                                       rng=rng, ci=ci)
                rows.append([codec, setting, m, col, kinds[m].kind, a, b, len(wide), float(wide[a].mean()),
                             float(wide[b].mean()), *effect, np.nan])
    return pd.DataFrame(rows, columns=COLUMNS)


def write_paired(run_dir: str | Path, results: pd.DataFrame, group_cols, measures, *, n_boot: int = 1000,
                 n_perm: int = 1000, seed: int = 0) -> Path | None:
    """Write ``paired.csv`` alone (q-values over its own tests) when the run's dataset has
    pairs; returns its path. A run's statistics write it with :func:`fairbits.bias.stats.write_stats`."""
    table = with_q_values(paired_table(results, group_cols, measures, n_boot=n_boot, n_perm=n_perm, seed=seed))[0]
    if table.empty:
        return None
    return atomic_write(Path(run_dir) / "paired.csv", lambda tmp: table.to_csv(tmp, index=False))
