"""The source paper's bias measure: a classifier's accuracy per group, and its spread.

For every classifier target ``T`` whose results have ``T_correct_orig`` and
``T_correct_recon`` (1 when the prediction on the original / the reconstruction equals
the true label), every cell ``(codec, setting)`` and every group attribute:

* per group ``g``: ``n_g`` labelled images and the accuracy ``A_g`` on the originals and on
  the reconstructions (the same images for both), each with a Wilson score interval;
* across the compared groups, for each side (``orig``, ``recon``):

  - ``gap`` = ``max_g A_g − min_g A_g``: the bias measure of the source paper (on
    reconstructions); on originals it is the classifier's own bias;
  - ``sd`` = the standard deviation of the group accuracies (``ddof=0``: the groups are
    all the groups, not a sample; every group counts once, whatever its size). One
    extreme group among ``k`` moves the range by its whole excess but the SD by about
    ``1/√k`` of it, which answers the objection that max − min reads one group's
    outlier as the system's bias. With two groups ``sd = gap / 2``;
  - ``worst_group`` (lowest accuracy) and ``best_group`` (highest);

* ``gap_change`` = ``gap_recon − gap_orig``: how much coding widened the range.

Intervals of ``gap``, ``sd`` and ``gap_change`` are percentile bootstrap intervals from
resampling images within each group (an image's two outcomes stay together), ``n_boot``
times; the generator is keyed by ``(seed, "accuracy", target, attribute, codec, setting)``
(:func:`fairbits.seeding.keyed_seed`), so results do not depend on processing order. Like
every range of noisy means, the bootstrap range leans upwards: with equal groups the
interval of ``gap`` usually excludes 0 (``bias.csv`` has the permutation test of
``T_correct_recon``).

Rows used: no ``error``, a group label, and both ``T_correct_*`` finite. Groups with fewer
than ``min_group_n`` such rows are listed per group (``below_min_n``) but left out of the
statistics across groups; with fewer than two groups left there is no gap (NaN, ``note``).

Files: ``RUN_DIR/accuracy_bias.csv`` (:data:`BIAS_COLUMNS`, one row per target, attribute
and cell) and ``RUN_DIR/accuracy_groups.csv`` (:data:`GROUP_COLUMNS`, one row per group).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from fairbits.bias.intervals import bootstrap_means, percentile_interval, wilson_interval
from fairbits.bias.stats import DEFAULT_MIN_GROUP_N, error_mask
from fairbits.errors import FairbitsError, SpecError
from fairbits.fileio import atomic_write
from fairbits.seeding import keyed_seed

SIDES = ("recon", "orig")
GROUP_COLUMNS = ["target", "attribute", "codec", "setting", "group", "n", "bpp_mean",
                 "accuracy_orig", "accuracy_orig_ci_low", "accuracy_orig_ci_high",
                 "accuracy_recon", "accuracy_recon_ci_low", "accuracy_recon_ci_high", "below_min_n"]

def _side_columns(side: str) -> list[str]:
    return [f"gap_{side}", f"gap_{side}_ci_low", f"gap_{side}_ci_high", f"sd_{side}", f"sd_{side}_ci_low",
            f"sd_{side}_ci_high", f"worst_group_{side}", f"best_group_{side}", f"worst_accuracy_{side}",
            f"best_accuracy_{side}"]


BIAS_COLUMNS = (["target", "attribute", "codec", "setting", "bpp_mean", "n_groups", "n",
                 "accuracy_orig", "accuracy_recon"]
                + [c for side in SIDES for c in _side_columns(side)]
                + ["gap_change", "gap_change_ci_low", "gap_change_ci_high", "small_groups", "note"])


def accuracy_targets(columns) -> list[str]:
    """Targets ``T`` with both ``T_correct_orig`` and ``T_correct_recon`` among ``columns``, in order."""
    cols = set(columns)
    suffix = "_correct_orig"
    return [c[:-len(suffix)] for c in columns
            if c.endswith(suffix) and len(c) > len(suffix) and c[:-len(suffix)] + "_correct_recon" in cols]


def _check(results: pd.DataFrame, group_cols: Sequence[str], n_boot, min_group_n) -> None:
    if not list(group_cols):
        raise SpecError("no group columns: name the attributes to compare (the run's 'groups')")
    missing = [c for c in group_cols if c not in results.columns]
    if missing:
        raise SpecError(f"results have no group column(s) {missing}; "
                        f"columns are: {', '.join(map(str, results.columns))}")
    whole_number("n_boot", n_boot, 0)
    whole_number("min_group_n", min_group_n, 1)


def whole_number(name: str, value, least: int) -> int:
    """``value`` as an int; raises FairbitsError unless it is a whole number ≥ ``least``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise FairbitsError(f"{name} must be a whole number ≥ {least}, got {value!r}")
    return int(value)


def _spread(acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(max − min, SD with ddof=0)`` over the last axis of group accuracies."""
    return acc.max(axis=-1) - acc.min(axis=-1), acc.std(axis=-1)


def _interval(draws: np.ndarray, ci: float) -> tuple[float, float]:
    lo, hi = percentile_interval(np.asarray(draws, dtype=float)[:, None], ci)
    return float(lo[0]), float(hi[0])


def accuracy_cell(frame: pd.DataFrame, group_col: str, target: str, *, n_boot: int, seed: int, ci: float = 0.95,
                  min_group_n: int = DEFAULT_MIN_GROUP_N) -> tuple[list[dict], dict | None]:
    """``(group rows, bias row)`` of one cell's rows ``frame`` across ``group_col``
    (:data:`GROUP_COLUMNS`, :data:`BIAS_COLUMNS`); ``([], None)`` when no row is usable."""
    o, r = f"{target}_correct_orig", f"{target}_correct_recon"
    vo = pd.to_numeric(frame[o], errors="coerce").to_numpy(dtype=float)
    vr = pd.to_numeric(frame[r], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(vo) & np.isfinite(vr) & frame[group_col].notna().to_numpy()
    if not ok.any():
        return [], None
    codec, setting = (str(v) for v in frame[["codec", "setting"]].iloc[0])
    labels = frame[group_col].astype(str).to_numpy()[ok]
    values = np.column_stack([vo[ok], vr[ok]])
    bpp = (pd.to_numeric(frame["bpp"], errors="coerce").to_numpy(dtype=float)[ok] if "bpp" in frame.columns
           else np.full(len(labels), np.nan))
    groups = sorted(set(labels))
    base = {"target": target, "attribute": group_col, "codec": codec, "setting": setting}
    group_rows, per_group = [], []
    for g in groups:
        v, b = values[labels == g], bpp[labels == g]
        n = len(v)
        row = {**base, "group": g, "n": n, "bpp_mean": float(np.nanmean(b)) if np.isfinite(b).any() else np.nan,
               "below_min_n": n < min_group_n}
        for j, side in enumerate(("orig", "recon")):
            k = float(v[:, j].sum())
            row[f"accuracy_{side}"] = k / n
            row[f"accuracy_{side}_ci_low"], row[f"accuracy_{side}_ci_high"] = wilson_interval(k, n, ci)
        group_rows.append(row)
        per_group.append(v)
    compared = [j for j, v in enumerate(per_group) if len(v) >= min_group_n]
    small = "; ".join(f"{groups[j]} (n={len(per_group[j])})" for j in range(len(groups)) if j not in compared)
    used = np.concatenate([per_group[j] for j in compared]) if compared else np.zeros((0, 2))
    used_bpp = bpp[np.isin(labels, [groups[j] for j in compared])]
    out = {**base, "bpp_mean": float(np.nanmean(used_bpp)) if np.isfinite(used_bpp).any() else np.nan,
           "n_groups": len(compared), "n": len(used),
           "accuracy_orig": float(used[:, 0].mean()) if len(used) else np.nan,
           "accuracy_recon": float(used[:, 1].mean()) if len(used) else np.nan, "small_groups": small}
    notes = []
    if len(compared) < 2:
        notes.append(f"no gap: fewer than two groups with at least {min_group_n} labelled images")
    if small:
        notes.append(f"left out of the gap (fewer than {min_group_n} labelled images): {small}")
    out["note"] = "; ".join(notes)
    if len(compared) < 2:
        return group_rows, {c: out.get(c, np.nan) for c in BIAS_COLUMNS}
    acc = np.array([per_group[j].mean(axis=0) for j in compared])  # (k, 2): orig, recon
    rng = np.random.default_rng(keyed_seed(seed, "accuracy", target, group_col, codec, setting))
    boot = (np.stack([bootstrap_means(per_group[j], n_boot, rng) for j in compared], axis=-1) if n_boot > 0
            else np.zeros((0, 2, len(compared))))  # (n_boot, 2, k)
    gaps, sds = _spread(acc.T)  # (2,) each: orig, recon
    boot_gaps, boot_sds = _spread(boot)  # (n_boot, 2) each
    names = [groups[j] for j in compared]
    for j, side in enumerate(("orig", "recon")):
        a = acc[:, j]
        out[f"gap_{side}"], out[f"sd_{side}"] = float(gaps[j]), float(sds[j])
        out[f"gap_{side}_ci_low"], out[f"gap_{side}_ci_high"] = _interval(boot_gaps[:, j], ci)
        out[f"sd_{side}_ci_low"], out[f"sd_{side}_ci_high"] = _interval(boot_sds[:, j], ci)
        out[f"worst_group_{side}"], out[f"best_group_{side}"] = names[int(np.argmin(a))], names[int(np.argmax(a))]
        out[f"worst_accuracy_{side}"], out[f"best_accuracy_{side}"] = float(a.min()), float(a.max())
    out["gap_change"] = float(gaps[1] - gaps[0])
    out["gap_change_ci_low"], out["gap_change_ci_high"] = _interval(boot_gaps[:, 1] - boot_gaps[:, 0], ci)
    return group_rows, {c: out.get(c, np.nan) for c in BIAS_COLUMNS}


def accuracy_tables(results: pd.DataFrame, group_cols: Sequence[str], *, n_boot: int = 1000, seed: int = 0,
                    ci: float = 0.95, min_group_n: int = DEFAULT_MIN_GROUP_N) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(groups, bias)``: per-group accuracies (:data:`GROUP_COLUMNS`) and the statistics
    across groups (:data:`BIAS_COLUMNS`) for every target, attribute and cell (in order of
    first appearance). Both empty when the results have no ``T_correct_orig``/``_recon`` pair."""
    _check(results, group_cols, n_boot, min_group_n)
    ok = results.loc[~error_mask(results)]
    group_rows, bias_rows = [], []
    for target in accuracy_targets(list(results.columns)):
        for col in group_cols:
            for _, frame in ok.groupby(["codec", "setting"], sort=False):
                g, b = accuracy_cell(frame, col, target, n_boot=int(n_boot), seed=seed, ci=ci,
                                     min_group_n=int(min_group_n))
                group_rows += g
                if b is not None:
                    bias_rows.append(b)
    return pd.DataFrame(group_rows, columns=GROUP_COLUMNS), pd.DataFrame(bias_rows, columns=BIAS_COLUMNS)


def write_accuracy_bias(run_dir: str | Path, results: pd.DataFrame, group_cols: Sequence[str], *,
                        n_boot: int = 1000, seed: int = 0,
                        min_group_n: int = DEFAULT_MIN_GROUP_N) -> Path | None:
    """Write ``accuracy_bias.csv`` and ``accuracy_groups.csv`` into ``run_dir`` when the
    results have a classifier's ``T_correct_orig``/``T_correct_recon`` columns; returns the
    path of ``accuracy_bias.csv`` (None, nothing written and earlier files removed, when
    there is none)."""
    groups, bias = accuracy_tables(results, group_cols, n_boot=n_boot, seed=seed, min_group_n=min_group_n)
    run_dir = Path(run_dir)
    if bias.empty:
        for name in ("accuracy_bias.csv", "accuracy_groups.csv"):  # never leave an earlier report's files
            (run_dir / name).unlink(missing_ok=True)
        return None
    atomic_write(run_dir / "accuracy_groups.csv", lambda tmp: groups.to_csv(tmp, index=False))
    return atomic_write(run_dir / "accuracy_bias.csv", lambda tmp: bias.to_csv(tmp, index=False))


_TEXT = {c: str for c in ("target", "attribute", "codec", "setting", "group", "worst_group_orig", "best_group_orig",
                          "worst_group_recon", "best_group_recon", "small_groups", "note")}


def read_accuracy(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """``(groups, bias)`` from a run directory (labels as strings), or None when it has none."""
    run_dir = Path(run_dir)
    paths = [run_dir / "accuracy_groups.csv", run_dir / "accuracy_bias.csv"]
    if not all(p.is_file() for p in paths):
        return None
    groups, bias = (pd.read_csv(p, dtype=_TEXT) for p in paths)
    groups["below_min_n"] = groups["below_min_n"].astype(str).str.lower().eq("true")
    bias["small_groups"] = bias["small_groups"].fillna("")
    bias["note"] = bias["note"].fillna("")
    return groups, bias
