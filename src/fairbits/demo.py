"""``fairbits demo``: phantom faces, classical codecs at three rates and the built-in learned
codecs, pixel, skin-tone, identity and phenotype-classifier measures, bias statistics, realism,
attribution and a report; then FairGen on the built-in generator (study, counterfactual pairs,
paired audit)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fairbits.audit.runner import run_audit
from fairbits.codecs.base import get_codec
from fairbits.data.phantom import render_phantoms
from fairbits.spec import parse_spec

DEMO_CODECS = ("jpeg", "jpeg444", "webp", "avif")
DEMO_RATES = (0.1, 0.25, 0.5)
DEMO_LEARNED = ("bmshj2018-hyperprior", "mbt2018-mean", "hific")  # built-in checkpoints, fast mode
DEMO_MEASURES = ("psnr", "psnr_y", "ssim", "ms_ssim", "ciede2000", "skin_tone", "identity", "phenotype")
# Classifiers trained on separate phantoms (another seed): target → feature set. Colour statistics
# suffice for skin tone; hair type needs the SFace embedding too (held-out 0.73 → 0.96 on 240 faces).
DEMO_CLASSIFIERS = {"skin_group": "colour", "hair_type": "sface+colour"}


def demo_spec(labels_csv: Path, seed: int = 0, phenotype_models=()) -> dict:
    """The demo's audit spec as a dict (the same form as a YAML spec)."""
    return {
        "name": "fairbits demo: phantom faces",
        "dataset": {"reader": "csv", "path": str(labels_csv), "path_column": "path"},
        "groups": {"skin_group": ["MST1-3", "MST4-7", "MST8-10"]},
        "codecs": [{"name": c, "target_bpp": list(DEMO_RATES)} for c in DEMO_CODECS]
        + [{"name": c, "checkpoint": list(get_codec(c).builtin_settings), "mode": "fast"} for c in DEMO_LEARNED],
        "measures": [m for m in DEMO_MEASURES if m != "phenotype" or phenotype_models] + ["realism"],
        "phenotype_models": [str(p) for p in phenotype_models],
        "seed": seed,
    }


MIN_TRAINING_FACES = 60


def train_demo_classifiers(out: Path, n: int, seed: int, progress: bool) -> list[Path]:
    """Phenotype classifiers for :data:`DEMO_CLASSIFIERS`, trained on ``max(n, 60)`` phantoms
    of seed ``seed + 1`` (so none of the audited faces); reuses models in ``out/models``."""
    from fairbits.face.phenotype import train_phenotype

    paths = [out / "models" / f"{t}.npz" for t in DEMO_CLASSIFIERS]
    if all(p.is_file() for p in paths):
        return paths
    labels = render_phantoms(max(n, MIN_TRAINING_FACES), out / "train-phantoms", seed=seed + 1, balance="skin_group", progress=progress)
    manifest = pd.read_csv(labels)
    manifest["path"] = [str(labels.parent / p) for p in manifest["path"]]
    for (target, features), path in zip(DEMO_CLASSIFIERS.items(), paths):
        _, report = train_phenotype(manifest, target, path, features=features, seed=seed, progress=progress)
        print(f"classifier {target}: held-out accuracy {report['held_out_accuracy']:.3f} "
              f"({report['n_test']} faces)")
    return paths


def run_fairgen_demo(out: Path, n: int = 300, seed: int = 0, progress: bool = True) -> Path:
    """FairGen on the built-in generator, into ``out``: fit a sampler that balances light and
    not-light skin (``2n`` scored prior codes), compare plain and FairGen samples (``n`` each),
    export ``n // 10`` counterfactual pairs along skin lightness and audit two codecs on them
    (paired effects). Returns the pairs audit's report path; the study is in ``out/study``."""
    from fairbits.generative.export import export_counterfactual
    from fairbits.generative.scorers import ita_scorer
    from fairbits.generative.study import fit_sampler, run_study
    from fairbits.generative.vae import builtin_generator

    gen, scorers = builtin_generator(), [ita_scorer()]
    sampler, _ = fit_sampler(gen, scorers, 2 * n, seed)
    study = run_study(gen, scorers, None, n, seed, out / "study", sampler=sampler)
    for src, v in study["sources"].items():
        print(f"FairGen study, {src}: light-skin share {v['proportions'].get('light_skin=1', float('nan')):.2f}, "
              f"KL to uniform {v['kl']:.3f}")
    export_counterfactual(gen, sampler, "light_skin", max(n // 10, 4), out / "pairs", seed=seed, scorers=scorers)
    spec = parse_spec({
        "name": "fairbits demo: counterfactual skin-lightness pairs from the built-in generator",
        "dataset": {"reader": "csv", "path": str((out / "pairs" / "labels.csv").resolve()), "path_column": "path"},
        "groups": ["light_skin"],
        "codecs": [{"name": "jpeg", "quality": [20]},
                   {"name": "bmshj2018-hyperprior", "checkpoint": ["phantom-l0.0003"], "mode": "fast"}],
        "measures": ["psnr", "ciede2000"], "seed": seed})
    return run_audit(spec, out / "pairs-run", progress=progress) / "report.html"


def run_demo(out: str | Path = "fairbits-demo", n: int = 240, seed: int = 0,
             progress: bool = True, fairgen_n: int = 300) -> Path:
    """Render (or reuse) ``n`` phantoms under ``out/phantoms``, train the demo classifiers on
    other phantoms, audit into ``out/run``, then run the FairGen part into ``out/fairgen``
    (skipped when ``fairgen_n`` is 0). Returns the path of the main HTML report."""
    out = Path(out)
    labels = render_phantoms(n, out / "phantoms", seed=seed, balance="skin_group", progress=progress)
    models = train_demo_classifiers(out, n, seed, progress)
    spec = parse_spec(demo_spec(labels.resolve(), seed, [m.resolve() for m in models]))
    run_dir = run_audit(spec, out / "run", progress=progress)
    if fairgen_n:
        print(f"FairGen report: {run_fairgen_demo(out / 'fairgen', fairgen_n, seed, progress)}")
    return run_dir / "report.html"
