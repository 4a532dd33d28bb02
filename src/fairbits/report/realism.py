"""Report section "Realism per group" (``realism.csv``, :mod:`fairbits.measures.realism`):
Fréchet distance and KID per group, and bias against realism across codecs."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
from matplotlib.figure import Figure

from fairbits.bias.stats import TESTED_KINDS
from fairbits.report.context import ReportContext
from fairbits.report.figures import codec_colours, errbar, figure_legend, new_figure, style, text
from fairbits.report.kit import Section, esc, table


def overall_realism(realism: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: the realism of all its images (``group == "all"`` of one attribute)."""
    rows = realism[realism["group"] == "all"]
    return rows[rows["attribute"] == rows["attribute"].iloc[0]] if len(rows) else rows


def bias_vs_realism_figure(realism: pd.DataFrame, bias: pd.DataFrame, attribute: str,
                           measures: Sequence[str] | None = None) -> Figure:
    """One panel per measure (``measures``, else every degradation and drift): x = Fréchet
    distance of the cell (all images), y = the cell's gap across ``attribute`` with its
    95% CI, one colour per codec."""
    b = bias[(bias["attribute"] == attribute) & (bias["measure"] != "bpp")]
    if "kind" in b.columns:  # bias is what coding did: descriptive columns are not drawn
        b = b[b["kind"].isin(TESTED_KINDS)]
    if measures is not None:
        b = b[b["measure"].isin(list(measures))]
    merged = b.merge(overall_realism(realism)[["codec", "setting", "fd"]], on=["codec", "setting"], how="inner")
    shown = [m for m in (measures if measures is not None else dict.fromkeys(merged["measure"]))
             if (merged["measure"] == m).any()]
    colours = codec_colours(merged["codec"])
    fig, axes = new_figure(len(shown))
    for ax, m in zip(axes, shown):
        d = merged[merged["measure"] == m]
        for codec, dc in d.groupby("codec", sort=False):
            errbar(ax, dc["fd"], dc["gap"], dc["gap_ci_low"], dc["gap_ci_high"], text(codec),
                   linestyle="none", markersize=4, color=colours[codec])
        ax.set_title(text(m), fontsize=9)
        ax.set_xlabel("Fréchet distance (lower = more realistic)", fontsize=8)
        ax.set_ylabel(f"gap across {text(attribute)}", fontsize=8)
        style(ax)
    figure_legend(fig, axes, "codec")
    return fig


def realism_section(ctx: ReportContext) -> Section | None:
    """Present when the run measured realism (``RUN_DIR/realism.csv``)."""
    realism = ctx.realism
    if realism is None:
        return None
    extractor = realism["extractor"].iloc[0] if "extractor" in realism.columns else "?"
    parts = [f"<p>Distance between the distribution of originals and of reconstructions in the "
             f"<b>{esc(extractor)}</b> feature space, per group: Fréchet distance (FD) and kernel distance "
             f"(KID, unbiased, with a bootstrap 95% CI). Lower is more realistic. Small groups give noisy "
             f"FD; compare KID's intervals.</p>"]
    for attr in ctx.attributes:
        if attr in set(realism["attribute"]):
            parts.append(ctx.figure(bias_vs_realism_figure(realism, ctx.bias, attr), f"bias_vs_realism_{attr}",
                                    f"Bias (gap across {attr}) against realism (FD), one point per cell"))
    cols = [(c, c) for c in ("codec", "setting", "attribute", "group", "n", "fd", "kid", "kid_ci_low",
                             "kid_ci_high") if c in realism.columns]
    parts.append("<details><summary>Realism per group</summary>" + table(realism, cols) + "</details>")
    return Section("Realism per group", "".join(parts), "realism")
