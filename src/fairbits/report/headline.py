"""Report section "Findings", the first of the page: the top significant rows of
``findings.csv`` in plain words, then four figures mirroring the source paper's claims
(:mod:`fairbits.report.claims`).

A sentence reads a row by its column's kind: a 0/1 degradation as shares of each group
("flips the eye classifier's prediction for 40 % of dark images vs 0 % of light"), any
other degradation as group means with its direction, a drift as signed mean changes
("shifts skin tone by −2° … vs +0.1° …"). Gaps are never divided by a mean. Sentences
are given for at most :data:`TOP_FINDINGS` distinct (measure, attribute, codec), best
ranked first; a finding about a classifier that is poor on the originals of one of the
two groups named (:func:`fairbits.report.accuracy.accuracy_on_originals`) carries a caution.
"""

from __future__ import annotations

import pandas as pd

from fairbits.bias.fdr import SIGNIFICANCE
from fairbits.bias.kinds import DRIFT
from fairbits.report import claims
from fairbits.report.accuracy import accuracy_on_originals
from fairbits.report.attribution import attribution_figure
from fairbits.report.bias_tables import significant_rows, small_groups_note, tested_count
from fairbits.report.context import ReportContext
from fairbits.report.kit import Section, ci, esc, fmt, kind_label, missing, percent, q_text, signed
from fairbits.report.realism import bias_vs_realism_figure
from fairbits.report.wording import family, label, rate_phrase

TOP_FINDINGS = 6


def classifier_target(column: str) -> str | None:
    """The classifier target ``T`` of a column ``T_flip``, ``T_correct_recon``… (None otherwise)."""
    from fairbits.measures.classifiers import CLASSIFIER_SUFFIXES

    for suffix in CLASSIFIER_SUFFIXES:
        if column.endswith(suffix) and len(column) > len(suffix):
            return column[:-len(suffix)]
    return None


def finding_sentence(row, ctx: ReportContext, poor: pd.DataFrame | None = None) -> str:
    """HTML: one row of ``findings.csv`` in words (see the module docstring); ``poor`` holds
    the flagged rows of :func:`~fairbits.report.accuracy.accuracy_on_originals`."""
    where = f"<b>{esc(row.codec)}</b> ({esc(row.setting)})"
    if not missing(row.bpp_mean):
        where = f"At {esc(fmt(row.bpp_mean))} bpp, {where}"
    worst, best = f"<b>{esc(row.worst_group)}</b>", f"<b>{esc(row.best_group)}</b>"
    groups = f"groups by {esc(row.attribute)}"
    name, unit = label(row.measure)
    kind = ctx.kind(row.measure)
    if kind.kind == DRIFT:
        text = (f"{where} shifts {esc(name)} by {esc(signed(row.worst_mean))}{esc(unit)} on average for {worst} "
                f"images vs {esc(signed(row.best_mean))}{esc(unit)} for {best} ({groups}; a signed change, 0 is "
                "ideal)")
    elif ctx.is_rate(row.measure):
        text = (f"{where} {esc(rate_phrase(row.measure))} for {esc(percent(row.worst_mean))} of {worst} images "
                f"vs {esc(percent(row.best_mean))} of {best} ({groups})")
    else:
        text = (f"{where}: {esc(name)} is {esc(fmt(row.worst_mean))}{esc(unit)} on average for {worst} images "
                f"vs {esc(fmt(row.best_mean))}{esc(unit)} for {best} ({groups}; {esc(kind_label(kind))})")
    gap = (f"gap {esc(fmt(row.gap))} {esc(ci(row.gap_ci_low, row.gap_ci_high))}, "
           f"{esc(fmt(row.effect_size))} SD; {esc(q_text(row.q_value))}")
    text += f"; {gap}."
    target = classifier_target(row.measure)
    if target is not None and poor is not None and len(poor):
        hit = poor[(poor["target"] == target) & (poor["attribute"] == row.attribute)
                   & poor["group"].isin([row.worst_group, row.best_group])]
        for r in hit.itertuples(index=False):
            text += (f" <i>Caution:</i> the {esc(target)} classifier is poor on the originals of "
                     f"<b>{esc(r.group)}</b> (accuracy {esc(fmt(r.accuracy_orig))}), so its flips and accuracy "
                     "changes there say little.")
    return text


def top_rows(findings: pd.DataFrame, k: int = TOP_FINDINGS) -> pd.DataFrame:
    """The first ``k`` rows of ``findings`` with distinct (measure, attribute, codec)."""
    keys = findings[["measure", "attribute", "codec"]].astype(str).agg("\x1f".join, axis=1)
    return findings[~keys.duplicated()].head(k)


def poor_classifiers(ctx: ReportContext) -> pd.DataFrame | None:
    """Flagged (target, attribute, group) rows of the run's classifiers, None without labels."""
    read = ctx.accuracy
    if read is None or read[0].empty:
        return None
    orig = accuracy_on_originals(read[0])
    return orig[orig["poor"]]


def statements(ctx: ReportContext, poor: pd.DataFrame | None) -> list[str]:
    """The opening paragraphs: the top significant findings in words, or that there is none."""
    f = ctx.findings
    tested = tested_count(f)
    sig = significant_rows(f)
    if tested == 0:
        return ["<p><b>Nothing was tested.</b> No degradation or drift column has a cell with two groups of "
                f"at least {ctx.min_group_n} usable images, so there is no finding.</p>"]
    if sig.empty:
        n_perm = ctx.run_info.get("n_perm")
        floor = (f" With {esc(fmt(n_perm))} permutations no p-value can be below {1 / (int(n_perm) + 1):.2g}."
                 if isinstance(n_perm, int) and n_perm > 0 else "")
        top = f.iloc[0]
        return [f"<p><b>Nothing is significant.</b> None of the {tested} tests of degradation and drift columns "
                f"has a Benjamini–Hochberg q-value below {SIGNIFICANCE}.{floor}</p>",
                f"<p class='muted'>Largest effect, not significant: {finding_sentence(top, ctx, poor)}</p>"]
    shown = top_rows(sig)
    items = "".join(f"<li>{finding_sentence(r, ctx, poor)}</li>" for r in shown.itertuples(index=False))
    more = len(sig) - len(shown)
    tail = f"{more} more significant row(s) in" if more > 0 else "Every significant row is in"
    return [f"<p><b>{len(sig)} of {tested}</b> tests of degradation and drift columns are significant "
            f"(Benjamini–Hochberg q &lt; {SIGNIFICANCE}). The largest, one per measure, attribute and codec:</p>",
            f"<ol class='findings'>{items}</ol>",
            f"<p class='muted'>{tail} <a href='#significant'>Largest significant gaps</a>. Descriptions of the "
            "images (e.g. the originals' skin tone) are never findings: see "
            "<a href='#descriptive'>Dataset and reconstructions</a>.</p>"]


def figure_parts(ctx: ReportContext) -> list[str]:
    """The four claim figures, each with a heading, or a sentence saying why it is absent."""
    f = ctx.findings
    parts = ["<h3>(a) Pixel fidelity beside skin, identity and classifier measures</h3>"]
    attrs = [a for a in ctx.attributes if (f["attribute"] == a).any()] if len(f) else []
    if attrs:
        families = {m: family(m, ctx.face_columns) for m in dict.fromkeys(f["measure"])}
        for attr in attrs:
            parts.append(ctx.figure(claims.family_gap_figure(f, families, attr), f"findings_families_{attr}",
                                    f"Gap / SD across {attr} at each codec's lowest rate, one bar per measure, "
                                    "coloured by family; faded bars are not significant"))
    else:
        parts.append("<p>No degradation or drift column has a gap.</p>")
    parts.append("<h3>(b) Gap at equal rate</h3>")
    er = ctx.equal_rate
    if er is not None and not er[1].empty:
        points, curves = er
        pairs = claims.headline_pairs(f, set(zip(curves["measure"], curves["attribute"])))
        if pairs:
            parts.append(ctx.figure(claims.equal_rate_overview_figure(curves, points, pairs), "findings_equal_rate",
                                    "Gap at equal rate per codec (95% bootstrap bands) for the best-ranked "
                                    "measures; all measures in Bias at equal rate"))
        else:
            parts.append("<p>No finding's column has a curve at equal rate.</p>")
    else:
        parts.append("<p>No codec has two settings with usable rates, so no gap is interpolated to a common "
                     "rate.</p>")
    parts.append("<h3>(c) Bias against realism</h3>")
    if ctx.realism is None:
        parts.append("<p>This run measured no realism (add <code>realism:</code> to the spec).</p>")
    elif not len(f):
        parts.append("<p>No degradation or drift column has a gap.</p>")
    else:
        pairs = claims.headline_pairs(f, None)
        attr = pairs[0][1]  # the attribute of the best-ranked finding
        measures = [m for m, a in pairs if a == attr]
        parts.append(ctx.figure(bias_vs_realism_figure(ctx.realism, ctx.bias, attr, measures), "findings_realism",
                                f"Gap across {attr} against the Fréchet distance of each cell, per codec"))
    parts.append("<h3>(d) Compression against classifier</h3>")
    att = ctx.attribution
    if att is not None:
        attr = next((a for a in ctx.attributes if (att["attribute"] == a).any()), att["attribute"].iloc[0])
        sub = claims.attribution_overview(att, attr)
        parts.append(ctx.figure(attribution_figure(sub), "findings_attribution",
                                f"Loss gap across {attr} at each codec's lowest rate: the classifier's own part "
                                "(on originals) and the part coding added (95% bootstrap CIs)"))
    else:
        parts.append("<p>This run has no classifier loss with true labels (<code>T_loss_orig</code> and "
                     "<code>T_loss_recon</code>), so classifier bias is not split into the classifier's part and "
                     "the compression's part.</p>")
    return parts


def findings_section(ctx: ReportContext) -> Section:
    """The report's opening section."""
    poor = poor_classifiers(ctx)
    parts = statements(ctx, poor)
    if poor is not None and len(poor):
        names = ", ".join(f"{esc(r.target)} on {esc(r.attribute)} <b>{esc(r.group)}</b>"
                          for r in poor.itertuples(index=False))
        parts.append(f"<p class='note'>Classifiers poor on the originals of some group (their flips there say "
                     f"little): {names}; see <a href='#accuracy-bias'>Classifier accuracy per group</a>.</p>")
    parts.append(small_groups_note(ctx))
    parts += figure_parts(ctx)
    return Section("Findings", "".join(parts), "findings")
