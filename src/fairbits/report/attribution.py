"""Report section "Where the classifier bias comes from" (``attribution.csv``,
:mod:`fairbits.bias.attribution`): a classifier's loss gap between two groups on
reconstructions, split into the gap already present on the originals (the classifier's
part) and what coding added (the compression's part)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fairbits.report.context import ReportContext
from fairbits.report.figures import DPI, PANEL_W, figure_legend, style, text
from fairbits.report.kit import Section, table

CLASSIFIER_COLOUR, COMPRESSION_COLOUR = "#8da0cb", "#fc8d62"


def whiskers(value, low, high) -> np.ndarray:
    """``(2, n)`` non-negative error-bar lengths from CI bounds (NaN bounds: no whisker)."""
    v, lo, hi = (np.asarray(a, dtype=float) for a in (value, low, high))
    return np.nan_to_num(np.clip(np.vstack([v - lo, hi - v]), 0, None))


def attribution_figure(att: pd.DataFrame) -> Figure:
    """Horizontal stacked bars, one row per cell: classifier part + compression part of a loss
    gap, each with its 95% CI as a whisker; the flip-rate gap is printed at the bar's end.

    ``att`` holds rows of ``attribution.csv`` with columns ``codec``, ``setting``,
    ``group_a``/``group_b``, ``classifier_gap``/``compression_gap`` and their
    ``*_ci_low``/``*_ci_high``, and ``flip_gap``; rows of several targets are labelled
    with the target's name.
    """
    n = len(att)
    fig = Figure(figsize=(PANEL_W * 2, 0.32 * n + 1.4), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    y = np.arange(n)[::-1].astype(float)
    cls, comp = att.classifier_gap.to_numpy(float), att.compression_gap.to_numpy(float)
    ax.barh(y, cls, 0.7, label="classifier (present on originals)", color=CLASSIFIER_COLOUR)
    ax.barh(y, comp, 0.7, left=cls, label="compression (added by coding)", color=COMPRESSION_COLOUR)
    ax.errorbar(cls, y + 0.15, xerr=whiskers(cls, att.classifier_ci_low, att.classifier_ci_high),
                fmt="none", ecolor="#2b3f73", capsize=2, lw=0.8)
    ax.errorbar(cls + comp, y - 0.15,
                xerr=whiskers(comp, att.compression_ci_low, att.compression_ci_high),
                fmt="none", ecolor="#b3400f", capsize=2, lw=0.8)
    flips = att["flip_gap"].to_numpy(float) if "flip_gap" in att.columns else np.full(n, np.nan)
    for yi, end, flip in zip(y, np.maximum(cls + comp, cls), flips):
        if np.isfinite(flip) and np.isfinite(end):
            ax.annotate(f"flip gap {flip:.2f}", (end, yi), xytext=(4, -3), textcoords="offset points", fontsize=7,
                        color="#555")
    several = "target" in att.columns and att["target"].nunique() > 1
    labels = [f"{text(t) + ' · ' if several else ''}{text(c)} {text(s)}  ({text(a)} vs {text(b)})"
              for t, c, s, a, b in zip(att.get("target", [""] * n), att.codec, att.setting, att.group_a,
                                       att.group_b)]
    ax.set_yticks(y, labels, fontsize=7)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("loss gap between the two groups (nats)")
    style(ax)
    figure_legend(fig, [ax], "part")
    return fig


ATTRIBUTION_COLUMNS = ("target", "attribute", "codec", "setting", "group_a", "group_b", "total_gap",
                       "classifier_gap", "classifier_ci_low", "classifier_ci_high", "compression_gap",
                       "compression_ci_low", "compression_ci_high", "flip_gap", "flip_ci_low", "flip_ci_high")


def attribution_section(ctx: ReportContext) -> Section | None:
    """Present when the run has ``attribution.csv`` (a classifier with true labels)."""
    att = ctx.attribution
    if att is None:
        return None
    parts = ["<p>For each classifier and cell, the loss gap between the two groups that differ most on "
             "reconstructions is split into the gap already present on the originals (the classifier's own "
             "bias) and what coding adds (the compression's bias); the two add up exactly. The flip-rate gap "
             "needs no labels: how much more often one group's prediction changes after coding. From "
             "<code>attribution.csv</code>.</p>"]
    for (target, attr), sub in att.groupby(["target", "attribute"], sort=False):
        parts.append(ctx.figure(attribution_figure(sub), f"attribution_{target}_{attr}",
                                f"{target} across {attr}: loss gap on reconstructions = classifier part + "
                                "compression part (95% bootstrap CIs)"))
    cols = [(c, c) for c in ATTRIBUTION_COLUMNS if c in att.columns]
    parts.append("<details><summary>Attribution table</summary>" + table(att, cols) + "</details>")
    return Section("Where the classifier bias comes from", "".join(parts), "attribution")
