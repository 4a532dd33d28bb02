"""Report section "Phenotype, identity and face analysis": faces found, skin-tone drift,
identity, landmarks and classifier flips per group against bpp (the attribution of
classifier bias has its own section, :mod:`fairbits.report.attribution`)."""

from __future__ import annotations

import pandas as pd

from fairbits.bias.kinds import DRIFT
from fairbits.report.bias_tables import FINDINGS_DISPLAY, bias_display, significant_rows
from fairbits.report.context import ReportContext
from fairbits.report.kit import Section, esc, fmt, table
from fairbits.report.rate_distortion import rd_figure

# Face columns drawn per group against bpp, in this order, when the run has them.
HEADLINE = ("delta_ita", "delta_e_skin", "monk_changed", "identity_cos", "identity_nonmatch", "landmark_nme")
CAPTIONS = {
    "delta_ita": "ITA° drift of the skin (positive: came back lighter)",
    "delta_e_skin": "ΔE2000 of the mean skin colour",
    "monk_changed": "share of faces whose ITA-derived Monk category changed",
    "identity_cos": "identity similarity to the original (SFace cosine)",
    "identity_nonmatch": "false non-match rate at the threshold calibrated on originals",
    "landmark_nme": "landmark displacement / inter-ocular distance",
}


def faces_found_table(ctx: ReportContext) -> pd.DataFrame:
    """Per attribute and group: images analysed, faces found, share found."""
    res = ctx.results.dropna(subset=["face_found"]).drop_duplicates("image_id")
    rows = []
    for a in ctx.attributes:
        groups = res["image_id"].map(ctx.image_groups(a))
        for g, sub in res.groupby(groups, sort=True):
            found = int((sub["face_found"] > 0).sum())
            rows.append((a, g, len(sub), found, len(sub) - found, found / len(sub)))
    return pd.DataFrame(rows, columns=["attribute", "group", "images", "found", "not_found", "rate"])


def _curves(ctx: ReportContext, columns) -> list[str]:
    parts = []
    for col in columns:
        if not (ctx.summary.measure == col).any():
            continue
        parts.append(f"<h3>{esc(col)}</h3>")
        for a in ctx.attributes:
            if ((ctx.summary.measure == col) & (ctx.summary.attribute == a)).any():
                fig = rd_figure(ctx.summary, col, a, ctx.direction(col))
                if ctx.kind(col).kind == DRIFT:  # drawn without a better/worse direction
                    fig.axes[0].set_ylabel(f"{col} (recon − orig, signed)")
                parts.append(ctx.figure(fig, f"face_{col}_{a}", f"{CAPTIONS.get(col, col)}, per {a}"))
    return parts


def phenotype_section(ctx: ReportContext) -> Section | None:
    """Present when the run has face or classifier measures."""
    flips = [m for m in ctx.measures if m.endswith("_flip")]
    if "face_found" not in ctx.results.columns and not flips:
        return None
    parts = ["<p>Face measures compare each reconstruction with its original inside the original's face "
             "regions (skin, lips, hair), so pixel scores that look equal across groups can still hide a "
             "shift of skin tone, features or identity. Classifier measures apply the same classifier to "
             "both and count changed predictions (flips).</p>"]
    if "face_found" in ctx.results.columns:
        found = faces_found_table(ctx)
        parts += ["<h3>Faces found</h3>",
                  "<p>Face analysis of the originals; a face not found is left out of every face measure, and "
                  "a lower rate in one group is itself a bias of the analysis.</p>",
                  table(found, [("attribute", "attribute"), ("group", "group"), ("images", "images"),
                                ("found", "faces found"), ("not_found", "not found"), ("rate", "share found")])]
    thr = ctx.run_dir / "identity.json"
    if thr.is_file():
        import json

        info = json.loads(thr.read_text())
        parts.append(f"<p>Identity threshold {esc(fmt(info.get('threshold')))} (cosine), set so that "
                     f"{esc(fmt(info.get('fmr')))} of {esc(fmt(info.get('n_impostor_pairs')))} impostor pairs of "
                     "originals would match.</p>")
    parts += _curves(ctx, [*HEADLINE, *flips])
    f = bias_display(ctx.findings[ctx.findings.measure.isin(ctx.face_columns)])
    sig = significant_rows(f)
    parts.append(f"<details><summary>Face-measure findings ({len(sig)} significant of {len(f)} degradations and "
                 "drifts, q &lt; 0.05, ranked by gap / SD)</summary>"
                 + table(sig if len(sig) else f, FINDINGS_DISPLAY) + "</details>")
    return Section("Phenotype, identity and face analysis", "".join(parts), "phenotype")
