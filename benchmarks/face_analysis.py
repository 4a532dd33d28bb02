"""Face-analysis throughput per CPU core, against pixel measures in the same run.

On one core (torch, OpenCV and mediapipe's own threads are what they are; the process is
pinned to one core with ``os.sched_setaffinity`` where the OS allows it), over ``--n``
phantom faces:

* analysis of an original: mediapipe face mesh + selfie segmentation + region masks;
* identity embedding of an original (aligned SFace);
* face measures of one cell given the cached analysis: ``skin_tone``, ``identity``,
  ``landmarks`` (which detects the face again on the reconstruction);
* baseline in the same run: the pixel measures ``psnr`` + ``ms_ssim`` on the same pairs.

The analysis and embedding of an original are paid once per run (cached by content in
the run's ``faces/``); the per-pair costs are paid once per cell.

    python benchmarks/face_analysis.py --n 96
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fairbits.audit.faces import FaceBatch, FaceCache
from fairbits.data.images import load_rgb, to_tensor
from fairbits.data.phantom import render_phantoms
from fairbits.measures.base import get_measure


def _jpeg(image: np.ndarray, q: int = 20) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(buf).convert("RGB"))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        labels = render_phantoms(args.n, tmp / "ph", seed=5, size=args.size, progress=False)
        df = pd.read_csv(labels)
        images = [load_rgb(tmp / "ph" / p) for p in df["path"]]
        recons = [_jpeg(im) for im in images]
        ids = [str(i) for i in range(len(images))]
        originals = dict(zip(ids, images))

        warm = FaceCache(tmp / "run")
        warm.records({ids[0]: images[0]}, {})  # load the graphs outside the timing
        cache = FaceCache(tmp / "run2")
        cache.analysis = warm.analysis
        t_analyse = _timed(lambda: cache.records(originals, {}))
        recs = cache.records(originals, {})
        emb_cache = FaceCache(tmp / "run2", embed=True)
        t_embed = _timed(lambda: emb_cache.records(originals, {}))
        recs = emb_cache.records(originals, {})
        found = sum(r.face_found for r in recs.values())

        x, y = to_tensor(images), to_tensor(recons)
        batch = FaceBatch.stack([recs[i] for i in ids])
        times = {}
        for name in ("psnr", "ms_ssim", "skin_tone", "identity", "landmarks"):
            fn = get_measure(name).fn
            fn(x[:2], y[:2], {"faces": batch.take(slice(0, 2))})  # warm up
            times[name] = _timed(lambda: [fn(x[k:k + 4], y[k:k + 4], {"faces": batch.take(slice(k, k + 4))})
                                          for k in range(0, len(ids), 4)])
    n = len(ids)
    ms = lambda t: 1000 * t / n  # noqa: E731
    print(f"# {platform.machine()}, {os.cpu_count()} cores visible, 1 used, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}, {n} phantoms at {args.size} px, faces found {found}/{n}")
    print(f"analysis of an original (mesh + segmentation + masks): {ms(t_analyse):.1f} ms "
          f"({n / t_analyse:.1f} images/s per core)")
    print(f"identity embedding of an original: {ms(t_embed):.1f} ms")
    base = times["psnr"] + times["ms_ssim"]
    print(f"baseline psnr + ms_ssim per pair: {ms(base):.1f} ms")
    for name in ("skin_tone", "identity", "landmarks"):
        print(f"{name} per pair (cached analysis): {ms(times[name]):.1f} ms = {times[name] / base:.2f}x baseline")


if __name__ == "__main__":
    main()
