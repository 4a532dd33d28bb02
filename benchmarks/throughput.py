"""Learned-codec audit throughput against CompressAI's own evaluation loop, in one run.

Same device, same model (a fairbits checkpoint), same phantom images (256x256):

* baseline: CompressAI's ``compressai.utils.eval_model`` ``inference`` (one image at a
  time: pad, compress, decompress, PSNR, MS-SSIM);
* fairbits fast core: batched forward pass (rate from likelihoods) + PSNR + MS-SSIM on
  preloaded batches;
* fairbits fast audit: ``run_audit`` end to end (PNG decode, batched forward, PSNR, MS-SSIM,
  the 32-image exact check, Parquet rows);
* fairbits exact: real entropy coding in 1, 2, 4, ... worker processes.

    python benchmarks/throughput.py --n 2048 --baseline-n 128 --processes 1,2,4,8
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fairbits.audit.plan import resolve_device
from fairbits.audit.runner import run_audit
from fairbits.codecs.base import get_codec
from fairbits.codecs.learned import ExactPool
from fairbits.data.images import load_rgb, to_tensor
from fairbits.data.phantom import render_phantoms
from fairbits.measures.base import get_measure
from fairbits.spec import parse_spec


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def compressai_loop(model, images: list[np.ndarray], device: torch.device) -> float:
    """Images per second of CompressAI's per-image evaluation ``inference``."""
    from compressai.utils.eval_model.__main__ import inference

    xs = [to_tensor(im)[0].to(device) for im in images]
    for x in xs[:3]:
        inference(model, x)
    _sync(device)
    t0 = time.perf_counter()
    for x in xs:
        inference(model, x)
    _sync(device)
    return len(xs) / (time.perf_counter() - t0)


def fast_core(codec, setting: str, images: list[np.ndarray], device: torch.device, batch: int) -> float:
    """Images per second of batched forward + PSNR + MS-SSIM on preloaded batches."""
    batches = [to_tensor(images[i:i + batch]).to(device) for i in range(0, len(images), batch)]
    psnr, msssim = get_measure("psnr").fn, get_measure("ms_ssim").fn

    def one(x):
        with torch.no_grad():
            recon, bpp = codec.forward_batch(x, setting, device)
            recon = recon.mul(255).round().div(255)
            return psnr(x, recon, {}), msssim(x, recon, {}), bpp

    one(batches[0])
    _sync(device)
    t0 = time.perf_counter()
    for x in batches:
        one(x)
    _sync(device)
    return len(images) / (time.perf_counter() - t0)


def fast_audit(labels: Path, codec: str, setting: str, work: Path, batch: int, workers: int) -> float:
    spec = parse_spec({"dataset": {"reader": "csv", "path": str(labels)}, "groups": ["skin_group"],
                       "codecs": [{"name": codec, "checkpoint": [setting], "mode": "fast"}],
                       "measures": ["psnr", "ms_ssim"], "batch_size": batch, "workers": workers})
    n = len(pd.read_csv(labels))
    t0 = time.perf_counter()
    run_audit(spec, work / f"audit-{time.time_ns()}", progress=False, report=False)
    return n / (time.perf_counter() - t0)


def exact_pool(codec: str, setting: str, images: list[np.ndarray], processes: int) -> float:
    with ExactPool(codec, setting, processes=processes) as pool:
        pool.code(images[:processes])  # start and warm the workers
        t0 = time.perf_counter()
        pool.code(images)
        return len(images) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", default="bmshj2018-hyperprior")
    ap.add_argument("--setting", default="phantom-l0.002", help="built-in key or checkpoint path")
    ap.add_argument("--n", type=int, default=256, help="images for the fairbits fast runs")
    ap.add_argument("--baseline-n", type=int, default=64, help="images for CompressAI's loop")
    ap.add_argument("--exact-n", type=int, default=64, help="images per exact-mode run")
    ap.add_argument("--processes", default="1,2", help="exact-mode process counts")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    device = resolve_device(args.device)
    work = args.work or Path(tempfile.mkdtemp(prefix="fairbits-tp-"))
    cpus = os.cpu_count() or 1
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {device} ({name}), cpu cores: {cpus}, torch {torch.__version__}")
    labels = render_phantoms(args.n, work / "phantoms", seed=0, processes=min(cpus, 16))
    paths = [labels.parent / p for p in pd.read_csv(labels)["path"]]
    images = [load_rgb(p) for p in paths]
    codec = get_codec(args.codec)
    model = codec.model(args.setting, device)
    base = compressai_loop(model, images[: args.baseline_n], device)
    core = fast_core(codec, args.setting, images, device, args.batch)
    audit = fast_audit(labels, args.codec, args.setting, work, args.batch, min(cpus, 16))
    print(f"{args.codec} {args.setting}, {args.n} images 256x256:")
    print(f"  CompressAI eval loop (per image)  : {base:9.1f} img/s")
    print(f"  fairbits fast core (batch {args.batch})   : {core:9.1f} img/s  ({core / base:.1f}x)")
    print(f"  fairbits fast audit (end to end)  : {audit:9.1f} img/s  ({audit / base:.1f}x)")
    for k in [int(p) for p in args.processes.split(",")]:
        rate = exact_pool(args.codec, args.setting, images[: args.exact_n], k)
        print(f"  fairbits exact, {k:2d} processes     : {rate:9.1f} img/s")


if __name__ == "__main__":
    main()
