"""Report section: bias at equal rate (``equal_rate.csv``, :mod:`fairbits.bias.equal_rate`).

One figure per headline column, ``figures/equal_rate_<column>.png``: one panel per group
attribute, every codec's gap against bpp (log axis) on the same axes, with its 95 %
bootstrap band; dots mark the common rates of ``equal_rate.csv``.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from fairbits.report.context import ReportContext
from fairbits.report.figures import codec_colours, figure_legend, new_figure, shared_rate_axis, style, text
from fairbits.report.kit import Section, ci, esc, fmt, table


def draw_gap_curves(ax, curves: pd.DataFrame, measure: str, attribute: str, colours: dict[str, str],
                    points: pd.DataFrame | None = None) -> None:
    """On ``ax``: every codec's gap in ``measure`` across ``attribute`` against bpp, a line and
    95% band per codec from ``curves`` (rows of ``equal_rate_curves.csv``), dots at the
    common rates from ``points`` (rows of ``equal_rate.csv``)."""
    a = curves[(curves["measure"] == measure) & (curves["attribute"] == attribute)]
    for codec, c in a.groupby("codec", sort=False):
        c = c.sort_values("rate")
        colour = colours[codec]
        ax.plot(c["rate"], c["gap"], color=colour, linewidth=1.4, label=text(codec))
        ax.fill_between(c["rate"], c["gap_ci_low"], c["gap_ci_high"], color=colour, alpha=0.18, linewidth=0)
        if points is not None and len(points):
            p = points[(points["measure"] == measure) & (points["attribute"] == attribute)
                       & (points["codec"] == codec)]
            ax.scatter(p["rate"], p["gap"], color=colour, s=18, zorder=3)


def equal_rate_figure(curves: pd.DataFrame, measure: str, points: pd.DataFrame | None = None) -> Figure:
    """Gap in ``measure`` against bpp at equal rate: a panel per attribute, a line and CI
    band per codec from ``curves`` (rows of ``equal_rate_curves.csv``), dots at the common
    rates from ``points`` (rows of ``equal_rate.csv``). Panels share both axes."""
    sub = curves[curves["measure"] == measure]
    attrs = list(dict.fromkeys(sub["attribute"]))
    colours = codec_colours(sub["codec"])
    fig, axes = new_figure(len(attrs), sharey=True)
    for ax, attr in zip(axes, attrs):
        draw_gap_curves(ax, sub, measure, attr, colours, points)
        ax.set_title(f"gap across {text(attr)}", fontsize=10)
        ax.set_xlabel("bits per pixel (log scale)")
        style(ax)
    if len(sub):
        shared_rate_axis(axes, sub["rate"])  # one rate axis for every panel and codec
        for ax in axes:
            ax.set_ylim(bottom=0)
    if axes:
        axes[0].set_ylabel(f"gap in {text(measure)} at equal rate")
    figure_legend(fig, axes, "codec")
    return fig


DISPLAY = [("measure", "measure"), ("kind", "kind"), ("attribute", "attribute"), ("rate", "bpp"),
           ("codec", "codec"), ("gap", "gap"), ("gap_ci", "95% CI"), ("worst", "worst group (mean)"),
           ("best", "best group (mean)"), ("n_settings", "settings"), ("range", "measured range (bpp)"),
           ("note", "note")]


def _display(table_: pd.DataFrame) -> pd.DataFrame:
    out = table_.sort_values(["measure", "attribute", "rate", "codec"], kind="stable").copy()
    out["gap_ci"] = [ci(lo, hi) for lo, hi in zip(out["gap_ci_low"], out["gap_ci_high"])]
    out["range"] = [f"{fmt(lo)}–{fmt(hi)}" for lo, hi in zip(out["rate_min"], out["rate_max"])]
    for side in ("worst", "best"):
        out[side] = [f"{g} ({fmt(v)})" for g, v in zip(out[f"{side}_group"], out[f"{side}_value"])]
    return out


def equal_rate_section(ctx: ReportContext) -> Section | None:
    """Present when the run has ``equal_rate.csv`` (a codec with at least two settings)."""
    read = ctx.equal_rate
    if read is None:
        return None
    points, curves = read
    if curves.empty:
        return None
    rates = ", ".join(fmt(r) for r in sorted(set(points["rate"]))) or "none inside a codec's range"
    parts = ["<p>Codecs reach different bit rates at their settings, so their gaps are compared at the same "
             "rate: each group's mean is interpolated against the logarithm of that group's mean bits per pixel, "
             "linearly between two measured settings and never beyond the lowest or highest one a codec "
             "reached for every group. The gap is the largest difference between the interpolated group means "
             "(the worst group follows the column's direction; for a signed drift it is the group that moved "
             "most). Bands and intervals are 95% bootstrap intervals (images resampled within each group and "
             "setting, the curves interpolated again). A codec with one setting has no curve. From "
             f"<code>equal_rate.csv</code> (common rates: {esc(rates)} bpp) and "
             "<code>equal_rate_curves.csv</code>.</p>"]
    for measure in dict.fromkeys(curves["measure"]):
        kind = curves.loc[curves["measure"] == measure, "kind"].iloc[0]
        parts.append(f"<h3>{esc(measure)} <span class='muted'>({esc(kind)})</span></h3>")
        parts.append(ctx.figure(equal_rate_figure(curves, measure, points), f"equal_rate_{measure}",
                                f"Gap in {measure} at equal rate, per codec, with 95% bootstrap bands; dots at "
                                "the common rates"))
    if len(points):
        parts.append(f"<details><summary>Gaps at the common rates ({len(points)} rows)</summary>"
                     + table(_display(points), DISPLAY) + "</details>")
    return Section("Bias at equal rate", "".join(parts), "equal-rate")
