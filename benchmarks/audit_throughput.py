"""Audit throughput and peak memory of the local engine, against a naive loop in the same run.

Baseline: the obvious serial loop a researcher would write: for each image and cell, decode
the PNG, encode/decode with Pillow, then compute each measure on that one image. fairbits:
``run_audit`` on the same images, cells and measures (batched measures, thread pool,
originals decoded once per batch for all cells).

Prints image-cells per second for both and their ratio, then the peak resident memory of a
separate ``fairbits audit`` process over ``--memory-n`` images, next to the size the decoded
dataset would take in memory.

Every audit writes into a new, empty run directory inside ``--work`` that is removed
afterwards (only the rendered phantoms are kept and reused): a finished run left there
would be resumed, not computed, and its time would mean nothing.

    python benchmarks/audit_throughput.py --n 240 --memory-n 2000
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch

from fairbits.audit.runner import run_audit
from fairbits.audit.store import load_results
from fairbits.codecs.base import get_codec
from fairbits.data.images import load_rgb, to_tensor
from fairbits.data.phantom import render_phantoms
from fairbits.measures.base import get_measure
from fairbits.spec import parse_spec

CODECS = {"jpeg": [10, 50], "webp": [10, 50]}
MEASURES = ["psnr", "psnr_y", "ssim", "ms_ssim", "ciede2000"]


def spec_for(labels: Path, batch_size: int = 32) -> dict:
    return {"dataset": {"reader": "csv", "path": str(labels)}, "groups": ["skin_group"],
            "codecs": [{"name": c, "quality": q} for c, q in CODECS.items()],
            "measures": MEASURES, "seed": 0, "batch_size": batch_size}


def naive_loop(labels: Path) -> int:
    """Serial per-image loop; returns the number of image-cells done."""
    df = pd.read_csv(labels)
    done = 0
    for name, qualities in CODECS.items():
        codec = get_codec(name)
        for q in qualities:
            for rel in df["path"]:
                img = load_rgb(labels.parent / rel)
                coded = codec.code(img, q)
                x, y = to_tensor(img), to_tensor(coded.recon)
                for m in MEASURES:
                    get_measure(m).fn(x, y, {})
                done += 1
    return done


@contextmanager
def fresh_run_dir(work: Path, name: str):
    """A new, empty folder inside ``work`` for one audit, removed when the block ends."""
    run = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    try:
        yield run
    finally:
        shutil.rmtree(run, ignore_errors=True)


def throughput(n: int, work: Path) -> dict:
    labels = render_phantoms(n, work / f"phantoms-{n}", seed=0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    cells = naive_loop(labels)
    t_naive = time.perf_counter() - t0
    with fresh_run_dir(work, f"run-{n}") as run:
        t0 = time.perf_counter()
        run_audit(parse_spec(spec_for(labels)), run, progress=False, report=False)
        t_fb = time.perf_counter() - t0
        stored = len(load_results(run))
    if stored != cells:
        raise RuntimeError(f"the audit stored {stored} rows, the naive loop did {cells} image-cells")
    return {"images": n, "image_cells": cells, "naive_cells_per_s": cells / t_naive,
            "fairbits_cells_per_s": cells / t_fb, "speedup": t_naive / t_fb}


_CHILD = """
import json, resource, sys
from fairbits.audit.runner import run_audit
from fairbits.spec import parse_spec
run_audit(parse_spec(json.loads(sys.argv[1])), sys.argv[2], progress=False, report=True)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_memory(n: int, work: Path) -> dict:
    labels = render_phantoms(n, work / f"phantoms-{n}", seed=0)
    spec = spec_for(labels)
    with fresh_run_dir(work, f"mem-{n}") as run:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec), str(run)],
                             check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    peak_mib = int(out.stdout.strip().splitlines()[-1]) / 1024
    dataset_mib = n * 256 * 256 * 3 / 2**20
    return {"images": n, "cells": 4, "wall_s": wall, "peak_rss_mib": peak_mib,
            "decoded_dataset_mib": dataset_mib}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=240, help="images for the throughput comparison")
    ap.add_argument("--memory-n", type=int, default=2000, help="images for the peak-memory run (0: skip)")
    ap.add_argument("--work", type=Path, default=None,
                    help="scratch folder: phantoms (kept, reused) and one fresh run folder per audit "
                         "(removed); default: a temp dir")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fairbits-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, cores: {__import__('os').cpu_count()}, "
          f"torch threads: {torch.get_num_threads()}, cuda: {torch.cuda.is_available()}")
    t = throughput(args.n, work)
    print(f"throughput, {t['images']} images x 4 cells, measures {MEASURES}:")
    print(f"  naive serial loop : {t['naive_cells_per_s']:.1f} image-cells/s")
    print(f"  fairbits run_audit: {t['fairbits_cells_per_s']:.1f} image-cells/s")
    print(f"  ratio             : {t['speedup']:.2f}x")
    if args.memory_n:
        m = peak_memory(args.memory_n, work)
        print(f"peak memory, {m['images']} images x {m['cells']} cells (audit + stats + report):")
        print(f"  peak RSS {m['peak_rss_mib']:.0f} MiB vs decoded dataset {m['decoded_dataset_mib']:.0f} MiB "
              f"(ratio {m['peak_rss_mib'] / m['decoded_dataset_mib']:.2f}); wall {m['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
