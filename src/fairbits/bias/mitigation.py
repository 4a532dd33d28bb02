"""Mitigation: do checkpoints trained on other data or with another objective narrow the gaps?

``RUN_DIR/mitigation.csv`` compares learned checkpoints of one architecture that differ only
in how they were trained — the data (:data:`~fairbits.codecs.train.config.DATA_FIELDS`:
sampler, training-set mix) or the objective (:data:`~fairbits.codecs.train.config.OBJECTIVE_FIELDS`:
group-DRO, colour loss) — with the ``natural`` checkpoints of the same recipe.

**Recipes.** The audit records each learned cell's checkpoint ``meta`` in ``run.json``
(``cells[].checkpoint_meta``), so the comparison is read from the run, never from weights
installed later. Its resolved :class:`~fairbits.codecs.train.config.TrainConfig` is split into

* the *treatment*: the data and objective fields, named by
  :meth:`~fairbits.codecs.train.config.TrainConfig.variant` (``natural``, ``balanced``,
  ``group-dro``, ``colour``…); a name that two treatments share gets the differing fields
  appended, except for the first in run order;
* λ and ``steps``, which differ between the rates of one variant;
* how the training was run (:data:`RUN_ONLY`: device, logging), ignored;
* everything else (architecture, N, M, lr, batch, patch, distortion, seed…): the *family*.

A family is the checkpoints of one codec that agree on those remaining fields; at one λ they
must also agree on ``steps`` (a checkpoint whose steps differ from the natural one's at its λ —
the first one's when there is no natural — is another recipe and left out). A family with at
least two treatments is compared; ``mitigation.csv`` is written when some codec has one, and
removed otherwise. Checkpoints without a fairbits recipe (CompressAI zoo weights or state
dicts) and ``target_bpp`` cells are never part of one.

For every family, variant (its checkpoints at the different λ), headline measure
(:func:`mitigation_measures`) and group attribute:

1. **Gap at equal rate.** The variant's settings are its curve: each group's mean against
   the log of its mean bpp, interpolated at common rates by
   :func:`fairbits.bias.equal_rate.equal_rate_table` on the rows of those settings only (the
   rules of ``equal_rate.csv``: linear in log bpp between measured checkpoints, never
   extrapolated, percentile bootstrap interval). ``gap`` = max − min of the group means, as in
   ``findings.csv`` (for the signed drift ``delta_ita`` too; its worst group is the one that
   moved most). The rates (:func:`comparison_rates`) are the run's common rates
   (``equal_rates``) inside the range every variant of the family covers for the attribute
   (from the groups' mean bpp per checkpoint over labelled rows); when none falls inside, the
   middle of that range in log bpp. A rate outside a column's own range (narrower where the
   column has missing values) gives no gap (``note``).
2. ``natural_gap`` is the natural variant's gap at the same rate and ``change_vs_natural`` =
   ``gap`` − ``natural_gap`` (negative: the variant narrows the gap).
3. ``bd_rate_vs_natural`` (:func:`bd_rate`): the rate–distortion price, the Bjøntegaard
   rate difference in percent against the natural variant, with PSNR over all images as the
   quality (positive: the variant needs more bits for the same PSNR).

Rows: families in order of their codecs' first cell, the natural variant first, then measures,
attributes and rates (:data:`MITIGATION_COLUMNS`). Without a natural variant in a family the
``*_natural`` columns are empty. A variant with one checkpoint has no curve: one row without
a rate (``note``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator

from fairbits.bias.equal_rate import DEFAULT_RATES, check_rates, equal_rate_table
from fairbits.bias.kinds import ColumnKind, resolve_kinds
from fairbits.bias.stats import DEFAULT_MIN_GROUP_N, TESTED_KINDS, error_mask, run_min_group_n
from fairbits.codecs.train.config import DATA_FIELDS, OBJECTIVE_FIELDS, TrainConfig
from fairbits.errors import FairbitsError
from fairbits.fileio import atomic_write

NATURAL = "natural"
TREATMENT_FIELDS = DATA_FIELDS + OBJECTIVE_FIELDS
RATE_FIELDS = ("lmbda", "steps")  # differ between the checkpoints of one variant
RUN_ONLY = ("device", "log_every", "ckpt_every")  # how a training ran, not what it trained
HEADLINE_MEASURES = ("delta_e_skin", "delta_ita", "identity_cos")  # after the classifiers' *_correct_recon
CLASSIFIER_SUFFIX = "_correct_recon"
MITIGATION_COLUMNS = ["architecture", "family", "variant", "settings", "measure", "attribute", "kind", "rate",
                      "gap", "gap_ci_low", "gap_ci_high", "worst_group", "natural_gap", "change_vs_natural",
                      "bd_rate_vs_natural", "note"]


@dataclass(frozen=True)
class Variant:
    """One treatment of a family: its name and its settings (checkpoints), in increasing λ."""

    name: str
    settings: tuple[str, ...]


@dataclass(frozen=True)
class Family:
    """Checkpoints of one codec that differ only in treatment and λ; ``index`` counts the
    codec's families from 1; ``variants`` has the natural one first when there is one."""

    codec: str
    index: int
    variants: tuple[Variant, ...]

    @property
    def natural(self) -> Variant | None:
        return self.variants[0] if self.variants[0].name == NATURAL else None


def recipe(meta: Mapping | None) -> dict | None:
    """The resolved :class:`TrainConfig` fields of a checkpoint's ``meta``, or None when it
    holds no fairbits training recipe (a CompressAI checkpoint, an invalid value)."""
    try:
        return TrainConfig.from_dict(dict(meta or {})).resolved().to_dict()
    except (FairbitsError, TypeError, ValueError):
        return None


def checkpoint_recipes(run_info: Mapping) -> dict[tuple[str, str], dict]:
    """``{(codec, setting): checkpoint meta}`` of the run's checkpoint cells (``run.json``'s
    ``cells``, in run order) that recorded one; ``target_bpp`` cells are left out."""
    out = {}
    for c in run_info.get("cells") or []:
        if c.get("checkpoint_meta") is not None and c.get("target_bpp") is None:
            out[(str(c["codec"]), str(c["setting"]))] = c["checkpoint_meta"]
    return out


def _key(values: Mapping) -> str:
    return json.dumps(values, sort_keys=True, default=str)


def _names(treatments: list[tuple[dict, str]]) -> list[str]:
    """A variant name per ``(treatment, TrainConfig.variant())``; a name already taken gets
    the fields that differ from the first treatment of that name appended, e.g.
    ``balanced (sampler=balanced:monk)``."""
    first: dict[str, dict] = {}
    names = []
    for t, name in treatments:
        if name in first:
            diff = ", ".join(f"{k}={t[k]}" for k in TREATMENT_FIELDS if t[k] != first[name][k])
            name = f"{name} ({diff})"
        else:
            first[name] = t
        names.append(name)
    return names


def families(recipes: Mapping[tuple[str, str], Mapping]) -> list[Family]:
    """The families with at least two treatments among ``recipes`` (``{(codec, setting):
    checkpoint meta}`` in run order), by the rules of the module docstring."""
    groups: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    for (codec, setting), meta in recipes.items():
        r = recipe(meta)
        if r is not None:
            rest = {k: v for k, v in r.items() if k not in TREATMENT_FIELDS + RATE_FIELDS + RUN_ONLY}
            groups.setdefault((codec, _key(rest)), []).append((setting, r))
    out, count = [], {}
    for (codec, _), members in groups.items():
        treatments = {}  # treatment key -> (treatment, [(setting, recipe)])
        for setting, r in members:
            t = {k: r[k] for k in TREATMENT_FIELDS}
            treatments.setdefault(_key(t), (t, []))[1].append((setting, r))
        if len(treatments) < 2:
            continue
        entries = list(treatments.values())
        names = _names([(t, TrainConfig.from_dict(m[0][1]).variant()) for t, m in entries])
        order = sorted(range(len(names)), key=lambda i: names[i] != NATURAL)  # natural first, then run order
        steps: dict[float, int] = {}  # the reference steps at each λ
        for i in order:
            for _, r in entries[i][1]:
                steps.setdefault(r["lmbda"], r["steps"])
        variants = []
        for i in order:
            kept = [(r["lmbda"], s) for s, r in entries[i][1] if r["steps"] == steps[r["lmbda"]]]
            if kept:
                variants.append(Variant(names[i], tuple(s for _, s in sorted(kept, key=lambda p: p[0]))))
        if len(variants) >= 2:
            count[codec] = count.get(codec, 0) + 1
            out.append(Family(codec, count[codec], tuple(variants)))
    return out


def mitigation_measures(results: pd.DataFrame, kinds: Mapping[str, ColumnKind]) -> list[str]:
    """The headline columns present in ``results`` whose kind is degradation or drift: every
    classifier's ``*_correct_recon`` (the skin-group classifier's among them), then
    :data:`HEADLINE_MEASURES` (skin ΔE, ΔITA, identity similarity)."""
    cols = [c for c in results.columns if str(c).endswith(CLASSIFIER_SUFFIX)]
    cols += [c for c in HEADLINE_MEASURES if c in results.columns]
    return [c for c in cols if c in kinds and kinds[c].kind in TESTED_KINDS]


def rate_range(frame: pd.DataFrame, attribute: str, min_group_n: int) -> tuple[float, float] | None:
    """``(low, high)`` bpp that every group of ``attribute`` covers in ``frame`` (one
    variant's rows): per group the lowest and highest of its mean bpp per setting where it has
    at least ``min_group_n`` labelled rows with a positive bpp; low = the highest of the
    groups' lowest, high = the lowest of their highest. None when fewer than two groups reach
    two rates, or the groups' ranges do not meet."""
    bpp = pd.to_numeric(frame["bpp"], errors="coerce")
    ok = frame[attribute].notna() & np.isfinite(bpp) & (bpp > 0)
    rows = pd.DataFrame({"setting": frame["setting"].astype(str), "group": frame[attribute].astype(str),
                         "bpp": bpp})[ok]
    means = rows.groupby(["setting", "group"])["bpp"].agg(["mean", "size"])
    means = means[means["size"] >= min_group_n]
    per_group = means.groupby(level="group")["mean"].agg(["min", "max", "nunique"])
    per_group = per_group[per_group["nunique"] >= 2]
    if len(per_group) < 2:
        return None
    low, high = float(per_group["min"].max()), float(per_group["max"].min())
    return (low, high) if low <= high else None


def comparison_rates(ranges: Sequence[tuple[float, float] | None], rates: np.ndarray) -> np.ndarray:
    """The rates (bpp, ascending) at which the variants with ``ranges`` are compared: the
    ``rates`` inside every range, or the middle in log bpp of the common range when none is;
    empty when no range is known or the ranges do not overlap."""
    known = [r for r in ranges if r is not None]
    if not known:
        return np.array([])
    low, high = max(r[0] for r in known), min(r[1] for r in known)
    if low > high:
        return np.array([])
    inside = rates[(rates >= low) & (rates <= high)]
    return inside if len(inside) else np.array([float(np.sqrt(low * high))])


def rd_points(frame: pd.DataFrame, quality: str = "psnr") -> tuple[np.ndarray, np.ndarray]:
    """``(mean bpp (S,), mean quality (S,))`` per setting of ``frame`` over all its images
    with a finite ``quality`` and a finite positive bpp (empty without a ``quality`` column)."""
    if quality not in frame.columns:
        return np.array([]), np.array([])
    bpp = pd.to_numeric(frame["bpp"], errors="coerce")
    q = pd.to_numeric(frame[quality], errors="coerce")
    ok = np.isfinite(bpp) & (bpp > 0) & np.isfinite(q)
    means = pd.DataFrame({"setting": frame["setting"].astype(str), "bpp": bpp, "q": q})[ok].groupby("setting").mean()
    return means["bpp"].to_numpy(dtype=float), means["q"].to_numpy(dtype=float)


def bd_rate(reference: tuple[Sequence[float], Sequence[float]],
            test: tuple[Sequence[float], Sequence[float]]) -> float:
    """Bjøntegaard delta rate of ``test`` against ``reference``, in percent.

    Each argument is ``(bpp (S,), quality (S,))`` with ``S ≥ 2`` points of distinct quality
    (PSNR in dB here). Each curve's log rate is fitted as a function of quality by a piecewise
    cubic Hermite interpolant (PCHIP, the monotone piecewise-cubic form that replaced the
    original cubic polynomial in current Bjøntegaard practice; it passes through every
    point). With two points, as for a variant trained at two λ, PCHIP is the straight line
    between them: log rate is then interpolated **linearly** in quality. The two fits are
    averaged over the quality range both curves cover, and ``100 · (exp(mean(log R_test −
    log R_ref)) − 1)`` is returned: +10 means the test curve needs 10 % more bits for the
    same quality. NaN when a curve has fewer than two usable points or repeated qualities,
    or the quality ranges do not overlap.
    """
    fits = []
    for bpp, quality in (reference, test):
        bpp, quality = np.asarray(bpp, dtype=float), np.asarray(quality, dtype=float)
        ok = np.isfinite(bpp) & (bpp > 0) & np.isfinite(quality)
        order = np.argsort(quality[ok])
        q, log_rate = quality[ok][order], np.log(bpp[ok][order])
        if len(q) < 2 or np.any(np.diff(q) <= 0):
            return float("nan")
        fits.append(PchipInterpolator(q, log_rate))
    low, high = max(f.x[0] for f in fits), min(f.x[-1] for f in fits)
    if not high > low:
        return float("nan")
    ref, tst = (float(f.integrate(low, high)) for f in fits)
    return float(100.0 * np.expm1((tst - ref) / (high - low)))


def _gaps(frame: pd.DataFrame, attribute: str, measures: list[str], kinds: Mapping[str, ColumnKind],
          rates: np.ndarray, **options) -> dict[tuple[str, float], dict]:
    """``{(measure, rate): equal_rate.csv row}`` of one variant's rows ``frame``."""
    if not len(rates) or not measures or frame["setting"].nunique() < 2:
        return {}
    table = equal_rate_table(frame, [attribute], {m: kinds[m] for m in measures}, rates=rates, curve_points=2,
                             **options)
    return {(r.measure, float(r.rate)): r._asdict() for r in table.itertuples(index=False)}


NO_GAP = "no gap at this rate (outside the column's measured range, or fewer than two groups)"
NO_PRICE = "no BD-rate (needs psnr at two checkpoints of each variant, with overlapping PSNR)"


def _why_no_gap(variant: Variant, rate_span, rates: np.ndarray, measures: list[str], min_group_n: int) -> str:
    """Why a variant has no gap at any rate for an attribute ("" when it may have one)."""
    if len(variant.settings) < 2:
        return "one checkpoint: no curve"
    if rate_span is None:
        return f"fewer than two groups with at least {min_group_n} images at two rates: no curve"
    if not len(rates):
        return "no rate that every variant of the family reaches"
    if not measures:
        return "no headline measure in this run (phenotype classifiers, skin_tone or identity)"
    return ""


def _family_rows(fam: Family, frame: pd.DataFrame, group_cols: Sequence[str], measures: list[str],
                 kinds: Mapping[str, ColumnKind], rates: np.ndarray, min_group_n: int, **options) -> list[dict]:
    """The rows of one family from its codec's rows ``frame`` (no error rows)."""
    frames = {v.name: frame[frame["setting"].astype(str).isin(v.settings)] for v in fam.variants}
    nat = fam.natural
    price = {v.name: bd_rate(rd_points(frames[nat.name]), rd_points(frames[v.name])) if nat else np.nan
             for v in fam.variants}
    rows = []
    for attr in group_cols:
        spans = {v.name: rate_range(frames[v.name], attr, min_group_n) for v in fam.variants}
        at = comparison_rates(list(spans.values()), rates)
        gaps = {v.name: _gaps(frames[v.name], attr, measures, kinds, at, min_group_n=min_group_n, **options)
                for v in fam.variants}
        for v in fam.variants:
            base = {"architecture": fam.codec, "family": fam.index, "variant": v.name,
                    "settings": "+".join(v.settings), "attribute": attr, "bd_rate_vs_natural": price[v.name]}
            no_price = NO_PRICE if nat and not np.isfinite(price[v.name]) else ""
            why = _why_no_gap(v, spans[v.name], at, measures, min_group_n)
            if why:
                rows += [{**base, "measure": m, "kind": kinds[m].kind if m else None, "note": _join(why, no_price)}
                         for m in measures or [None]]
                continue
            for m in measures:
                for rate in at:
                    got = gaps[v.name].get((m, float(rate)))
                    ref = gaps[nat.name].get((m, float(rate))) if nat else None
                    row = {**base, "measure": m, "kind": kinds[m].kind, "rate": float(rate),
                           **({k: got[k] for k in ("gap", "gap_ci_low", "gap_ci_high", "worst_group")} if got else {}),
                           "note": _join(got["note"] if got else NO_GAP, no_price)}
                    if ref is not None:
                        row["natural_gap"] = ref["gap"]
                        row["change_vs_natural"] = row.get("gap", np.nan) - ref["gap"]
                    rows.append(row)
    return rows


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def mitigation_table(results: pd.DataFrame, recipes: Mapping[tuple[str, str], Mapping], group_cols: Sequence[str],
                     kinds: Mapping[str, ColumnKind] | None = None, *, rates: Sequence[float] = DEFAULT_RATES,
                     n_boot: int = 1000, seed: int = 0, ci: float = 0.95, min_group_n: int = DEFAULT_MIN_GROUP_N,
                     measures: Sequence[str] | None = None) -> pd.DataFrame | None:
    """The comparison (:data:`MITIGATION_COLUMNS`) of the variants among ``recipes``
    (``{(codec, setting): checkpoint meta}``, as :func:`checkpoint_recipes` reads them), or
    None when no codec has checkpoints that differ only in data or objective.

    ``kinds`` None: the measures' declarations; ``measures`` None:
    :func:`mitigation_measures`. ``rates``, ``n_boot``, ``seed``, ``ci`` and ``min_group_n``
    as in :func:`fairbits.bias.equal_rate.equal_rate_tables`.
    """
    fams = families(recipes)
    if not fams:
        return None
    rates = check_rates(rates)
    if kinds is None:
        kinds = resolve_kinds([c for c in results.columns if pd.api.types.is_numeric_dtype(results[c])])
    if measures is None:
        measures = mitigation_measures(results, kinds)
    measures = [m for m in measures if m in results.columns and m in kinds and kinds[m].kind in TESTED_KINDS]
    clean = results.loc[~error_mask(results)]
    codecs = clean["codec"].astype(str)
    rows = []
    for fam in fams:
        rows += _family_rows(fam, clean[codecs == fam.codec], group_cols, measures, kinds, rates, min_group_n,
                             n_boot=n_boot, seed=seed, ci=ci)
    return pd.DataFrame(rows, columns=MITIGATION_COLUMNS)


def write_mitigation(run_dir: str | Path, results: pd.DataFrame, group_cols: Sequence[str] | None = None,
                     kinds: Mapping[str, ColumnKind] | None = None, *, rates: Sequence[float] | None = None,
                     n_boot: int | None = None, seed: int | None = None, min_group_n: int | None = None,
                     measures: Sequence[str] | None = None) -> Path | None:
    """Write ``RUN_DIR/mitigation.csv`` from the run's rows ``results`` and the checkpoint
    recipes in its ``run.json``; returns its path, or None (an earlier file removed) when the
    run has no checkpoints of one architecture that differ only in data or objective.

    Unspecified arguments come from ``run.json``: ``groups``, the spec's ``equal_rates``
    (else :data:`~fairbits.bias.equal_rate.DEFAULT_RATES`), ``n_boot``, ``seed``,
    ``min_group_n`` and the recorded column kinds.
    """
    run_dir = Path(run_dir)
    info_path = run_dir / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    spec = info.get("spec") or {}
    if kinds is None:
        kinds = resolve_kinds([c for c in results.columns if pd.api.types.is_numeric_dtype(results[c])],
                              run_info=info)
    table = mitigation_table(
        results, checkpoint_recipes(info), list(info.get("groups") or []) if group_cols is None else group_cols,
        kinds, rates=rates or spec.get("equal_rates") or DEFAULT_RATES,
        n_boot=info.get("n_boot", 1000) if n_boot is None else n_boot,
        seed=info.get("seed", 0) if seed is None else seed,
        min_group_n=run_min_group_n(info) if min_group_n is None else min_group_n, measures=measures)
    path = run_dir / "mitigation.csv"
    if table is None:
        path.unlink(missing_ok=True)  # never leave an earlier report's file
        return None
    return atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


_TEXT = {c: str for c in ("architecture", "variant", "settings", "measure", "attribute", "kind", "worst_group",
                          "note")}


def read_mitigation(run_dir: str | Path) -> pd.DataFrame | None:
    """``RUN_DIR/mitigation.csv`` (labels as strings, ``note`` empty when none), or None."""
    path = Path(run_dir) / "mitigation.csv"
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype=_TEXT)
    table["note"] = table["note"].fillna("")
    return table
