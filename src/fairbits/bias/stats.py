"""Group statistics and bias measures over a per-image results table.

The unit of analysis is a *cell* ``(codec, setting)`` and one measure column. Within a
cell each image belongs to one group of an attribute (``group_col``, e.g.
``skin_group``). From that we compute:

* per-group mean with a stratified percentile-bootstrap CI (:func:`group_summary`);
* the **gap** = max group mean - min group mean (the largest difference between
  groups), its bootstrap CI, the ratio min/max, the worst and best group and a
  permutation p-value for "all groups equal" (:func:`bias_table`);
* the difference of every pair of group means with a CI (:func:`pairwise_gaps`).

Row rules (per measure):

* rows whose ``error`` is set (not None/NaN/empty) are dropped;
* rows whose value is NaN **or infinite** are dropped (e.g. the PSNR of a lossless
  image is ``inf``: no finite mean exists, so such rows count as missing; ``n`` shows
  how many rows were used);
* rows whose group label is missing are dropped; labels are compared as strings;
* groups left with no rows are skipped.

Randomness: every ``(attribute, codec, setting, measure)`` key gets its own generator,
``numpy.random.default_rng(SeedSequence([seed, crc32(key)]))``, with separate child
streams for the bootstrap and the permutation test, so results do not depend on the
order in which cells are processed, and :func:`group_summary`, :func:`bias_table` and
:func:`pairwise_gaps` use the same bootstrap draws for a given key.

The gap CI is the percentile interval of the gap recomputed on stratified resamples.
The max - min statistic is biased upwards in resamples, so with equal groups the CI
usually excludes 0: judge significance by ``p_value``, and read the CI as the
precision of the gap.

Ratio follows fairlearn's ``MetricFrame.ratio()``: ``min / max`` of the group means,
computed as a plain division for any sign. It is meaningful for positive measures;
with mixed signs it is negative, with both negative it is >= 1, with ``max == 0`` it is
``-inf`` (``min < 0``) or NaN (both 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from fairbits.errors import SpecError
from fairbits.fileio import atomic_write
from fairbits.seeding import keyed_seed

CELL_COLS = ("codec", "setting")
SUMMARY_COLUMNS = ["codec", "setting", "measure", "attribute", "group", "n", "mean", "ci_low", "ci_high",
                   "bpp_mean"]
BIAS_COLUMNS = ["codec", "setting", "measure", "attribute", "gap", "gap_ci_low", "gap_ci_high", "ratio",
                "worst_group", "best_group", "p_value", "n_groups", "n", "mean", "rel_gap", "bpp_mean"]
PAIRWISE_COLUMNS = ["codec", "setting", "measure", "attribute", "group_a", "group_b", "diff", "ci_low",
                    "ci_high"]


# --------------------------------------------------------------------------- helpers
def error_mask(results: pd.DataFrame) -> pd.Series:
    """Boolean Series: True for rows whose ``error`` is set (non-null, non-empty)."""
    if "error" not in results.columns:
        return pd.Series(False, index=results.index)
    err = results["error"]
    return err.notna() & (err.astype(str).str.strip() != "")


def _direction(measure: str, directions: Mapping[str, bool] | None) -> bool:
    """Higher-is-better for ``measure``: ``directions`` override, else the measure registry."""
    if directions is not None and measure in directions:
        return bool(directions[measure])
    from fairbits.measures.base import higher_is_better
    return higher_is_better(measure)


def _rng(seed: int, key: tuple) -> tuple[np.random.Generator, np.random.Generator]:
    """Two independent generators (bootstrap, permutation) derived from ``seed`` and ``key``."""
    boot, perm = keyed_seed(seed, *key).spawn(2)
    return np.random.default_rng(boot), np.random.default_rng(perm)


def _check_columns(results: pd.DataFrame, group_col: str, measures: Sequence[str]) -> None:
    missing = [c for c in (*CELL_COLS, group_col, *measures) if c not in results.columns]
    if missing:
        raise SpecError(f"results have no column(s) {missing}; columns are: {', '.join(map(str, results.columns))}")


# --------------------------------------------------------------------------- core
@dataclass
class CellStats:
    """Everything computed for one ``(codec, setting, measure)`` cell and one attribute."""

    codec: str
    setting: str
    measure: str
    attribute: str
    groups: list[str]  # sorted group labels with n > 0
    n: np.ndarray  # rows used per group
    means: np.ndarray  # group means
    bpp: np.ndarray  # mean bpp of the used rows per group
    boot: np.ndarray  # (n_boot, n_groups) bootstrap group means
    p_value: float
    pooled_mean: float
    pooled_bpp: float


_CHUNK_ELEMENTS = 4_000_000  # bound on resample matrix size (rows x images) held at once


def _chunks(n_rows: int, width: int) -> list[slice]:
    """Row slices of ``range(n_rows)`` so that each block has at most ~:data:`_CHUNK_ELEMENTS` entries."""
    step = max(1, _CHUNK_ELEMENTS // max(1, width))
    return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


def bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of the rows of ``values``.

    ``values`` ``(n,)`` → ``(n_boot,)``; ``(n, c)`` → ``(n_boot, c)`` (rows resampled
    together, so paired columns stay paired). Drawn in memory-bounded chunks.
    """
    v = np.asarray(values, dtype=float)
    out = np.empty((n_boot, *v.shape[1:]))
    for rows in _chunks(n_boot, len(v)):
        idx = rng.integers(0, len(v), size=(rows.stop - rows.start, len(v)))
        out[rows] = v[idx].mean(axis=1)
    return out


def _bootstrap_means(values: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n_groups)`` means of resamples drawn with replacement within each group."""
    return np.stack([bootstrap_means(v, n_boot, rng) for v in values], axis=1) if values else np.empty((n_boot, 0))


def _permutation_p(values: list[np.ndarray], observed: float, n_perm: int, rng: np.random.Generator) -> float:
    """p-value of "all groups equal" by shuffling group labels; statistic = max - min of means."""
    if len(values) < 2 or n_perm <= 0:
        return float("nan")
    pooled = np.concatenate(values)
    sizes = np.array([len(v) for v in values])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    # Shuffling labels with fixed group sizes == shuffling values against fixed slices.
    stats = np.empty(n_perm)
    for rows in _chunks(n_perm, len(pooled)):
        shuffled = rng.permuted(np.broadcast_to(pooled, (rows.stop - rows.start, len(pooled))), axis=1)
        means = np.add.reduceat(shuffled, starts, axis=1) / sizes
        stats[rows] = means.max(axis=1) - means.min(axis=1)
    tol = 1e-12 * max(1.0, abs(observed), float(np.abs(pooled).max()))
    return float((1 + np.count_nonzero(stats >= observed - tol)) / (1 + n_perm))


def _cell_stats(frame: pd.DataFrame, key: tuple, group_col: str, measure: str, *, n_boot: int, n_perm: int,
                seed: int) -> CellStats:
    """Compute group means, bootstrap draws and the permutation p-value of one cell."""
    codec, setting = key
    vals = pd.to_numeric(frame[measure], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(vals) & frame[group_col].notna().to_numpy()
    used = frame.loc[ok]
    labels = used[group_col].astype(str).to_numpy()
    vals = vals[ok]
    bpp_all = (pd.to_numeric(used["bpp"], errors="coerce").to_numpy(dtype=float) if "bpp" in used.columns
               else np.full(len(used), np.nan))
    groups = sorted(set(labels))
    per_group = [vals[labels == g] for g in groups]
    bpp_group = [bpp_all[labels == g] for g in groups]
    rng_boot, rng_perm = _rng(seed, (group_col, codec, setting, measure))
    means = np.array([v.mean() for v in per_group])
    boot = _bootstrap_means(per_group, n_boot, rng_boot) if n_boot > 0 else np.empty((0, len(groups)))
    gap = float(means.max() - means.min()) if len(groups) else float("nan")
    p = _permutation_p(per_group, gap, n_perm, rng_perm)
    with np.errstate(all="ignore"):
        bpp_means = np.array([np.nanmean(b) if np.isfinite(b).any() else np.nan for b in bpp_group])
        pooled_bpp = float(np.nanmean(bpp_all)) if np.isfinite(bpp_all).any() else float("nan")
    return CellStats(str(codec), str(setting), measure, group_col, groups, np.array([len(v) for v in per_group]),
                     means, bpp_means, boot, p, float(vals.mean()) if len(vals) else float("nan"), pooled_bpp)


def _analyse(results: pd.DataFrame, group_col: str, measures: Sequence[str], *, n_boot: int, n_perm: int,
             seed: int) -> list[CellStats]:
    """:class:`CellStats` for every cell (in order of first appearance) and measure."""
    measures = list(measures)
    _check_columns(results, group_col, measures)
    clean = results.loc[~error_mask(results)]
    out = []
    for key, frame in clean.groupby(list(CELL_COLS), sort=False, dropna=False):
        for m in measures:
            out.append(_cell_stats(frame, key, group_col, m, n_boot=n_boot, n_perm=n_perm, seed=seed))
    return out


def percentile_interval(draws: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of ``draws`` along axis 0 (NaN when there are no draws)."""
    if draws.shape[0] == 0:
        nan = np.full(draws.shape[1:], np.nan)
        return nan, nan
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha], axis=0)
    return lo, hi


# --------------------------------------------------------------------------- tables
def _summary_rows(cells: Iterable[CellStats], ci: float) -> pd.DataFrame:
    rows = []
    for c in cells:
        lo, hi = percentile_interval(c.boot, ci)
        for k, g in enumerate(c.groups):
            rows.append((c.codec, c.setting, c.measure, c.attribute, g, int(c.n[k]), c.means[k], lo[k], hi[k],
                         c.bpp[k]))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _bias_rows(cells: Iterable[CellStats], ci: float, directions: Mapping[str, bool] | None) -> pd.DataFrame:
    rows = []
    for c in cells:
        base = (c.codec, c.setting, c.measure, c.attribute)
        if not c.groups:
            rows.append((*base, np.nan, np.nan, np.nan, np.nan, None, None, np.nan, 0, 0, np.nan, np.nan,
                         c.pooled_bpp))
            continue
        gap = float(c.means.max() - c.means.min())
        lo, hi = percentile_interval((c.boot.max(axis=1) - c.boot.min(axis=1))[:, None], ci)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = float(np.float64(c.means.min()) / np.float64(c.means.max()))
            rel = float(gap / abs(c.pooled_mean)) if c.pooled_mean != 0 else float("nan")
        hib = _direction(c.measure, directions)
        lowest, highest = c.groups[int(np.argmin(c.means))], c.groups[int(np.argmax(c.means))]
        worst, best = (lowest, highest) if hib else (highest, lowest)
        rows.append((*base, gap, float(lo[0]), float(hi[0]), ratio, worst, best, c.p_value, len(c.groups),
                     int(c.n.sum()), c.pooled_mean, rel, c.pooled_bpp))
    return pd.DataFrame(rows, columns=BIAS_COLUMNS)


def _pairwise_rows(cells: Iterable[CellStats], ci: float) -> pd.DataFrame:
    rows = []
    for c in cells:
        for a in range(len(c.groups)):
            for b in range(a + 1, len(c.groups)):
                lo, hi = percentile_interval((c.boot[:, a] - c.boot[:, b])[:, None], ci)
                rows.append((c.codec, c.setting, c.measure, c.attribute, c.groups[a], c.groups[b],
                             float(c.means[a] - c.means[b]), float(lo[0]), float(hi[0])))
    return pd.DataFrame(rows, columns=PAIRWISE_COLUMNS)


def group_summary(results: pd.DataFrame, group_col: str, measures: Sequence[str], *, n_boot: int = 1000,
                  seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
    """Mean of each measure per group and cell, with a percentile-bootstrap CI.

    Returns one row per ``(codec, setting, measure, group)`` with columns
    :data:`SUMMARY_COLUMNS`; ``attribute`` is ``group_col``, ``n`` the rows used and
    ``bpp_mean`` the mean bpp of those same rows. Groups with no usable row are omitted.
    """
    return _summary_rows(_analyse(results, group_col, measures, n_boot=n_boot, n_perm=0, seed=seed), ci)


def bias_table(results: pd.DataFrame, group_col: str, measures: Sequence[str], *, n_boot: int = 1000,
               n_perm: int = 1000, seed: int = 0, ci: float = 0.95,
               directions: Mapping[str, bool] | None = None) -> pd.DataFrame:
    """Gap between groups for each ``(codec, setting, measure)``; columns :data:`BIAS_COLUMNS`.

    ``gap`` = max - min of group means with a stratified-bootstrap CI; ``ratio`` = min/max
    (fairlearn's convention); ``worst_group`` is the lowest mean when the measure is
    higher-is-better (``directions`` or the measure registry), else the highest;
    ``p_value`` = ``(1 + #{perm gap >= observed}) / (1 + n_perm)`` from shuffling group
    labels within the cell (NaN with fewer than two groups); ``n`` and ``mean`` are the
    pooled count and mean of the used rows, ``rel_gap`` = ``gap / |mean|``. A cell with no
    usable row gives a row with ``n_groups == 0`` and NaN statistics.
    """
    cells = _analyse(results, group_col, measures, n_boot=n_boot, n_perm=n_perm, seed=seed)
    return _bias_rows(cells, ci, directions)


def pairwise_gaps(results: pd.DataFrame, group_col: str, measures: Sequence[str], *, n_boot: int = 1000,
                  seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
    """``mean_a - mean_b`` for every pair of groups (``group_a < group_b``), with a bootstrap CI.

    Emitted for every cell with at least two groups (also when there are exactly two).
    Columns :data:`PAIRWISE_COLUMNS`.
    """
    return _pairwise_rows(_analyse(results, group_col, measures, n_boot=n_boot, n_perm=0, seed=seed), ci)


def summarize_run(results: pd.DataFrame, group_cols: Sequence[str], measures: Sequence[str], *,
                  n_boot: int = 1000, n_perm: int = 1000, seed: int = 0, ci: float = 0.95,
                  directions: Mapping[str, bool] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(summary, bias, pairwise)`` for every attribute in ``group_cols``, stacked.

    Each cell is analysed once per attribute, so this is cheaper than calling the three
    functions separately; the tables are identical to theirs.
    """
    summaries, biases, pairs = [], [], []
    for col in group_cols:
        cells = _analyse(results, col, measures, n_boot=n_boot, n_perm=n_perm, seed=seed)
        summaries.append(_summary_rows(cells, ci))
        biases.append(_bias_rows(cells, ci, directions))
        pairs.append(_pairwise_rows(cells, ci))

    def stack(frames, columns):
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    return stack(summaries, SUMMARY_COLUMNS), stack(biases, BIAS_COLUMNS), stack(pairs, PAIRWISE_COLUMNS)


# --------------------------------------------------------------------------- run directory
def measure_columns(results: pd.DataFrame, measures: Iterable[str], *, include_bpp: bool = True) -> list[str]:
    """Result columns for measure *names* (as in ``run.json``), keeping only present ones.

    A name that is itself a column is used as is; otherwise the registry's columns for
    that measure are used. ``bpp`` comes first when ``include_bpp`` and present.
    """
    cols: list[str] = ["bpp"] if include_bpp and "bpp" in results.columns else []
    for name in measures:
        if name in results.columns:
            candidates = [name]
        else:
            try:
                from fairbits.measures.base import get_measure
                candidates = list(get_measure(name).columns)
            except (SpecError, ImportError):
                candidates = []
        cols += [c for c in candidates if c in results.columns and c not in cols]
    return cols


def write_stats(run_dir: str | Path, results: pd.DataFrame | None = None, *,
                group_cols: Sequence[str] | None = None, measures: Sequence[str] | None = None,
                n_boot: int | None = None, n_perm: int | None = None, seed: int | None = None,
                ci: float = 0.95) -> dict[str, Path]:
    """Write ``summary.csv``, ``bias.csv`` and ``pairwise.csv`` into ``run_dir``.

    Unspecified arguments come from the run: ``results`` from
    :func:`fairbits.audit.store.load_results`, ``group_cols``/``measures``/``seed`` from
    ``run.json`` (measure names are expanded to their result columns, plus ``bpp``),
    ``n_boot``/``n_perm`` from ``run.json`` or 1000; column directions recorded in
    ``run.json`` (``directions``) override the measure registry.
    Returns ``{"summary": path, "bias": path, "pairwise": path}``.
    """
    run_dir = Path(run_dir)
    info_path = run_dir / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if results is None:
        from fairbits.audit.store import load_results
        results = load_results(run_dir)
    group_cols = list(group_cols if group_cols is not None else info.get("groups", []))
    if not group_cols:
        raise SpecError("no group columns: pass group_cols or record 'groups' in run.json")
    cols = measure_columns(results, measures if measures is not None else info.get("measures", []))
    seed = int(seed if seed is not None else info.get("seed", 0))
    n_boot = int(n_boot if n_boot is not None else info.get("n_boot", 1000))
    n_perm = int(n_perm if n_perm is not None else info.get("n_perm", 1000))
    tables = summarize_run(results, group_cols, cols, n_boot=n_boot, n_perm=n_perm, seed=seed, ci=ci,
                           directions=info.get("directions"))
    paths = {}
    for name, table in zip(("summary", "bias", "pairwise"), tables):
        paths[name] = atomic_write(run_dir / f"{name}.csv", lambda tmp, t=table: t.to_csv(tmp, index=False))
    return paths


def read_stats(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read the CSVs written by :func:`write_stats`, keeping labels as strings."""
    run_dir = Path(run_dir)
    text = {c: str for c in ("codec", "setting", "measure", "attribute", "group", "worst_group", "best_group",
                             "group_a", "group_b")}
    return tuple(pd.read_csv(run_dir / f"{n}.csv", dtype=text) for n in ("summary", "bias", "pairwise"))
