"""Does balanced sampling, group DRO or the skin-colour term narrow the skin-group gaps of a
learned codec? The comparison behind ``examples/TRAINING.md`` ("Mitigation, measured").

Audits the built-in ``bmshj2018-hyperprior`` checkpoints (natural and its three variants, at
λ = 0.0003 and 0.002: eight settings, fast mode) on held-out phantom faces balanced over skin
groups, with PSNR, MS-SSIM, skin tone, identity and a skin-group classifier (trained on other
phantoms), then prints ``mitigation.csv`` — each variant's gap between skin groups at equal
rate with its 95 % interval, its change against natural and its BD-rate against natural.

    python examples/mitigation_study.py --out examples/runs/mitigation --n 300
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from fairbits.audit.runner import run_audit
from fairbits.codecs.base import get_codec
from fairbits.data.phantom import render_phantoms
from fairbits.demo import train_demo_classifiers
from fairbits.spec import parse_spec

ARCH = "bmshj2018-hyperprior"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("examples/runs/mitigation"))
    ap.add_argument("--n", type=int, default=300, help="held-out phantoms, balanced over skin groups")
    ap.add_argument("--seed", type=int, default=7, help="phantom seed (the codecs were trained on seed 1)")
    args = ap.parse_args()
    labels = render_phantoms(args.n, args.out / "phantoms", seed=args.seed, balance="skin_group")
    models = [m.resolve() for m in train_demo_classifiers(args.out, args.n, args.seed, progress=True)]
    codec = get_codec(ARCH)
    spec = parse_spec({
        "name": "mitigation variants of the built-in bmshj2018-hyperprior checkpoints",
        "dataset": {"reader": "csv", "path": str(labels.resolve()), "path_column": "path"},
        "groups": {"skin_group": ["MST1-3", "MST4-7", "MST8-10"]},
        "codecs": [{"name": ARCH, "checkpoint": list(codec.builtin_settings), "mode": "fast"}],
        "measures": ["psnr", "ms_ssim", "skin_tone", "identity", "phenotype"],
        "phenotype_models": [str(m) for m in models],
        "seed": 0,
    })
    run_dir = run_audit(spec, args.out / "run")
    table = pd.read_csv(run_dir / "mitigation.csv")
    cols = ["variant", "measure", "rate", "gap", "gap_ci_low", "gap_ci_high", "worst_group", "change_vs_natural",
            "bd_rate_vs_natural"]
    with pd.option_context("display.width", 200, "display.max_rows", 200, "display.float_format", "{:.4g}".format):
        print(table[[c for c in cols if c in table.columns]].to_string(index=False))
    print(f"report: {run_dir / 'report.html'}")


if __name__ == "__main__":
    main()
