"""Plotting kit of the audit report: figure grids, styling, rate axes, legends, PNG output.

Figures are built on :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot
state), so they can be made from any thread and never open a window. Every label that
comes from data (group, codec, setting names) goes through :func:`text` so a ``$`` in
a name cannot switch matplotlib into math mode. The figures themselves are drawn by the
section modules that show them.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PANEL_W, PANEL_H = 4.2, 3.2  # inches per panel
MAX_PANELS_PER_ROW = 4
DPI = 110
RATE_TICKS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)  # bpp labelled on log rate axes


def text(value) -> str:
    """A data-derived label safe for matplotlib (``$`` escaped, long names cut)."""
    s = str(value).replace("$", r"\$")
    return s if len(s) <= 40 else s[:39] + "…"


def safe_name(*parts) -> str:
    """A file-name stem made of ``parts`` (only letters, digits, ``_.-``)."""
    return "_".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", str(p)).strip("-") or "x" for p in parts)


def new_figure(n_panels: int, *, sharey: bool = False, sharex: bool = False) -> tuple[Figure, list]:
    """A figure with ``n_panels`` axes on a grid of at most :data:`MAX_PANELS_PER_ROW` columns."""
    n_panels = max(1, n_panels)
    ncols = min(n_panels, MAX_PANELS_PER_ROW)
    nrows = -(-n_panels // ncols)
    fig = Figure(figsize=(PANEL_W * ncols, PANEL_H * nrows + 0.5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey, sharex=sharex).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def save_png(fig: Figure, path: str | Path) -> bytes:
    """Write ``fig`` as PNG to ``path`` and return the PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    data = buf.getvalue()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def style(ax) -> None:
    """Light grid, no top or right spine (every figure of the report)."""
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)


def errbar(ax, x, y, lo, hi, label: str, **kwargs) -> None:
    """Line with asymmetric error bars from CI bounds (NaN bounds draw no bar)."""
    y, lo, hi = (np.asarray(a, dtype=float) for a in (y, lo, hi))
    err = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])
    err = np.nan_to_num(err, nan=0.0)
    opts = {"marker": "o", "markersize": 3.5, "capsize": 2.5, "linewidth": 1.3, **kwargs}
    ax.errorbar(x, y, yerr=err, label=label, **opts)


def figure_legend(fig: Figure, axes: list, title: str) -> None:
    """One legend for the whole figure, outside the panels on the right (labels merged across panels)."""
    handles: dict[str, object] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right upper", title=title, fontsize=8,
                   title_fontsize=8, frameon=False)


def positive_range(values) -> tuple[float, float] | None:
    """``(min, max)`` of the finite positive ``values`` (rates), or None when there are none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return (float(v.min()), float(v.max())) if v.size else None


def rate_axis(ax, low: float, high: float) -> None:
    """A log bpp axis from ``low`` to ``high`` (a small margin added) labelled at :data:`RATE_TICKS`
    in plain numbers (no minor labels)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, StrMethodFormatter

    lo, hi = low / 1.1, high * 1.1
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ticks = [t for t in RATE_TICKS if lo <= t <= hi] or [float(f"{np.sqrt(lo * hi):.2g}")]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def shared_rate_axis(axes, rates) -> None:
    """The same log bpp axis (:func:`rate_axis`) on every panel of ``axes``, spanning ``rates``
    (every codec's), so a codec with one setting is not drawn on its own squashed scale.
    Nothing is changed when no rate is positive."""
    span = positive_range(rates)
    if span is not None:
        for ax in axes:
            rate_axis(ax, *span)


def codec_colours(codecs) -> dict[str, str]:
    """A fixed colour per codec (matplotlib's default cycle), the same in every panel."""
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return {c: cycle[i % len(cycle)] for i, c in enumerate(dict.fromkeys(codecs))}
