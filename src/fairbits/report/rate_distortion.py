"""Report sections on rate: per-group rate–distortion curves ("Rate–distortion curves per
group") and the gap between groups against bit rate ("Gap versus bit rate").

Every panel of a figure has the same log bpp axis, spanning every codec's rates, so a
codec with a single setting is drawn as one point at its rate rather than on its own
squashed scale.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from fairbits.bias.fdr import SIGNIFICANCE
from fairbits.bias.kinds import DESCRIPTIVE
from fairbits.report.context import ReportContext
from fairbits.report.figures import errbar, figure_legend, new_figure, shared_rate_axis, style, text
from fairbits.report.kit import Section, esc, kind_label


def rd_figure(summary: pd.DataFrame, measure: str, attribute: str, higher_is_better: bool | None = True) -> Figure:
    """Per-group rate-distortion curves: one panel per codec, one line per group.

    ``summary`` holds :func:`fairbits.bias.stats.group_summary` rows; x is the group's mean
    bpp per setting (log axis shared by every panel), y the group mean with its CI as error
    bars. ``higher_is_better`` None labels the axis as a signed value (a drift or a description).
    """
    sub = summary[(summary.measure == measure) & (summary.attribute == attribute)]
    codecs = list(dict.fromkeys(sub.codec))
    fig, axes = new_figure(len(codecs), sharey=True)
    direction = {True: "higher is better", False: "lower is better", None: "signed"}[higher_is_better]
    for ax, codec in zip(axes, codecs):
        cs = sub[sub.codec == codec]
        for group, g in cs.groupby("group", sort=True):
            g = g.sort_values("bpp_mean")
            errbar(ax, g.bpp_mean, g["mean"], g.ci_low, g.ci_high, text(group))
        ax.set_title(text(codec), fontsize=10)
        ax.set_xlabel("bits per pixel (group mean, log scale)")
        style(ax)
    shared_rate_axis(axes, sub.bpp_mean)
    if axes:
        axes[0].set_ylabel(f"{text(measure)} ({direction})")
    figure_legend(fig, axes, text(attribute))
    return fig


def gap_figure(bias: pd.DataFrame, measure: str) -> Figure:
    """Gap (max - min group mean) versus cell mean bpp (log axis shared by the panels): one
    panel per attribute, one line per codec; circled: q < 0.05."""
    sub = bias[(bias.measure == measure) & (bias.n_groups >= 2)]
    attrs = list(dict.fromkeys(sub.attribute))
    fig, axes = new_figure(len(attrs))
    for ax, attr in zip(axes, attrs):
        a = sub[sub.attribute == attr]
        for codec in dict.fromkeys(a.codec):
            c = a[a.codec == codec].sort_values("bpp_mean")
            errbar(ax, c.bpp_mean, c.gap, c.gap_ci_low, c.gap_ci_high, text(codec))
            p = c.q_value if "q_value" in c.columns else c.p_value
            sig = c[pd.to_numeric(p, errors="coerce") < SIGNIFICANCE]
            ax.scatter(sig.bpp_mean, sig.gap, s=70, facecolors="none", edgecolors="black", linewidths=0.8,
                       zorder=3)
        ax.set_title(f"gap across {text(attr)}", fontsize=10)
        ax.set_xlabel("bits per pixel (cell mean, log scale)")
        ax.set_ylabel(f"gap in {text(measure)}")
        ax.set_ylim(bottom=0)
        style(ax)
    shared_rate_axis(axes, sub.bpp_mean)
    figure_legend(fig, axes, f"codec\n(circled: q < {SIGNIFICANCE})")
    return fig


def rd_section(ctx: ReportContext) -> Section | None:
    """Per-group rate-distortion curves of the pixel measures that are not descriptive: one
    figure per measure and attribute, a panel per codec."""
    parts = []
    for m in (m for m in ctx.pixel_measures if ctx.kind(m).kind != DESCRIPTIVE):
        parts.append(f"<h3>{esc(m)} <span class='muted'>({esc(kind_label(ctx.kind(m)))})</span></h3>")
        for a in ctx.attributes:
            if not ((ctx.summary.measure == m) & (ctx.summary.attribute == a)).any():
                continue
            fig = rd_figure(ctx.summary, m, a, ctx.direction(m))
            parts.append(ctx.figure(fig, f"rd_{m}_{a}", f"{m} per {a}: group means with 95% confidence intervals"))
    if not parts:
        return None
    intro = ("<p>For each codec, every line is one group: x is the group's mean bits per pixel at a "
             "setting, y the group's mean score, error bars the 95% confidence interval of the mean. Every "
             "panel has the same rate axis (log scale), so codecs are compared at the rates they reach.</p>")
    return Section("Rate–distortion curves per group", intro + "".join(parts), "rd")


def gap_section(ctx: ReportContext) -> Section | None:
    """Gap (max − min group mean) versus bpp per pixel degradation or drift, one line per codec."""
    parts = []
    for m in (m for m in ctx.pixel_measures if ctx.kind(m).kind != DESCRIPTIVE):
        sub = ctx.bias[(ctx.bias.measure == m) & (ctx.bias.n_groups >= 2)]
        if sub.empty:
            continue
        parts.append(f"<h3>{esc(m)}</h3>")
        parts.append(ctx.figure(gap_figure(ctx.bias, m), f"gap_{m}",
                                f"Gap in {m} between the groups with the highest and lowest mean, with 95% "
                                "bootstrap CIs"))
    if not parts:
        return None
    intro = ("<p>The gap is the largest difference between group means in a cell (codec, setting). "
             f"Circled points are significant: Benjamini–Hochberg q-value below {SIGNIFICANCE}.</p>")
    return Section("Gap versus bit rate", intro + "".join(parts), "gaps")
