"""HTML kit of the audit report: sections, tables, number and interval formatting, figures.

Every string that comes from data (group, codec and setting names, error messages, run
metadata) goes through :func:`esc` (:func:`html.escape`); a :class:`Section`'s ``html``
is trusted markup. Figures are embedded as base64 PNG data URIs (:func:`figure_html`),
so the page needs no other file and no JavaScript.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from fairbits.bias.kinds import DEGRADATION, DRIFT, ColumnKind
from fairbits.report.figures import safe_name


@dataclass
class Section:
    """One titled part of the report; ``html`` is trusted markup placed under the title."""

    title: str
    html: str
    id: str = ""

    def anchor(self) -> str:
        return self.id or safe_name(self.title).lower()


def esc(value) -> str:
    """HTML-escape any value as text."""
    return html.escape(str(value), quote=True)


def missing(value) -> bool:
    """Whether ``value`` is None, NaN or ``pd.NA``."""
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value))


def fmt(value) -> str:
    """A number with 3 significant digits (integers in full); missing values as an en dash."""
    if missing(value):
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


def signed(value) -> str:
    """:func:`fmt` with an explicit sign (``+7.2``, ``−16.3``, ``0``)."""
    if missing(value):
        return "–"
    v = float(value)
    body = fmt(abs(v))
    return body if body == "0" else ("+" if v > 0 else "−") + body


def percent(value) -> str:
    """A share in [0, 1] as a percentage: ``40 %``, ``2.5 %``, ``0 %``."""
    if missing(value):
        return "–"
    p = 100 * float(value)
    return f"{p:.0f} %" if p == 0 or abs(p) >= 10 else f"{p:.2g} %"


def ci(lo, hi) -> str:
    """An interval as ``[lo, hi]``."""
    return f"[{fmt(lo)}, {fmt(hi)}]"


def q_text(q) -> str:
    """A q-value in words: ``q < 0.001`` or ``q = 0.012`` (plain text, escape before use)."""
    if missing(q):
        return "not tested"
    q = float(q)
    return "q < 0.001" if q < 0.001 else f"q = {q:.2g}"


def kind_label(kind: ColumnKind) -> str:
    """How a column reads: "higher is better", "lower is better", "signed change, 0 is ideal", "descriptive"."""
    if kind.kind == DEGRADATION:
        return "higher is better" if kind.higher_is_better else "lower is better"
    return "signed change, 0 is ideal" if kind.kind == DRIFT else "descriptive"


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


def figure_html(png: bytes, caption: str = "", alt: str = "") -> str:
    """An ``<figure>`` embedding ``png`` (bytes) as a data URI, with an escaped caption."""
    b64 = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{b64}" alt="{esc(caption or alt)}">{cap}</figure>'
