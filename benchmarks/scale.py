"""What a paper-scale study costs: time per image-cell and per statistics row, projected.

Measures, on this machine and in one run:

* the audit: fresh runs on ``--sizes`` phantom faces (default 120 and 480) with a mix of
  six cells (JPEG, WebP at a target rate, AVIF, bmshj2018-hyperprior fast at two rates,
  mbt2018-mean fast) and the face measures of the demo (PSNR, PSNR-Y, SSIM, MS-SSIM,
  CIEDE2000, skin tone, identity): seconds per image-cell with the local engine and with
  the Ray engine on 1 and on every CPU (private local clusters);
* the statistics: ``write_stats`` on synthetic rows of 36 cells × ``--stat-sizes`` images
  (default 1k, 5k, 20k; 3 groups, the demo's measure columns): seconds per row;

then projects RFW (40,607 images) × 36 cells on one node of ``--node-cpus`` CPUs (default 16)
with the Ray engine, from the per-image-cell cost on one CPU and the speed-up measured
from 1 CPU to all of this machine's CPUs (assumed to hold per CPU up to the node's size).

    python benchmarks/scale.py --sizes 120,480 --stat-sizes 1000,5000,20000
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from fairbits.audit.runner import run_audit
from fairbits.data.phantom import render_phantoms
from fairbits.spec import parse_spec

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

RFW_IMAGES, PAPER_CELLS = 40_607, 36
CODECS = [{"name": "jpeg", "quality": [20]}, {"name": "webp", "target_bpp": [0.25]}, {"name": "avif", "quality": [30]},
          {"name": "bmshj2018-hyperprior", "checkpoint": ["phantom-l0.0003", "phantom-l0.002"], "mode": "fast"},
          {"name": "mbt2018-mean", "checkpoint": ["phantom-l0.0003"], "mode": "fast"}]
N_CELLS = 6
MEASURES = ["psnr", "psnr_y", "ssim", "ms_ssim", "ciede2000", "skin_tone", "identity"]


def audit_seconds(labels: Path, work: Path, engine: str, cpus: int | None = None) -> float:
    """Wall seconds of a fresh audit (cluster start excluded for Ray)."""
    spec = parse_spec({"dataset": {"reader": "csv", "path": str(labels), "path_column": "path"},
                       "groups": ["skin_group"], "codecs": CODECS, "measures": MEASURES, "seed": 0})
    out = Path(tempfile.mkdtemp(dir=work)) / "run"
    if engine == "ray":
        import ray

        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        run_audit(spec, out, progress=False, report=False, engine=engine)
        return time.perf_counter() - t0
    finally:
        if engine == "ray":
            import ray

            ray.shutdown()
        shutil.rmtree(out.parent)


def stats_seconds(n_images: int, work: Path) -> float:
    """Seconds of ``write_stats`` on synthetic rows: 36 cells × n_images, 3 groups."""
    from fairbits.bias.stats import write_stats

    rng = np.random.default_rng(0)
    cols = ["bpp", "psnr", "psnr_y", "ssim", "ms_ssim", "ciede2000", "delta_ita", "delta_e_skin", "identity_cos"]
    frames = []
    groups = rng.choice(["MST1-3", "MST4-7", "MST8-10"], n_images)
    for c in range(PAPER_CELLS):
        df = pd.DataFrame({k: rng.normal(size=n_images) for k in cols})
        df["image_id"] = [f"i{k}" for k in range(n_images)]
        df["codec"], df["setting"], df["error"], df["skin_group"] = f"codec{c // 4}", f"q{c % 4}", None, groups
        frames.append(df)
    results = pd.concat(frames, ignore_index=True)
    out = Path(tempfile.mkdtemp(dir=work))
    t0 = time.perf_counter()
    write_stats(out, results, measures=cols[1:], min_group_n=10, group_cols=["skin_group"])
    seconds = time.perf_counter() - t0
    shutil.rmtree(out)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="120,480", help="faces per audit run")
    ap.add_argument("--stat-sizes", default="1000,5000,20000", help="images per cell for the statistics")
    ap.add_argument("--node-cpus", type=int, default=16)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fairbits-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count()
    print(f"# {date.today()} · {platform.machine()} · {cpus} CPUs")
    per_cell = {}
    for n in map(int, args.sizes.split(",")):
        labels = render_phantoms(n, work / f"phantoms-{n}", seed=0, balance="skin_group")
        local = audit_seconds(labels, work, "local")
        one = audit_seconds(labels, work, "ray", 1)
        many = audit_seconds(labels, work, "ray", cpus)
        cells = n * N_CELLS
        per_cell[n] = (local / cells, one / cells, many / cells)
        print(f"audit {n:6d} faces × {N_CELLS} cells: local {1000 * local / cells:6.1f} ms/image-cell, "
              f"ray 1 CPU {1000 * one / cells:6.1f}, ray {cpus} CPUs {1000 * many / cells:6.1f} "
              f"(speed-up {one / many:.2f}x)")
    stat_rate = {}
    for n in map(int, args.stat_sizes.split(",")):
        s = stats_seconds(n, work)
        stat_rate[n] = s / (n * PAPER_CELLS)
        print(f"statistics {n:6d} images × {PAPER_CELLS} cells: {s:7.1f} s ({1e6 * stat_rate[n]:.1f} µs per row)")
    n_big = max(per_cell)
    local_cell, one_cell, many_cell = per_cell[n_big]
    efficiency = one_cell / many_cell / cpus  # speed-up per CPU measured here
    work_cells = RFW_IMAGES * PAPER_CELLS
    stats_h = stat_rate[max(stat_rate)] * work_cells / 3600
    here_h = local_cell * work_cells / 3600
    node_h = one_cell * work_cells / (args.node_cpus * efficiency) / 3600
    print(f"projection, RFW × {PAPER_CELLS} cells ({work_cells:,} image-cells): local engine here {here_h:.1f} h; "
          f"Ray on {args.node_cpus} CPUs {node_h:.1f} h (per-CPU efficiency {efficiency:.2f} measured here); "
          f"statistics {stats_h:.2f} h")


if __name__ == "__main__":
    main()
