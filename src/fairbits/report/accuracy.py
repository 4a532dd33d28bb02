"""Report section: the source paper's bias measure (``accuracy_bias.csv``, :mod:`fairbits.bias.accuracy`).

Per classifier target, one figure ``figures/accuracy_bias_<target>.png``: a column of
panels per group attribute; top, max − min of the group accuracies on reconstructions
against bpp (one line per codec, 95 % bootstrap CIs) with the same on originals as a
dashed line; below, the standard deviation of the group accuracies drawn the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fairbits.bias.accuracy import read_accuracy
from fairbits.report import figures as F
from fairbits.report.equal_rate import codec_colours, rate_axis, style
from fairbits.report.html import ReportContext, Section, fmt, table

STATS = (("gap", "max − min of group accuracies"), ("sd", "SD of group accuracies"))


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
    fig = Figure(figsize=(F.PANEL_W * len(attrs) + 1.2, F.PANEL_H * 2 + 0.5), dpi=F.DPI, layout="constrained")
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
                            linewidth=1.3, color=colours[codec], label=F.text(codec))
            orig = _originals(a, stat)
            if orig is not None:
                ax.axhline(orig[0], color="0.3", linestyle="--", linewidth=1,
                           label="originals (the classifier's own)")
                ax.axhspan(orig[1], orig[2], color="0.5", alpha=0.12, linewidth=0)
            rates = sub["bpp_mean"].to_numpy(dtype=float)
            if np.isfinite(rates).any():
                rate_axis(ax, float(np.nanmin(rates)), float(np.nanmax(rates)))
            ax.set_ylim(bottom=0)
            ax.set_ylabel(f"{label}\n(reconstructions)", fontsize=8)
            if row == 0:
                ax.set_title(f"{F.text(target)} across {F.text(attr)}", fontsize=10)
            else:
                ax.set_xlabel("bits per pixel (cell mean, log scale)")
            style(ax)
    F.figure_legend(fig, list(axes.ravel()), "codec")
    return fig


def _ci(lo, hi) -> str:
    return f"[{fmt(lo)}, {fmt(hi)}]"


BIAS_DISPLAY = [("target", "classifier"), ("attribute", "attribute"), ("codec", "codec"), ("setting", "setting"),
                ("bpp_mean", "bpp"), ("accuracy_recon", "accuracy (recon)"), ("gap_recon", "max − min (recon)"),
                ("gap_recon_ci", "95% CI"), ("sd_recon", "SD (recon)"), ("sd_recon_ci", "95% CI"),
                ("worst_recon", "worst group (recon)"), ("gap_orig", "max − min (orig)"),
                ("gap_orig_ci", "95% CI"), ("sd_orig", "SD (orig)"), ("gap_change", "change of max − min"),
                ("gap_change_ci", "95% CI"), ("note", "note")]
GROUP_DISPLAY = [("target", "classifier"), ("attribute", "attribute"), ("codec", "codec"), ("setting", "setting"),
                 ("group", "group"), ("n", "n"), ("accuracy_orig", "accuracy (orig)"), ("orig_ci", "95% CI"),
                 ("accuracy_recon", "accuracy (recon)"), ("recon_ci", "95% CI"), ("below_min_n", "too few")]


def _bias_display(bias: pd.DataFrame) -> pd.DataFrame:
    out = bias.copy()
    for c in ("gap_recon", "sd_recon", "gap_orig", "gap_change"):
        out[f"{c}_ci"] = [_ci(lo, hi) for lo, hi in zip(out[f"{c}_ci_low"], out[f"{c}_ci_high"])]
    out["worst_recon"] = [f"{g} ({fmt(v)})" if isinstance(g, str) and g else "–"
                          for g, v in zip(out["worst_group_recon"], out["worst_accuracy_recon"])]
    return out


def accuracy_section(ctx: ReportContext) -> Section | None:
    """Present when the run has ``accuracy_bias.csv`` (a classifier with true labels)."""
    read = read_accuracy(ctx.run_dir)
    if read is None:
        return None
    groups, bias = read
    if bias.empty:
        return None
    parts = ["<p>The bias measure of the source paper: a classifier's accuracy per group on the reconstructions, "
             "and its <b>max − min across groups</b>. Beside it, the same on the originals (the classifier's own "
             "bias, before any coding; dashed) and the change coding made to it. Because max − min is set by the "
             "two most extreme groups alone, the <b>standard deviation of the group accuracies</b> (each group "
             "counted once) is shown as well: one outlying group moves it much less. Group accuracies have "
             "Wilson 95% intervals; max − min, SD and their change have 95% bootstrap intervals (images "
             "resampled within groups), which lean upwards for max − min, so a gap between equal groups rarely "
             "has an interval reaching 0. From <code>accuracy_bias.csv</code> and "
             "<code>accuracy_groups.csv</code>.</p>"]
    for target in dict.fromkeys(bias["target"]):
        if (bias.loc[bias["target"] == target, "n_groups"] >= 2).any():
            parts.append(ctx.figure(accuracy_bias_figure(bias, target), f"accuracy_bias_{target}",
                                    f"{target}: spread of the group accuracies on reconstructions per codec (95% "
                                    "bootstrap CIs); dashed: on originals"))
    parts.append(f"<details><summary>Accuracy bias per cell ({len(bias)} rows)</summary>"
                 + table(_bias_display(bias), BIAS_DISPLAY) + "</details>")
    g = groups.copy()
    for side in ("orig", "recon"):
        g[f"{side}_ci"] = [_ci(lo, hi) for lo, hi in zip(g[f"accuracy_{side}_ci_low"], g[f"accuracy_{side}_ci_high"])]
    parts.append(f"<details><summary>Accuracy per group ({len(g)} rows)</summary>"
                 + table(g, GROUP_DISPLAY) + "</details>")
    return Section("Classifier accuracy per group (the source paper's measure)", "".join(parts), "accuracy-bias")
