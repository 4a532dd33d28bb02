"""``fairbits fairgen``: rebalance a face generator's output from the command line.

Typical session::

    fairbits fairgen fit --generator builtin --n 2000 --scorer ita --scorer curly=phenotype:hair.npz:curly \\
        --out sampler.npz
    fairbits fairgen sample --sampler sampler.npz --n 64 --target uniform --out samples/
    fairbits fairgen study --sampler sampler.npz --n 1000 --train data/labels.csv --out study/
    fairbits fairgen export --sampler sampler.npz --balanced 400 --counterfactual light_skin --pairs 100 --out sets/

``--generator`` is ``builtin`` (the small phantom-face VAE) or ``module:function``, a
Python callable returning a generator (``latent_dim``, ``w_dim``, ``image_size``,
``sample_latents``, ``mapping``, ``synthesize``). ``fit`` stores the generator and the
scorer specs in the sampler file. The later commands reuse a stored ``builtin`` and the
stored built-in scorer specs, but never import code a file names: a sampler fitted with
``module:function`` needs ``--generator module:function`` again on the command line
(a sampler file is data, and may come from anyone).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from fairbits.cli.common import exit_on_error, say
from fairbits.entrypoints import load_entry_point
from fairbits.errors import SpecError

BUILTIN = "builtin"

fairgen_app = typer.Typer(add_completion=False, no_args_is_help=True,
                          help="FairGen: sample a face generator with balanced demographic subgroups.")


def load_generator(spec: str):
    """``builtin`` → :func:`fairbits.generative.vae.builtin_generator`; ``module:function`` → its result.

    Raises:
        SpecError: malformed spec, module or function not found, or the result is not a generator.
    """
    from fairbits.generative.study import check_generator

    spec = (spec or "").strip()
    if spec == BUILTIN:
        try:
            from fairbits.generative.vae import builtin_generator
        except ImportError as e:
            raise SpecError(f"the built-in generator is not available: {e}") from None
        return check_generator(builtin_generator())
    obj = load_entry_point(spec, "generator")
    return check_generator(obj())


def _scorers(specs: list[str]):
    from fairbits.generative.scorers import get_scorer

    if not specs:
        raise SpecError("give at least one --scorer (e.g. --scorer ita)")
    return [get_scorer(s) for s in specs]


def stored_generator(sampler, sampler_path) -> str:
    """The generator a sampler file records, if it may be used without the command line.

    Only a built-in key (:data:`BUILTIN`) is taken from a file: any other value would
    make fairbits import and call code named by data, so it must be given again with
    ``--generator``.

    Raises:
        SpecError: the file records no generator, or one that is not built in.
    """
    meta = getattr(sampler, "meta_", None)
    stored = meta.get("generator") if isinstance(meta, dict) else None
    if stored == BUILTIN:
        return BUILTIN
    if not stored:
        raise SpecError(f"{sampler_path} records no generator; give --generator builtin or --generator module:function")
    shown = stored if isinstance(stored, str) and len(stored) <= 200 else f"{str(stored)[:200]}..."
    raise SpecError(f"{sampler_path} was fitted with the generator {shown!r}; fairbits never imports code "
                    f"named in a data file: if you trust that code, pass --generator module:function "
                    f"on the command line")


def _session(sampler_path: Path, generator: Optional[str], scorer: Optional[list[str]]):
    """``(sampler, generator, scorers or None)``: options override what ``fit`` stored."""
    from fairbits.generative.export import load_sampler

    sampler = load_sampler(sampler_path)
    gen_spec = generator or stored_generator(sampler, sampler_path)
    specs = scorer or [s for s in sampler.scorer_specs_ if s]
    if scorer is None and len(specs) != len(sampler.scorer_specs_):
        specs = []          # a custom scorer was used in fit: only --scorer can replace it
    return sampler, load_generator(gen_spec), (_scorers(specs) if specs else None)


@fairgen_app.command("fit")
def fit_cmd(
    scorer: list[str] = typer.Option(..., "--scorer", "-s",
                                     help="attribute scorer, repeatable: ita | ita:20 | phenotype:MODEL.npz:CLASS | "
                                          "gender (NAME=SPEC renames)"),
    out: Path = typer.Option(..., "--out", "-o", help="sampler file (.npz; a .json card is written beside it)"),
    generator: str = typer.Option(BUILTIN, "--generator", "-g", help="builtin | module:function"),
    n: int = typer.Option(2000, "--n", help="prior latents to draw, render and score"),
    seed: int = typer.Option(0),
    n_components: int = typer.Option(3, "--n-components", help="Gaussian components per subgroup"),
    edit_distance: float = typer.Option(0.5, "--edit-distance", help="extra margin past each boundary, in σ"),
    batch_size: int = typer.Option(64, "--batch-size"),
):
    """Fit FairGen's boundaries and per-subgroup mixtures on scored prior samples."""
    from fairbits.generative.export import save_sampler
    from fairbits.generative.study import fit_sampler

    with exit_on_error():
        if n < 20:
            raise SpecError(f"--n must be at least 20, got {n}")
        if out.suffix != ".npz":
            raise SpecError(f"--out must end in .npz, got {out}")
        gen, scorers = load_generator(generator), _scorers(scorer)
        sampler, info = fit_sampler(gen, scorers, n, seed, batch_size=batch_size, n_components=n_components,
                                    edit_distance=edit_distance)
        path = save_sampler(sampler, out, meta={"generator": generator, "fit": info})
    say(f"fitted on {info['n_scored']}/{info['n']} scored codes; held-out boundary accuracy "
         + ", ".join(f"{a} {v:.3f}" for a, v in info["val_accuracy"].items()))
    print(path)


@fairgen_app.command("sample")
def sample_cmd(
    sampler: Path = typer.Option(..., "--sampler", help="file written by `fairgen fit`"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for the PNGs and latents.npy"),
    n: int = typer.Option(64, "--n", help="images to draw"),
    target: str = typer.Option("uniform", help="uniform, or 2^k comma-separated proportions in subgroup order"),
    generator: Optional[str] = typer.Option(None, "--generator", "-g",
                                            help="default: builtin when fit used it (other generators: repeat it)"),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(64, "--batch-size"),
):
    """Draw images whose subgroups follow a target: PNGs, latents.npy and samples.csv."""
    import numpy as np
    import pandas as pd

    from fairbits.fileio import atomic_write
    from fairbits.generative.export import png_writer, save_latents
    from fairbits.generative.metrics import subgroups
    from fairbits.generative.study import parse_target, subgroup_name

    with exit_on_error():
        if n < 1:
            raise SpecError(f"--n must be positive, got {n}")
        s, gen, _ = _session(sampler, generator, None)
        codes, drawn = s.sample(n, parse_target(target, s.k_), seed=seed, return_subgroups=True)
        ids = [f"sample_{i:06d}" for i in range(n)]
        write = png_writer(out, ids)
        for start in range(0, n, 256):
            write(start, gen.synthesize(codes[start:start + 256].astype(np.float32), batch_size=batch_size))
        groups = subgroups(s.k_)
        table = pd.DataFrame({"image_id": ids, "path": [f"{i}.png" for i in ids],
                              "sampled_subgroup": [subgroup_name(groups[g], s.attribute_names_) for g in drawn]})
        atomic_write(out / "samples.csv", lambda tmp: table.to_csv(tmp, index=False))
        save_latents(out / "latents.npy", codes)
    print(out)


@fairgen_app.command("study")
def study_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="folder for study.csv, study.png, study.json"),
    sampler: Optional[Path] = typer.Option(None, "--sampler", help="fitted sampler (else one is fitted, --n-fit)"),
    generator: Optional[str] = typer.Option(None, "--generator", "-g",
                                            help="default: builtin (a sampler's own only when built in)"),
    scorer: Optional[list[str]] = typer.Option(None, "--scorer", "-s", help="default: the sampler's scorers"),
    train: Optional[Path] = typer.Option(None, "--train",
                                         help="training images: folder, labels CSV (column path) or dataset YAML"),
    n: int = typer.Option(1000, "--n", help="plain and FairGen samples each"),
    n_fit: int = typer.Option(2000, "--n-fit", help="prior samples to fit on when no --sampler is given"),
    target: str = typer.Option("uniform", help="uniform, or 2^k comma-separated proportions"),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(64, "--batch-size"),
    quality_features: str = typer.Option("sface", "--quality-features",
                                         help="feature space of diversity, precision/recall and FD "
                                              "(sface | inception | pixels | none)"),
):
    """Plain vs FairGen vs training data: subgroup shares, KL, L2, minority ratio, diversity and realism."""
    from fairbits.generative.study import parse_target, run_study

    with exit_on_error():
        if n < 2:
            raise SpecError(f"--n must be at least 2, got {n}")
        if sampler is not None:
            s, gen, scorers = _session(sampler, generator, scorer)
            if scorers is None:
                raise SpecError(f"{sampler} was fitted with a custom scorer; give --scorer")
        else:
            s, gen, scorers = None, load_generator(generator or BUILTIN), _scorers(scorer or [])
        result = run_study(gen, scorers, train, n, seed, out, sampler=s, n_fit=n_fit,
                           target=parse_target(target, len(scorers)), batch_size=batch_size,
                           quality_features=None if quality_features == "none" else quality_features)
    for src, v in result["sources"].items():
        say(f"{src:>8}: KL {v['kl']:.4f}  L2 {v['l2']:.4f}  " + json.dumps(v["proportions"]))
    if "quality" in result:
        say("quality: " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                       for k, v in result["quality"].items()}))
    print(out / "study.json")


@fairgen_app.command("export")
def export_cmd(
    sampler: Path = typer.Option(..., "--sampler", help="file written by `fairgen fit`"),
    out: Path = typer.Option(..., "--out", "-o", help="folder; gets balanced/ and/or counterfactual-<attr>/"),
    balanced: Optional[int] = typer.Option(None, "--balanced", help="images in a subgroup-balanced set"),
    counterfactual: Optional[str] = typer.Option(None, "--counterfactual", help="attribute to flip in pairs"),
    pairs: int = typer.Option(100, "--pairs", help="counterfactual pairs"),
    distance: Optional[float] = typer.Option(None, help="counterfactual distance, latent units (default 1 σ)"),
    generator: Optional[str] = typer.Option(None, "--generator", "-g",
                                            help="default: builtin when fit used it (other generators: repeat it)"),
    scorer: Optional[list[str]] = typer.Option(None, "--scorer", "-s", help="default: the sampler's scorers"),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(64, "--batch-size"),
):
    """Write audit datasets: a balanced set and/or counterfactual pairs (labels.csv + PNGs)."""
    from fairbits.generative.export import export_balanced, export_counterfactual

    written = []
    with exit_on_error():
        if balanced is None and counterfactual is None:
            raise SpecError("nothing to export: give --balanced N and/or --counterfactual ATTRIBUTE")
        if balanced is not None and balanced < 1:
            raise SpecError(f"--balanced must be positive, got {balanced}")
        s, gen, scorers = _session(sampler, generator, scorer)
        if balanced is not None:
            if scorers is None:
                raise SpecError(f"{sampler} was fitted with a custom scorer; give --scorer")
            export_balanced(gen, s, balanced, out / "balanced", scorers, seed, batch_size=batch_size)
            written.append(out / "balanced" / "labels.csv")
        if counterfactual is not None:
            folder = out / f"counterfactual-{counterfactual}"
            export_counterfactual(gen, s, counterfactual, pairs, folder, distance, seed, scorers=scorers or (),
                                  batch_size=batch_size)
            written.append(folder / "labels.csv")
    for p in written:
        print(p)


def register(app: typer.Typer) -> None:
    """Add the ``fairgen`` command group to ``app``."""
    app.add_typer(fairgen_app, name="fairgen")


__all__ = ["fairgen_app", "load_generator", "register", "stored_generator"]
