"""The report's section on paired (counterfactual) effects, from ``paired.csv``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fairbits.report.context import ReportContext
from fairbits.report.figures import new_figure, style, text
from fairbits.report.kit import Section, ci, esc, table


def paired_figure(paired: pd.DataFrame, attribute: str):
    """Forest plot: the paired effect with its CI, one row per cell and measure."""
    sub = paired[paired.attribute == attribute]
    fig, (ax,) = new_figure(1)
    y = np.arange(len(sub))[::-1]
    ax.errorbar(sub.effect, y, xerr=[sub.effect - sub.ci_low, sub.ci_high - sub.effect], fmt="o", ms=4,
                capsize=2, color="#1f77b4")
    ax.axvline(0, color="black", lw=0.6)
    ax.set_yticks(y, [f"{text(m)} · {text(c)} {text(s)}" for m, c, s in zip(sub.measure, sub.codec,
                                                                                    sub.setting)], fontsize=7)
    a, b = sub.group_a.iloc[0], sub.group_b.iloc[0]
    ax.set_xlabel(f"paired effect: {text(b)} − {text(a)}")
    fig.set_figheight(max(2.5, 0.22 * len(sub) + 1))
    style(ax)
    return fig


def paired_section(ctx: ReportContext) -> Section | None:
    """Present when the run's dataset has counterfactual pairs (``paired.csv``)."""
    path = ctx.run_dir / "paired.csv"
    if not path.is_file():
        return None
    paired = pd.read_csv(path, dtype={"group_a": str, "group_b": str, "attribute": str, "setting": str})
    if paired.empty:
        return None
    if "q_value" not in paired.columns:  # written before q-values existed
        paired["q_value"] = np.nan
    parts = ["<p>Each pair is the same face with one attribute changed; the effect is the mean over pairs of "
             "(score with the second value − score with the first), with a 95% bootstrap CI over pairs and a "
             "sign-flip permutation p-value; the q-value corrects it with every other test of the run (Benjamini–Hochberg), "
             "significant when below 0.05. Pairing removes what the two images share, so this is the effect "
             "of the attribute alone.</p>"]
    for attr in dict.fromkeys(paired.attribute):
        parts.append(f"<h3>{esc(attr)}</h3>")
        parts.append(ctx.figure(paired_figure(paired, attr), f"paired_{attr}",
                                f"Paired effect of {attr} per measure and cell"))
    shown = paired.assign(interval=[ci(lo, hi) for lo, hi in zip(paired.ci_low, paired.ci_high)])
    parts.append(table(shown, [("attribute", "attribute"), ("codec", "codec"), ("setting", "setting"),
                               ("measure", "measure"), ("group_a", "a"), ("group_b", "b"), ("n_pairs", "pairs"),
                               ("mean_a", "mean a"), ("mean_b", "mean b"), ("effect", "effect b − a"),
                               ("interval", "95% CI"), ("p_value", "p"), ("q_value", "q")]))
    return Section("Paired (counterfactual) effects", "".join(parts), "paired")
