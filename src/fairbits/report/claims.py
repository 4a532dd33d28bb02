"""The four figures of the report's "Findings" section, one per claim of the source paper:

(a) :func:`family_gap_figure` — gaps of pixel-fidelity measures beside skin-tone,
    identity, geometry and classifier gaps, per codec (its findings 1 and 2): the
    standardised gap (gap / pooled within-group SD) puts measures in different units on
    one axis;
(b) :func:`equal_rate_overview_figure` — the gap at equal rate per codec (``equal_rate_curves.csv``);
(c) bias against realism across codecs (``realism.csv``; drawn by
    :func:`fairbits.report.realism.bias_vs_realism_figure`);
(d) :func:`attribution_overview` — compression part against classifier part of the loss
    gaps (``attribution.csv``; drawn by :func:`fairbits.report.attribution.attribution_figure`).

Which measures the figures show follows the ranking of ``findings.csv``
(:func:`headline_pairs`).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from fairbits.report.equal_rate import draw_gap_curves
from fairbits.report.figures import (DPI, MAX_PANELS_PER_ROW, PANEL_W, codec_colours, figure_legend, new_figure,
                                     shared_rate_axis, style, text)
from fairbits.report.wording import FAMILY_COLOURS, FAMILY_LABELS

MAX_PANELS = 4


def headline_pairs(findings: pd.DataFrame, available: Iterable[tuple[str, str]] | None = None,
                   k: int = MAX_PANELS) -> list[tuple[str, str]]:
    """Up to ``k`` distinct ``(measure, attribute)`` in the order of ``findings`` (significant
    first, then by effect size), restricted to ``available`` when given."""
    allowed = None if available is None else set(available)
    out: list[tuple[str, str]] = []
    for pair in zip(findings["measure"], findings["attribute"]):
        if pair not in out and (allowed is None or pair in allowed):
            out.append(pair)
        if len(out) == k:
            break
    return out


def lowest_rate_cells(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``table`` at each codec's lowest-rate setting (smallest ``bpp_mean`` of
    the codec; its first setting when no rate is known)."""
    keep = []
    for _, c in table.groupby("codec", sort=False):
        rates = c.groupby("setting", sort=False)["bpp_mean"].mean()
        setting = rates.idxmin() if rates.notna().any() else rates.index[0]
        keep.append(c[c["setting"] == setting])
    return pd.concat(keep) if keep else table.iloc[:0]


def family_gap_figure(findings: pd.DataFrame, families: dict[str, str], attribute: str) -> Figure:
    """Horizontal bars of gap / SD across ``attribute`` at each codec's lowest-rate setting:
    a panel per codec, a bar per measure, coloured by family (``families``: measure →
    family key of :mod:`fairbits.report.wording`), faded when not significant (q ≥ 0.05)."""
    f = findings[findings["attribute"] == attribute]
    f = f[pd.to_numeric(f["effect_size"], errors="coerce").notna()]  # a gap (finite or infinite)
    cells = lowest_rate_cells(f)
    order = list(FAMILY_LABELS)
    measures = sorted(dict.fromkeys(cells["measure"]), key=lambda m: (order.index(families.get(m, order[0])), m))
    codecs = list(dict.fromkeys(cells["codec"]))
    ncols = max(1, min(len(codecs), MAX_PANELS_PER_ROW))
    nrows = max(1, -(-len(codecs) // ncols))
    fig = Figure(figsize=(PANEL_W * ncols + 1.6, (0.2 * len(measures) + 1.0) * nrows + 0.4), dpi=DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True, sharex=True).ravel().tolist()
    for ax in axes[len(codecs):]:
        ax.set_visible(False)
    effect = pd.to_numeric(cells["effect_size"], errors="coerce").to_numpy(dtype=float)
    finite = effect[np.isfinite(effect)]
    cap = 1.15 * float(finite.max()) if finite.size and finite.max() > 0 else 1.0  # where an infinite effect is drawn
    y = {m: len(measures) - 1 - i for i, m in enumerate(measures)}
    for ax, codec in zip(axes, codecs):
        c = cells[cells["codec"] == codec]
        for r in c.itertuples(index=False):
            e = float(r.effect_size)
            colour = FAMILY_COLOURS.get(families.get(r.measure, ""), "#999999")
            ax.barh(y[r.measure], min(e, cap), 0.7, color=colour, alpha=1.0 if bool(r.significant) else 0.35)
        setting = c["setting"].iloc[0] if len(c) else ""
        bpp = c["bpp_mean"].mean() if len(c) else np.nan
        ax.set_title(f"{text(codec)} {text(setting)}" + (f" ({bpp:.3g} bpp)" if np.isfinite(bpp) else ""),
                     fontsize=9)
        ax.set_xlabel(f"gap / SD across {text(attribute)}", fontsize=8)
        style(ax)
    axes[0].set_yticks(list(y.values()), [text(m) for m in y], fontsize=7)
    present = [k for k in order if k in {families.get(m) for m in measures}]
    handles = [Patch(color=FAMILY_COLOURS[k], label=FAMILY_LABELS[k]) for k in present]
    handles.append(Patch(color="#999999", alpha=0.35, label="faded: not significant"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False, title="family",
               title_fontsize=8)
    return fig


def equal_rate_overview_figure(curves: pd.DataFrame, points: pd.DataFrame | None,
                               pairs: list[tuple[str, str]]) -> Figure:
    """A panel per ``(measure, attribute)`` of ``pairs``: every codec's gap against bpp on one
    log rate axis, with 95% bands (rows of ``equal_rate_curves.csv``), dots at the common rates."""
    colours = codec_colours(curves["codec"])
    fig, axes = new_figure(len(pairs), sharex=True)
    for ax, (measure, attr) in zip(axes, pairs):
        draw_gap_curves(ax, curves, measure, attr, colours, points)
        ax.set_title(f"{text(measure)} across {text(attr)}", fontsize=9)
        ax.set_xlabel("bits per pixel (log scale)", fontsize=8)
        ax.set_ylabel(f"gap in {text(measure)}", fontsize=8)
        ax.set_ylim(bottom=0)
        style(ax)
    shared_rate_axis(axes, curves["rate"])
    figure_legend(fig, axes, "codec")
    return fig


def attribution_overview(att: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """Rows of ``attribution.csv`` for ``attribute`` at each (target, codec)'s lowest-rate setting."""
    a = att[att["attribute"] == attribute]
    parts = [lowest_rate_cells(t) for _, t in a.groupby("target", sort=False)]
    return pd.concat(parts, ignore_index=True) if parts else a
