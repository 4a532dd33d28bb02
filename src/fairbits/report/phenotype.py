"""The report's phenotype section: faces found, skin-tone drift, identity, classifier flips,
and the attribution of classifier bias to the classifier or to the codec."""

from __future__ import annotations

import pandas as pd

from fairbits.report import figures as F
from fairbits.bias.kinds import DRIFT
from fairbits.report.html import (FINDINGS_DISPLAY, ReportContext, Section, _bias_display, _direction, _image_groups,
                                  esc, fmt, table)

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
        groups = res["image_id"].map(_image_groups(ctx, a))
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
                fig = F.rd_figure(ctx.summary, col, a, _direction(col, ctx))
                if ctx.kind(col).kind == DRIFT:  # drawn without a better/worse direction
                    fig.axes[0].set_ylabel(f"{col} (recon − orig, signed)")
                parts.append(ctx.figure(fig, f"face_{col}_{a}", f"{CAPTIONS.get(col, col)}, per {a}"))
    return parts


def attribution_part(ctx: ReportContext) -> list[str]:
    """Attribution bars and table from ``attribution.csv`` (written for classifier measures)."""
    path = ctx.run_dir / "attribution.csv"
    if not path.is_file():
        return []
    att = pd.read_csv(path, dtype={"group_a": str, "group_b": str, "attribute": str})
    if att.empty:
        return []
    parts = ["<h3>Where the classifier bias comes from</h3>",
             "<p>For each classifier and cell, the loss gap between the two groups that differ most on "
             "reconstructions is split into the gap already present on the originals (the classifier's own "
             "bias) and what coding adds (the compression's bias); the two add up exactly. The flip-rate gap "
             "needs no labels: how much more often one group's prediction changes after coding.</p>"]
    for (target, attr), sub in att.groupby(["target", "attribute"], sort=False):
        parts.append(ctx.figure(F.attribution_figure(sub), f"attribution_{target}_{attr}",
                                f"{target} across {attr}: loss gap on reconstructions = classifier part + "
                                "compression part (95% bootstrap CIs)"))
    cols = [(c, c) for c in ("target", "attribute", "codec", "setting", "group_a", "group_b", "total_gap",
                             "classifier_gap", "classifier_ci_low", "classifier_ci_high", "compression_gap",
                             "compression_ci_low", "compression_ci_high", "flip_gap", "flip_ci_low",
                             "flip_ci_high") if c in att.columns]
    parts.append("<details><summary>Attribution table</summary>" + table(att, cols) + "</details>")
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
    parts += attribution_part(ctx)
    f = _bias_display(ctx.findings[ctx.findings.measure.isin(ctx.face_columns)])
    sig = f[f["significant"].astype(bool)]
    parts.append(f"<details><summary>Face-measure findings ({len(sig)} significant of {len(f)} degradations and "
                 "drifts, q &lt; 0.05, ranked by gap / SD)</summary>"
                 + table(sig if len(sig) else f, FINDINGS_DISPLAY) + "</details>")
    return Section("Phenotype, identity and face analysis", "".join(parts), "phenotype")
