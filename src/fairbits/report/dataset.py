"""Report sections on the dataset: images and errors per group ("Dataset composition and
errors"), and the descriptive columns per group ("Dataset and reconstructions")."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from fairbits.bias.kinds import DESCRIPTIVE
from fairbits.bias.stats import error_mask
from fairbits.report.context import ReportContext
from fairbits.report.figures import new_figure, style, text
from fairbits.report.kit import Section, ci, esc, fmt, table

MAX_ERROR_MESSAGES = 30


def group_counts_figure(counts: dict[str, pd.Series]) -> Figure:
    """Bar chart of images per group, one panel per attribute (``{attribute: counts}``)."""
    fig, axes = new_figure(len(counts))
    for ax, (attr, series) in zip(axes, counts.items()):
        labels = [text(g) for g in series.index]
        bars = ax.bar(range(len(series)), series.to_numpy(), color="#4c72b0")
        ax.bar_label(bars, fontsize=8)
        ax.set_xticks(range(len(series)), labels, rotation=30 if len(series) > 4 else 0, ha="right"
                      if len(series) > 4 else "center", fontsize=8)
        ax.set_title(text(attr), fontsize=10)
        ax.set_ylabel("images")
        ax.margins(y=0.12)
        style(ax)
    return fig


def composition_section(ctx: ReportContext) -> Section:
    """Images per group (bar chart + table), errors per group and cell, distinct error messages."""
    attrs = [a for a in ctx.attributes if a in ctx.results.columns or a in ctx.manifest.columns]
    counts = {a: ctx.image_groups(a).value_counts().sort_index() for a in attrs}
    parts = []
    if counts:
        parts.append(ctx.figure(group_counts_figure(counts), "composition", "Images per group"))
    err = error_mask(ctx.results)
    failed = ctx.results.loc[err]
    rows = []
    for a in attrs:
        labels = ctx.image_groups(a)
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
        parts += error_parts(ctx, attrs, failed)
    return Section("Dataset composition and errors", "".join(parts), "composition")


def error_parts(ctx: ReportContext, attrs: list[str], failed: pd.DataFrame) -> list[str]:
    """Error rows per group and cell, and the distinct messages, most frequent first."""
    per_cell = []
    total = ctx.results.groupby(["codec", "setting"], sort=False).size()
    for a in attrs:
        grp = failed["image_id"].map(ctx.image_groups(a))
        for (g, codec, setting), n in failed.groupby([grp, failed["codec"], failed["setting"]],
                                                     sort=True).size().items():
            per_cell.append((a, g, codec, setting, int(n), int(total.get((codec, setting), 0))))
    per_cell_df = pd.DataFrame(per_cell, columns=["attribute", "group", "codec", "setting", "errors", "rows"])
    msgs = failed["error"].astype(str).str.slice(0, 300).value_counts()
    msg_df = pd.DataFrame({"error": msgs.index, "count": msgs.to_numpy()}).head(MAX_ERROR_MESSAGES)
    return ["<h3>Errors per group and cell</h3>",
            table(per_cell_df, [("attribute", "attribute"), ("group", "group"), ("codec", "codec"),
                                ("setting", "setting"), ("errors", "error rows"), ("rows", "rows in cell")]),
            f"<h3>Error messages</h3><p class='muted'>{len(msgs)} distinct message(s)"
            f"{', most frequent first' if len(msgs) > 1 else ''}.</p>",
            table(msg_df, [("error", "message"), ("count", "rows")])]


def on_originals(column: str) -> bool:
    """Whether a descriptive column is measured on the originals alone (the same in every cell)."""
    return column.endswith("_orig") or column == "face_found"


def descriptive_rows(ctx: ReportContext) -> pd.DataFrame:
    """Summary rows (group means with CIs) of the descriptive columns; a column measured on
    the originals appears once, from its first cell, with codec ``(originals)``."""
    cols = [m for m in ctx.measures if ctx.kind(m).kind == DESCRIPTIVE]
    s = ctx.summary[ctx.summary.measure.isin(cols)]
    rows = []
    for m in cols:
        sm = s[s.measure == m]
        if sm.empty:
            continue
        if on_originals(m):
            first = sm.iloc[0][["codec", "setting"]].tolist()
            sm = sm[(sm.codec == first[0]) & (sm.setting == first[1])].assign(codec="(originals)", setting="")
        rows.append(sm)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def per_group_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (column, attribute, cell), one column per group: ``mean [CI] (n)``."""
    cell = rows.assign(value=[f"{fmt(m)} {ci(lo, hi)} (n = {fmt(n)})"
                              for m, lo, hi, n in zip(rows["mean"], rows.ci_low, rows.ci_high, rows.n)])
    wide = cell.pivot_table(index=["measure", "attribute", "codec", "setting"], columns="group", values="value",
                            aggfunc="first", sort=False).reset_index()
    wide.columns.name = None
    return wide.fillna("")


def descriptive_section(ctx: ReportContext) -> Section | None:
    """Descriptive columns per group (originals, reconstructions, predictions, rates), not ranked."""
    shown = descriptive_rows(ctx)
    if shown.empty:
        return None
    parts = ["<p>Properties of the images rather than of what coding did to them: the originals' skin tone "
             "and features, the same read on the reconstructions, classifiers' predictions and their accuracy "
             "on originals (the classifier's own bias), the rate each group gets. Group differences here "
             "describe the dataset and are <b>not ranked as bias</b>: they are never in the findings. Columns "
             "measured on originals are shown once. Each cell: group mean, 95% confidence interval, images.</p>"]
    keys = ("measure", "attribute", "codec", "setting")
    for attr in dict.fromkeys(shown.attribute):
        rows = shown[shown.attribute == attr]
        orig, recon = rows[rows.codec == "(originals)"], rows[rows.codec != "(originals)"]
        parts.append(f"<h3>Per {esc(attr)}</h3>")
        if len(orig):
            wide = per_group_table(orig)
            groups = [c for c in wide.columns if c not in keys]
            parts.append(table(wide, [("measure", "column (originals)"), *[(g, g) for g in groups]]))
        if len(recon):
            wide = per_group_table(recon)
            groups = [c for c in wide.columns if c not in keys]
            parts.append(f"<details><summary>Reconstructions and rates per group and cell, per {esc(attr)} "
                         f"({len(wide)} rows)</summary>"
                         + table(wide, [("measure", "column"), ("codec", "codec"), ("setting", "setting"),
                                        *[(g, g) for g in groups]]) + "</details>")
    return Section("Dataset and reconstructions", "".join(parts), "descriptive")
