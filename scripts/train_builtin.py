"""Train fairbits' built-in learned-codec checkpoints on phantom faces (run on a GPU).

This is how the checkpoints in ``src/fairbits/weights/`` were made:

1. render ``--n`` phantom faces (256x256) in parallel processes, skin groups drawn with a
   deliberate imbalance (80/15/5 for MST1-3 / MST4-7 / MST8-10, like face datasets that
   are mostly light-skinned);
2. train each (architecture, λ) in its own process, all at once on one GPU, for as many
   steps as fit in ``--minutes`` (measured after a short warm-up), resumable;
3. code a balanced held-out set of phantoms exactly (real bytes) with each checkpoint and
   write what the model cards need to ``summary.json``.

    python scripts/train_builtin.py --out OUT_DIR --minutes 6
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pandas as pd

# (architecture, λ, N, M): small widths keep the shipped weights small (fp16).
RUNS = [
    ("bmshj2018-hyperprior", 0.0003, 64, 96),
    ("bmshj2018-hyperprior", 0.002, 64, 96),
    ("mbt2018-mean", 0.0003, 64, 96),
    ("hific", 0.0003, 64, 96),
]
MIX = "80/15/5"


def render(n: int, out: Path, seed: int, balance) -> Path:
    """Phantom faces and labels.csv (the csv reader's layout) using all CPU cores."""
    from fairbits.data.phantom import render_phantoms

    return render_phantoms(n, out, seed=seed, balance=balance, processes=mp.cpu_count())


def _train(job):
    import torch

    from fairbits.codecs.training import train_codec
    from fairbits.spec import DatasetSpec

    arch, lmbda, N, M, labels, out, minutes, gpu_share = job
    torch.backends.cudnn.benchmark = True
    data = DatasetSpec(reader="csv", path=labels)
    common = dict(sampler="natural", mix=MIX, mix_column="skin_group", batch_size=16, patch=256,
                  lr=1.5e-4 if arch == "hific" else 3e-4,
                  N=N, M=M, seed=0, device="cuda", progress=False, log_every=100, ckpt_every=500)
    t0 = time.time()
    train_codec(arch, lmbda, data, steps=100, out=out, **common)  # warm-up: image cache, cuDNN
    t1 = time.time()
    train_codec(arch, lmbda, data, steps=300, out=out, **common)
    rate = 200 / (time.time() - t1)
    left = minutes * 60 - (time.time() - t0)
    steps = int(max(300, min(30000, 300 + rate * left * 0.92))) // 100 * 100
    train_codec(arch, lmbda, data, steps=steps, out=out, **common)
    return str(out), steps, time.time() - t0


def evaluate(ckpt: Path, arch: str, labels: Path, k: int = 96) -> dict:
    """Exact coding of a balanced held-out set: mean real bpp, PSNR, per skin group."""
    import torch

    from fairbits.codecs.base import get_codec
    from fairbits.data.images import load_rgb

    torch.set_num_threads(4)
    df = pd.read_csv(labels).head(k)
    codec = get_codec(arch)
    rows = []
    for _, r in df.iterrows():
        img = load_rgb(labels.parent / r["path"])
        c = codec.code(img, str(ckpt))
        mse = np.mean((c.recon.astype(float) - img.astype(float)) ** 2)
        rows.append({"skin_group": r["skin_group"], "bpp": c.bpp, "psnr": 10 * np.log10(255**2 / mse)})
    res = pd.DataFrame(rows)
    return {"bpp": res.bpp.mean(), "psnr": res.psnr.mean(),
            "by_skin_group": res.groupby("skin_group")[["bpp", "psnr"]].mean().round(4).to_dict("index")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fairbits-train"))
    ap.add_argument("--n", type=int, default=3000, help="training phantoms (before the 80/15/5 cut)")
    ap.add_argument("--minutes", type=float, default=6.0, help="training time per model (all in parallel)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    train_labels = render(args.n, args.work / "train", seed=1, balance=None)
    test_labels = render(96, args.work / "test", seed=2, balance="skin_group")
    print(f"rendered phantoms in {time.time() - t0:.0f} s", flush=True)
    jobs = [(a, lm, N, M, train_labels, args.work / f"{a}-l{lm:g}.pt", args.minutes, len(RUNS))
            for a, lm, N, M in RUNS]
    with mp.get_context("spawn").Pool(len(jobs)) as pool:
        done = pool.map(_train, jobs)
    summary = []
    for (arch, lmbda, N, M), (ckpt, steps, secs) in zip(RUNS, done):
        ev = evaluate(Path(ckpt), arch, test_labels)
        summary.append({"arch": arch, "lmbda": lmbda, "N": N, "M": M, "steps": steps, "train_seconds": secs,
                        "train_mix": MIX, "checkpoint": Path(ckpt).name, **ev})
        print(json.dumps(summary[-1]), flush=True)
        (args.out / Path(ckpt).name).write_bytes(Path(ckpt).read_bytes())
    logs = {Path(c).name: Path(c).with_suffix(".log.jsonl").read_text() for c, _, _ in done
            if Path(c).with_suffix(".log.jsonl").is_file()}
    (args.out / "summary.json").write_text(json.dumps({"runs": summary, "logs": logs}, indent=1, default=float))


if __name__ == "__main__":
    main()
