"""The self-contained HTML report of a run directory.

The page is a header plus an ordered list of :class:`Section` objects. Each section is
made by a *builder*, ``builder(ctx: ReportContext) -> Section | None``; the default
builders are :data:`DEFAULT_SECTIONS`. Later analyses add sections by passing extra
builders (or ready :class:`Section` objects) to :func:`render_report` /
:func:`write_report`, without touching the existing ones.

Figures are written to ``RUN_DIR/figures/*.png`` and embedded in the page as base64
PNG data URIs, so ``report.html`` needs no other file and no JavaScript. Every string
that comes from data (group, codec and setting names, error messages, run metadata) is
escaped with :func:`html.escape`; a section's ``html`` is trusted markup.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from string import Template
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from fairbits.bias.fdr import SIGNIFICANCE
from fairbits.bias.findings import findings_table, read_findings
from fairbits.bias.kinds import DEGRADATION, DESCRIPTIVE, DRIFT, ColumnKind, resolve_kinds
from fairbits.bias.stats import error_mask, read_stats, run_min_group_n, write_stats
from fairbits.fileio import atomic_write_text
from fairbits.report import figures as F

TOP_GAPS = 20
MAX_ERROR_MESSAGES = 30


# --------------------------------------------------------------------------- building blocks
@dataclass
class Section:
    """One titled part of the report; ``html`` is trusted markup placed under the title."""

    title: str
    html: str
    id: str = ""

    def anchor(self) -> str:
        return self.id or F.safe_name(self.title).lower()


@dataclass
class ReportContext:
    """What section builders read: the run's tables and where figures go."""

    run_dir: Path
    results: pd.DataFrame
    manifest: pd.DataFrame
    run_info: dict
    summary: pd.DataFrame
    bias: pd.DataFrame
    pairwise: pd.DataFrame
    figures_dir: Path
    figure_files: list[Path] = field(default_factory=list)
    findings: pd.DataFrame | None = None
    kinds: dict[str, ColumnKind] = field(default_factory=dict)

    def __post_init__(self):
        # the same resolution as the statistics (run.json's column_kinds first)
        cols = [c for c in self.measures if c not in self.kinds]
        self.kinds.update(resolve_kinds(cols, run_info=self.run_info))
        if self.findings is None:  # tables from before findings.csv existed have no kind: no findings
            self.findings = findings_table(self.bias)

    def kind(self, column: str) -> ColumnKind:
        """The kind of a column (descriptive when nothing declares it)."""
        if column not in self.kinds:
            self.kinds[column] = resolve_kinds([column], run_info=self.run_info)[column]
        return self.kinds[column]

    @property
    def min_group_n(self) -> int:
        return run_min_group_n(self.run_info)

    def figure(self, fig, name: str, caption: str = "") -> str:
        """Save ``fig`` as ``figures/<name>.png`` and return an ``<figure>`` embedding it."""
        path = self.figures_dir / f"{F.safe_name(name)}.png"
        data = F.save_png(fig, path)
        self.figure_files.append(path)
        b64 = base64.b64encode(data).decode("ascii")
        cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
        return f'<figure><img src="data:image/png;base64,{b64}" alt="{esc(caption or name)}">{cap}</figure>'

    @property
    def measures(self) -> list[str]:
        """Measure columns in the bias table, in order (``bpp`` included)."""
        return list(dict.fromkeys(self.bias["measure"])) if len(self.bias) else []

    @property
    def face_columns(self) -> set[str]:
        """Columns of face measures (shown in the phenotype section, not the pixel ones)."""
        from fairbits.measures.classifiers import is_classifier_column

        cols = set(self.run_info.get("face_columns", [])) | {"identity_nonmatch"}
        return cols | {m for m in self.measures if is_classifier_column(m)}

    @property
    def pixel_measures(self) -> list[str]:
        """:attr:`measures` without the face measures' columns."""
        return [m for m in self.measures if m not in self.face_columns]

    @property
    def attributes(self) -> list[str]:
        """Group columns audited."""
        groups = self.run_info.get("groups") or []
        found = list(dict.fromkeys(self.bias["attribute"])) if len(self.bias) else []
        return [g for g in groups if g in found] + [g for g in found if g not in groups] or list(groups)


SectionBuilder = Callable[[ReportContext], "Section | None"]


def esc(value) -> str:
    """HTML-escape any value as text."""
    return html.escape(str(value), quote=True)


def fmt(value) -> str:
    """A number with 3 significant digits (integers in full); missing values as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v != 0 and abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}"
    return str(value)


def table(df: pd.DataFrame, columns: Sequence[tuple[str, str]] | None = None, *, classes: str = "") -> str:
    """An HTML table of ``df``; ``columns`` is ``[(column, header)]``. Numbers right-aligned."""
    columns = list(columns) if columns is not None else [(c, c) for c in df.columns]
    numeric = {c: pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               for c, _ in columns}
    head = "".join(f'<th class="num">{esc(h)}</th>' if numeric[c] else f"<th>{esc(h)}</th>" for c, h in columns)
    body = []
    for row in df[[c for c, _ in columns]].itertuples(index=False):
        cells = []
        for (c, _), v in zip(columns, row):
            if numeric[c]:
                cells.append(f'<td class="num">{esc(fmt(v))}</td>')
            else:
                cls = {"error": "msg", "gap_ci": "nowrap"}.get(c, "")
                cells.append(f'<td class="{cls}">{esc(fmt(v))}</td>')
        body.append("<tr>" + "".join(cells).replace(' class=""', "") + "</tr>")
    cls = f' class="{esc(classes)}"' if classes else ""
    return (f'<div class="scroll"><table{cls}><thead><tr>{head}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table></div>")


def _direction(measure: str, ctx: ReportContext) -> bool | None:
    """Higher-is-better of a degradation column; None for drift and descriptive columns."""
    return ctx.kind(measure).higher_is_better


def kind_label(kind: ColumnKind) -> str:
    """How a column reads: "higher is better", "lower is better", "signed change, 0 is ideal", "descriptive"."""
    if kind.kind == DEGRADATION:
        return "higher is better" if kind.higher_is_better else "lower is better"
    return "signed change, 0 is ideal" if kind.kind == DRIFT else "descriptive"


def _ci(lo, hi) -> str:
    return f"[{fmt(lo)}, {fmt(hi)}]"


# --------------------------------------------------------------------------- sections
def header_html(ctx: ReportContext) -> str:
    """Title and run metadata (name, date, dataset, images, groups, cells, seed)."""
    info = ctx.run_info
    name = info.get("name") or ctx.run_dir.resolve().name
    date = info.get("created") or info.get("date")
    if not date:
        path = ctx.run_dir / "run.json"
        ts = path.stat().st_mtime if path.is_file() else datetime.now().timestamp()
        date = datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")
    dataset = info.get("dataset", "–")
    if isinstance(dataset, dict):
        dataset = dataset.get("name") or dataset.get("path") or json.dumps(dataset)
    n_images = len(ctx.manifest) if len(ctx.manifest) else ctx.results["image_id"].nunique()
    cells = info.get("cells") or [{"codec": c, "setting": s} for c, s in
                                  ctx.results[["codec", "setting"]].drop_duplicates().itertuples(index=False)]
    by_codec: dict[str, list[str]] = {}
    for c in cells:
        by_codec.setdefault(str(c.get("codec")), []).append(str(c.get("setting")))
    codec_html = "<br>".join(f"<b>{esc(c)}</b>: {esc(', '.join(s))}" for c, s in by_codec.items())
    rows = [("Date", esc(date)), ("Dataset", esc(dataset)), ("Images", esc(fmt(n_images))),
            ("Groups audited", esc(", ".join(map(str, ctx.attributes))) or "–"),
            ("Codecs / settings", codec_html or "–"), ("Seed", esc(info.get("seed", "–")))]
    meta = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f"<h1>{esc(name)}</h1><div class='muted'>fairbits audit report</div><dl class='meta'>{meta}</dl>"


def _image_groups(ctx: ReportContext, attr: str) -> pd.Series:
    """The group label of every image for ``attr`` (from the manifest, else the results)."""
    if attr in ctx.manifest.columns and "image_id" in ctx.manifest.columns:
        src = ctx.manifest
    else:
        src = ctx.results.drop_duplicates("image_id")
    return src.set_index("image_id")[attr].astype("string").fillna("(missing)")


def composition_section(ctx: ReportContext) -> Section:
    """Images per group (bar chart + table), errors per group and cell, distinct error messages."""
    attrs = [a for a in ctx.attributes if a in ctx.results.columns or a in ctx.manifest.columns]
    counts = {a: _image_groups(ctx, a).value_counts().sort_index() for a in attrs}
    parts = []
    if counts:
        parts.append(ctx.figure(F.group_counts_figure(counts), "composition", "Images per group"))
    err = error_mask(ctx.results)
    failed = ctx.results.loc[err]
    rows = []
    for a in attrs:
        labels = _image_groups(ctx, a)
        bad_images = labels[labels.index.isin(set(failed["image_id"]))].value_counts()
        bad_rows = failed["image_id"].map(labels).value_counts()
        for g, n in counts[a].items():
            rows.append((a, g, int(n), int(bad_images.get(g, 0)), int(bad_rows.get(g, 0))))
    comp = pd.DataFrame(rows, columns=["attribute", "group", "images", "images_err", "rows_err"])
    parts.append("<h3>Images and errors per group</h3>")
    parts.append(table(comp, [("attribute", "attribute"), ("group", "group"), ("images", "images"),
                              ("images_err", "images with an error"), ("rows_err", "error rows")]))
    if failed.empty:
        parts.append("<p>No image failed in any cell.</p>")
    else:
        per_cell = []
        for a in attrs:
            grp = failed["image_id"].map(_image_groups(ctx, a))
            total = ctx.results.groupby(["codec", "setting"], sort=False).size()
            for (g, codec, setting), n in failed.groupby([grp, failed["codec"], failed["setting"]],
                                                         sort=True).size().items():
                per_cell.append((a, g, codec, setting, int(n), int(total.get((codec, setting), 0))))
        per_cell_df = pd.DataFrame(per_cell, columns=["attribute", "group", "codec", "setting", "errors", "rows"])
        parts.append("<h3>Errors per group and cell</h3>")
        parts.append(table(per_cell_df, [("attribute", "attribute"), ("group", "group"), ("codec", "codec"),
                                         ("setting", "setting"), ("errors", "error rows"),
                                         ("rows", "rows in cell")]))
        msgs = failed["error"].astype(str).str.slice(0, 300).value_counts()
        msg_df = pd.DataFrame({"error": msgs.index, "count": msgs.to_numpy()}).head(MAX_ERROR_MESSAGES)
        parts.append(f"<h3>Error messages</h3><p class='muted'>{len(msgs)} distinct message(s)"
                     f"{', most frequent first' if len(msgs) > 1 else ''}.</p>")
        parts.append(table(msg_df, [("error", "message"), ("count", "rows")]))
    return Section("Dataset composition and errors", "".join(parts), "composition")


def rd_section(ctx: ReportContext) -> Section | None:
    """Per-group rate-distortion curves of the pixel measures that are not descriptive: one
    figure per measure and attribute, a panel per codec."""
    parts = []
    for m in (m for m in ctx.pixel_measures if ctx.kind(m).kind != DESCRIPTIVE):
        parts.append(f"<h3>{esc(m)} <span class='muted'>({esc(kind_label(ctx.kind(m)))})</span></h3>")
        for a in ctx.attributes:
            if not ((ctx.summary.measure == m) & (ctx.summary.attribute == a)).any():
                continue
            fig = F.rd_figure(ctx.summary, m, a, _direction(m, ctx))
            parts.append(ctx.figure(fig, f"rd_{m}_{a}", f"{m} per {a}: group means with 95% confidence intervals"))
    if not parts:
        return None
    intro = ("<p>For each codec, every line is one group: x is the group's mean bits per pixel at a "
             "setting, y the group's mean score, error bars the 95% confidence interval of the mean.</p>")
    return Section("Rate–distortion curves per group", intro + "".join(parts), "rd")


def gap_section(ctx: ReportContext) -> Section | None:
    """Gap (max − min group mean) versus bpp per pixel degradation or drift, one line per codec."""
    parts = []
    for m in (m for m in ctx.pixel_measures if ctx.kind(m).kind != DESCRIPTIVE):
        sub = ctx.bias[(ctx.bias.measure == m) & (ctx.bias.n_groups >= 2)]
        if sub.empty:
            continue
        parts.append(f"<h3>{esc(m)}</h3>")
        parts.append(ctx.figure(F.gap_figure(ctx.bias, m), f"gap_{m}",
                                f"Gap in {m} between the groups with the highest and lowest mean, with 95% "
                                "bootstrap CIs"))
    if not parts:
        return None
    intro = ("<p>The gap is the largest difference between group means in a cell (codec, setting). "
             f"Circled points are significant: Benjamini–Hochberg q-value below {SIGNIFICANCE}.</p>")
    return Section("Gap versus bit rate", intro + "".join(parts), "gaps")


BIAS_DISPLAY = [("measure", "measure"), ("kind", "kind"), ("attribute", "attribute"), ("codec", "codec"),
                ("setting", "setting"), ("bpp_mean", "bpp"), ("gap", "gap"), ("gap_ci", "95% CI"),
                ("effect_size", "gap / SD"), ("worst_group", "worst group"), ("best_group", "best group"),
                ("p_value", "p"), ("q_value", "q"), ("n_groups", "groups"), ("n", "n"), ("note", "note")]
FINDINGS_DISPLAY = [("measure", "measure"), ("kind", "kind"), ("attribute", "attribute"), ("codec", "codec"),
                    ("setting", "setting"), ("bpp_mean", "bpp"), ("gap", "gap"), ("gap_ci", "95% CI"),
                    ("effect_size", "gap / SD"), ("worst", "worst group (mean)"), ("best", "best group (mean)"),
                    ("p_value", "p"), ("q_value", "q")]


def _bias_display(bias: pd.DataFrame) -> pd.DataFrame:
    """A bias or findings table with display columns: ``gap_ci`` and worst/best with their means."""
    out = bias.copy()
    for c in ("kind", "q_value", "effect_size", "note", "worst_mean", "best_mean"):
        if c not in out.columns:
            out[c] = np.nan if c not in ("kind", "note") else ""
    out["note"] = out["note"].fillna("")
    out["gap_ci"] = [_ci(lo, hi) for lo, hi in zip(out.gap_ci_low, out.gap_ci_high)]
    for side in ("worst", "best"):
        out[side] = [f"{fmt(g)} ({fmt(m)})" if isinstance(g, str) and g else "–"
                     for g, m in zip(out[f"{side}_group"], out[f"{side}_mean"])]
    return out


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
    """The headline: significant rows of findings.csv (degradation and drift only, q < 0.05),
    ranked by effect size; the full bias table folded below."""
    f = _bias_display(ctx.findings)
    tested = int(pd.to_numeric(f["p_value"], errors="coerce").notna().sum()) if len(f) else 0
    sig = f[f["significant"].astype(bool)] if len(f) else f
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
    b = _bias_display(ctx.bias)
    parts.append(f"<details><summary>Full bias table ({len(b)} rows, every kind)</summary>"
                 f"{table(b, BIAS_DISPLAY)}</details>")
    return Section("Largest significant gaps", "".join(parts), "significant")


def descriptive_section(ctx: ReportContext) -> Section | None:
    """Descriptive columns per group (originals, reconstructions, predictions, rates), not ranked."""
    cols = [m for m in ctx.measures if ctx.kind(m).kind == DESCRIPTIVE]
    s = ctx.summary[ctx.summary.measure.isin(cols)]
    if s.empty:
        return None
    rows = []
    for m in cols:
        sm = s[s.measure == m]
        if sm.empty:
            continue
        if m.endswith("_orig") or m == "face_found":  # the originals are the same in every cell: show one
            first = sm.iloc[0][["codec", "setting"]].tolist()
            sm = sm[(sm.codec == first[0]) & (sm.setting == first[1])].assign(codec="(originals)", setting="")
        rows.append(sm)
    shown = pd.concat(rows, ignore_index=True)
    shown["ci"] = [_ci(lo, hi) for lo, hi in zip(shown.ci_low, shown.ci_high)]
    parts = ["<p>Properties of the images rather than of what coding did to them: the originals' skin tone "
             "and features, the same read on the reconstructions, classifiers' predictions and their accuracy "
             "on originals (the classifier's own bias), the rate each group gets. Group differences here "
             "describe the dataset and are not ranked as bias; columns measured on originals are shown once.</p>",
             "<details><summary>Descriptive columns per group "
             f"({len(cols)} columns)</summary>",
             table(shown, [("measure", "column"), ("attribute", "attribute"), ("group", "group"),
                           ("codec", "codec"), ("setting", "setting"), ("n", "n"), ("mean", "mean"),
                           ("ci", "95% CI")]), "</details>"]
    return Section("Dataset and reconstructions", "".join(parts), "descriptive")


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
studentized bootstrap intervals otherwise ({esc(fmt(n_boot))} resamples of images within each group), which
keep their coverage on skewed measures; the gap's interval is a percentile bootstrap interval and leans
upwards (a maximum of noisy means), so judge significance by the q-value.</li>
<li><b>p-values</b> come from a permutation test of the hypothesis that all groups are equal
({esc(fmt(n_perm))} shuffles of the group labels within the cell); <b>q-values</b> correct them for the many
tests of the run (Benjamini–Hochberg false discovery rate). Significant means q &lt; {SIGNIFICANCE}.</li>
<li>Groups with fewer than {ctx.min_group_n} usable images are shown per group but left out of gaps and tests.
Images with an error, and missing or infinite scores, are left out of that measure; <i>n</i> counts the
images used.</li>
<li>Pixel fidelity measures can miss bias that matters for people: a codec may keep PSNR equal across
groups and still shift skin tone or facial features. Phenotype and identity measures are separate
analyses.</li>
</ul></div>"""
    return Section("How to read this report", text, "reading")


DEFAULT_SECTIONS: list[SectionBuilder] = [composition_section, significant_section, rd_section, gap_section,
                                          descriptive_section, reading_section]


# --------------------------------------------------------------------------- page
def _page(header: str, sections: Sequence[Section], footer: str, title: str) -> str:
    toc = "".join(f'<li><a href="#{esc(s.anchor())}">{esc(s.title)}</a></li>' for s in sections)
    body = "".join(f'<section id="{esc(s.anchor())}"><h2>{esc(s.title)}</h2>{s.html}</section>' for s in sections)
    template = Template(resources.files("fairbits.report").joinpath("report.html").read_text(encoding="utf-8"))
    return template.substitute(title=esc(title), header=header, toc=f'<nav class="toc"><ol>{toc}</ol></nav>',
                               body=body, footer=footer)


def _load_stats(run_dir: Path, results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The run's summary/bias/pairwise CSVs, written first with :func:`write_stats` if any
    (or ``findings.csv``) is missing."""
    if not all((run_dir / f"{n}.csv").is_file() for n in ("summary", "bias", "pairwise", "findings")):
        write_stats(run_dir, results)
    return read_stats(run_dir)


def render_report(run_dir: str | Path, results: pd.DataFrame, manifest: pd.DataFrame, run_info: dict, *,
                  summary: pd.DataFrame | None = None, bias: pd.DataFrame | None = None,
                  pairwise: pd.DataFrame | None = None,
                  sections: Iterable[SectionBuilder] | None = None,
                  extra_sections: Iterable[SectionBuilder | Section] = ()) -> Path:
    """Write ``run_dir/report.html`` (and ``run_dir/figures/*.png``) from the given tables.

    Missing ``summary``/``bias``/``pairwise`` are read from the run's CSVs (computed and
    written first when absent), ``findings.csv`` with them; given tables are used as they
    are (the findings are then derived from ``bias``). ``sections`` replaces :data:`DEFAULT_SECTIONS`;
    ``extra_sections`` (builders or ready :class:`Section` objects) are appended in order.
    Returns the report's path.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    findings = None
    if summary is None or bias is None or pairwise is None:
        s, b, p = _load_stats(run_dir, results)
        findings = read_findings(run_dir) if bias is None else None
        summary = s if summary is None else summary
        bias = b if bias is None else bias
        pairwise = p if pairwise is None else pairwise
    ctx = ReportContext(run_dir, results, manifest if manifest is not None else pd.DataFrame(), run_info or {},
                        summary, bias, pairwise, run_dir / "figures", findings=findings)
    built = []
    for item in [*(sections if sections is not None else _builtin_sections()), *extra_sections]:
        section = item if isinstance(item, Section) else item(ctx)
        if section is not None:
            built.append(section)
    title = str(ctx.run_info.get("name") or run_dir.resolve().name)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    from fairbits import __version__
    footer = f"Generated by fairbits {esc(__version__)} at {esc(now)}."
    return atomic_write_text(run_dir / "report.html",
                             _page(header_html(ctx), built, footer, f"fairbits report: {title}"))


def _builtin_sections() -> list[SectionBuilder]:
    from fairbits.report.checks import fast_check_section
    from fairbits.report.paired import paired_section
    from fairbits.report.phenotype import phenotype_section
    from fairbits.report.realism import realism_section

    *body, reading = DEFAULT_SECTIONS  # the reading guide stays last
    return [*body, phenotype_section, paired_section, realism_section, fast_check_section, reading]


def write_report(run_dir: str | Path, *, extra_sections: Iterable[SectionBuilder | Section] = ()) -> Path:
    """Read a run directory (results, manifest, run.json, stats CSVs) and write its ``report.html``."""
    from fairbits.audit.store import load_results

    run_dir = Path(run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    manifest_path = run_dir / "manifest.parquet"
    manifest = pd.read_parquet(manifest_path) if manifest_path.is_file() else pd.DataFrame()
    return render_report(run_dir, load_results(run_dir), manifest, info, extra_sections=extra_sections)
