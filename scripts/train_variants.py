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

``--cards-from OUT_DIR`` then measures each checkpoint (exact entropy coding of 96 held-out
phantoms balanced over skin groups, as for the natural cards) and installs it as a
built-in, with its model card (``.json`` and ``.md``), under ``src/fairbits/weights``.

    python scripts/train_variants.py --out OUT_DIR --minutes 8      # on the GPU machine
    python scripts/train_variants.py --cards-from OUT_DIR            # anywhere
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import time
from pathlib import Path

from train_builtin import render  # the same renderer call as the natural checkpoints

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


WHAT_CHANGES = {
    "balanced": "Balanced sampling over skin groups (`sampler=balanced:skin_group`): each draw picks a "
                "skin group uniformly, then an image of it, so the 5 % of MST8-10 faces are seen as often as "
                "the 80 % of MST1-3 faces.",
    "dro": "Group DRO over skin groups (`objective=group-dro:skin_group`, relative excess loss, step η = 0.1): "
           "each group's mean rate–distortion loss in a batch is weighted by an exponentiated-gradient weight, "
           "so training minimises the worst group's loss rather than the average.",
    "colour": "The skin-colour term (`colour_loss=0.01`): adds 0.01 × the squared CIELAB distance between the "
              "mean skin colour of each crop and of its reconstruction (ground-truth phantom skin masks).",
}


def write_cards(src: Path, weights: Path, work: Path) -> None:
    """Measure each checkpoint of ``src`` and install it, with its cards, under ``weights/ARCH``."""
    from train_builtin import evaluate

    from fairbits.codecs.checkpoints import load_checkpoint

    summary = {r["checkpoint"]: r for r in json.loads((src / "summary.json").read_text())["runs"] if not r.get("error")}
    test_labels = render(96, work / "test", seed=2, balance="skin_group")
    dest = weights / ARCH
    for name, run in sorted(summary.items()):
        ckpt = src / name
        _, meta = load_checkpoint(ckpt, ARCH)
        ev = evaluate(ckpt, ARCH, test_labels)
        key = ckpt.stem
        variant = key.rsplit("-", 1)[1]
        natural = json.loads((dest / f"phantom-l{meta['lmbda']:g}.json").read_text())
        card = {"arch": ARCH, "lmbda": meta["lmbda"], "N": meta["N"], "M": meta["M"], "steps": meta["steps"],
                "train_seconds": meta["train_seconds"], "train_mix": RECIPE["mix"], "variant": meta["variant"],
                "sampler": meta["sampler"], "objective": meta["objective"], "dro_step": meta.get("dro_step"),
                "dro_relative": meta.get("dro_relative"), "colour_loss": meta.get("colour_loss"),
                "final_group_weight": meta.get("group_weight"), "natural": f"phantom-l{meta['lmbda']:g}",
                "bpp": ev["bpp"], "psnr": ev["psnr"], "by_skin_group": ev["by_skin_group"],
                "trained_on": "NVIDIA H100 80GB (one GPU shared by six trainings)",
                "date": json.loads((src / "summary.json").read_text())["date"],
                "script": "scripts/train_variants.py", "storage": natural["storage"]}
        shutil.copyfile(ckpt, dest / f"{key}.pt")
        (dest / f"{key}.json").write_text(json.dumps(card, indent=1) + "\n")
        (dest / f"{key}.md").write_text(card_text(key, card, variant))
        print(key, f"{ev['bpp']:.4f} bpp", f"{ev['psnr']:.2f} dB", flush=True)


def card_text(key: str, card: dict, variant: str) -> str:
    """The model card of variant checkpoint ``key`` (Markdown)."""
    rows = "\n".join(f"| {g} | {v['bpp']:.4f} | {v['psnr']:.2f} |" for g, v in card["by_skin_group"].items())
    weights = ""
    if card.get("final_group_weight"):
        weights = (" Final group weights: " + ", ".join(f"{g} {w:.3g}" for g, w in card["final_group_weight"].items())
                   + ".")
    return f"""# {ARCH} `{key}` — built-in fairbits checkpoint (mitigation variant)

**What it is.** The `{card['natural']}` recipe with one change, for comparing mitigations of
skin-group bias (`fairbits audit` writes `mitigation.csv` when a run holds both). A small
`{ARCH}` (N={card['N']}, M={card['M']}) trained on synthetic phantom faces; it has never seen a
real face.

**What changes.** {WHAT_CHANGES[variant]}{weights}

**Same as `{card['natural']}`.** Data: 3,000 phantom faces (256×256, `fairbits phantom`, seed 1) cut
to 80/15/5 (MST1-3 / MST4-7 / MST8-10), the same 1,190 images. Rate–distortion loss bpp +
λ·255²·MSE with λ = {card['lmbda']:g}; Adam lr 3e-4, batch 16, 256×256 crops, {card['steps']} steps, seed 0.
Trained in {card['train_seconds'] / 60:.1f} min on one H100 shared by six trainings ({card['date']}), by
`scripts/train_variants.py`.

**Measured** (exact entropy coding, real bytes, 96 held-out phantoms balanced over skin groups):
mean {card['bpp']:.4f} bpp, PSNR {card['psnr']:.2f} dB.

| skin group | bpp | PSNR (dB) |
|---|---|---|
{rows}

**Storage.** fp16 weights; entropy-model tables in float32 (the Gaussian conditional's packed).
Load with `fairbits.codecs.checkpoints.load_checkpoint` (always `weights_only=True`).
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="where the trained checkpoints and summary.json go")
    ap.add_argument("--cards-from", type=Path, help="install the checkpoints of this --out folder as built-ins")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fairbits-variants"))
    ap.add_argument("--n", type=int, default=3000, help="training phantoms before the 80/15/5 cut (natural: 3000)")
    ap.add_argument("--minutes", type=float, default=8.0, help="stop every training this long after the start")
    ap.add_argument("--steps", type=int, default=None, help="override the natural steps (smoke tests)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads per training")
    ap.add_argument("--ckpt-every", type=int, default=250)
    args = ap.parse_args()
    if args.cards_from:
        from fairbits.codecs.checkpoints import WEIGHTS_DIR

        return write_cards(args.cards_from, WEIGHTS_DIR, args.work)
    if args.out is None:
        ap.error("give --out (train) or --cards-from (install)")
    deadline = time.time() + args.minutes * 60
    args.out.mkdir(parents=True, exist_ok=True)

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
