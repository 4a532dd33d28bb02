"""``fairbits demo``: phantom faces, classical codecs at three rates and the built-in learned
codecs, bias statistics, realism and a report."""

from __future__ import annotations

from pathlib import Path

from fairbits.audit.runner import run_audit
from fairbits.codecs.base import get_codec
from fairbits.data.phantom import render_phantoms
from fairbits.spec import parse_spec

DEMO_CODECS = ("jpeg", "jpeg444", "webp", "avif")
DEMO_RATES = (0.1, 0.25, 0.5)
DEMO_LEARNED = ("bmshj2018-hyperprior", "mbt2018-mean", "hific")  # built-in checkpoints, fast mode
DEMO_MEASURES = ("psnr", "psnr_y", "ssim", "ms_ssim", "ciede2000")


def demo_spec(labels_csv: Path, seed: int = 0) -> dict:
    """The demo's audit spec as a dict (the same form as a YAML spec)."""
    return {
        "name": "fairbits demo: phantom faces, classical codecs",
        "dataset": {"reader": "csv", "path": str(labels_csv), "path_column": "path"},
        "groups": {"skin_group": ["MST1-3", "MST4-7", "MST8-10"]},
        "codecs": [{"name": c, "target_bpp": list(DEMO_RATES)} for c in DEMO_CODECS]
        + [{"name": c, "checkpoint": list(get_codec(c).builtin_settings), "mode": "fast"} for c in DEMO_LEARNED],
        "measures": [*DEMO_MEASURES, "realism"],
        "seed": seed,
    }


def run_demo(out: str | Path = "fairbits-demo", n: int = 240, seed: int = 0,
             progress: bool = True) -> Path:
    """Render (or reuse) ``n`` phantoms under ``out/phantoms`` and audit them into ``out/run``.

    Returns the path of the HTML report.
    """
    out = Path(out)
    labels = render_phantoms(n, out / "phantoms", seed=seed, balance="skin_group", progress=progress)
    spec = parse_spec(demo_spec(labels.resolve(), seed))
    run_dir = run_audit(spec, out / "run", progress=progress)
    return run_dir / "report.html"
