"""Report section: rows the run lacks (lost part files), so statistics are never read as complete."""

from __future__ import annotations

from fairbits.report.context import ReportContext
from fairbits.report.kit import Section, esc


def missing_rows_section(ctx: ReportContext) -> Section | None:
    """Present only when some cell lacks rows (``run_info["missing_rows"]``: cell id → count)."""
    missing = ctx.run_info.get("missing_rows") or {}
    if not missing:
        return None
    n = len(ctx.manifest) if len(ctx.manifest) else ctx.run_info.get("n_images", "?")
    items = "".join(f"<li><code>{esc(c)}</code>: {k} of {esc(str(n))} images missing</li>" for c, k in missing.items())
    return Section("Missing rows", "<p><strong>This run is incomplete.</strong> The statistics in this report "
                   "cover only the rows present. Run the same <code>fairbits audit</code> command again to "
                   f"compute the missing rows.</p><ul>{items}</ul>", id="missing-rows")
