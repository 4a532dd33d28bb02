"""Local engine against the Ray engine on the same audit, in one run.

Profiles (same phantom faces, fresh run directories, nothing reused between runs):

* ``cpu`` (any machine): 240 faces, 7 cells (JPEG at two qualities, WebP and AVIF at one,
  bmshj2018-hyperprior fast at both built-in rates, mbt2018-mean fast at one), measures
  PSNR, MS-SSIM, CIEDE2000 and skin tone. Reports wall time of each engine (the Ray time
  includes starting a private local cluster; the time without it is shown too), their
  ratio (goal: Ray ≤ 1.3× local on 2 cores), and Ray pinned to 1 core against 2 cores
  (``--scaling``, or ``--scaling-only``; goal ≥ 1.8×).
* ``gpu`` (one GPU, many CPUs): fast-mode bmshj2018-hyperprior with PSNR and MS-SSIM end
  to end, images/s of the Ray engine, the local engine and CompressAI's per-image
  evaluation loop on the same images (goal: Ray ≥ 2,000 images/s); then exact mode
  (real entropy coding) images/s with the Ray engine on every CPU.

    python benchmarks/engines.py --profile cpu --n 240 --scaling
    python benchmarks/engines.py --profile gpu --n 8192 --exact-n 512
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

import pandas as pd

from fairbits.audit.runner import run_audit
from fairbits.data.phantom import render_phantoms
from fairbits.spec import parse_spec

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

CPU_CODECS = [{"name": "jpeg", "quality": [10, 50]}, {"name": "webp", "quality": [20]},
              {"name": "avif", "quality": [30]},
              {"name": "bmshj2018-hyperprior", "checkpoint": ["phantom-l0.0003", "phantom-l0.002"], "mode": "fast"},
              {"name": "mbt2018-mean", "checkpoint": ["phantom-l0.0003"], "mode": "fast"}]


def spec_for(labels: Path, profile: str, mode: str = "fast", batch: int = 32) -> dict:
    spec = {"dataset": {"reader": "csv", "path": str(labels), "path_column": "path"}, "groups": ["skin_group"],
            "batch_size": batch, "seed": 0}
    if profile == "cpu":
        return spec | {"codecs": CPU_CODECS, "measures": ["psnr", "ms_ssim", "ciede2000", "skin_tone"]}
    return spec | {"codecs": [{"name": "bmshj2018-hyperprior", "checkpoint": ["phantom-l0.002"], "mode": mode}],
                   "measures": ["psnr", "ms_ssim"]}


def timed_run(spec: dict, work: Path, engine: str, ray_cpus: int | None = None,
              cores: set[int] | None = None) -> tuple[float, float, pd.DataFrame]:
    """(wall seconds including cluster start, seconds of the audit alone, rows) of one fresh run.

    ``cores``: run pinned to these CPU cores (``sched_setaffinity``; the Ray processes the run
    starts inherit it), so a "1 CPU" run really has one core and not just one scheduled CPU."""
    import fairbits

    out = Path(tempfile.mkdtemp(dir=work)) / "run"
    every = os.sched_getaffinity(0)
    if cores is not None:
        os.sched_setaffinity(0, cores)
    try:
        return _timed(spec, out, engine, ray_cpus) + (fairbits.load_results(out),)
    finally:
        os.sched_setaffinity(0, every)
        shutil.rmtree(out.parent)


def _timed(spec: dict, out: Path, engine: str, ray_cpus: int | None) -> tuple[float, float]:
    t0 = time.perf_counter()
    started = False
    if engine == "ray":
        import ray

        ray.init(address="local", num_cpus=ray_cpus, include_dashboard=False, log_to_driver=False)
        started = True
    t1 = time.perf_counter()
    try:
        run_audit(parse_spec(spec), out, progress=False, report=False, engine=engine)
    finally:
        if started:
            import ray

            ray.shutdown()
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1


def largest_difference(a: pd.DataFrame, b: pd.DataFrame) -> float:
    num = [c for c in a.columns if pd.api.types.is_float_dtype(a[c])]
    return float((a[num] - b[num]).abs().max().max())


def cpu_profile(labels: Path, work: Path, scaling: bool, compare: bool = True) -> None:
    spec = spec_for(labels, "cpu")
    n_cells = 7
    n = len(pd.read_csv(labels))
    if compare:
        local, _, rows_local = timed_run(spec, work, "local")
        ray_wall, ray_audit, rows_ray = timed_run(spec, work, "ray", ray_cpus=os.cpu_count())
        print(f"local engine : {local:7.1f} s  ({1000 * local / (n * n_cells):.0f} ms per image-cell)")
        print(f"ray engine   : {ray_wall:7.1f} s  ({ray_audit:.1f} s without starting the cluster)")
        print(f"ray / local  : {ray_wall / local:.2f}x  ({ray_audit / local:.2f}x without the start)")
        print(f"largest difference between the tables: {largest_difference(rows_local, rows_ray):.3g}")
    if scaling:
        cores = sorted(os.sched_getaffinity(0))
        one, one_audit, _ = timed_run(spec, work, "ray", ray_cpus=1, cores={cores[0]})
        two, two_audit, _ = timed_run(spec, work, "ray", ray_cpus=2, cores=set(cores[:2]))
        print(f"ray on 1 core: {one:7.1f} s ({one_audit:.1f} s audit); on 2 cores: {two:.1f} s ({two_audit:.1f} s); "
              f"speed-up {one_audit / two_audit:.2f}x")


def compressai_loop(setting: str, labels: Path, n: int) -> float:
    """Images per second of CompressAI's own per-image evaluation (``inference``: pad,
    compress, decompress, PSNR, MS-SSIM) on the first ``n`` faces, images preloaded."""
    import torch
    from compressai.utils.eval_model.__main__ import inference

    from fairbits.codecs.base import get_codec
    from fairbits.data.images import load_rgb, to_tensor

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = get_codec("bmshj2018-hyperprior").model(setting).to(device).eval()
    paths = pd.read_csv(labels)["path"][:n]
    xs = [to_tensor(load_rgb(labels.parent / p))[0].to(device) for p in paths]
    for x in xs[:3]:
        inference(model, x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for x in xs:
        inference(model, x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(xs) / (time.perf_counter() - t0)


def gpu_profile(labels: Path, work: Path, exact_n: int) -> None:
    n = len(pd.read_csv(labels))
    spec = spec_for(labels, "gpu", batch=256)
    local, _, _ = timed_run(spec, work, "local")
    ray_wall, ray_audit, _ = timed_run(spec, work, "ray")
    print(f"fast, local engine   : {n / local:8.0f} images/s")
    print(f"fast, ray engine     : {n / ray_wall:8.0f} images/s ({n / ray_audit:.0f} without starting the cluster)")
    print(f"CompressAI's loop    : {compressai_loop('phantom-l0.002', labels, 256):8.0f} images/s")
    subset = labels.parent / "exact.csv"
    pd.read_csv(labels).head(exact_n).to_csv(subset, index=False)
    exact = spec_for(subset, "gpu", mode="exact", batch=16)
    wall, audit, _ = timed_run(exact, work, "ray")
    print(f"exact, ray engine    : {exact_n / wall:8.1f} images/s on {os.cpu_count()} CPUs "
          f"({exact_n / audit:.1f} without starting the cluster)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--n", type=int, default=240, help="phantom faces audited")
    ap.add_argument("--exact-n", type=int, default=256, help="images for the exact-mode Ray run (gpu profile)")
    ap.add_argument("--scaling", action="store_true", help="also Ray on 1 core against 2 cores (cpu profile)")
    ap.add_argument("--scaling-only", action="store_true", help="only the 1 against 2 cores runs (cpu profile)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fairbits-engines-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# {date.today()} · {platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · "
          f"profile {args.profile} · {args.n} faces")
    labels = render_phantoms(args.n, work / "phantoms", seed=0, balance="skin_group")
    if args.profile == "cpu":
        cpu_profile(labels, work, args.scaling or args.scaling_only, compare=not args.scaling_only)
    else:
        gpu_profile(labels, work, args.exact_n)


if __name__ == "__main__":
    main()
