"""Report section "The classifiers on compressed images": each classifier's accuracy per group on
originals and on reconstructions, and the source paper's bias measure (``accuracy_groups.csv``,
``accuracy_bias.csv``, :mod:`fairbits.bias.accuracy`).

Per classifier target and group attribute, ``figures/accuracy_groups_<target>_<attribute>.png``:
a panel per codec (one log bpp axis for all), each group's accuracy on reconstructions
against bpp with Wilson 95 % intervals, and its accuracy on the originals as a dashed line
of the same colour. Per target, ``figures/accuracy_bias_<target>.png``: a column of
panels per group attribute; top, max − min of the group accuracies on reconstructions
against bpp (one line per codec, 95 % bootstrap CIs) with the same on originals as a
dashed line; below, the standard deviation of the group accuracies drawn the same way.

A classifier is **flagged** for a group when it is poor on that group's *originals*, so
that its flips and accuracy changes there say little about what coding did: the group
has at least ``min_group_n`` labelled images and either its accuracy on originals is
below :data:`POOR_ACCURACY` (0.6), or the Wilson 95 % upper bound of that accuracy is
below the classifier's pooled accuracy on originals (all groups) minus
:data:`POOR_MARGIN` (0.2), i.e. it is credibly far behind the other groups. The
originals are the same in every cell, so the cell with the most labelled images is read
(:func:`accuracy_on_originals`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fairbits.report.context import ReportContext
from fairbits.report.figures import (DPI, PANEL_H, PANEL_W, codec_colours, errbar, figure_legend, new_figure,
                                     shared_rate_axis, style, text)
from fairbits.report.kit import Section, ci, esc, fmt, table

STATS = (("gap", "max − min of group accuracies"), ("sd", "SD of group accuracies"))
POOR_ACCURACY = 0.6  # accuracy on originals below which a group's flips say little
POOR_MARGIN = 0.2  # ... or a Wilson upper bound this far below the pooled accuracy on originals


def accuracy_on_originals(groups: pd.DataFrame) -> pd.DataFrame:
    """Per target, attribute and group: the accuracy on originals with its Wilson CI and n,
    the classifier's pooled accuracy on originals over every group, and ``poor`` (the flag
    of the module docstring) with its ``reason``. Read from the cell with the most labelled
    images of each target and attribute (``groups``: rows of ``accuracy_groups.csv``)."""
    rows = []
    for (target, attr), sub in groups.groupby(["target", "attribute"], sort=False):
        sizes = sub.groupby(["codec", "setting"], sort=False)["n"].sum()
        codec, setting = sizes.idxmax()
        cell = sub[(sub["codec"] == codec) & (sub["setting"] == setting)]
        n = cell["n"].to_numpy(dtype=float)
        acc = cell["accuracy_orig"].to_numpy(dtype=float)
        pooled = float((n * acc).sum() / n.sum()) if n.sum() else np.nan
        for r in cell.itertuples(index=False):
            low_abs = r.accuracy_orig < POOR_ACCURACY
            behind = r.accuracy_orig_ci_high < pooled - POOR_MARGIN
            poor = bool(not r.below_min_n and (low_abs or behind))
            reason = "; ".join(t for t, on in ((f"below {POOR_ACCURACY:g}", low_abs),
                                               (f"95% upper bound below the pooled accuracy − {POOR_MARGIN:g}",
                                                behind)) if on) if poor else ""
            rows.append({"target": target, "attribute": attr, "group": r.group, "n": int(r.n),
                         "accuracy_orig": r.accuracy_orig, "ci_low": r.accuracy_orig_ci_low,
                         "ci_high": r.accuracy_orig_ci_high, "pooled": pooled, "below_min_n": bool(r.below_min_n),
                         "poor": poor, "reason": reason})
    cols = ["target", "attribute", "group", "n", "accuracy_orig", "ci_low", "ci_high", "pooled", "below_min_n",
            "poor", "reason"]
    return pd.DataFrame(rows, columns=cols)


def poor_flag_sentence(row) -> str:
    """HTML: the caution for one flagged (target, attribute, group) row of :func:`accuracy_on_originals`."""
    return (f"The <b>{esc(row.target)}</b> classifier is poor on the originals of {esc(row.attribute)} = "
            f"<b>{esc(row.group)}</b>: accuracy {esc(fmt(row.accuracy_orig))} {esc(ci(row.ci_low, row.ci_high))} "
            f"(n = {esc(fmt(row.n))}) against {esc(fmt(row.pooled))} over all groups ({esc(row.reason)}). Its "
            "flips and accuracy changes for that group say little about what coding did: the classifier was "
            "already unreliable there.")


def group_accuracy_figure(groups: pd.DataFrame, target: str, attribute: str) -> Figure:
    """Each group's accuracy of ``target`` on reconstructions against bpp (Wilson 95% CIs), a
    panel per codec on one log bpp axis; dashed, the same group's accuracy on originals."""
    sub = groups[(groups["target"] == target) & (groups["attribute"] == attribute)]
    codecs = list(dict.fromkeys(sub["codec"]))
    colours = codec_colours(sorted(set(sub["group"])))
    orig = accuracy_on_originals(sub).set_index("group")["accuracy_orig"]
    fig, axes = new_figure(len(codecs), sharey=True)
    for ax, codec in zip(axes, codecs):
        for group, g in sub[sub["codec"] == codec].groupby("group", sort=True):
            g = g.sort_values("bpp_mean")
            errbar(ax, g["bpp_mean"], g["accuracy_recon"], g["accuracy_recon_ci_low"], g["accuracy_recon_ci_high"],
                   text(group), color=colours[group])
            if group in orig.index and np.isfinite(orig[group]):
                ax.axhline(orig[group], color=colours[group], linestyle="--", linewidth=0.9)
        ax.set_title(text(codec), fontsize=10)
        ax.set_xlabel("bits per pixel (group mean, log scale)")
        ax.set_ylim(0, 1.02)
        style(ax)
    shared_rate_axis(axes, sub["bpp_mean"])
    if axes:
        axes[0].set_ylabel(f"{text(target)} accuracy\n(dashed: on originals)")
    figure_legend(fig, axes, text(attribute))
    return fig


def _originals(rows: pd.DataFrame, stat: str) -> tuple[float, float, float] | None:
    """The classifier's own ``stat`` on originals with its CI, from the cell with most images
    (the originals are the same in every cell; cells differ only by rows with errors)."""
    ok = rows[np.isfinite(rows[f"{stat}_orig"].to_numpy(dtype=float))]
    if ok.empty:
        return None
    r = ok.loc[ok["n"].idxmax()]
    return float(r[f"{stat}_orig"]), float(r[f"{stat}_orig_ci_low"]), float(r[f"{stat}_orig_ci_high"])


def accuracy_bias_figure(bias: pd.DataFrame, target: str) -> Figure:
    """Max − min (top) and SD (bottom) of ``target``'s group accuracies against bpp (log
    axis): a column per attribute, a line per codec; dashed: the same on originals."""
    sub = bias[(bias["target"] == target) & (bias["n_groups"] >= 2)]
    attrs = list(dict.fromkeys(sub["attribute"])) or [""]
    colours = codec_colours(sub["codec"])
    fig = Figure(figsize=(PANEL_W * len(attrs) + 1.2, PANEL_H * 2 + 0.5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(attrs), squeeze=False, sharex=True, sharey="row")
    for col, attr in enumerate(attrs):
        a = sub[sub["attribute"] == attr]
        for row, (stat, label) in enumerate(STATS):
            ax = axes[row][col]
            for codec, c in a.groupby("codec", sort=False):
                c = c.sort_values("bpp_mean")
                y = c[f"{stat}_recon"].to_numpy(dtype=float)
                err = np.vstack([np.clip(y - c[f"{stat}_recon_ci_low"], 0, None),
                                 np.clip(c[f"{stat}_recon_ci_high"] - y, 0, None)])
                ax.errorbar(c["bpp_mean"], y, yerr=np.nan_to_num(err), marker="o", markersize=3.5, capsize=2.5,
                            linewidth=1.3, color=colours[codec], label=text(codec))
            orig = _originals(a, stat)
            if orig is not None:
                ax.axhline(orig[0], color="0.3", linestyle="--", linewidth=1,
                           label="originals (the classifier's own)")
                ax.axhspan(orig[1], orig[2], color="0.5", alpha=0.12, linewidth=0)
            shared_rate_axis([ax], sub["bpp_mean"])
            ax.set_ylim(bottom=0)
            ax.set_ylabel(f"{label}\n(reconstructions)", fontsize=8)
            if row == 0:
                ax.set_title(f"{text(target)} across {text(attr)}", fontsize=10)
            else:
                ax.set_xlabel("bits per pixel (cell mean, log scale)")
            style(ax)
    figure_legend(fig, list(axes.ravel()), "codec")
    return fig


BIAS_DISPLAY = [("target", "classifier"), ("attribute", "attribute"), ("codec", "codec"), ("setting", "setting"),
                ("bpp_mean", "bpp"), ("accuracy_recon", "accuracy (recon)"), ("gap_recon", "max − min (recon)"),
                ("gap_recon_ci", "95% CI"), ("sd_recon", "SD (recon)"), ("sd_recon_ci", "95% CI"),
                ("worst_recon", "worst group (recon)"), ("gap_orig", "max − min (orig)"),
                ("gap_orig_ci", "95% CI"), ("sd_orig", "SD (orig)"), ("gap_change", "change of max − min"),
                ("gap_change_ci", "95% CI"), ("note", "note")]
GROUP_DISPLAY = [("target", "classifier"), ("attribute", "attribute"), ("codec", "codec"), ("setting", "setting"),
                 ("group", "group"), ("n", "n"), ("accuracy_orig", "accuracy (orig)"), ("orig_ci", "95% CI"),
                 ("accuracy_recon", "accuracy (recon)"), ("recon_ci", "95% CI"), ("below_min_n", "too few")]


def bias_display(bias: pd.DataFrame) -> pd.DataFrame:
    out = bias.copy()
    for c in ("gap_recon", "sd_recon", "gap_orig", "gap_change"):
        out[f"{c}_ci"] = [ci(lo, hi) for lo, hi in zip(out[f"{c}_ci_low"], out[f"{c}_ci_high"])]
    out["worst_recon"] = [f"{g} ({fmt(v)})" if isinstance(g, str) and g else "–"
                          for g, v in zip(out["worst_group_recon"], out["worst_accuracy_recon"])]
    return out


ORIGINALS_DISPLAY = [("attribute", "attribute"), ("group", "group"), ("n", "n"),
                     ("accuracy_orig", "accuracy on originals"), ("interval", "95% CI"),
                     ("pooled", "all groups"), ("flag", "flag")]


def originals_table(orig: pd.DataFrame) -> pd.DataFrame:
    """:func:`accuracy_on_originals` rows with display columns ``interval`` and ``flag``."""
    return orig.assign(interval=[ci(lo, hi) for lo, hi in zip(orig["ci_low"], orig["ci_high"])],
                       flag=["POOR: " + r if p else ("too few images" if small else "")
                             for p, r, small in zip(orig["poor"], orig["reason"], orig["below_min_n"])])


def accuracy_section(ctx: ReportContext) -> Section | None:
    """Present when the run has ``accuracy_bias.csv`` (a classifier with true labels)."""
    read = ctx.accuracy
    if read is None:
        return None
    groups, bias = read
    if bias.empty:
        return None
    orig = accuracy_on_originals(groups)
    parts = ["<p>Where the dataset has true labels, each classifier is checked on the originals and on the "
             "reconstructions of every group: a flip (a changed prediction) means little where the classifier "
             "was already wrong or guessing on the original. Solid lines: accuracy on reconstructions against "
             "bpp with Wilson 95% intervals; dashed: the same group on the originals. A classifier is "
             f"<b>flagged</b> for a group with at least {ctx.min_group_n} labelled images whose accuracy on "
             f"originals is below {POOR_ACCURACY:g}, or whose 95% upper bound is below the classifier's accuracy "
             f"over all groups minus {POOR_MARGIN:g}. From <code>accuracy_groups.csv</code>.</p>"]
    flagged = orig[orig["poor"]]
    if len(flagged):
        parts.append("<div class='note'>" + "".join(f"<p>{poor_flag_sentence(r)}</p>"
                                                   for r in flagged.itertuples(index=False)) + "</div>")
    else:
        parts.append("<p>No classifier is poor on the originals of any group by this rule.</p>")
    for target in dict.fromkeys(orig["target"]):
        parts.append(f"<h3>{esc(target)}</h3>")
        t = orig[orig["target"] == target]
        parts.append(table(originals_table(t), ORIGINALS_DISPLAY))
        for attr in dict.fromkeys(t["attribute"]):
            parts.append(ctx.figure(group_accuracy_figure(groups, target, attr), f"accuracy_groups_{target}_{attr}",
                                    f"{target} accuracy per {attr} on reconstructions (Wilson 95% CIs); dashed: "
                                    "on originals"))
    parts.append("<h3>The source paper's measure: max − min of the group accuracies</h3>")
    parts.append("<p>The bias measure of the source paper: a classifier's accuracy per group on the "
                 "reconstructions, and its <b>max − min across groups</b>. Beside it, the same on the originals (the "
                 "classifier's own bias, before any coding; dashed) and the change coding made to it. Because "
                 "max − min is set by the two most extreme groups alone, the <b>standard deviation of the group "
                 "accuracies</b> (each group counted once) is shown as well: one outlying group moves it much less. "
                 "Max − min, SD and their change have 95% bootstrap intervals (images resampled within groups), "
                 "which lean upwards for max − min, so a gap between equal groups rarely has an interval reaching "
                 "0. From <code>accuracy_bias.csv</code>.</p>")
    for target in dict.fromkeys(bias["target"]):
        if (bias.loc[bias["target"] == target, "n_groups"] >= 2).any():
            parts.append(ctx.figure(accuracy_bias_figure(bias, target), f"accuracy_bias_{target}",
                                    f"{target}: spread of the group accuracies on reconstructions per codec (95% "
                                    "bootstrap CIs); dashed: on originals"))
    parts.append(f"<details><summary>Accuracy bias per cell ({len(bias)} rows)</summary>"
                 + table(bias_display(bias), BIAS_DISPLAY) + "</details>")
    g = groups.copy()
    for side in ("orig", "recon"):
        g[f"{side}_ci"] = [ci(lo, hi) for lo, hi in zip(g[f"accuracy_{side}_ci_low"], g[f"accuracy_{side}_ci_high"])]
    parts.append(f"<details><summary>Accuracy per group and cell ({len(g)} rows)</summary>"
                 + table(g, GROUP_DISPLAY) + "</details>")
    return Section("Classifier accuracy per group (the source paper's measure)", "".join(parts), "accuracy-bias")
