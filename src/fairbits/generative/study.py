"""Label generated faces and measure whether a generator amplifies its training data's imbalance.

Pipeline pieces shared by the study, the exports and the CLI:

* :func:`check_generator`, :func:`prior_codes` (prior latents through ``mapping``: the
  codes ``synthesize`` takes, in which FairGen's boundaries live) and
  :func:`render_and_label` (synthesize in chunks, score, optionally save);
* :func:`label_images`: scores and 0/1 labels of images;
* :func:`fit_sampler`: a :class:`~fairbits.generative.sampler.FairLatentSampler` fitted on
  scored prior codes;
* :func:`bias_amplification` and :func:`study_figure`: subgroup proportions of the
  training images, of plain prior samples and of FairGen samples, with Wilson CIs, KL
  and L2 distance to the target, and per attribute the share of its minority value;
* :func:`run_study`: all of it, written to ``study.csv``, ``study.png``, ``study.json``.

Subgroups follow :mod:`fairbits.generative.metrics` (attribute 0 = most significant bit).
Images whose score is NaN (no face where the scorer needs one) are left out of every
proportion and counted as ``n_unscored``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from fairbits.errors import FairbitsError, SpecError
from fairbits.fileio import atomic_write, atomic_write_text
from fairbits.generative.metrics import (diversity, fairness_discrepancy, frechet_distance, kl_divergence,
                                         precision_recall, proportion_cis, subgroup_proportions,
                                         subgroups, target_proportions)
from fairbits.generative.sampler import FairLatentSampler
from fairbits.generative.scorers import as_images, check_scorers, scorer_spec
from fairbits.measures.features import get_extractor
from fairbits.seeding import keyed_seed

GENERATOR_MEMBERS = ("latent_dim", "w_dim", "image_size", "sample_latents", "mapping", "synthesize")
SOURCES = ("training", "plain", "fairgen")
CHUNK = 256                 # codes synthesized and scored at a time
MAX_UNSCORED = 0.5          # fit_sampler refuses when more than this fraction of images cannot be scored
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
STUDY_COLUMNS = ("source", "kind", "cell", "count", "n", "proportion", "ci_low", "ci_high", "target", "kl", "l2",
                 "minority_ratio")


# --------------------------------------------------------------------------- generator plumbing

def int_seed(seed: int, *key) -> int:
    """A 32-bit seed derived from ``seed`` and a key (order-independent, see :mod:`fairbits.seeding`)."""
    return int(keyed_seed(seed, *key).generate_state(1)[0])


def check_generator(generator):
    """Return ``generator`` if it has the members of
    :class:`fairbits.generative.generator.Generator`, else raise :class:`SpecError`."""
    missing = [m for m in GENERATOR_MEMBERS if not hasattr(generator, m)]
    if missing:
        raise SpecError(f"{type(generator).__name__} is not a generator: missing {missing} (a generator needs "
                        "latent_dim, w_dim, image_size, sample_latents(n, seed), mapping(z), synthesize(w))")
    return generator


def prior_codes(generator, n: int, seed: int) -> np.ndarray:
    """``(n, w_dim or latent_dim)`` float64 codes ``mapping(sample_latents(n, seed))``."""
    z = generator.sample_latents(int(n), seed=int(seed))
    return np.asarray(generator.mapping(z), dtype=np.float64)


def subgroup_name(bits: Sequence[int], names: Sequence[str]) -> str:
    """``"light_skin=1|curly=0"`` for bits ``(1, 0)`` and names ``("light_skin", "curly")``."""
    return "|".join(f"{a}={int(b)}" for a, b in zip(names, bits))


def label_images(images, scorers: Sequence[Callable], batch_size: int = CHUNK) -> pd.DataFrame:
    """Scores and labels of ``images`` ``(N, 3, H, W)`` in [0, 1], one row per image.

    Columns per scorer ``s`` (in order): ``s`` (nullable Int64 0/1 label, ``score > 0``;
    <NA> where the score is NaN), ``s_score`` (float) and ``s_<key>`` for every key of its
    ``score_details`` (e.g. ``light_skin_region``). Images are scored ``batch_size`` at
    a time.
    """
    names = check_scorers(scorers)
    x = as_images(images)
    parts: dict[str, list] = {}
    for s0 in range(0, len(x), batch_size):
        batch = x[s0:s0 + batch_size]
        for name, scorer in zip(names, scorers):
            if hasattr(scorer, "score_details"):
                score, details = scorer.score_details(batch)
            else:
                score, details = scorer(batch), {}
            score = np.asarray(score, dtype=np.float64)
            if score.shape != (len(batch),):
                raise ValueError(f"scorer {name!r} returned shape {score.shape}, expected ({len(batch)},)")
            parts.setdefault(f"{name}_score", []).append(score)
            for key, value in details.items():
                parts.setdefault(f"{name}_{key}", []).append(np.asarray(value))
    cols: dict[str, object] = {}
    for name in names:
        score = np.concatenate(parts.get(f"{name}_score", [np.empty(0)]))
        cols[name] = pd.Series(score > 0, dtype="Int64").mask(np.isnan(score))
        cols[f"{name}_score"] = score
        for key in [k for k in parts if k.startswith(f"{name}_") and k != f"{name}_score"]:
            cols[key] = np.concatenate(parts[key])
    return pd.DataFrame(cols)


def render_and_label(generator, codes: np.ndarray, scorers: Sequence[Callable], *, batch_size: int = 64,
                     on_images: Callable[[int, torch.Tensor], None] | None = None) -> pd.DataFrame:
    """Synthesize ``codes`` ``(n, w)`` in chunks of :data:`CHUNK`, score them, return :func:`label_images` rows.

    ``on_images(start, images)`` is called on every chunk (e.g. to write PNGs), with
    ``images`` ``(m, 3, H, W)`` in [0, 1] for codes ``start .. start + m - 1``.
    """
    codes = np.asarray(codes)
    frames = []
    for start in range(0, len(codes), CHUNK):
        w = codes[start:start + CHUNK].astype(np.float32)
        images = as_images(generator.synthesize(w, batch_size=batch_size))
        if images.shape[0] != len(w):
            raise FairbitsError(f"the generator returned {images.shape[0]} images for {len(w)} codes")
        if on_images is not None:
            on_images(start, images)
        frames.append(label_images(images, scorers))
    if not frames:
        return label_images(torch.zeros(0, 3, 1, 1), scorers)
    return pd.concat(frames, ignore_index=True)


def score_matrix(labels: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """``(n, k)`` float scores of the named attributes from :func:`label_images` rows."""
    return labels[[f"{a}_score" for a in names]].to_numpy(np.float64)


def fit_sampler(generator, scorers: Sequence[Callable], n: int, seed: int = 0, *, batch_size: int = 64,
                **options) -> tuple[FairLatentSampler, dict]:
    """Fit a :class:`FairLatentSampler` on ``n`` scored prior codes of ``generator``.

    ``options`` go to the sampler's constructor (its ``seed`` defaults to ``seed``).
    Codes with any NaN score are dropped (at most :data:`MAX_UNSCORED` of them). The
    sampler gets ``attribute_names_`` and ``scorer_specs_`` (used by :func:`save_sampler`
    in :mod:`.export`). Returns ``(sampler, info)``, ``info`` holding the counts, the
    subgroup proportions of the fitted codes and each boundary's held-out accuracy.
    """
    names = check_scorers(scorers)
    check_generator(generator)
    codes = prior_codes(generator, n, int_seed(seed, "fairgen-fit"))
    labels = render_and_label(generator, codes, scorers, batch_size=batch_size)
    scores = score_matrix(labels, names)
    ok = np.isfinite(scores).all(axis=1)
    if ok.mean() < 1 - MAX_UNSCORED:
        raise FairbitsError(f"only {int(ok.sum())} of {n} generated images could be scored (no face found?); "
                            "check the scorers on a few images first")
    options.setdefault("seed", seed)
    sampler = FairLatentSampler(**options).fit(codes[ok], scores[ok])
    sampler.attribute_names_ = list(names)
    sampler.scorer_specs_ = [scorer_spec(s) for s in scorers]
    bits = (scores[ok] > 0).astype(np.int64)
    idx = (bits * (1 << np.arange(len(names) - 1, -1, -1))).sum(axis=1)
    info = {"n": int(n), "n_scored": int(ok.sum()), "attributes": list(names),
            "proportions": subgroup_proportions(idx, len(names)).round(6).tolist(),
            "val_accuracy": {a: float(b.val_accuracy) for a, b in zip(names, sampler.boundaries_)}}
    return sampler, info


def parse_target(text: str | None, k: int):
    """A target from the CLI: ``None``/``uniform`` → ``None``; ``"0.1,0.2,0.3,0.4"`` → ``(2^k,)`` array.

    Proportions are in subgroup index order (attribute 0 = most significant bit) and are
    normalised. Raises :class:`SpecError` with the expected length on a bad value.
    """
    if text is None or str(text).strip().lower() in ("", "uniform"):
        return None
    groups = subgroups(k)
    try:
        values = np.array([float(v) for v in str(text).split(",")])
    except ValueError:
        raise SpecError(f"target {text!r}: expected 'uniform' or {len(groups)} comma-separated proportions "
                        f"(subgroup order {['|'.join(map(str, g)) for g in groups]})") from None
    try:
        return target_proportions(values, k)
    except ValueError as e:
        raise SpecError(f"target {text!r}: {e}; expected {len(groups)} non-negative proportions in subgroup order "
                        f"{['|'.join(map(str, g)) for g in groups]}") from None


# --------------------------------------------------------------------------- training images

def _image_paths(source: Path) -> list[str]:
    if source.is_dir():
        return sorted(str(p) for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    from fairbits.data.manifest import build_manifest

    if source.suffix.lower() in (".yaml", ".yml"):
        from fairbits.codecs.train.data import load_training_data

        ds = load_training_data(source)
        df = build_manifest(ds.reader, ds.path, options=ds.reader_options, split=ds.split, checksums=False)
    elif source.suffix.lower() == ".csv":
        df = build_manifest("csv", source, options={"path_column": "path"}, checksums=False)
    else:
        raise SpecError(f"training images {str(source)!r}: expected a folder of images, a labels CSV "
                        "(column `path`) or a dataset YAML")
    return df["path"].astype(str).tolist()


def load_image_set(source, size: int, limit: int | None = None, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Images to compare a generator with, as ``(N, 3, size, size)`` in [0, 1], and a description.

    ``source``: images (tensor/array, used as given), a folder (every image file under
    it), a CSV with a ``path`` column (read with the csv dataset reader) or a dataset YAML
    (as ``fairbits train-codec --data``). Files are resized + centre-cropped to ``size``
    (the generator's resolution). At most ``limit`` images, a seeded random subset.
    Unreadable files are skipped and counted.
    """
    rng = np.random.default_rng(int_seed(seed, "train-subset"))
    if isinstance(source, (torch.Tensor, np.ndarray)):
        x = as_images(source)
        if limit is not None and len(x) > limit:
            x = x[torch.from_numpy(np.sort(rng.choice(len(x), limit, replace=False)))]
        return x, {"source": "array", "n": int(len(x)), "skipped": 0}
    from fairbits.data.images import DEFAULT_MAX_PIXELS, load_original, to_tensor
    from fairbits.errors import ImageError

    path = Path(source)
    if not path.exists():
        raise SpecError(f"training images not found: {path}")
    paths = _image_paths(path)
    if limit is not None and len(paths) > limit:
        paths = [paths[i] for i in np.sort(rng.choice(len(paths), limit, replace=False))]
    arrays, skipped = [], 0
    for p in paths:
        try:
            arrays.append(load_original(p, max_pixels=DEFAULT_MAX_PIXELS, size=size, min_side=1))
        except ImageError:
            skipped += 1
    if not arrays:
        raise FairbitsError(f"no readable training images in {path}")
    return to_tensor(arrays), {"source": str(path), "n": len(arrays), "skipped": skipped}


# --------------------------------------------------------------------------- the comparison

def _bits(labels, k: int, what: str) -> np.ndarray:
    """``(n, k)`` 0/1 ints from subgroup indices ``(n,)`` or 0/1 labels ``(n, k)``."""
    a = np.asarray(labels)
    if a.ndim == 1:
        if not np.issubdtype(a.dtype, np.integer) or (a < 0).any() or (a >= 2 ** k).any():
            raise ValueError(f"{what}: subgroup indices must be integers in [0, {2 ** k})")
        return (a[:, None] >> np.arange(k - 1, -1, -1)) & 1
    if a.ndim != 2 or a.shape[1] != k or not np.isin(a, (0, 1)).all():
        raise ValueError(f"{what}: expected subgroup indices (n,) or 0/1 labels (n, {k}), got shape {a.shape}")
    if len(a) == 0:
        raise ValueError(f"{what}: no labelled images")
    return a.astype(np.int64)


def bias_amplification(train_labels, plain_labels, fair_labels, k: int, target=None, *,
                       names: Sequence[str] | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """Compare subgroup make-up of training images, plain samples and FairGen samples.

    Each ``*_labels`` is ``(n,)`` subgroup indices or ``(n, k)`` 0/1 labels;
    ``train_labels`` may be ``None`` (no training images). Returns a long table with
    columns :data:`STUDY_COLUMNS`, one block per source (``training``, ``plain``,
    ``fairgen``) and three kinds of row:

    * ``subgroup``: ``cell`` like ``a=1|b=0``; ``count`` of ``n`` images, ``proportion``
      with a ``1 − alpha`` Wilson interval, and the ``target`` proportion;
    * ``attribute``: ``cell`` ``a=v`` with ``v`` the attribute's *minority value* (the
      rarer one in the training images, or in the plain samples without them); its share
      with a Wilson interval, its target share, and ``minority_ratio`` = this source's
      share / the training share. Below 1 the source made the minority rarer than the
      training data (the imbalance was amplified); 1 preserved; above 1 reduced.
    * ``overall``: ``kl`` = KL(proportions ‖ target) in nats and ``l2`` = L2 distance of
      the proportion vectors (:func:`~fairbits.generative.metrics.fairness_discrepancy`).
    """
    names = list(names) if names is not None else [f"attr{i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} names for k={k} attributes")
    groups, p_target = subgroups(k), target_proportions(target, k)
    data = {src: _bits(lab, k, src) for src, lab in zip(SOURCES, (train_labels, plain_labels, fair_labels))
            if lab is not None}
    ref = data.get("training", data["plain"])
    minority = [0 if ref[:, i].mean() > 0.5 else 1 for i in range(k)]   # a tie counts 1 as the minority
    train_share = ({i: float((data["training"][:, i] == minority[i]).mean()) for i in range(k)}
                   if "training" in data else {})
    rows = []
    for src, bits in data.items():
        n = len(bits)
        idx = (bits * (1 << np.arange(k - 1, -1, -1))).sum(axis=1)
        counts = np.bincount(idx, minlength=2 ** k)
        p = subgroup_proportions(idx, k)
        lo, hi = proportion_cis(idx, k, alpha)
        lo, hi = np.minimum(lo, p), np.maximum(hi, p)     # round-off: Wilson's bound at p = 0 can be 1e-18
        for g, grp in enumerate(groups):
            rows.append(dict(source=src, kind="subgroup", cell=subgroup_name(grp, names), count=int(counts[g]),
                             n=n, proportion=p[g], ci_low=lo[g], ci_high=hi[g], target=p_target[g]))
        for i in range(k):
            hit = (bits[:, i] == minority[i]).astype(np.int64)
            a_lo, a_hi = proportion_cis(hit, 1, alpha)
            share = float(hit.mean())
            a_lo, a_hi = np.minimum(a_lo, share), np.maximum(a_hi, share)
            t_share = float(sum(p_target[g] for g, grp in enumerate(groups) if grp[i] == minority[i]))
            amp = share / train_share[i] if train_share.get(i) else np.nan
            rows.append(dict(source=src, kind="attribute", cell=f"{names[i]}={minority[i]}", count=int(hit.sum()),
                             n=n, proportion=share, ci_low=a_lo[1], ci_high=a_hi[1], target=t_share,
                             minority_ratio=amp))
        rows.append(dict(source=src, kind="overall", cell="all", count=n, n=n, kl=kl_divergence(p, p_target),
                         l2=fairness_discrepancy(p, p_target)))
    return pd.DataFrame(rows, columns=list(STUDY_COLUMNS))


def study_figure(table: pd.DataFrame):
    """Grouped bars with Wilson whiskers: subgroup proportions (left) and minority shares (right).

    One bar per source; dashed lines mark the target. Returns a matplotlib Figure.
    """
    from fairbits.report.figures import figure_legend, new_figure, text

    fig, axes = new_figure(2)
    sources = list(dict.fromkeys(table.source))
    colours = {"training": "#8c8c8c", "plain": "#dd8452", "fairgen": "#4c72b0"}
    for ax, kind, title in zip(axes, ("subgroup", "attribute"), ("subgroup proportions", "minority-value share")):
        sub = table[table.kind == kind]
        cells = list(dict.fromkeys(sub.cell))
        x, width = np.arange(len(cells)), 0.8 / max(len(sources), 1)
        for j, src in enumerate(sources):
            s = sub[sub.source == src].set_index("cell").loc[cells]
            pos = x - 0.4 + width * (j + 0.5)
            y = s.proportion.to_numpy(float)
            err = np.vstack([np.clip(y - s.ci_low.to_numpy(float), 0, None),
                             np.clip(s.ci_high.to_numpy(float) - y, 0, None)])
            ax.bar(pos, y, width, label=text(src), color=colours.get(src))
            # whiskers drawn apart: bar(yerr=...) with a single bar trips a numpy deprecation
            ax.errorbar(pos, y, yerr=err, fmt="none", ecolor="black", capsize=2, lw=0.8)
        tgt = sub.drop_duplicates("cell").set_index("cell").loc[cells, "target"].to_numpy(float)
        ax.hlines(tgt, x - 0.45, x + 0.45, colors="black", linestyles="--", lw=0.9, label="target")
        ax.set_xticks(x, [text(c) for c in cells], fontsize=7, rotation=25 if len(cells) > 2 else 0,
                      ha="right" if len(cells) > 2 else "center")
        ax.set_ylabel("proportion")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 1)
        ax.grid(True, axis="y", alpha=0.3, linewidth=0.6)
        ax.spines[["top", "right"]].set_visible(False)
    figure_legend(fig, axes, "source")
    return fig


def _summary(table: pd.DataFrame) -> dict:
    out = {}
    for src, t in table.groupby("source", sort=False):
        sub, att, ov = t[t.kind == "subgroup"], t[t.kind == "attribute"], t[t.kind == "overall"].iloc[0]
        out[src] = {"n": int(ov.n), "kl": float(ov.kl), "l2": float(ov.l2),
                    "proportions": dict(zip(sub.cell, sub.proportion.astype(float).round(6))),
                    "minority_share": dict(zip(att.cell, att.proportion.astype(float).round(6))),
                    "minority_ratio": {c: (None if pd.isna(a) else round(float(a), 6))
                                      for c, a in zip(att.cell, att.minority_ratio)}}
    return out


def _scored(labels: pd.DataFrame, names: Sequence[str]) -> tuple[np.ndarray, int]:
    """0/1 labels ``(m, k)`` of rows scored by every scorer, and the number of unscored rows."""
    lab = labels[list(names)]
    ok = lab.notna().all(axis=1).to_numpy()
    return lab[ok].to_numpy(np.int64), int((~ok).sum())


def _region_counts(labels: pd.DataFrame, names: Sequence[str]) -> dict:
    return {a: labels[f"{a}_region"].value_counts().astype(int).to_dict()
            for a in names if f"{a}_region" in labels}


def run_study(generator, scorers: Sequence[Callable], train_images, n: int, seed: int, out_dir, *,
              sampler: FairLatentSampler | None = None, n_fit: int = 2000, target=None, train_limit: int | None = None,
              batch_size: int = 64, sampler_options: dict | None = None,
              quality_features: str | None = "sface") -> dict:
    """Does the generator amplify its training imbalance, and does FairGen fix it?

    Draws ``n`` plain prior samples and ``n`` FairGen samples (``sampler``, or one fitted
    here on ``n_fit`` prior codes with ``sampler_options``) following ``target``
    (uniform when ``None``), labels them and the training images (``train_images``: see
    :func:`load_image_set`, at most ``train_limit`` (default ``n``) of them; ``None``
    leaves out the training row and the minority ratio), and writes to ``out_dir``:
    ``study.csv`` (:func:`bias_amplification`), ``study.png`` (:func:`study_figure`) and
    ``study.json`` (settings, per-source summary, which skin region each scorer used,
    seconds, and with ``quality_features`` the :func:`sample_quality` of FairGen samples
    against plain ones). Returns the JSON content plus ``table`` (the DataFrame).
    """
    t0 = time.perf_counter()
    check_generator(generator)
    names = check_scorers(scorers)
    k = len(names)
    out_dir = Path(out_dir)
    train = train_info = None
    if train_images is not None:  # read first: a bad path stops before any sampling
        train, train_info = load_image_set(train_images, int(generator.image_size),
                                           n if train_limit is None else train_limit, seed)
    fit_info = None
    if sampler is None:
        sampler, fit_info = fit_sampler(generator, scorers, n_fit, seed, batch_size=batch_size,
                                        **(sampler_options or {}))
    if getattr(sampler, "k_", None) != k:
        raise SpecError(f"the sampler has {getattr(sampler, 'k_', '?')} attributes but {k} scorers were given")
    p_target = target_proportions(target, k)
    extractor = get_extractor(quality_features) if quality_features else None
    feats: dict[str, list[np.ndarray]] = {"plain": [], "fairgen": []}

    def keep_features(src):
        return None if extractor is None else (lambda _start, images: feats[src].append(extractor(images)))

    labels = {"plain": render_and_label(generator, prior_codes(generator, n, int_seed(seed, "study-plain")),
                                        scorers, batch_size=batch_size, on_images=keep_features("plain")),
              "fairgen": render_and_label(generator, sampler.sample(n, p_target, seed=int_seed(seed, "study-fair")),
                                          scorers, batch_size=batch_size, on_images=keep_features("fairgen"))}
    if train_images is not None:
        labels["training"] = label_images(train, scorers)
    scored = {src: _scored(lab, names) for src, lab in labels.items()}
    for src, (bits, _) in scored.items():
        if len(bits) == 0:
            raise FairbitsError(f"no {src} image could be scored by every scorer")
    table = bias_amplification(scored["training"][0] if "training" in scored else None, scored["plain"][0],
                               scored["fairgen"][0], k, p_target, names=names)
    summary = {"attributes": names, "scorers": [scorer_spec(s) for s in scorers], "n": int(n), "seed": int(seed),
               "target": p_target.round(6).tolist(), "fit": fit_info, "training": train_info,
               "n_unscored": {src: u for src, (_, u) in scored.items()},
               "regions": {src: _region_counts(lab, names) for src, lab in labels.items()},
               "sources": _summary(table)}
    if extractor is not None:
        summary["quality"] = sample_quality(np.concatenate(feats["plain"]), np.concatenate(feats["fairgen"]),
                                            quality_features, seed)
    from fairbits.report.figures import save_png

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "study.csv", lambda tmp: table.to_csv(tmp, index=False))
    fig = study_figure(table)
    atomic_write(out_dir / "study.png", lambda tmp: save_png(fig, tmp))
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    atomic_write_text(out_dir / "study.json", json.dumps(summary, indent=1, default=_json_default) + "\n")
    return {**summary, "table": table}


def sample_quality(plain: np.ndarray, fair: np.ndarray, features: str, seed: int = 0) -> dict:
    """What rebalancing costs in diversity and realism, in a feature space.

    ``plain`` ``(n, f)`` and ``fair`` ``(m, f)`` are features of plain and FairGen samples.
    Returns the feature space, each set's diversity (mean pairwise distance), FairGen's
    precision and recall against the plain samples (k = 3), and the Fréchet distance
    between the two sets (0 = same distribution; rebalancing moves it by design).
    """
    precision, recall = precision_recall(plain, fair)
    return {"features": features, "diversity_plain": diversity(plain, seed=seed),
            "diversity_fairgen": diversity(fair, seed=seed), "precision": precision, "recall": recall,
            "frechet_distance": frechet_distance(plain, fair)}


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


__all__ = ["bias_amplification", "check_generator", "fit_sampler", "label_images", "load_image_set",
           "parse_target", "prior_codes", "render_and_label", "run_study", "score_matrix", "study_figure",
           "subgroup_name"]
