"""Bias at equal rate: gaps between groups compared where codecs reach the same bit rate.

Each codec reaches its own rates at its settings, so a gap "at setting q10" of one codec
and "at q10" of another compare different operating points. For every codec with at
least two settings, every group attribute and every headline column (the
``degradation`` and ``drift`` columns, as in ``findings.csv``):

1. **Curves.** At each setting, group ``g``'s mean of the column and mean bpp over the
   same rows (no ``error``, a group label, a finite value, a finite positive bpp). A
   group's curve is its points ``(log mean bpp, mean)`` at the settings where it has at
   least ``min_group_n`` rows, in increasing rate (settings at exactly the same rate are
   averaged). Groups with fewer than two such points are left out (``note``).
2. **Interpolation.** Each curve is interpolated linearly in log bpp at the common
   ``rates`` (default :data:`DEFAULT_RATES`), **only between measured points**: the codec's
   range for the column and attribute is where every compared group has a curve,
   ``[max_g first rate, min_g last rate]`` (``rate_min``, ``rate_max``), and a rate
   outside it gives no row — never an extrapolation.
3. **Gap.** ``gap`` = max − min of the interpolated group means, as in ``findings.csv``;
   ``worst_group`` follows the kind: the lowest mean when higher is better, the highest
   when lower is better, the largest absolute mean for a drift (``best_group`` the
   opposite, the smallest absolute mean for a drift).
4. **Interval.** A percentile bootstrap interval: images are resampled within each
   (setting, group), ``n_boot`` times, the group's mean value and mean bpp recomputed per
   setting, and the curve interpolated again on the segment chosen from the observed
   rates (so the rate's own sampling noise is in the interval). Columns with the same
   usable rows in a (setting, group) share the resampled images; the generator is keyed
   by ``(seed, "equal_rate", attribute, codec, setting, group, those rows)``
   (:func:`fairbits.seeding.keyed_seed`), so results do not depend on processing order or
   on which other columns are analysed, and every rate of a curve is read from the same
   draws. Like every range of noisy means, the interval leans upwards; ``bias.csv`` has
   the tests.

Files: ``RUN_DIR/equal_rate.csv`` (:data:`EQUAL_RATE_COLUMNS`, one row per codec, common
rate, column and attribute) and ``RUN_DIR/equal_rate_curves.csv`` (the same columns on
:data:`CURVE_POINTS` rates spread evenly in log bpp over each codec's range, for the
report's figures).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from fairbits.bias.accuracy import whole_number
from fairbits.bias.intervals import percentile_interval
from fairbits.bias.kinds import DEGRADATION, DRIFT, ColumnKind, resolve_kinds
from fairbits.bias.stats import DEFAULT_MIN_GROUP_N, TESTED_KINDS, error_mask
from fairbits.errors import FairbitsError, SpecError
from fairbits.fileio import atomic_write
from fairbits.seeding import keyed_seed

DEFAULT_RATES = (0.05, 0.1, 0.25, 0.5)  # bits per pixel
CURVE_POINTS = 25  # rates per codec range in equal_rate_curves.csv
_CHUNK_ELEMENTS = 4_000_000  # bound on the resample counts (resamples x rows) held at once
EQUAL_RATE_COLUMNS = ["codec", "rate", "measure", "attribute", "kind", "gap", "gap_ci_low", "gap_ci_high",
                      "worst_group", "best_group", "worst_value", "best_value", "n_groups", "n_settings",
                      "rate_min", "rate_max", "note"]


@dataclass
class GroupCurve:
    """One group's rate–measure curve at one codec: ``S ≥ 2`` points in increasing rate.

    ``log_bpp``/``mean`` ``(S,)``: observed log mean bpp and mean value per point;
    ``boot_log_bpp``/``boot_mean`` ``(n_boot, S)``: the same from resampled images.
    """

    group: str
    log_bpp: np.ndarray
    mean: np.ndarray
    boot_log_bpp: np.ndarray
    boot_mean: np.ndarray

    def at(self, log_rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(values (R,), draws (n_boot, R))`` at ``log_rate`` ``(R,)``, each inside
        ``[log_bpp[0], log_bpp[-1]]``: linear in log bpp on the segment of the observed
        points that holds the rate (the same segment for every draw)."""
        x, y, bx, by = self.log_bpp, self.mean, self.boot_log_bpp, self.boot_mean
        i = np.clip(np.searchsorted(x, log_rate, side="right") - 1, 0, len(x) - 2)
        j = i + 1
        value = y[i] + (log_rate - x[i]) / (x[j] - x[i]) * (y[j] - y[i])
        with np.errstate(divide="ignore", invalid="ignore"):
            draws = by[:, i] + (log_rate - bx[:, i]) / (bx[:, j] - bx[:, i]) * (by[:, j] - by[:, i])
        return value, draws


def check_rates(rates) -> np.ndarray:
    """The common rates as a sorted array of distinct bpp; FairbitsError unless all are
    finite and positive."""
    try:
        r = np.asarray(list(rates), dtype=float)
    except (TypeError, ValueError):
        r = np.array([np.nan])
    if r.ndim != 1 or not len(r) or not np.isfinite(r).all() or (r <= 0).any():
        raise FairbitsError(f"equal-rate rates must be a list of positive bits per pixel, e.g. "
                            f"{list(DEFAULT_RATES)}; got {rates!r}")
    return np.unique(r)


def headline_columns(results: pd.DataFrame, kinds: Mapping[str, ColumnKind]) -> list[str]:
    """Columns of ``results`` whose kind is degradation or drift (``bpp`` excluded), in ``kinds`` order."""
    return [c for c, k in kinds.items() if c in results.columns and c != "bpp" and k.kind in TESTED_KINDS]


def worst_best(kind: ColumnKind, values: np.ndarray) -> tuple[int, int]:
    """Positions of the worst and best group of ``values`` ``(k,)`` for a column kind."""
    if kind.kind == DRIFT:
        return int(np.argmax(np.abs(values))), int(np.argmin(np.abs(values)))
    low, high = int(np.argmin(values)), int(np.argmax(values))
    return (low, high) if kind.kind == DEGRADATION and kind.higher_is_better else (high, low)


def _fold_ties(x: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sort points ``(S,)`` by ``x`` and average points at the same ``x`` (the last axis of
    every array, ``(..., S)``, is folded the same way)."""
    ux, inv = np.unique(x, return_inverse=True)
    weights = np.zeros((len(x), len(ux)))
    weights[np.arange(len(x)), inv] = 1.0
    weights /= weights.sum(axis=0)
    return (ux, *(a @ weights for a in arrays))


def resampled_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Column means of ``n_boot`` resamples (with replacement) of the rows of ``values``
    ``(n, c)`` → ``(n_boot, c)``. One draw of ``n`` row indices per resample serves every
    column: each resample's row counts ``(n,)`` times ``values``. Drawn in chunks of at
    most ~:data:`_CHUNK_ELEMENTS` counts."""
    n = len(values)
    out = np.empty((n_boot, values.shape[1]))
    step = max(1, _CHUNK_ELEMENTS // max(1, n))
    for start in range(0, n_boot, step):
        k = min(step, n_boot - start)
        idx = rng.integers(0, n, size=(k, n)) + (np.arange(k) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=k * n).reshape(k, n)
        out[start:start + k] = counts @ values / n
    return out


def _points(frame: pd.DataFrame, group_col: str, measures: Sequence[str], *, n_boot: int, seed: int,
            min_group_n: int) -> dict[str, dict[str, list[tuple]]]:
    """``{column: {group: [(setting, mean, mean bpp, draws (n_boot, 2))]}}`` of one codec's rows
    at every setting where the group has at least ``min_group_n`` usable rows. Columns with
    the same usable rows in a (setting, group) share one resampling, drawn from a generator
    keyed by the run's seed, the attribute, codec, setting, group and those rows (so a
    column's draws do not depend on which other columns are analysed)."""
    codec = str(frame["codec"].iloc[0])
    out: dict[str, dict[str, list[tuple]]] = {m: {} for m in measures}
    for setting, rows in frame.groupby("setting", sort=False):
        bpp = pd.to_numeric(rows["bpp"], errors="coerce").to_numpy(dtype=float)
        labels = rows[group_col].astype(str).to_numpy()
        labelled = rows[group_col].notna().to_numpy() & np.isfinite(bpp) & (bpp > 0)
        values = np.column_stack([pd.to_numeric(rows[m], errors="coerce").to_numpy(dtype=float) for m in measures])
        for g in sorted(set(labels[labelled])):
            in_g = labelled & (labels == g)
            vg, bg = values[in_g], bpp[in_g]
            usable = np.isfinite(vg)  # (n_g, columns)
            shared: dict[bytes, list[int]] = {}
            for j in range(len(measures)):
                shared.setdefault(np.packbits(usable[:, j]).tobytes(), []).append(j)
            for key, cols in shared.items():
                use = usable[:, cols[0]]
                if use.sum() < min_group_n:
                    continue
                data = np.column_stack([vg[use][:, cols], bg[use]])
                rng = np.random.default_rng(keyed_seed(seed, "equal_rate", group_col, codec, setting, g,
                                                       zlib.crc32(key), len(bg)))
                draws = resampled_means(data, n_boot, rng)
                means = data.mean(axis=0)
                for k, j in enumerate(cols):
                    out[measures[j]].setdefault(g, []).append((str(setting), float(means[k]), float(means[-1]),
                                                               draws[:, [k, -1]]))
    return out


def _curves(points: dict[str, list[tuple]], min_group_n: int) -> tuple[list[GroupCurve], list[str], int]:
    """``(curves, left_out, n_settings)`` of one column from its :func:`_points`: the
    compared groups' curves (sorted by name), the groups left out (with why) and the number
    of settings that give a point to some compared curve."""
    curves, left_out, settings = [], [], set()
    for g in sorted(points):
        p = points[g]
        x = np.log([q[2] for q in p])
        if len(np.unique(x)) < 2:
            left_out.append(f"{g} (at least {min_group_n} images at fewer than two rates)")
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            bx = np.column_stack([np.log(q[3][:, 1]) for q in p])
        by = np.column_stack([q[3][:, 0] for q in p])
        ux, y, bx, by = _fold_ties(x, np.array([q[1] for q in p]), bx, by)
        curves.append(GroupCurve(g, ux, y, bx, by))
        settings |= {q[0] for q in p}
    return curves, left_out, len(settings)


def group_curves(frame: pd.DataFrame, group_col: str, measures: Sequence[str], *, n_boot: int, seed: int,
                 min_group_n: int) -> dict[str, tuple[list[GroupCurve], list[str], int]]:
    """``{column: (curves, left_out, n_settings)}`` of one codec's rows ``frame`` across
    ``group_col`` (see :func:`_curves`)."""
    points = _points(frame, group_col, measures, n_boot=n_boot, seed=seed, min_group_n=min_group_n)
    return {m: _curves(points[m], min_group_n) for m in measures}


def _rows(curves: list[GroupCurve], rates: np.ndarray, kind: ColumnKind, base: dict, ci: float) -> list[dict]:
    """Rows at the ``rates`` (bpp) inside the compared groups' common range."""
    lo = max(c.log_bpp[0] for c in curves)
    hi = min(c.log_bpp[-1] for c in curves)
    keep = (np.log(rates) >= lo) & (np.log(rates) <= hi)
    rates, inside = rates[keep], np.log(rates[keep])
    if not len(inside):
        return []
    got = [c.at(inside) for c in curves]
    values = np.stack([v for v, _ in got], axis=-1)  # (R, k)
    draws = np.stack([d for _, d in got], axis=-1)  # (n_boot, R, k)
    with np.errstate(invalid="ignore"):
        boot_gaps = draws.max(axis=-1) - draws.min(axis=-1)  # (n_boot, R)
    names = [c.group for c in curves]
    rows = []
    for r, rate in enumerate(rates):
        v = values[r]
        w, b = worst_best(kind, v)
        d = boot_gaps[:, r]
        low, high = percentile_interval(d[np.isfinite(d)][:, None], ci)
        rows.append({**base, "rate": float(rate), "gap": float(v.max() - v.min()),
                     "gap_ci_low": float(low[0]), "gap_ci_high": float(high[0]),
                     "worst_group": names[w], "best_group": names[b], "worst_value": float(v[w]),
                     "best_value": float(v[b]), "rate_min": float(np.exp(lo)), "rate_max": float(np.exp(hi))})
    return rows


def equal_rate_tables(results: pd.DataFrame, group_cols: Sequence[str],
                      kinds: Mapping[str, ColumnKind] | None = None, *, rates: Sequence[float] = DEFAULT_RATES,
                      n_boot: int = 1000, seed: int = 0, ci: float = 0.95, min_group_n: int = DEFAULT_MIN_GROUP_N,
                      curve_points: int = CURVE_POINTS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(table, curves)``: gaps at the common ``rates`` and at ``curve_points`` rates
    spread over each codec's range (both :data:`EQUAL_RATE_COLUMNS`).

    ``kinds`` (``{column: ColumnKind}``) chooses the headline columns (degradation and
    drift); None resolves the result columns' kinds from the measures' declarations
    (:func:`fairbits.bias.kinds.resolve_kinds`). Rows: codecs in order of first appearance,
    then columns, attributes and rates.
    """
    rates = check_rates(rates)
    n_boot = whole_number("n_boot", n_boot, 0)
    min_group_n = whole_number("min_group_n", min_group_n, 1)
    curve_points = whole_number("curve_points", curve_points, 2)
    if not list(group_cols):
        raise SpecError("no group columns: name the attributes to compare (the run's 'groups')")
    missing = [c for c in ("codec", "setting", "bpp", *group_cols) if c not in results.columns]
    if missing:
        raise SpecError(f"results have no column(s) {missing}; columns are: {', '.join(map(str, results.columns))}")
    if kinds is None:
        kinds = resolve_kinds([c for c in results.columns if pd.api.types.is_numeric_dtype(results[c])])
    measures = headline_columns(results, kinds)
    clean = results.loc[~error_mask(results)]
    table, curves_out = [], []
    for codec, frame in clean.groupby("codec", sort=False):
        if frame["setting"].nunique() < 2 or not measures:  # one setting: no curve to interpolate
            continue
        per_attribute = {col: group_curves(frame, col, measures, n_boot=n_boot, seed=seed, min_group_n=min_group_n)
                         for col in group_cols}
        for measure in measures:
            for col in group_cols:
                curves, left_out, n_settings = per_attribute[col][measure]
                if len(curves) < 2:
                    continue
                note = ("left out: " + "; ".join(left_out)) if left_out else ""
                base = {"codec": str(codec), "measure": measure, "attribute": col, "kind": kinds[measure].kind,
                        "n_groups": len(curves), "n_settings": n_settings, "note": note}
                table += _rows(curves, rates, kinds[measure], base, ci)
                lo, hi = max(c.log_bpp[0] for c in curves), min(c.log_bpp[-1] for c in curves)
                if lo <= hi:  # the common range, evenly in log bpp, plus the common rates inside it
                    grid = np.unique(np.concatenate([np.exp(np.linspace(lo, hi, curve_points)), rates]))
                    curves_out += _rows(curves, grid, kinds[measure], base, ci)
    return (pd.DataFrame(table, columns=EQUAL_RATE_COLUMNS), pd.DataFrame(curves_out, columns=EQUAL_RATE_COLUMNS))


def equal_rate_table(results: pd.DataFrame, group_cols: Sequence[str],
                     kinds: Mapping[str, ColumnKind] | None = None, **options) -> pd.DataFrame:
    """The gaps at the common rates only (the first table of :func:`equal_rate_tables`)."""
    return equal_rate_tables(results, group_cols, kinds, **options)[0]


def write_equal_rate(run_dir: str | Path, results: pd.DataFrame, group_cols: Sequence[str],
                     kinds: Mapping[str, ColumnKind] | None = None, *, rates: Sequence[float] = DEFAULT_RATES,
                     n_boot: int = 1000, seed: int = 0, min_group_n: int = DEFAULT_MIN_GROUP_N) -> Path | None:
    """Write ``equal_rate.csv`` and ``equal_rate_curves.csv`` into ``run_dir``; returns the
    path of ``equal_rate.csv``, or None (nothing written, earlier files removed) when no
    codec has two settings with two groups to compare. ``equal_rate.csv`` has only its header when no common rate
    falls inside any codec's range. ``kinds`` None: the kinds recorded in ``run.json``,
    else the measures' declarations."""
    run_dir = Path(run_dir)
    if kinds is None:
        info_path = run_dir / "run.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        kinds = resolve_kinds([c for c in results.columns if pd.api.types.is_numeric_dtype(results[c])],
                              run_info=info)
    table, curves = equal_rate_tables(results, group_cols, kinds, rates=rates, n_boot=n_boot, seed=seed,
                                      min_group_n=min_group_n)
    if curves.empty:
        for name in ("equal_rate.csv", "equal_rate_curves.csv"):  # never leave an earlier report's files
            (run_dir / name).unlink(missing_ok=True)
        return None
    atomic_write(run_dir / "equal_rate_curves.csv", lambda tmp: curves.to_csv(tmp, index=False))
    return atomic_write(run_dir / "equal_rate.csv", lambda tmp: table.to_csv(tmp, index=False))


_TEXT = {c: str for c in ("codec", "measure", "attribute", "kind", "worst_group", "best_group", "note")}


def read_equal_rate(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """``(table, curves)`` from a run directory (labels as strings), or None when it has none."""
    run_dir = Path(run_dir)
    paths = [run_dir / "equal_rate.csv", run_dir / "equal_rate_curves.csv"]
    if not all(p.is_file() for p in paths):
        return None
    table, curves = (pd.read_csv(p, dtype=_TEXT) for p in paths)
    for t in (table, curves):
        t["note"] = t["note"].fillna("")
    return table, curves
