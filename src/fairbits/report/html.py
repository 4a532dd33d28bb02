"""The self-contained HTML report of a run directory: the page.

The report is built in three layers:

* the kit — :mod:`fairbits.report.kit` (:class:`Section`, tables, number and interval
  formatting, figure embedding), :mod:`fairbits.report.figures` (plotting primitives),
  :mod:`fairbits.report.context` (:class:`ReportContext`: what sections read) and
  :mod:`fairbits.report.wording` (how columns read in words);
* the sections, one module per theme, each a builder ``builder(ctx) -> Section | None``;
* this page, which assembles them in the order of :func:`default_sections` under a
  header of run metadata, with a table of contents.

Figures are written to ``RUN_DIR/figures/*.png`` and embedded in the page as base64
PNG data URIs, so ``report.html`` needs no other file and no JavaScript. Every string
that comes from data is escaped; a section's ``html`` is trusted markup.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from string import Template
from typing import Iterable, Sequence

import pandas as pd

from fairbits.bias.findings import read_findings
from fairbits.bias.stats import read_stats, write_stats
from fairbits.fileio import atomic_write_text
from fairbits.report.accuracy import accuracy_section
from fairbits.report.attribution import attribution_section
from fairbits.report.bias_tables import significant_section
from fairbits.report.context import ReportContext, SectionBuilder
from fairbits.report.dataset import composition_section, descriptive_section
from fairbits.report.equal_rate import equal_rate_section
from fairbits.report.headline import findings_section
from fairbits.report.integrity import missing_rows_section
from fairbits.report.kit import Section, esc, fmt
from fairbits.report.mitigation import mitigation_section
from fairbits.report.paired import paired_section
from fairbits.report.phenotype import phenotype_section
from fairbits.report.rate_distortion import gap_section, rd_section
from fairbits.report.reading import reading_section
from fairbits.report.realism import realism_section

__all__ = ["ReportContext", "Section", "SectionBuilder", "default_sections", "header_html", "render_report",
           "write_report"]


def default_sections() -> list[SectionBuilder]:
    """The report's sections in page order: a warning about missing rows, the findings, the
    ranked table, the dataset, rate–distortion, equal rate, mitigation (training variants), the
    classifiers, face measures, attribution, pairs, realism, fast-mode checks, and the reading
    guide last."""
    from fairbits.report.checks import fast_check_section  # reads the coder's tolerances

    return [missing_rows_section, findings_section, significant_section, composition_section,
            descriptive_section, rd_section, gap_section, equal_rate_section, mitigation_section, accuracy_section,
            phenotype_section, attribution_section, paired_section, realism_section, fast_check_section,
            reading_section]


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


def page(header: str, sections: Sequence[Section], footer: str, title: str) -> str:
    """The HTML document: ``report.html``'s template filled with a table of contents and the sections."""
    toc = "".join(f'<li><a href="#{esc(s.anchor())}">{esc(s.title)}</a></li>' for s in sections)
    body = "".join(f'<section id="{esc(s.anchor())}"><h2>{esc(s.title)}</h2>{s.html}</section>' for s in sections)
    template = Template(resources.files("fairbits.report").joinpath("report.html").read_text(encoding="utf-8"))
    return template.substitute(title=esc(title), header=header, toc=f'<nav class="toc"><ol>{toc}</ol></nav>',
                               body=body, footer=footer)


def load_stats(run_dir: Path, results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
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
    are (the findings are then derived from ``bias``). ``sections`` replaces
    :func:`default_sections`; ``extra_sections`` (builders or ready :class:`Section`
    objects) are appended in order, except builders already among the sections (the
    default page has the missing-rows, accuracy and equal-rate sections in place).
    Returns the report's path.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    findings = None
    if summary is None or bias is None or pairwise is None:
        s, b, p = load_stats(run_dir, results)
        findings = read_findings(run_dir) if bias is None else None
        summary = s if summary is None else summary
        bias = b if bias is None else bias
        pairwise = p if pairwise is None else pairwise
    ctx = ReportContext(run_dir, results, manifest if manifest is not None else pd.DataFrame(), run_info or {},
                        summary, bias, pairwise, run_dir / "figures", findings=findings)
    builders = list(sections if sections is not None else default_sections())
    builders += [item for item in extra_sections if isinstance(item, Section) or item not in builders]
    built = []
    for item in builders:
        section = item if isinstance(item, Section) else item(ctx)
        if section is not None:
            built.append(section)
    title = str(ctx.run_info.get("name") or run_dir.resolve().name)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    from fairbits import __version__
    footer = f"Generated by fairbits {esc(__version__)} at {esc(now)}."
    return atomic_write_text(run_dir / "report.html",
                             page(header_html(ctx), built, footer, f"fairbits report: {title}"))


def write_report(run_dir: str | Path, *, extra_sections: Iterable[SectionBuilder | Section] = ()) -> Path:
    """Read a run directory (results, manifest, run.json, stats CSVs) and write its ``report.html``."""
    from fairbits.audit.store import load_results

    run_dir = Path(run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    manifest_path = run_dir / "manifest.parquet"
    manifest = pd.read_parquet(manifest_path) if manifest_path.is_file() else pd.DataFrame()
    return render_report(run_dir, load_results(run_dir), manifest, info, extra_sections=extra_sections)
