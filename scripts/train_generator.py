"""Train fairbits' built-in face generator (a small VAE) on a skewed set of phantom faces (CPU).

This is how ``src/fairbits/weights/fairgen-phantom-vae/`` was made:

1. render a pool of ``--pool`` phantom faces at 128x128 (MST uniform over 1..10, all other
   attributes uniform) with :func:`fairbits.data.phantom.render_phantoms`, and a held-out set
   balanced over skin groups (different seed);
2. cut the pool to ``--n`` training faces with a deliberately skewed mix: skin groups
   80/15/5 % (MST1-3 / MST4-7 / MST8-10) crossed with 10 % curly hair (the other hair types
   share the rest equally, as in the pool); downscale to 64x64 (2x2 box average);
3. train :class:`fairbits.generative.vae.PhantomVAE` (Adam, horizontal flips, KL weight
   warmed up over the first tenth of the steps, cosine learning-rate decay);
4. measure on the held-out set (reconstruction error, KL, linear probes on the encoder
   means) and on samples from the prior (share of dark faces by a central-colour rule),
   then write ``model.pt`` (fp16 state dict), ``card.json`` and ``README.md`` to ``--out``.

    python scripts/train_generator.py --out src/fairbits/weights/fairgen-phantom-vae

Rendered data go under ``--work`` (default /tmp/fairbits-fairgen), never into the repository.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

MIX = {"MST1-3": 0.80, "MST4-7": 0.15, "MST8-10": 0.05}
CURLY = 0.10


def skewed_subset(labels: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """Row positions of ``n`` faces drawn from ``labels`` with skin groups in :data:`MIX`
    and a :data:`CURLY` share of curly hair; within a cell rows are drawn uniformly."""
    rng = np.random.default_rng(seed)
    curly = labels["hair_type"].eq("curly").to_numpy()
    picks = []
    for group, share in MIX.items():
        in_group = labels["skin_group"].eq(group).to_numpy()
        for is_curly, p in ((True, CURLY), (False, 1 - CURLY)):
            cell = np.flatnonzero(in_group & (curly == is_curly))
            k = int(round(n * share * p))
            if k > len(cell):
                raise SystemExit(f"pool too small: need {k} {group} faces with curly={is_curly}, have {len(cell)}")
            picks.append(rng.choice(cell, k, replace=False))
    return np.sort(np.concatenate(picks))


def load_64(labels_csv: Path, rows: np.ndarray | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Images of ``labels_csv`` (all, or the given row positions) as uint8 ``(n, 64, 64, 3)``
    (2x2 box downscale of the 128-px renders) and their label rows."""
    df = pd.read_csv(labels_csv)
    if rows is not None:
        df = df.iloc[rows].reset_index(drop=True)
    root = labels_csv.parent
    imgs = [np.asarray(Image.open(root / p).convert("RGB").reduce(2)) for p in df["path"]]
    return np.stack(imgs), df


def to_tensor(u8: np.ndarray) -> torch.Tensor:
    """uint8 ``(n, H, W, 3)`` → float32 ``(n, 3, H, W)`` in [0, 1]."""
    return torch.from_numpy(u8).permute(0, 3, 1, 2).float().div_(255.0)


def dark_share(images: torch.Tensor, threshold: float) -> np.ndarray:
    """Per image: is the BT.601 luma of the mean colour of the central 16x16 patch of a
    64x64 image (the nose and cheeks) below ``threshold`` (sRGB, [0, 1])?"""
    c = images[:, :, 28:44, 24:40].mean((2, 3))
    luma = 0.299 * c[:, 0] + 0.587 * c[:, 1] + 0.114 * c[:, 2]
    return (luma < threshold).numpy()


def train(model, data: torch.Tensor, epochs: int, beta: float, batch: int, lr: float, seed: int,
          max_seconds: float, log) -> dict:
    """Train ``model`` on ``data`` ``(n, 3, 64, 64)``; returns a history dict (per-epoch means)."""
    from fairbits.generative.vae import vae_loss

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = len(data) // batch
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * s / total)))
    warm = max(1, total // 10)
    hist = {"epoch": [], "sse": [], "kl": [], "seconds": []}
    t0, step = time.time(), 0
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(len(data), generator=g)
        sse_sum = kl_sum = 0.0
        for i in range(steps_per_epoch):
            x = data[perm[i * batch:(i + 1) * batch]]
            flip = torch.rand(len(x), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            recon, mean, logvar = model(x)
            loss, sse, kl = vae_loss(x, recon, mean, logvar, beta * min(1.0, (step + 1) / warm))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            sse_sum += float(sse.detach())
            kl_sum += float(kl.detach())
        for k, v in (("epoch", ep + 1), ("sse", sse_sum / steps_per_epoch), ("kl", kl_sum / steps_per_epoch),
                     ("seconds", time.time() - t0)):
            hist[k].append(v)
        log(f"epoch {ep + 1}/{epochs}  sse {hist['sse'][-1]:.2f}  kl {hist['kl'][-1]:.1f}  "
            f"{hist['seconds'][-1]:.0f} s")
        if time.time() - t0 > max_seconds:
            log(f"stopping: time budget of {max_seconds:.0f} s used")
            break
    model.eval()
    return hist


def evaluate(model, held: torch.Tensor, held_df: pd.DataFrame, beta: float, seed: int) -> dict:
    """Held-out reconstruction (posterior mean), KL, per-skin-group MSE and linear probes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fairbits.generative.vae import vae_loss

    with torch.no_grad():
        mean, logvar = model.encode(held)
        recon = model.decode(mean)
        _, sse, kl = vae_loss(held, recon, mean, logvar, beta)
        mse = ((recon - held) ** 2).flatten(1).mean(1).numpy()
        active = int((mean.var(0) > 0.01).sum())
    by_group = pd.Series(mse).groupby(held_df["skin_group"].to_numpy()).mean()
    feats = mean.numpy()
    probes = {}
    targets = {"skin_light": held_df["skin_group"].eq("MST1-3"), "skin_dark": held_df["skin_group"].eq("MST8-10"),
               "hair_curly": held_df["hair_type"].eq("curly")}
    for name, y in targets.items():
        y = y.to_numpy().astype(int)
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=1.0))
        cv = StratifiedKFold(5, shuffle=True, random_state=seed)
        acc = cross_val_score(clf, feats, y, cv=cv, scoring="accuracy")
        probes[name] = {"accuracy": round(float(acc.mean()), 4), "majority_baseline": round(float(max(y.mean(), 1 - y.mean())), 4)}
    return {"n": len(held), "sse_per_image": round(float(sse), 3), "kl_nats": round(float(kl), 2),
            "mse_per_pixel": round(float(mse.mean()), 6), "psnr_db": round(float(10 * np.log10(1 / mse.mean())), 2),
            "mse_by_skin_group": {k: round(float(v), 6) for k, v in by_group.items()},
            "active_latents": active, "linear_probe_5fold": probes}


def probe_shares(model, held: torch.Tensor, held_df: pd.DataFrame, samples: torch.Tensor) -> dict:
    """Attribute shares among generated ``samples`` as read by linear probes: logistic regressions
    fitted on the encoder means of the held-out phantoms, applied to the encoder means of the samples."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with torch.no_grad():
        feats, gen_feats = model.encode(held)[0].numpy(), model.encode(samples)[0].numpy()
    out = {}
    for name, y in {"MST1-3": held_df["skin_group"].eq("MST1-3"), "MST8-10": held_df["skin_group"].eq("MST8-10"),
                    "curly": held_df["hair_type"].eq("curly")}.items():
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(feats, y.to_numpy().astype(int))
        out[name] = round(float(clf.predict(gen_feats).mean()), 4)
    return out


def calibrate_dark(held: torch.Tensor, held_df: pd.DataFrame) -> dict:
    """Threshold of :func:`dark_share`: midway between the 5th percentile of MST7 faces' central
    luma and the 95th percentile of MST8 faces'; and its accuracy for MST8-10 vs the rest on the
    held-out phantoms."""
    c = held[:, :, 28:44, 24:40].mean((2, 3))
    luma = (0.299 * c[:, 0] + 0.587 * c[:, 1] + 0.114 * c[:, 2]).numpy()
    mst = held_df["mst"].to_numpy()
    thr = float(0.5 * (np.percentile(luma[mst == 7], 5) + np.percentile(luma[mst == 8], 95)))
    dark = held_df["skin_group"].eq("MST8-10").to_numpy()
    return {"threshold": round(thr, 4), "accuracy_dark_vs_rest": round(float(((luma < thr) == dark).mean()), 4)}


def write_card(out: Path, card: dict) -> None:
    """``card.json`` and a human-readable ``README.md`` from the same facts."""
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    ev, tr, d = card["heldout"], card["training"], card["data"]
    probes = "\n".join(f"| {k} | {v['accuracy']:.3f} | {v['majority_baseline']:.3f} |"
                       for k, v in ev["linear_probe_5fold"].items())
    groups = "\n".join(f"| {k} | {v:.5f} |" for k, v in ev["mse_by_skin_group"].items())
    smp = card["samples"]
    amplified = (" It makes the rare dark-skinned faces rarer still than its training data does: many prior "
                 "samples fall between the training clusters, towards the average (light to medium) face, so the "
                 "extremes of the skin-tone range are under-produced." if smp["dark_share"] < smp["train_dark_share"]
                 else "")
    text = f"""# fairgen-phantom-vae — fairbits' built-in face generator

**What it is.** A small convolutional VAE ({card['model']['parameters']:,} parameters, latent
dimension {card['model']['latent_dim']}, 64×64 RGB output, prior N(0, I), no mapping network) trained by
fairbits on synthetic phantom faces. It exists so that FairGen (`fairbits.generative`) can be
demonstrated and tested offline on a generator that is biased on purpose. It has never seen a
real face; its images are stylised phantoms, not photographs.

**Data.** {d['n_train']} phantom faces rendered at 128×128 by `fairbits.data.phantom.render_phantoms`
(pool of {d['pool']} faces, seed {d['pool_seed']}, MST uniform), cut to a deliberately skewed mix and
box-downscaled to 64×64: skin groups {d['mix_label']} (MST1-3 / MST4-7 / MST8-10) and
{100 * d['curly_share']:.0f} % curly hair (measured shares: {json.dumps(d['measured_skin_group_shares'])};
curly {d['measured_curly_share']:.3f}). Horizontal flips during training.

**Training.** Loss per image: summed squared error (pixels in [0, 1]) + β·KL with β = {tr['beta']}
(KL weight warmed up over the first tenth of the steps); Adam, learning rate {tr['lr']} with cosine
decay, batch {tr['batch']}, {tr['epochs_run']} epochs, seed {tr['seed']}; {tr['seconds']:.0f} s on
{tr['device']}. Last epoch: squared error {tr['final_sse']:.2f} per image, KL {tr['final_kl']:.1f} nats.

**Measured with the shipped fp16 weights on {ev['n']} held-out phantoms** (balanced over skin
groups, seed {d['heldout_seed']}):
reconstruction from the posterior mean: MSE {ev['mse_per_pixel']:.5f} per pixel (PSNR {ev['psnr_db']:.2f} dB);
KL {ev['kl_nats']:.1f} nats; {ev['active_latents']} of {card['model']['latent_dim']} latents active.

| skin group | reconstruction MSE |
|---|---|
{groups}

Linear probes (logistic regression on encoder means, 5-fold cross-validated accuracy):

| attribute | accuracy | majority baseline |
|---|---|---|
{probes}

**Skew of its samples.** Share of {card['samples']['n']} prior samples whose central 16×16 patch is
dark (luma < {card['samples']['dark_threshold']}, a rule that separates MST8-10 from the rest with
accuracy {card['samples']['rule_accuracy']:.3f} on held-out phantoms): {card['samples']['dark_share']:.3f}
(training data {card['samples']['train_dark_share']:.3f}, balanced data about 0.33). Shares among the same
samples as read by linear probes on the encoder means (fitted on the held-out phantoms):
{', '.join(f'{k} {v:.3f}' for k, v in card['samples']['probe_shares'].items())} (training data: MST1-3 0.80,
MST8-10 0.05, curly 0.10).{amplified}

**Intended use and limits.** Demos and tests of bias measurement and FairGen rebalancing. Not a
model of human faces; attributes other than skin tone and hair are only weakly represented at
64×64; do not draw conclusions about real populations from it.

**Storage.** `model.pt`: fp16 state dict of `fairbits.generative.vae.PhantomVAE`,
{card['model']['bytes'] / 1e6:.2f} MB, loaded with `torch.load(..., weights_only=True)` by
`fairbits.generative.vae.builtin_generator()`. Made on {card['date']}.

**Reproduce.** `{card['reproduce']}`
"""
    (out / "README.md").write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fairbits-fairgen"))
    ap.add_argument("--pool", type=int, default=11000, help="phantoms rendered before the skewed cut")
    ap.add_argument("--n", type=int, default=3000, help="training faces after the cut")
    ap.add_argument("--heldout", type=int, default=900)
    ap.add_argument("--latent-dim", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--beta", type=float, default=1.0, help="KL weight (per image, pixels in [0, 1])")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--minutes", type=float, default=20.0, help="stop after the epoch that passes this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--processes", type=int, default=2, help="render processes")
    ap.add_argument("--eval-only", action="store_true",
                    help="re-measure the weights in --out and rewrite the card, keeping its training record")
    args = ap.parse_args()

    from fairbits.data.phantom import render_phantoms
    from fairbits.generative.generator import generate
    from fairbits.generative.vae import PhantomVAE, builtin_generator

    torch.set_num_threads(args.threads)
    log = lambda s: print(s, flush=True)  # noqa: E731
    t0 = time.time()
    pool_csv = render_phantoms(args.pool, args.work / "pool", seed=1, size=128, balance=None,
                               processes=args.processes)
    held_csv = render_phantoms(args.heldout, args.work / "heldout", seed=2, size=128, balance="skin_group",
                               processes=args.processes)
    rows = skewed_subset(pd.read_csv(pool_csv), args.n, seed=args.seed)
    train_u8, train_df = load_64(pool_csv, rows)
    held_u8, held_df = load_64(held_csv)
    log(f"data ready in {time.time() - t0:.0f} s: train {train_u8.shape}, held-out {held_u8.shape}")

    data, held = to_tensor(train_u8), to_tensor(held_u8)
    if args.eval_only:
        training = json.loads((args.out / "card.json").read_text())["training"]
    else:
        torch.manual_seed(args.seed)
        model = PhantomVAE(args.latent_dim, args.width)
        t1 = time.time()
        hist = train(model, data, args.epochs, args.beta, args.batch, args.lr, args.seed, args.minutes * 60, log)
        seconds = time.time() - t1
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().half().clone() for k, v in model.state_dict().items()}, args.out / "model.pt")
        training = {"beta": args.beta, "lr": args.lr, "batch": args.batch, "epochs": args.epochs,
                    "epochs_run": len(hist["epoch"]), "seed": args.seed, "seconds": round(seconds, 1),
                    "threads": args.threads,
                    "device": f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads, "
                              "cores shared with other jobs)",
                    "final_sse": round(hist["sse"][-1], 3), "final_kl": round(hist["kl"][-1], 2),
                    "history": {k: [round(float(x), 3) for x in v] for k, v in hist.items()}}

    gen = builtin_generator(args.out)  # measure what ships: the fp16 weights, read back
    vae = gen.vae
    ev = evaluate(vae, held, held_df, training["beta"], args.seed)
    rule = calibrate_dark(held, held_df)
    _, samples = generate(gen, 2000, seed=123)
    card = {
        "name": "fairgen-phantom-vae", "date": datetime.date.today().isoformat(),
        "script": "scripts/train_generator.py",
        "reproduce": "python scripts/train_generator.py --out src/fairbits/weights/fairgen-phantom-vae "
                     + f"--latent-dim {vae.latent_dim} --width {vae.width} "
                     + " ".join(f"--{k} {training[k]}" for k in ("beta", "epochs", "batch", "lr", "seed")),
        "model": {"class": "fairbits.generative.vae.PhantomVAE", "latent_dim": vae.latent_dim, "width": vae.width,
                  "image_size": 64, "prior": "N(0, I)", "w_dim": None,
                  "parameters": sum(p.numel() for p in vae.parameters()),
                  "bytes": (args.out / "model.pt").stat().st_size, "dtype": "float16"},
        "data": {"renderer": "fairbits.data.phantom.render_phantoms", "render_size": 128, "train_size": 64,
                 "pool": args.pool, "pool_seed": 1, "n_train": len(train_df), "mix_label": "80/15/5",
                 "mix": MIX, "curly_share": CURLY, "subset_seed": args.seed, "heldout_seed": 2,
                 "measured_skin_group_shares": train_df["skin_group"].value_counts(normalize=True).round(4).to_dict(),
                 "measured_curly_share": round(float(train_df["hair_type"].eq("curly").mean()), 4)},
        "training": training,
        "heldout": ev,
        "samples": {"n": len(samples), "seed": 123, "dark_threshold": rule["threshold"],
                    "rule_accuracy": rule["accuracy_dark_vs_rest"],
                    "dark_share": round(float(dark_share(samples, rule["threshold"]).mean()), 4),
                    "train_dark_share": round(float(dark_share(data, rule["threshold"]).mean()), 4),
                    "probe_shares": probe_shares(vae, held, held_df, samples)},
    }
    write_card(args.out, card)
    log(json.dumps({k: card[k] for k in ("model", "heldout", "samples")}, indent=1))
    log(f"training {training['seconds']:.0f} s; this run {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
