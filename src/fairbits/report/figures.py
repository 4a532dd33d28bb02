"""Matplotlib figures of the audit report.

Figures are built on :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot
state), so they can be made from any thread and never open a window. Every label that
comes from data (group, codec, setting names) goes through :func:`text` so a ``$`` in
a name cannot switch matplotlib into math mode.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PANEL_W, PANEL_H = 4.2, 3.2
MAX_PANELS_PER_ROW = 4
DPI = 110


def text(value) -> str:
    """A data-derived label safe for matplotlib (``$`` escaped, long names cut)."""
    s = str(value).replace("$", r"\$")
    return s if len(s) <= 40 else s[:39] + "…"


def safe_name(*parts) -> str:
    """A file-name stem made of ``parts`` (only letters, digits, ``_.-``)."""
    return "_".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", str(p)).strip("-") or "x" for p in parts)


def new_figure(n_panels: int, *, sharey: bool = False) -> tuple[Figure, list]:
    """A figure with ``n_panels`` axes on a grid of at most :data:`MAX_PANELS_PER_ROW` columns."""
    n_panels = max(1, n_panels)
    ncols = min(n_panels, MAX_PANELS_PER_ROW)
    nrows = -(-n_panels // ncols)
    fig = Figure(figsize=(PANEL_W * ncols, PANEL_H * nrows + 0.5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def save_png(fig: Figure, path: str | Path) -> bytes:
    """Write ``fig`` as PNG to ``path`` and return the PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    data = buf.getvalue()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _style(ax) -> None:
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)


def _errbar(ax, x, y, lo, hi, label: str) -> None:
    """Line with asymmetric error bars from CI bounds (NaN bounds draw no bar)."""
    y, lo, hi = (np.asarray(a, dtype=float) for a in (y, lo, hi))
    err = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])
    err = np.nan_to_num(err, nan=0.0)
    ax.errorbar(x, y, yerr=err, marker="o", markersize=3.5, capsize=2.5, linewidth=1.3, label=label)


def figure_legend(fig: Figure, axes: list, title: str) -> None:
    """One legend for the whole figure, outside the panels on the right (labels merged across panels)."""
    handles: dict[str, object] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right upper", title=title, fontsize=8,
                   title_fontsize=8, frameon=False)


def group_counts_figure(counts: dict[str, pd.Series]) -> Figure:
    """Bar chart of images per group, one panel per attribute (``{attribute: counts}``)."""
    fig, axes = new_figure(len(counts))
    for ax, (attr, series) in zip(axes, counts.items()):
        labels = [text(g) for g in series.index]
        bars = ax.bar(range(len(series)), series.to_numpy(), color="#4c72b0")
        ax.bar_label(bars, fontsize=8)
        ax.set_xticks(range(len(series)), labels, rotation=30 if len(series) > 4 else 0, ha="right"
                      if len(series) > 4 else "center", fontsize=8)
        ax.set_title(text(attr), fontsize=10)
        ax.set_ylabel("images")
        ax.margins(y=0.12)
        _style(ax)
    return fig


def rd_figure(summary: pd.DataFrame, measure: str, attribute: str, higher_is_better: bool | None = True) -> Figure:
    """Per-group rate-distortion curves: one panel per codec, one line per group.

    ``summary`` holds :func:`fairbits.bias.stats.group_summary` rows; x is the group's mean
    bpp per setting, y the group mean with its CI as error bars. ``higher_is_better`` None
    labels the axis as a signed value (a drift or a description).
    """
    sub = summary[(summary.measure == measure) & (summary.attribute == attribute)]
    codecs = list(dict.fromkeys(sub.codec))
    fig, axes = new_figure(len(codecs), sharey=True)
    direction = {True: "higher is better", False: "lower is better", None: "signed"}[higher_is_better]
    for ax, codec in zip(axes, codecs):
        cs = sub[sub.codec == codec]
        for group, g in cs.groupby("group", sort=True):
            g = g.sort_values("bpp_mean")
            _errbar(ax, g.bpp_mean, g["mean"], g.ci_low, g.ci_high, text(group))
        ax.set_title(text(codec), fontsize=10)
        ax.set_xlabel("bits per pixel (group mean)")
        _style(ax)
    if axes:
        axes[0].set_ylabel(f"{text(measure)} ({direction})")
    figure_legend(fig, axes, text(attribute))
    return fig


def gap_figure(bias: pd.DataFrame, measure: str) -> Figure:
    """Gap (max - min group mean) versus cell mean bpp: one panel per attribute, one line per codec."""
    sub = bias[(bias.measure == measure) & (bias.n_groups >= 2)]
    attrs = list(dict.fromkeys(sub.attribute))
    fig, axes = new_figure(len(attrs))
    for ax, attr in zip(axes, attrs):
        a = sub[sub.attribute == attr]
        for codec in dict.fromkeys(a.codec):
            c = a[a.codec == codec].sort_values("bpp_mean")
            _errbar(ax, c.bpp_mean, c.gap, c.gap_ci_low, c.gap_ci_high, text(codec))
            p = c.q_value if "q_value" in c.columns else c.p_value  # significant: q < 0.05
            sig = c[p < 0.05]
            ax.scatter(sig.bpp_mean, sig.gap, s=70, facecolors="none", edgecolors="black", linewidths=0.8,
                       zorder=3)
        ax.set_title(f"gap across {text(attr)}", fontsize=10)
        ax.set_xlabel("bits per pixel (cell mean)")
        ax.set_ylabel(f"gap in {text(measure)}")
        ax.set_ylim(bottom=0)
        _style(ax)
    figure_legend(fig, axes, "codec\n(circled: q < 0.05)")
    return fig


def attribution_figure(att: pd.DataFrame) -> Figure:
    """Horizontal stacked bars, one row per cell: classifier part + compression part of a loss
    gap, each with its 95% CI as a whisker; the flip-rate gap is printed at the bar's end.

    ``att`` holds rows of one classifier target and attribute with columns ``codec``,
    ``setting``, ``group_a``/``group_b``, ``classifier_gap``/``compression_gap`` and their
    ``*_ci_low``/``*_ci_high``, and ``flip_gap``.
    """
    n = len(att)
    fig = Figure(figsize=(PANEL_W * 2, 0.32 * n + 1.4), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    y = np.arange(n)[::-1].astype(float)
    cls, comp = att.classifier_gap.to_numpy(float), att.compression_gap.to_numpy(float)
    ax.barh(y, cls, 0.7, label="classifier (present on originals)", color="#8da0cb")
    ax.barh(y, comp, 0.7, left=cls, label="compression (added by coding)", color="#fc8d62")
    ax.errorbar(cls, y + 0.15, xerr=[cls - att.classifier_ci_low, att.classifier_ci_high - cls], fmt="none",
                ecolor="#2b3f73", capsize=2, lw=0.8)
    ax.errorbar(cls + comp, y - 0.15, xerr=[comp - att.compression_ci_low, att.compression_ci_high - comp],
                fmt="none", ecolor="#b3400f", capsize=2, lw=0.8)
    for yi, end, flip in zip(y, np.maximum(cls + comp, cls), att.get("flip_gap", pd.Series([np.nan] * n))):
        if np.isfinite(flip):
            ax.annotate(f"flip gap {flip:.2f}", (end, yi), xytext=(4, -3), textcoords="offset points", fontsize=7,
                        color="#555")
    labels = [f"{text(c)} {text(s)}  ({text(a)} vs {text(b)})"
              for c, s, a, b in zip(att.codec, att.setting, att.group_a, att.group_b)]
    ax.set_yticks(y, labels, fontsize=7)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("loss gap between the two groups (nats)")
    _style(ax)
    figure_legend(fig, [ax], "part")
    return fig
