"""Report section "Largest significant gaps": the significant rows of ``findings.csv`` as a
table (degradation and drift columns, q < 0.05, ranked by gap / SD), the full bias table
folded below; and the display helpers the other sections share for those tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fairbits.bias.fdr import SIGNIFICANCE
from fairbits.report.context import ReportContext
from fairbits.report.kit import Section, ci, esc, fmt, table

TOP_GAPS = 20

BIAS_DISPLAY = [("measure", "measure"), ("kind", "kind"), ("attribute", "attribute"), ("codec", "codec"),
                ("setting", "setting"), ("bpp_mean", "bpp"), ("gap", "gap"), ("gap_ci", "95% CI"),
                ("effect_size", "gap / SD"), ("worst_group", "worst group"), ("best_group", "best group"),
                ("p_value", "p"), ("q_value", "q"), ("n_groups", "groups"), ("n", "n"), ("note", "note")]
FINDINGS_DISPLAY = [("measure", "measure"), ("kind", "kind"), ("attribute", "attribute"), ("codec", "codec"),
                    ("setting", "setting"), ("bpp_mean", "bpp"), ("gap", "gap"), ("gap_ci", "95% CI"),
                    ("effect_size", "gap / SD"), ("worst", "worst group (mean)"), ("best", "best group (mean)"),
                    ("p_value", "p"), ("q_value", "q")]


def bias_display(bias: pd.DataFrame) -> pd.DataFrame:
    """A bias or findings table with display columns: ``gap_ci`` and worst/best with their means."""
    out = bias.copy()
    for c in ("kind", "q_value", "effect_size", "note", "worst_mean", "best_mean"):
        if c not in out.columns:
            out[c] = np.nan if c not in ("kind", "note") else ""
    out["note"] = out["note"].fillna("")
    out["gap_ci"] = [ci(lo, hi) for lo, hi in zip(out.gap_ci_low, out.gap_ci_high)]
    for side in ("worst", "best"):
        out[side] = [f"{fmt(g)} ({fmt(m)})" if isinstance(g, str) and g else "–"
                     for g, m in zip(out[f"{side}_group"], out[f"{side}_mean"])]
    return out


def significant_rows(findings: pd.DataFrame) -> pd.DataFrame:
    """The rows of a findings table with q < 0.05, in its (ranked) order."""
    if findings is None or findings.empty or "significant" not in findings.columns:
        return pd.DataFrame(columns=[] if findings is None else findings.columns)
    return findings[findings["significant"].astype(bool)]


def tested_count(findings: pd.DataFrame) -> int:
    """Rows of a findings table that have a p-value (were tested)."""
    if findings is None or findings.empty:
        return 0
    return int(pd.to_numeric(findings["p_value"], errors="coerce").notna().sum())


def small_groups_note(ctx: ReportContext) -> str:
    """A paragraph naming the groups left out of gaps and tests for having too few images ('' if none)."""
    s = ctx.summary
    if "below_min_n" not in s.columns:
        return ""
    small = s[s["below_min_n"].astype(str).str.lower() == "true"]
    if small.empty:
        return ""
    spans = small.groupby(["attribute", "group"], sort=True)["n"].agg(["min", "max"])
    items = ", ".join(f"{esc(a)} = <b>{esc(g)}</b> (n = {lo}{'' if lo == hi else f'–{hi}'})"
                      for (a, g), (lo, hi) in spans.iterrows())
    return (f"<p class='note'>Groups with fewer than {ctx.min_group_n} usable images are shown per group but "
            f"left out of every gap, worst/best group and test: {items}. A cell with fewer than two groups of "
            f"enough images has no gap (set <code>min_group_n</code> in the spec to change the minimum).</p>")


def significant_section(ctx: ReportContext) -> Section:
    """The significant rows of findings.csv (degradation and drift only, q < 0.05), ranked by
    effect size; the full bias table folded below."""
    f = bias_display(ctx.findings)
    tested = tested_count(ctx.findings)
    sig = significant_rows(f)
    parts = [f"<p>Degradations (what coding did to the image) and drifts (signed changes, where the worst "
             f"group moved most) whose Benjamini–Hochberg q-value is below {SIGNIFICANCE}, over all {tested} "
             f"tests of degradation and drift columns in this run; ranked by the standardised effect size, the "
             f"gap over the pooled within-group standard deviation; at most {TOP_GAPS} rows. "
             f"<b>{len(sig)} of {tested}</b> are significant. Descriptive columns (properties of the originals or "
             "of the reconstructions alone) are never ranked here; see "
             "<a href='#descriptive'>Dataset and reconstructions</a>. From <code>findings.csv</code>.</p>",
             small_groups_note(ctx)]
    if sig.empty:
        parts.append("<p><b>No significant gap.</b></p>")
    else:
        parts.append(table(sig.head(TOP_GAPS), FINDINGS_DISPLAY))
    b = bias_display(ctx.bias)
    parts.append(f"<details><summary>Full bias table ({len(b)} rows, every kind)</summary>"
                 f"{table(b, BIAS_DISPLAY)}</details>")
    return Section("Largest significant gaps", "".join(parts), "significant")
