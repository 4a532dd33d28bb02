"""Report section "How to read this report": kinds of columns, gaps, intervals, tests."""

from __future__ import annotations

from fairbits.bias.fdr import SIGNIFICANCE
from fairbits.report.accuracy import POOR_ACCURACY, POOR_MARGIN
from fairbits.report.context import ReportContext
from fairbits.report.kit import Section, esc, fmt


def reading_section(ctx: ReportContext) -> Section:
    """How to read the numbers."""
    n_boot = ctx.run_info.get("n_boot", 1000)
    n_perm = ctx.run_info.get("n_perm", 1000)
    text = f"""<div class="note"><ul>
<li><b>Kinds of columns.</b> A <i>degradation</i> is what the system did to the image, with a direction
(PSNR: higher is better; ΔE, flips, classifier loss on reconstructions: lower is better). A <i>drift</i> is a
signed change where 0 is ideal (ΔITA°, Δage). A <i>descriptive</i> column is a property of the original or of
the reconstruction alone (ITA° of the original, predicted classes, the classifier's accuracy on originals).
Only degradations and drifts are tested and ranked.</li>
<li><b>Gap</b>: the difference between the highest and the lowest group mean of a column in one cell (codec
and setting). The <b>worst group</b> of a degradation has the lowest mean when higher is better and the highest
when lower is better; for a drift it is the group that moved most (largest absolute mean change). <b>gap / SD</b>
is the gap over the pooled within-group standard deviation: a unit-free effect size that ranks the findings.
<b>Ratio</b> (in the CSV) is lowest / highest mean.</li>
<li><b>Confidence intervals</b> of group means are Wilson score intervals for rates (0/1 columns) and
studentized bootstrap intervals otherwise ({esc(fmt(n_boot))} resamples of images within each group, at
Hesterberg's expanded level for small groups), which keep their coverage on skewed measures; the gap's interval is a percentile bootstrap interval and leans
upwards (a maximum of noisy means), so judge significance by the q-value.</li>
<li><b>p-values</b> come from a permutation test of the hypothesis that all groups are equal
({esc(fmt(n_perm))} shuffles of the group labels within the cell); <b>q-values</b> correct them for the many
tests of the run (Benjamini–Hochberg false discovery rate). Significant means q &lt; {SIGNIFICANCE}.</li>
<li><b>Findings</b>, at the top, reads the best-ranked significant rows of <code>findings.csv</code> in words:
shares of each group for 0/1 outcomes (flips, changed categories), group means with their direction for other
degradations, signed mean changes for drifts. Figure (a) puts measures in different units on one axis by their
gap / SD. A classifier is <b>flagged</b> for a group when its accuracy on that group's originals is below
{POOR_ACCURACY:g}, or its Wilson 95% upper bound is below its accuracy over all groups minus {POOR_MARGIN:g}
(groups of at least {ctx.min_group_n} labelled images): its flips there say little.</li>
<li>Groups with fewer than {ctx.min_group_n} usable images are shown per group but left out of gaps and tests.
Images with an error, and missing or infinite scores, are left out of that measure; <i>n</i> counts the
images used.</li>
<li>Pixel fidelity measures can miss bias that matters for people: a codec may keep PSNR equal across
groups and still shift skin tone or facial features. Phenotype and identity measures are separate
analyses.</li>
</ul></div>"""
    return Section("How to read this report", text, "reading")
