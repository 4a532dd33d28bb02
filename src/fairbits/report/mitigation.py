"""Report section: mitigation (``mitigation.csv``, :mod:`fairbits.bias.mitigation`).

One figure, ``figures/mitigation.png``: a panel per headline measure (and attribute), the
gap between groups at equal rate of every variant (balanced, group-DRO, colour loss…) with
its 95 % bootstrap interval, one colour per common rate, and the natural checkpoints' gap at
that rate as a dashed reference line across their family.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fairbits.bias.mitigation import CLASSIFIER_SUFFIX, read_mitigation
from fairbits.report.context import ReportContext
from fairbits.report.figures import errbar, figure_legend, new_figure, style, text
from fairbits.report.kit import Section, ci, fmt, signed, table
from fairbits.report.wording import label


def measure_label(column: str) -> str:
    """How a headline column reads on a panel title."""
    if column.endswith(CLASSIFIER_SUFFIX):
        return f"{column[:-len(CLASSIFIER_SUFFIX)]} classifier accuracy on reconstructions"
    return label(column)[0]


def _variant_keys(rows: pd.DataFrame) -> tuple[list[tuple], list[str]]:
    """The x categories ``(architecture, family, variant)`` in table order, and their labels
    (the architecture and family named only when the table has more than one family)."""
    keys = list(dict.fromkeys(zip(rows["architecture"], rows["family"], rows["variant"])))
    many = len({k[:2] for k in keys}) > 1
    labels = [text(f"{a} #{f}: {v}" if many else v) for a, f, v in keys]
    return keys, labels


def mitigation_figure(rows: pd.DataFrame) -> Figure:
    """Gap at equal rate per variant (x) with 95 % intervals, a panel per (measure,
    attribute) of ``rows`` (``mitigation.csv`` rows with a gap), a colour per rate; dashed:
    the natural variant's gap at that rate across its family's variants."""
    keys, labels = _variant_keys(rows)
    panels = list(dict.fromkeys(zip(rows["measure"], rows["attribute"])))
    several_attributes = rows["attribute"].nunique() > 1
    rates = sorted(set(rows["rate"]))
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.6 / max(1, len(rates))
    fig, axes = new_figure(len(panels), sharey=False)
    for ax, (measure, attr) in zip(axes, panels):
        sub = rows[(rows["measure"] == measure) & (rows["attribute"] == attr)]
        for j, rate in enumerate(rates):
            colour, shift = cycle[j % len(cycle)], (j - (len(rates) - 1) / 2) * width
            at = sub[sub["rate"] == rate]
            x = [keys.index(k) + shift for k in zip(at["architecture"], at["family"], at["variant"])]
            errbar(ax, x, at["gap"], at["gap_ci_low"], at["gap_ci_high"], f"{fmt(rate)} bpp", color=colour,
                   linestyle="none")
            for (arch, fam), f in at.groupby(["architecture", "family"], sort=False):
                natural = f["natural_gap"].dropna()
                if len(natural):
                    span = [i for i, k in enumerate(keys) if k[:2] == (arch, fam)]
                    ax.hlines(natural.iloc[0], min(span) - 0.4, max(span) + 0.4, colors=colour, linestyles="--",
                              linewidth=0.9, label="natural's gap (dashed)")
        ax.set_xticks(range(len(keys)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(keys) - 0.4)
        title = measure_label(measure) + (f" across {attr}" if several_attributes else "")
        ax.set_title(text(title), fontsize=9)
        ax.set_ylim(bottom=0)
        style(ax)
    if axes:
        axes[0].set_ylabel("gap between groups at equal rate")
    figure_legend(fig, axes, "rate")
    return fig


PRICE = [("architecture", "architecture"), ("family", "family"), ("variant", "variant"),
         ("settings", "checkpoints"), ("bd_rate", "BD-rate vs natural (PSNR)")]
DISPLAY = [("measure", "measure"), ("attribute", "attribute"), ("rate", "bpp"), ("architecture", "architecture"),
           ("family", "family"), ("variant", "variant"), ("gap", "gap"), ("gap_ci", "95% CI"),
           ("worst_group", "worst group"), ("natural_gap", "natural's gap"), ("change", "change vs natural"),
           ("note", "note")]


def mitigation_section(ctx: ReportContext) -> Section | None:
    """Present when the run has ``mitigation.csv`` (checkpoints of one architecture that
    differ only in training data or objective)."""
    t = read_mitigation(ctx.run_dir)
    if t is None or t.empty:
        return None
    parts = ["<p>Checkpoints of one architecture whose training differs only in its data (sampler, group mix) "
             "or objective (group-DRO, colour loss), read from the checkpoints' recipes recorded in "
             "<code>run.json</code>. Each variant's checkpoints at different λ make its curves: every group's "
             "mean is interpolated against the logarithm of its mean bits per pixel, never beyond the "
             "checkpoints, and the gap between groups is compared at the same rate for every variant (the "
             "common rates inside the range all variants reach, else the middle of that range). Dashed lines: "
             "the natural checkpoints' gap at that rate; a point below its line is a variant that narrows the "
             "gap. Intervals are 95% bootstrap intervals. The price is the Bjøntegaard rate difference against "
             "the natural variant with PSNR over all images as the quality (piecewise cubic in log rate; "
             "linear between two checkpoints): the extra bits in percent for the same PSNR. From "
             "<code>mitigation.csv</code>.</p>"]
    gaps = t[np.isfinite(pd.to_numeric(t["gap"], errors="coerce"))]
    if len(gaps):
        parts.append(ctx.figure(mitigation_figure(gaps), "mitigation",
                                "Gap between groups at equal rate per training variant, with 95% bootstrap "
                                "intervals; dashed: the natural checkpoints' gap at the same rate"))
    else:
        parts.append("<p class='muted'>No variant has a gap at a common rate (see the notes below).</p>")
    price = t.drop_duplicates(["architecture", "family", "variant"]).copy()
    price["bd_rate"] = [f"{signed(v)} %" if np.isfinite(v) else "–"
                        for v in pd.to_numeric(price["bd_rate_vs_natural"], errors="coerce")]
    parts.append(table(price, PRICE))
    shown = t.copy()
    shown["gap_ci"] = [ci(lo, hi) for lo, hi in zip(shown["gap_ci_low"], shown["gap_ci_high"])]
    shown["change"] = [signed(v) for v in shown["change_vs_natural"]]
    parts.append(f"<details><summary>Gaps per variant, measure and rate ({len(shown)} rows)</summary>"
                 + table(shown, DISPLAY) + "</details>")
    return Section("Mitigation", "".join(parts), "mitigation")
