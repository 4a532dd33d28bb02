"""Group statistics and bias measures over a per-image results table.

The unit of analysis is a *cell* ``(codec, setting)`` and one measure column. Within a
cell each image belongs to one group of an attribute (``group_col``, e.g.
``skin_group``). From that we compute:

* per-group mean, standard deviation and a confidence interval that holds on skewed
  measures and on rates (:mod:`fairbits.bias.intervals`: Wilson for 0/1 columns,
  studentized bootstrap otherwise) (:func:`group_summary`);
* the **gap** = max group mean − min group mean (the largest difference between
  groups), its bootstrap CI, the ratio min/max, the worst and best group, a
  permutation p-value for "all groups equal", a Benjamini–Hochberg q-value and a
  standardised effect size, gap / pooled within-group SD (:func:`bias_table`);
* the difference of every pair of group means with a CI (:func:`pairwise_gaps`).

What a gap means depends on the column's kind (:mod:`fairbits.bias.kinds`): for a
``degradation`` the worst group follows the declared direction; for a ``drift`` (a
signed change, 0 ideal) the worst group has the largest absolute mean change and the
best the smallest; a ``descriptive`` column (a property of the images) has no worst or
best group and no q-value — it is described, never ranked as bias.

Small groups. A group with fewer than ``min_group_n`` usable rows (default
:data:`DEFAULT_MIN_GROUP_N`) is reported in the summary (with its n and CI, flagged
``below_min_n``) but left out of the gap, the worst/best group, the pairwise
differences and the test; the bias row's ``small_groups`` and ``note`` name it. With
fewer than two groups of enough rows there is no gap: NaN, with a note (never 0).

Row rules (per measure):

* rows whose ``error`` is set (not None/NaN/empty) are dropped;
* rows whose value is NaN **or infinite** are dropped (e.g. the PSNR of a lossless
  image is ``inf``: no finite mean exists, so such rows count as missing; ``n`` shows
  how many rows were used);
* rows whose group label is missing are dropped; labels are compared as strings;
* groups left with no rows are skipped.

Randomness: seeds come from :func:`fairbits.seeding.keyed_seed`
(``SeedSequence([seed, crc32(key)])``), so results do not depend on the order in which
cells are processed. The bootstrap of every ``(attribute, codec, setting, measure)`` uses
the first child stream of ``keyed_seed(seed, attribute, codec, setting, measure)``, so
:func:`group_summary`, :func:`bias_table` and :func:`pairwise_gaps` use the same bootstrap
draws for a given key. The permutation test draws its ``n_perm`` permutations once per
``(attribute, codec, setting)``, from ``keyed_seed(seed, "permutation", attribute, codec,
setting)``, and every measure column of the cell is tested on those same permutations
(:mod:`fairbits.bias.permutation`); a column's p-value does not depend on which other
columns are analysed with it.

The gap CI is the percentile interval of the gap recomputed on stratified resamples.
The max - min statistic is biased upwards in resamples, so with equal groups the CI
usually excludes 0: judge significance by ``q_value``, and read the CI as the
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

from fairbits.bias.fdr import bh_q_values
from fairbits.bias.intervals import bootstrap_mean_sd, mean_interval, percentile_interval
from fairbits.bias.kinds import DEGRADATION, DRIFT, ColumnKind, resolve_kinds
from fairbits.bias.permutation import permutation_p_values
from fairbits.errors import FairbitsError, SpecError
from fairbits.fileio import atomic_write
from fairbits.seeding import keyed_seed

CELL_COLS = ("codec", "setting")
DEFAULT_MIN_GROUP_N = 10
SUMMARY_COLUMNS = ["codec", "setting", "measure", "attribute", "group", "n", "mean", "ci_low", "ci_high",
                   "bpp_mean", "sd", "ci_method", "below_min_n"]
BIAS_COLUMNS = ["codec", "setting", "measure", "attribute", "kind", "gap", "gap_ci_low", "gap_ci_high", "ratio",
                "worst_group", "best_group", "worst_mean", "best_mean", "p_value", "q_value", "effect_size",
                "n_groups", "n", "mean", "rel_gap", "bpp_mean", "small_groups", "note"]
PAIRWISE_COLUMNS = ["codec", "setting", "measure", "attribute", "group_a", "group_b", "diff", "ci_low",
                    "ci_high"]
TESTED_KINDS = (DEGRADATION, DRIFT)  # kinds whose tests are claims about the system


# --------------------------------------------------------------------------- helpers
def error_mask(results: pd.DataFrame) -> pd.Series:
    """Boolean Series: True for rows whose ``error`` is set (non-null, non-empty)."""
    if "error" not in results.columns:
        return pd.Series(False, index=results.index)
    err = results["error"]
    return err.notna() & (err.astype(str).str.strip() != "")


def _boot_rng(seed: int, key: tuple) -> np.random.Generator:
    """The bootstrap generator of ``key`` = ``(attribute, codec, setting, measure)``: the first
    child stream of ``keyed_seed(seed, *key)``."""
    return np.random.default_rng(keyed_seed(seed, *key).spawn(1)[0])


def _perm_rng(seed: int, group_col: str, codec: str, setting: str) -> np.random.Generator:
    """The permutation generator of one ``(attribute, codec, setting)``, shared by its columns."""
    return np.random.default_rng(keyed_seed(seed, "permutation", group_col, codec, setting))


def _check_columns(results: pd.DataFrame, group_col: str, measures: Sequence[str]) -> None:
    missing = [c for c in (*CELL_COLS, group_col, *measures) if c not in results.columns]
    if missing:
        raise SpecError(f"results have no column(s) {missing}; columns are: {', '.join(map(str, results.columns))}")


def _check_min_group_n(min_group_n) -> int:
    if isinstance(min_group_n, bool) or not isinstance(min_group_n, (int, np.integer)) or min_group_n < 1:
        raise FairbitsError(f"min_group_n must be a whole number of images ≥ 1, got {min_group_n!r}")
    return int(min_group_n)


# --------------------------------------------------------------------------- core
@dataclass
class CellStats:
    """Everything computed for one ``(codec, setting, measure)`` cell and one attribute.

    Per-group arrays have one entry per label in ``groups`` (sorted, n > 0); ``eligible``
    marks the groups with at least ``min_group_n`` rows, the only ones compared.
    """

    codec: str
    setting: str
    measure: str
    attribute: str
    groups: list[str]
    n: np.ndarray  # rows used per group
    means: np.ndarray  # group means
    sds: np.ndarray  # group standard deviations (ddof=1; NaN for n < 2)
    ci_low: np.ndarray  # group-mean confidence intervals
    ci_high: np.ndarray
    ci_method: list[str]
    bpp: np.ndarray  # mean bpp of the used rows per group
    eligible: np.ndarray  # bool, n >= min_group_n
    boot: np.ndarray  # (n_boot, n_groups) bootstrap group means
    p_value: float  # permutation test over the eligible groups
    pooled_bpp: float
    min_group_n: int

    @property
    def compared(self) -> np.ndarray:
        """Indices of the eligible groups."""
        return np.flatnonzero(self.eligible)


def _cell_stats(frame: pd.DataFrame, key: tuple, group_col: str, measure: str, *, n_boot: int, seed: int,
                ci: float, min_group_n: int) -> CellStats:
    """Group statistics and bootstrap draws of one cell; ``p_value`` NaN until :func:`_test_cell`."""
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
    rng_boot = _boot_rng(seed, (group_col, codec, setting, measure))
    k = len(groups)
    boot = np.empty((max(n_boot, 0), k))
    lo, hi, methods = np.full(k, np.nan), np.full(k, np.nan), []
    for j, v in enumerate(per_group):  # groups in sorted order: the draws do not depend on other cells
        bm, bs = bootstrap_mean_sd(v, n_boot, rng_boot) if n_boot > 0 else (np.empty(0), np.empty(0))
        boot[:, j] = bm
        lo[j], hi[j], method = mean_interval(v, bm, bs, ci)
        methods.append(method)
    n = np.array([len(v) for v in per_group], dtype=int)
    means = np.array([v.mean() for v in per_group])
    sds = np.array([v.std(ddof=1) if len(v) > 1 else np.nan for v in per_group])
    eligible = n >= min_group_n
    with np.errstate(all="ignore"):
        bpp_means = np.array([np.nanmean(b) if np.isfinite(b).any() else np.nan
                              for b in (bpp_all[labels == g] for g in groups)])
        pooled_bpp = float(np.nanmean(bpp_all)) if np.isfinite(bpp_all).any() else float("nan")
    return CellStats(str(codec), str(setting), measure, group_col, groups, n, means, sds, lo, hi, methods,
                     bpp_means, eligible, boot, float("nan"), pooled_bpp, min_group_n)


def _analyse(results: pd.DataFrame, group_col: str, measures: Sequence[str], *, n_boot: int, n_perm: int,
             seed: int, ci: float = 0.95, min_group_n: int = DEFAULT_MIN_GROUP_N) -> list[CellStats]:
    """:class:`CellStats` for every cell (in order of first appearance) and measure."""
    measures = list(measures)
    min_group_n = _check_min_group_n(min_group_n)
    _check_columns(results, group_col, measures)
    clean = results.loc[~error_mask(results)]
    out = []
    for key, frame in clean.groupby(list(CELL_COLS), sort=False, dropna=False):
        cells = [_cell_stats(frame, key, group_col, m, n_boot=n_boot, seed=seed, ci=ci, min_group_n=min_group_n)
                 for m in measures]
        if n_perm > 0 and cells:
            _test_cell(frame, group_col, cells, n_perm=n_perm, seed=seed)
        out += cells
    return out


def _test_cell(frame: pd.DataFrame, group_col: str, cells: Sequence[CellStats], *, n_perm: int, seed: int) -> None:
    """Set ``p_value`` of every column of one cell (``cells``, one per measure) from one set of
    ``n_perm`` permutations of the cell's labelled rows. A column's test uses the rows
    :func:`_cell_stats` used for its compared groups (finite value, group with at least
    ``min_group_n`` such rows); with fewer than two such groups its p-value stays NaN."""
    labelled = frame[group_col].notna().to_numpy()
    names, codes = np.unique(frame[group_col].astype(str).to_numpy()[labelled], return_inverse=True)
    values = np.column_stack([pd.to_numeric(frame[c.measure], errors="coerce").to_numpy(dtype=float)[labelled]
                              for c in cells])
    compared = np.column_stack([np.array([g in chosen for g in names], dtype=bool)[codes]
                                for chosen in ({c.groups[j] for j in c.compared} for c in cells)])
    observed = np.array([np.ptp(c.means[c.compared]) if len(c.compared) >= 2 else np.nan for c in cells])
    c0 = cells[0]
    p = permutation_p_values(values, codes, np.isfinite(values) & compared, observed, n_perm,
                             _perm_rng(seed, group_col, c0.codec, c0.setting))
    for c, pv in zip(cells, p):
        c.p_value = float(pv)


# --------------------------------------------------------------------------- tables
def _summary_rows(cells: Iterable[CellStats]) -> pd.DataFrame:
    rows = []
    for c in cells:
        for k, g in enumerate(c.groups):
            rows.append((c.codec, c.setting, c.measure, c.attribute, g, int(c.n[k]), c.means[k], c.ci_low[k],
                         c.ci_high[k], c.bpp[k], c.sds[k], c.ci_method[k], not bool(c.eligible[k])))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _worst_best(kind: ColumnKind, means: np.ndarray) -> tuple[int | None, int | None]:
    """Positions (into ``means``) of the worst and best group for a column kind."""
    if kind.kind == DEGRADATION:
        lowest, highest = int(np.argmin(means)), int(np.argmax(means))
        return (lowest, highest) if kind.higher_is_better else (highest, lowest)
    if kind.kind == DRIFT:
        return int(np.argmax(np.abs(means))), int(np.argmin(np.abs(means)))
    return None, None


def _pooled_sd(n: np.ndarray, sds: np.ndarray) -> float:
    """Pooled within-group SD, ``sqrt(Σ (n_g − 1) s_g² / Σ (n_g − 1))`` (NaN without dof)."""
    dof = n - 1
    keep = dof > 0
    if not keep.any():
        return float("nan")
    return float(np.sqrt(np.sum(dof[keep] * sds[keep] ** 2) / np.sum(dof[keep])))


def _note(c: CellStats) -> tuple[str, str]:
    """``(small_groups, note)`` of a cell: the groups left out and why there is no gap."""
    small = "; ".join(f"{g} (n={n})" for g, n, e in zip(c.groups, c.n, c.eligible) if not e)
    notes = []
    if not c.groups:
        notes.append("no usable rows")
    elif len(c.compared) < 2:
        notes.append(f"no gap: fewer than two groups with at least {c.min_group_n} images")
    if small:
        notes.append(f"left out of the gap and test (fewer than {c.min_group_n} images): {small}")
    return small, "; ".join(notes)


def _bias_rows(cells: Iterable[CellStats], ci: float, kinds: Mapping[str, ColumnKind]) -> pd.DataFrame:
    rows = []
    for c in cells:
        kind = kinds[c.measure]
        base = (c.codec, c.setting, c.measure, c.attribute, kind.kind)
        small, note = _note(c)
        e = c.compared
        n_used = int(c.n[e].sum())
        pooled = float(np.sum(c.means[e] * c.n[e]) / n_used) if n_used else float("nan")
        if len(e) < 2:
            rows.append((*base, np.nan, np.nan, np.nan, np.nan, None, None, np.nan, np.nan, np.nan, np.nan, np.nan,
                         len(e), n_used, pooled, np.nan, c.pooled_bpp, small, note))
            continue
        means, boot = c.means[e], c.boot[:, e]
        gap = float(means.max() - means.min())
        lo, hi = percentile_interval((boot.max(axis=1) - boot.min(axis=1))[:, None], ci)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = float(np.float64(means.min()) / np.float64(means.max()))
            rel = float(gap / abs(pooled)) if pooled != 0 else float("nan")
            sd = _pooled_sd(c.n[e], c.sds[e])
            tol = 1e-12 * max(1.0, float(np.abs(means).max()))  # round-off, not a difference
            effect = 0.0 if gap <= tol else (float(gap / sd) if sd > tol else float("inf"))
        w, b = _worst_best(kind, means)
        worst, best = (None, None) if w is None else (c.groups[e[w]], c.groups[e[b]])
        wm, bm = (np.nan, np.nan) if w is None else (float(means[w]), float(means[b]))
        rows.append((*base, gap, float(lo[0]), float(hi[0]), ratio, worst, best, wm, bm, c.p_value, np.nan, effect,
                     len(e), n_used, pooled, rel, c.pooled_bpp, small, note))
    return pd.DataFrame(rows, columns=BIAS_COLUMNS)  # q_value: set over the whole family by the caller


def _pairwise_rows(cells: Iterable[CellStats], ci: float) -> pd.DataFrame:
    rows = []
    for c in cells:
        e = c.compared
        for ia, a in enumerate(e):
            for b in e[ia + 1:]:
                lo, hi = percentile_interval((c.boot[:, a] - c.boot[:, b])[:, None], ci)
                rows.append((c.codec, c.setting, c.measure, c.attribute, c.groups[a], c.groups[b],
                             float(c.means[a] - c.means[b]), float(lo[0]), float(hi[0])))
    return pd.DataFrame(rows, columns=PAIRWISE_COLUMNS)


def _tested(table: pd.DataFrame) -> np.ndarray:
    """Rows of a table with ``kind`` and ``p_value`` that belong to the run's family of tests."""
    if table is None or table.empty or "kind" not in table.columns:
        return np.zeros(0 if table is None else len(table), dtype=bool)
    p = pd.to_numeric(table["p_value"], errors="coerce").to_numpy(dtype=float)
    return table["kind"].isin(TESTED_KINDS).to_numpy() & np.isfinite(p)


def with_q_values(*tables: pd.DataFrame | None) -> tuple[pd.DataFrame | None, ...]:
    """Copies of ``tables`` (bias, paired…) with ``q_value`` set by Benjamini–Hochberg over
    the tests of all of them together: the rows of degradation and drift columns with a
    p-value. Descriptive rows and rows without a test get NaN."""
    masks = [_tested(t) for t in tables]
    p = np.concatenate([t["p_value"].to_numpy(dtype=float)[m] for t, m in zip(tables, masks) if t is not None]
                       or [np.zeros(0)])
    q = bh_q_values(p)
    out, at = [], 0
    for t, m in zip(tables, masks):
        if t is None:
            out.append(None)
            continue
        t = t.copy()
        col = np.full(len(t), np.nan)
        col[m] = q[at:at + m.sum()]
        at += int(m.sum())
        t["q_value"] = col
        out.append(t)
    return tuple(out)


def group_summary(results: pd.DataFrame, group_col: str, measures: Sequence[str], *, n_boot: int = 1000,
                  seed: int = 0, ci: float = 0.95, min_group_n: int = DEFAULT_MIN_GROUP_N) -> pd.DataFrame:
    """Mean, SD and CI of each measure per group and cell; columns :data:`SUMMARY_COLUMNS`.

    One row per ``(codec, setting, measure, group)``; ``attribute`` is ``group_col``,
    ``n`` the rows used, ``bpp_mean`` the mean bpp of those same rows, ``ci_method`` how
    the interval was made, ``below_min_n`` whether the group is too small to be compared.
    Groups with no usable row are omitted.
    """
    return _summary_rows(_analyse(results, group_col, measures, n_boot=n_boot, n_perm=0, seed=seed, ci=ci,
                                  min_group_n=min_group_n))


def bias_table(results: pd.DataFrame, group_col: str, measures: Sequence[str], *, n_boot: int = 1000,
               n_perm: int = 1000, seed: int = 0, ci: float = 0.95,
               directions: Mapping[str, bool] | None = None, kinds: Mapping[str, ColumnKind] | None = None,
               min_group_n: int = DEFAULT_MIN_GROUP_N) -> pd.DataFrame:
    """Gap between groups for each ``(codec, setting, measure)``; columns :data:`BIAS_COLUMNS`.

    Kinds: ``kinds``, else ``directions`` (``{column: higher_is_better}``, degradations),
    else the measures' declarations (:mod:`fairbits.bias.kinds`). ``gap`` = max − min of
    the compared groups' means with a stratified-bootstrap CI; ``ratio`` = min/max
    (fairlearn's convention); ``worst_group``/``best_group`` by kind (none for a
    descriptive column) with their means; ``p_value`` =
    ``(1 + #{perm gap >= observed}) / (1 + n_perm)`` from shuffling group labels within the
    cell (the same permutations for every column of the cell); ``q_value``
    Benjamini–Hochberg over the degradation and drift rows of this table;
    ``effect_size`` = gap / pooled within-group SD; ``n``/``mean`` the count and mean of
    the compared rows, ``rel_gap`` = ``gap / |mean|``. With fewer than two groups of at
    least ``min_group_n`` rows the statistics are NaN and ``note`` says why.
    """
    cells = _analyse(results, group_col, measures, n_boot=n_boot, n_perm=n_perm, seed=seed, ci=ci,
                     min_group_n=min_group_n)
    return with_q_values(_bias_rows(cells, ci, resolve_kinds(measures, kinds=kinds, directions=directions)))[0]


def pairwise_gaps(results: pd.DataFrame, group_col: str, measures: Sequence[str], *, n_boot: int = 1000,
                  seed: int = 0, ci: float = 0.95, min_group_n: int = DEFAULT_MIN_GROUP_N) -> pd.DataFrame:
    """``mean_a - mean_b`` for every pair of compared groups (``group_a < group_b``), with a
    bootstrap CI. Emitted for every cell with at least two groups of ``min_group_n`` rows.
    Columns :data:`PAIRWISE_COLUMNS`.
    """
    return _pairwise_rows(_analyse(results, group_col, measures, n_boot=n_boot, n_perm=0, seed=seed, ci=ci,
                                   min_group_n=min_group_n), ci)


def summarize_run(results: pd.DataFrame, group_cols: Sequence[str], measures: Sequence[str], *,
                  n_boot: int = 1000, n_perm: int = 1000, seed: int = 0, ci: float = 0.95,
                  directions: Mapping[str, bool] | None = None, kinds: Mapping[str, ColumnKind] | None = None,
                  min_group_n: int = DEFAULT_MIN_GROUP_N) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(summary, bias, pairwise)`` for every attribute in ``group_cols``, stacked.

    Each cell is analysed once per attribute, so this is cheaper than calling the three
    functions separately; the tables are identical to theirs, except that ``q_value``
    is computed over every attribute's tests together.
    """
    resolved = resolve_kinds(measures, kinds=kinds, directions=directions)
    summaries, biases, pairs = [], [], []
    for col in group_cols:
        cells = _analyse(results, col, measures, n_boot=n_boot, n_perm=n_perm, seed=seed, ci=ci,
                         min_group_n=min_group_n)
        summaries.append(_summary_rows(cells))
        biases.append(_bias_rows(cells, ci, resolved))
        pairs.append(_pairwise_rows(cells, ci))

    def stack(frames, columns):
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    bias = with_q_values(stack(biases, BIAS_COLUMNS))[0]
    return stack(summaries, SUMMARY_COLUMNS), bias, stack(pairs, PAIRWISE_COLUMNS)


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


def run_min_group_n(info: Mapping) -> int:
    """The run's ``min_group_n``: from its spec in ``run.json``, else :data:`DEFAULT_MIN_GROUP_N`."""
    return _check_min_group_n((info.get("spec") or {}).get("min_group_n", DEFAULT_MIN_GROUP_N))


def write_stats(run_dir: str | Path, results: pd.DataFrame | None = None, *,
                group_cols: Sequence[str] | None = None, measures: Sequence[str] | None = None,
                n_boot: int | None = None, n_perm: int | None = None, seed: int | None = None,
                ci: float = 0.95, min_group_n: int | None = None,
                kinds: Mapping[str, ColumnKind] | None = None) -> dict[str, Path]:
    """Write the run's statistics into ``run_dir``: ``summary.csv``, ``bias.csv``,
    ``pairwise.csv``, ``findings.csv`` and, when the results have counterfactual pairs,
    ``paired.csv``. q-values are computed over the tests of bias and paired together.

    Unspecified arguments come from the run: ``results`` from
    :func:`fairbits.audit.store.load_results`, ``group_cols``/``measures``/``seed`` from
    ``run.json`` (measure names are expanded to their result columns, plus ``bpp``),
    ``n_boot``/``n_perm`` from ``run.json`` or 1000, ``min_group_n`` from the spec in
    ``run.json`` or :data:`DEFAULT_MIN_GROUP_N`; column kinds as
    :func:`fairbits.bias.kinds.resolve_kinds` finds them (``run.json`` first).
    Returns ``{name: path}`` for the files written.
    """
    from fairbits.bias.findings import findings_table
    from fairbits.bias.paired import PAIR_COLUMN, paired_table

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
    min_group_n = run_min_group_n(info) if min_group_n is None else _check_min_group_n(min_group_n)
    resolved = resolve_kinds(cols, kinds=kinds, run_info=info)
    summary, bias, pairwise = summarize_run(results, group_cols, cols, n_boot=n_boot, n_perm=n_perm, seed=seed,
                                            ci=ci, kinds=resolved, min_group_n=min_group_n)
    paired = None
    if PAIR_COLUMN in results.columns:
        paired = paired_table(results, group_cols, cols, n_boot=n_boot, n_perm=n_perm, seed=seed, ci=ci,
                              kinds=resolved)
    bias, paired = with_q_values(bias, paired)
    tables = {"summary": summary, "bias": bias, "pairwise": pairwise, "findings": findings_table(bias)}
    if paired is not None and not paired.empty:
        tables["paired"] = paired
    return {name: atomic_write(run_dir / f"{name}.csv", lambda tmp, t=table: t.to_csv(tmp, index=False))
            for name, table in tables.items()}


_TEXT_COLUMNS = {c: str for c in ("codec", "setting", "measure", "attribute", "kind", "group", "worst_group",
                                  "best_group", "group_a", "group_b", "small_groups", "note", "ci_method")}


def read_table(path: str | Path) -> pd.DataFrame:
    """One statistics CSV, keeping labels as strings (a group called ``007`` stays ``007``)."""
    return pd.read_csv(path, dtype=_TEXT_COLUMNS)


def read_stats(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read ``summary.csv``, ``bias.csv`` and ``pairwise.csv`` written by :func:`write_stats`."""
    run_dir = Path(run_dir)
    return tuple(read_table(run_dir / f"{n}.csv") for n in ("summary", "bias", "pairwise"))
