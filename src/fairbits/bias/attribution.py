"""Attribution of a classifier's loss gap to the classifier or to the codec.

For one classifier target ``T``, one cell (codec, setting) and one attribute, let
``R_g`` and ``O_g`` be group ``g``'s mean loss on reconstructions and on originals. The
pair compared is the worst and best group on reconstructions (``a = argmax R``,
``b = argmin R``), and the gap on reconstructions splits exactly::

    R_a − R_b  =  (O_a − O_b)  +  [(R_a − O_a) − (R_b − O_b)]
    total      =  classifier   +  compression

``classifier`` is the bias already present on the originals (it does not depend on
the codec), ``compression`` what coding adds to it. Beside them the label-free
flip-rate gap, ``max_g F_g − min_g F_g`` with ``F_g`` the share of group ``g`` whose
prediction changed, needs no ground truth at all.

Confidence intervals are percentile bootstrap intervals: images are resampled within
each group (the pair held fixed) and every part recomputed on the same draws. Groups
with fewer than ``min_group_n`` labelled rows are left out (a run passes its own
setting, as for the bias table; the default 1 keeps every group).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fairbits.bias.intervals import bootstrap_means, percentile_interval
from fairbits.bias.stats import error_mask
from fairbits.fileio import atomic_write
from fairbits.seeding import keyed_seed

COLUMNS = ["target", "attribute", "codec", "setting", "bpp_mean", "group_a", "group_b", "n_a", "n_b",
           "total_gap", "total_ci_low", "total_ci_high", "classifier_gap", "classifier_ci_low",
           "classifier_ci_high", "compression_gap", "compression_ci_low", "compression_ci_high",
           "flip_gap", "flip_ci_low", "flip_ci_high", "flip_worst_group"]


def classifier_targets(columns) -> list[str]:
    """Targets ``T`` with both ``T_loss_orig`` and ``T_loss_recon`` among ``columns``."""
    cols = set(columns)
    return [c[:-len("_loss_orig")] for c in columns
            if c.endswith("_loss_orig") and c[:-len("_loss_orig")] + "_loss_recon" in cols]


def _interval(draws: np.ndarray, ci: float) -> tuple[float, float]:
    lo, hi = percentile_interval(draws, ci)
    return float(lo), float(hi)


def attribute_cell(frame: pd.DataFrame, group_col: str, target: str, *, n_boot: int, seed: int,
                   ci: float = 0.95, min_group_n: int = 1) -> dict | None:
    """The attribution of one cell's rows (``frame``) across ``group_col``, or None when
    fewer than two groups have ``min_group_n`` labelled rows."""
    o, r, f = f"{target}_loss_orig", f"{target}_loss_recon", f"{target}_flip"
    used = frame[frame[group_col].notna() & frame[o].notna() & frame[r].notna()]
    groups = {g: sub for g, sub in used.groupby(group_col, sort=True) if len(sub) >= min_group_n}
    if len(groups) < 2:
        return None
    R = {g: sub[r].mean() for g, sub in groups.items()}
    a, b = max(R, key=R.get), min(R, key=R.get)
    key = (target, group_col, *frame[["codec", "setting"]].iloc[0])
    rng = np.random.default_rng(keyed_seed(seed, "attribution", *key))
    va, vb = groups[a][[o, r]].to_numpy(float), groups[b][[o, r]].to_numpy(float)
    ba, bb = bootstrap_means(va, n_boot, rng), bootstrap_means(vb, n_boot, rng)
    cls_d = ba[:, 0] - bb[:, 0]
    tot_d = ba[:, 1] - bb[:, 1]
    classifier = va[:, 0].mean() - vb[:, 0].mean()
    total = va[:, 1].mean() - vb[:, 1].mean()
    out = {"target": target, "attribute": group_col, "codec": key[2], "setting": key[3],
           "bpp_mean": float(pd.to_numeric(used["bpp"], errors="coerce").mean()) if "bpp" in used else np.nan,
           "group_a": a, "group_b": b, "n_a": len(va), "n_b": len(vb),
           "total_gap": total, "classifier_gap": classifier, "compression_gap": total - classifier}
    for name, d in (("total", tot_d), ("classifier", cls_d), ("compression", tot_d - cls_d)):
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = _interval(d, ci)
    flips = {g: sub[f].dropna().to_numpy(float) for g, sub in frame[frame[group_col].notna()].groupby(
        group_col, sort=True)} if f in frame else {}
    flips = {g: v for g, v in flips.items() if len(v) >= max(1, min_group_n)}
    if len(flips) >= 2:
        rates = {g: v.mean() for g, v in flips.items()}
        draws = np.stack([bootstrap_means(v, n_boot, rng) for v in flips.values()])
        out["flip_gap"] = max(rates.values()) - min(rates.values())
        out["flip_ci_low"], out["flip_ci_high"] = _interval(draws.max(axis=0) - draws.min(axis=0), ci)
        out["flip_worst_group"] = max(rates, key=rates.get)
    return out


def attribution_table(results: pd.DataFrame, group_cols, *, n_boot: int = 1000, seed: int = 0,
                      ci: float = 0.95, min_group_n: int = 1) -> pd.DataFrame:
    """Attribution rows (:data:`COLUMNS`) for every classifier target, attribute and cell."""
    ok = results[~error_mask(results)]
    rows = []
    for target in classifier_targets(list(results.columns)):
        for col in group_cols:
            for _, frame in ok.groupby(["codec", "setting"], sort=False):
                row = attribute_cell(frame, col, target, n_boot=n_boot, seed=seed, ci=ci, min_group_n=min_group_n)
                if row is not None:
                    rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def write_attribution(run_dir: str | Path, results: pd.DataFrame, group_cols, *, n_boot: int = 1000,
                      seed: int = 0, min_group_n: int = 1) -> Path | None:
    """Write ``attribution.csv`` when the results have classifier losses; returns its path."""
    table = attribution_table(results, group_cols, n_boot=n_boot, seed=seed, min_group_n=min_group_n)
    if table.empty:
        return None
    return atomic_write(Path(run_dir) / "attribution.csv", lambda tmp: table.to_csv(tmp, index=False))
