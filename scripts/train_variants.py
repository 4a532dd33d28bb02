"""Train the mitigation variants of the built-in ``bmshj2018-hyperprior`` checkpoints (GPU).

The natural checkpoints (``phantom-l0.0003``, ``phantom-l0.002``, made by
``scripts/train_builtin.py``) were trained on 3,000 phantom faces (seed 1) cut to an
80/15/5 skin-group mix, with natural sampling and the mean rate–distortion loss. Each
variant here repeats that recipe exactly (same data, λ, widths, batch, crops, lr, seed and
the natural checkpoint's number of steps, read from its card) and changes one thing:

* ``balanced``: draws balanced over skin groups (``sampler=balanced:skin_group``);
* ``dro``: group DRO over skin groups (``objective=group-dro:skin_group``, relative
  excess loss, step 0.1);
* ``colour``: the skin-colour term (``colour_loss=0.01``, ground-truth phantom masks).

All six trainings (three variants × two λ) run at once on one GPU. Each stops at its
target step or at ``--minutes`` after the start, whichever comes first; a training stopped
early keeps its last saved state (every ``--ckpt-every`` steps) and says so in
``summary.json``. Writes ``phantom-l<λ>-<variant>.pt`` (fp16, the built-ins' format) and
``summary.json`` (steps reached, seconds, training data digest, loss logs) to ``--out``.

    python scripts/train_variants.py --out OUT_DIR --minutes 8
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import time
from pathlib import Path

ARCH = "bmshj2018-hyperprior"
LAMBDAS = (0.0003, 0.002)
VARIANTS = {
    "balanced": {"sampler": "balanced:skin_group"},
    "dro": {"objective": "group-dro:skin_group", "dro_relative": True, "dro_step": 0.1},
    "colour": {"colour_loss": 0.01},
}
# The natural built-ins' recipe (their cards and meta), minus the number of steps.
RECIPE = dict(mix="80/15/5", mix_column="skin_group", batch_size=16, patch=256, lr=3e-4, N=64, M=96, seed=0)


class Deadline(Exception):
    """Raised from the step callback once the time is up; carries the step reached."""

    def __init__(self, step: int):
        super().__init__(step)
        self.step = step


def natural_steps(lmbda: float) -> int:
    """Steps of the natural built-in checkpoint at ``lmbda`` (from its card)."""
    from fairbits.codecs.checkpoints import WEIGHTS_DIR

    card = WEIGHTS_DIR / ARCH / f"phantom-l{lmbda:g}.json"
    return int(json.loads(card.read_text())["steps"])


def _train(job: tuple) -> dict:
    """One training; a failure is returned (``error``) so that the other trainings still land."""
    try:
        return _train_one(*job)
    except Exception as e:  # noqa: BLE001 - reported in summary.json, the run goes on
        import traceback

        return {"lmbda": job[0], "variant": job[1], "checkpoint": None, "error": repr(e),
                "traceback": traceback.format_exc()}


def _train_one(lmbda, variant, labels, out, steps, deadline, device, threads, ckpt_every) -> dict:
    import torch

    from fairbits.codecs.training import train_codec
    from fairbits.spec import DatasetSpec

    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = True
    data = DatasetSpec(reader="csv", path=labels)
    settings = dict(RECIPE, **VARIANTS[variant], device=device, log_every=100, ckpt_every=ckpt_every)

    def check(step: int, _metrics: dict) -> None:
        if time.time() > deadline and step < steps:
            raise Deadline(step)

    t0, reached = time.time(), steps
    try:
        train_codec(ARCH, lmbda, data, steps=steps, out=out, progress=False, callback=check, **settings)
    except Deadline as stop:
        # the state on disk is the last multiple of ckpt_every before the step that stopped
        reached = (stop.step - 1) // ckpt_every * ckpt_every
        if reached == 0:
            raise RuntimeError(f"{out.name}: no training state saved before the deadline") from None
        train_codec(ARCH, lmbda, data, steps=reached, out=out, progress=False, **settings)
    return {"lmbda": lmbda, "variant": variant, "checkpoint": out.name, "steps": reached,
            "target_steps": steps, "stopped_early": reached < steps, "wall_seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fairbits-variants"))
    ap.add_argument("--n", type=int, default=3000, help="training phantoms before the 80/15/5 cut (natural: 3000)")
    ap.add_argument("--minutes", type=float, default=8.0, help="stop every training this long after the start")
    ap.add_argument("--steps", type=int, default=None, help="override the natural steps (smoke tests)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads per training")
    ap.add_argument("--ckpt-every", type=int, default=250)
    args = ap.parse_args()
    deadline = time.time() + args.minutes * 60
    args.out.mkdir(parents=True, exist_ok=True)

    from train_builtin import render  # same renderer call as the natural checkpoints

    t0 = time.time()
    labels = render(args.n, args.work / "train", seed=1, balance=None)
    print(f"rendered {args.n} phantoms in {time.time() - t0:.0f} s", flush=True)
    jobs = [(lm, v, labels, args.work / f"phantom-l{lm:g}-{v}.pt", args.steps or natural_steps(lm), deadline,
             args.device, args.threads, args.ckpt_every) for lm in LAMBDAS for v in VARIANTS]
    with mp.get_context("spawn").Pool(len(jobs)) as pool:
        done = pool.map(_train, jobs)

    import torch

    from fairbits.codecs.checkpoints import load_checkpoint

    runs = []
    for run in done:
        if run.get("error"):
            runs.append(run)
            print(f"FAILED {run['lmbda']:g} {run['variant']}: {run['traceback']}", flush=True)
            continue
        ckpt = args.work / run["checkpoint"]
        _, meta = load_checkpoint(ckpt, ARCH)
        log = ckpt.with_suffix(".log.jsonl")
        runs.append({**run, "train_seconds": meta.get("train_seconds"), "data": meta.get("data"),
                     "variant_meta": meta.get("variant"), "group_weight": meta.get("group_weight"),
                     "train_bpp_estimate": meta.get("train_bpp_estimate"),
                     "train_psnr_estimate": meta.get("train_psnr_estimate"),
                     "log": log.read_text() if log.is_file() else ""})
        shutil.copyfile(ckpt, args.out / ckpt.name)
        print(json.dumps({k: v for k, v in runs[-1].items() if k not in ("log", "data")}), flush=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    (args.out / "summary.json").write_text(json.dumps(
        {"device": gpu, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "runs": runs},
        indent=1, default=str))
    print(f"done in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
