"""Report section: realism (Fréchet distance, KID) per group, and bias against realism."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fairbits.bias.stats import TESTED_KINDS
from fairbits.report import figures as F
from fairbits.report.html import ReportContext, Section, esc, table


def bias_vs_realism_figure(realism: pd.DataFrame, bias: pd.DataFrame, attribute: str):
    """One panel per measure: x = Fréchet distance of the cell (all images), y = the cell's gap."""
    overall = realism[(realism["group"] == "all") & (realism["attribute"] == realism["attribute"].iloc[0])]
    b = bias[(bias["attribute"] == attribute) & (bias["measure"] != "bpp")]
    if "kind" in b.columns:  # bias is what coding did: descriptive columns are not drawn
        b = b[b["kind"].isin(TESTED_KINDS)]
    merged = b.merge(overall[["codec", "setting", "fd"]], on=["codec", "setting"], how="inner")
    measures = list(dict.fromkeys(merged["measure"]))
    fig, axes = F.new_figure(len(measures))
    for ax, m in zip(axes, measures):
        d = merged[merged["measure"] == m]
        for codec, dc in d.groupby("codec", sort=False):
            err = np.vstack([np.clip(dc["gap"] - dc["gap_ci_low"], 0, None),
                             np.clip(dc["gap_ci_high"] - dc["gap"], 0, None)])
            ax.errorbar(dc["fd"], dc["gap"], yerr=np.nan_to_num(err), fmt="o", capsize=2.5,
                        markersize=4, label=F.text(codec))
        ax.set_title(F.text(m), fontsize=9)
        ax.set_xlabel("Fréchet distance (lower = more realistic)", fontsize=8)
        ax.set_ylabel(f"gap across {F.text(attribute)}", fontsize=8)
        F._style(ax)
    F.figure_legend(fig, axes, "codec")
    return fig


def realism_section(ctx: ReportContext) -> Section | None:
    """Present when the run measured realism (``RUN_DIR/realism.csv``)."""
    path = ctx.run_dir / "realism.csv"
    if not path.is_file():
        return None
    realism = pd.read_csv(path, dtype={"group": str})
    if realism.empty:
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
