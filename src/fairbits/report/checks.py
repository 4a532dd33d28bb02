"""Report section: how well fast mode's estimated rates and reconstructions match exact coding."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fairbits.audit.coding import FAST_RATE_SLACK_BYTES, FAST_RATE_TOL, FAST_RECON_TOL
from fairbits.report.context import ReportContext
from fairbits.report.kit import Section, esc, table


def fast_check_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per fast cell: images checked, mean and largest |rate error|, largest pixel difference, flag."""
    if "rate_rel_error" not in results.columns or "mode" not in results.columns:
        return pd.DataFrame()
    fast = results[(results["mode"] == "fast") & results["exact_bpp"].notna()]
    if fast.empty:
        return pd.DataFrame()
    pixels = fast["height"] * fast["width"]
    excess = (fast["bpp"] - fast["exact_bpp"]).abs() * pixels / 8 \
        - (FAST_RATE_TOL * fast["exact_bpp"] * pixels / 8 + FAST_RATE_SLACK_BYTES)
    g = fast.assign(abs_err=fast["rate_rel_error"].abs(), rate_bad=excess > 0).groupby(["codec", "setting"],
                                                                                       sort=False)
    out = g.agg(checked=("image_id", "size"), est_bpp=("bpp", "mean"), exact_bpp=("exact_bpp", "mean"),
                mean_abs_rate_error=("abs_err", "mean"), max_abs_rate_error=("abs_err", "max"),
                max_recon_diff=("recon_max_diff", "max"), rate_flags=("rate_bad", "sum")).reset_index()
    bad = (out["rate_flags"] > 0) | (out["max_recon_diff"] > FAST_RECON_TOL)
    out["flag"] = np.where(bad, "MISMATCH", "ok")
    return out


def fast_check_section(ctx: ReportContext) -> Section | None:
    """Only present when the run has fast-mode cells."""
    t = fast_check_table(ctx.results)
    if t.empty:
        return None
    note = (f"<p>Fast mode estimates each image's rate from the model's likelihoods and decodes the "
            f"quantised latents without entropy coding. A seeded sample of each fast cell is also coded "
            f"exactly (real bytes, decoded from the bitstream). A cell is flagged when an image's estimated and "
            f"real sizes differ by more than {esc(f'{FAST_RATE_TOL:.0%}')} of the real size plus "
            f"{FAST_RATE_SLACK_BYTES} bytes (stream header and coder flush, which the estimate leaves out), or "
            f"a reconstruction differs by more than {esc(f'{FAST_RECON_TOL:g}')} 8-bit levels.</p>")
    cols = [("codec", "codec"), ("setting", "setting"), ("checked", "images checked"),
            ("est_bpp", "estimated bpp"), ("exact_bpp", "real bpp"),
            ("mean_abs_rate_error", "mean |rate error|"), ("max_abs_rate_error", "max |rate error|"),
            ("max_recon_diff", "max pixel diff"), ("flag", "flag")]
    return Section("Fast-mode checks against exact coding", note + table(t, cols), "fast-checks")
