"""Export FairGen output as audit datasets, and store a fitted sampler without pickle.

* :func:`export_balanced`: ``n`` images drawn with equal (or ``target``) subgroup
  proportions, as PNGs plus ``labels.csv``.
* :func:`export_counterfactual`: pairs of images from one latent code, moved to the
  negative and to the positive side of ONE attribute's boundary while every other
  attribute's signed distance is kept.
* :func:`save_sampler` / :func:`load_sampler`: a fitted
  :class:`~fairbits.generative.sampler.FairLatentSampler` as ``.npz`` arrays (boundary
  normals and offsets, edit directions, mixture parameters) with a JSON card beside it;
  loading never unpickles.

Both exports write a folder that ``fairbits audit`` reads with::

    dataset: {reader: csv, path: OUT/labels.csv, path_column: path}

``labels.csv`` columns: ``image_id``, ``path`` (relative to the CSV), per scorer ``s`` a
0/1 column ``s`` (nullable: empty where the image could not be scored), ``s_score`` and
the scorer's details (``s_region``…), and ``subgroup`` like ``light_skin=1|curly=0``
(empty when a label is missing). The balanced set adds ``sampled_subgroup`` (the
subgroup the code was drawn for; ``subgroup`` is what the scorers measured). The
counterfactual set is the input of a *paired* analysis: group column = the edited
attribute (its intended value, 0 or 1, equal to ``side``), pairs matched by
``pair_id``; it adds ``side``, ``distance`` (the signed distance to the attribute's
boundary, latent units) and ``<attribute>_measured`` (the scorer's label, when that
attribute's scorer is given). ``latents.npy`` holds the codes ``(rows, w)`` in row order.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.mixture import GaussianMixture

from fairbits.errors import FairbitsError, SpecError
from fairbits.fileio import atomic_write, atomic_write_text, read_npz
from fairbits.generative.boundaries import Boundary, edit_many, stack_normals
from fairbits.generative.metrics import subgroups
from fairbits.generative.sampler import FairLatentSampler
from fairbits.generative.scorers import check_scorers
from fairbits.generative.study import (check_generator, int_seed, prior_codes, render_and_label,
                                       subgroup_name)

FORMAT = "fairbits-fairgen-sampler/1"
DEFAULT_CF_SIGMAS = 1.0     # counterfactual distance, in units of the attribute's signed-distance spread
_PARAMS = ("n_components", "covariance_type", "select_by_bic", "edit_distance", "keep_spread", "truncate", "ratio",
           "C", "reg_covar", "max_iter", "max_rounds", "seed")


# --------------------------------------------------------------------------- sampler files

def _npz_path(path) -> Path:
    p = Path(path)
    if p.suffix != ".npz":
        raise SpecError(f"a sampler file must end in .npz, got {str(p)!r}")
    return p


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def save_sampler(sampler: FairLatentSampler, path, meta: dict | None = None) -> Path:
    """Write a fitted sampler to ``path`` (``.npz``) and a JSON card beside it (same stem, ``.json``).

    Arrays: ``normals`` ``(k, d)``, ``offsets`` ``(k,)``, boundary diagnostics,
    ``directions`` ``(k, d)``, ``distance_scale`` ``(k,)`` and per subgroup ``g`` the
    mixture's ``g<g>_weights``, ``_means``, ``_covariances``, ``_precisions_cholesky``;
    settings, attribute names, scorer specs and ``meta`` (JSON-serialisable, e.g. the
    generator) go in a JSON string. Returns ``path``.
    """
    path = _npz_path(path)
    if not isinstance(sampler, FairLatentSampler) or not hasattr(sampler, "k_"):
        raise SpecError("only a fitted FairLatentSampler can be saved")
    k = sampler.k_
    names = list(getattr(sampler, "attribute_names_", [f"attr{i}" for i in range(k)]))
    normals, offsets = stack_normals(sampler.boundaries_)
    arrays = {"normals": normals, "offsets": offsets, "directions": sampler.directions_,
              "distance_scale": sampler.distance_scale_,
              "val_accuracy": np.array([b.val_accuracy for b in sampler.boundaries_], dtype=np.float64),
              "n_train": np.array([b.n_train for b in sampler.boundaries_], dtype=np.int64),
              "n_val": np.array([b.n_val for b in sampler.boundaries_], dtype=np.int64),
              "threshold": np.array([np.nan if b.threshold is None else b.threshold for b in sampler.boundaries_])}
    for g, gm in enumerate(sampler.mixtures_):
        for attr in ("weights", "means", "covariances", "precisions_cholesky", "precisions"):
            arrays[f"g{g}_{attr}"] = np.asarray(getattr(gm, f"{attr}_"), dtype=np.float64)
    card = {"format": FORMAT, "k": k, "d": int(sampler.d_), "attributes": names,
            "scorers": list(getattr(sampler, "scorer_specs_", [None] * k)),
            "params": {p: _plain(getattr(sampler, p)) for p in _PARAMS},
            "n_components": [int(c) for c in sampler.n_components_],
            "val_accuracy": dict(zip(names, arrays["val_accuracy"].round(4).tolist())),
            "meta": meta or dict(getattr(sampler, "meta_", {}))}
    arrays["format"], arrays["card"] = np.array(FORMAT), np.array(json.dumps(card, sort_keys=True))

    def write(tmp: str) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        Path(tmp).write_bytes(buf.getvalue())

    atomic_write(path, write)
    atomic_write_text(path.with_suffix(".json"), json.dumps(card, indent=1, sort_keys=True) + "\n")
    return path


def load_sampler(path) -> FairLatentSampler:
    """Read a sampler written by :func:`save_sampler` (``allow_pickle=False``).

    The result samples exactly as the saved one did (same seed, same codes) and carries
    ``attribute_names_``, ``scorer_specs_`` (strings or None) and ``meta_`` (a dict).
    Nothing in the file is imported or called: ``meta_["generator"]`` is only a
    string, and the CLI uses it only when it is the built-in key
    (:func:`fairbits.cli.fairgen.stored_generator`).

    Raises:
        FairbitsError: missing file, not a fairbits sampler file, or a malformed one.
    """
    a = read_npz(path, FORMAT, "sampler file", "make one with `fairbits fairgen fit`")
    try:
        return _sampler_from_arrays(a)
    except FairbitsError as e:
        raise FairbitsError(f"{path}: {e}") from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise FairbitsError(f"{path} is not a valid sampler file ({type(e).__name__}: {e}); "
                            "make one with `fairbits fairgen fit`") from None


def _card(a: dict) -> dict:
    """The JSON card of a sampler file, with the types :func:`load_sampler` relies on checked."""
    card = json.loads(str(a["card"]))
    if not isinstance(card, dict) or not isinstance(card.get("params"), dict):
        raise FairbitsError("its card is not a JSON object with `params`")
    unknown = sorted(set(card["params"]) - set(_PARAMS))
    if unknown:
        raise FairbitsError(f"unknown sampler parameter(s) {unknown}")
    if not isinstance(card.get("meta", {}), dict):
        raise FairbitsError("its `meta` is not a JSON object")
    names, specs = card.get("attributes"), card.get("scorers")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise FairbitsError("its `attributes` are not a list of names")
    if not isinstance(specs, list) or not all(x is None or isinstance(x, str) for x in specs):
        raise FairbitsError("its `scorers` are not a list of scorer specs")
    return card


def _sampler_from_arrays(a: dict) -> FairLatentSampler:
    card = _card(a)
    params = card["params"]
    s = FairLatentSampler(**params)
    k, d = int(card["k"]), int(card["d"])
    if a["normals"].shape != (k, d) or a["directions"].shape != (k, d) \
            or len(card["attributes"]) != k or len(card["scorers"]) != k:
        raise FairbitsError("inconsistent array shapes")
    s.boundaries_ = [Boundary(normal=a["normals"][i], offset=float(a["offsets"][i]),
                              val_accuracy=float(a["val_accuracy"][i]), n_train=int(a["n_train"][i]),
                              n_val=int(a["n_val"][i]),
                              threshold=None if np.isnan(a["threshold"][i]) else float(a["threshold"][i]))
                     for i in range(k)]
    s.directions_, s.distance_scale_ = a["directions"], a["distance_scale"]
    s.subgroups_ = subgroups(k)
    s.mixtures_, s.n_components_ = [], []
    for g in range(2 ** k):
        gm = GaussianMixture(n_components=int(card["n_components"][g]), covariance_type=s.covariance_type,
                             reg_covar=s.reg_covar, max_iter=s.max_iter)
        for attr in ("weights", "means", "covariances", "precisions_cholesky", "precisions"):
            setattr(gm, f"{attr}_", a[f"g{g}_{attr}"])
        gm.converged_, gm.n_iter_, gm.lower_bound_, gm.n_features_in_ = True, 0, float("nan"), d
        s.mixtures_.append(gm)
        s.n_components_.append(gm.n_components)
    s.k_, s.d_ = k, d
    s.attribute_names_, s.scorer_specs_ = list(card["attributes"]), list(card["scorers"])
    s.meta_ = dict(card.get("meta") or {})
    return s


# --------------------------------------------------------------------------- writing images

def png_writer(folder: Path, ids: Sequence[str]) -> Callable[[int, torch.Tensor], None]:
    """``on_images`` callback writing image ``start + j`` as ``folder/<ids[start + j]>.png``."""
    from fairbits.data.images import to_uint8

    def write(start: int, images: torch.Tensor) -> None:
        for j, arr in enumerate(to_uint8(images)):
            def save(tmp: str, arr=arr) -> None:
                Image.fromarray(arr).save(tmp, format="PNG")
            atomic_write(folder / f"{ids[start + j]}.png", save)

    return write


def _subgroup_column(labels: pd.DataFrame, names: Sequence[str]) -> list[str]:
    """``a=1|b=0`` per row of 0/1 label columns; ``""`` where a label is missing."""
    rows = labels[list(names)].to_numpy(dtype=object)
    return ["" if any(pd.isna(v) for v in r) else subgroup_name(r, names) for r in rows]


def save_latents(path, codes: np.ndarray) -> Path:
    """Write codes ``(n, w)`` as float32 ``.npy`` (atomically)."""
    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(codes, dtype=np.float32))

    return atomic_write(path, save)


def _write_table(out_dir: Path, table: pd.DataFrame, codes: np.ndarray) -> None:
    atomic_write(out_dir / "labels.csv", lambda tmp: table.to_csv(tmp, index=False))
    save_latents(out_dir / "latents.npy", codes)


def export_balanced(generator, sampler: FairLatentSampler, n: int, out_dir, scorers: Sequence[Callable],
                    seed: int = 0, *, target=None, batch_size: int = 64) -> pd.DataFrame:
    """Write ``n`` FairGen images with uniform (or ``target``) subgroup proportions.

    Codes come from ``sampler.sample(n, target, seed)`` (exact counts per subgroup by
    largest-remainder rounding); every image is scored by ``scorers``, whose names must
    be the sampler's attributes in order (a custom attribute list is allowed when the
    sampler has no names). Files: ``out_dir/images/<image_id>.png``, ``labels.csv``
    (module docstring), ``latents.npy``. Returns the label table.
    """
    check_generator(generator)
    names = check_scorers(scorers)
    expected = getattr(sampler, "attribute_names_", None)
    if expected is not None and list(expected) != names:
        raise SpecError(f"scorers {names} do not match the sampler's attributes {list(expected)}")
    if getattr(sampler, "k_", None) != len(names):
        raise SpecError(f"the sampler has {getattr(sampler, 'k_', '?')} attributes but {len(names)} scorers were given")
    out_dir = Path(out_dir)
    codes, drawn = sampler.sample(int(n), target, seed=int_seed(seed, "export-balanced"), return_subgroups=True)
    ids = [f"fairgen_{i:06d}" for i in range(len(codes))]
    labels = render_and_label(generator, codes, scorers, batch_size=batch_size,
                              on_images=png_writer(out_dir / "images", ids))
    groups = subgroups(len(names))
    head = pd.DataFrame({"image_id": ids, "path": [f"images/{i}.png" for i in ids]})
    for a in names:
        head[a] = labels[a]
    head["subgroup"] = _subgroup_column(labels, names)
    head["sampled_subgroup"] = [subgroup_name(groups[g], names) for g in drawn]
    table = pd.concat([head, labels.drop(columns=names)], axis=1)
    _write_table(out_dir, table, codes)
    return table


def _boundaries_of(obj, names):
    """``(boundaries, names, spreads or None)`` from a fitted sampler or a sequence of Boundary."""
    if isinstance(obj, FairLatentSampler):
        if not hasattr(obj, "k_"):
            raise SpecError("the sampler is not fitted")
        names = list(names or getattr(obj, "attribute_names_", None) or [f"attr{i}" for i in range(obj.k_)])
        return list(obj.boundaries_), names, np.asarray(obj.distance_scale_)
    if isinstance(obj, Boundary):
        obj = [obj]
    if not obj or not all(isinstance(b, Boundary) for b in obj):
        raise SpecError("expected a fitted FairLatentSampler or a sequence of Boundary objects")
    return list(obj), list(names or [f"attr{i}" for i in range(len(obj))]), None


def export_counterfactual(generator, sampler_or_boundaries, attribute: int | str, n_pairs: int, out_dir,
                          distance: float | None = None, seed: int = 0, *, scorers: Sequence[Callable] = (),
                          names: Sequence[str] | None = None, batch_size: int = 64) -> pd.DataFrame:
    """Write ``n_pairs`` counterfactual pairs that differ in ONE attribute.

    Each pair starts from one prior code ``w`` (``mapping(sample_latents)``). With
    :func:`~fairbits.generative.boundaries.edit_many` on all fitted boundaries, side 0
    sets the signed distance to ``attribute``'s boundary to ``-distance`` and side 1 to
    ``+distance`` while every other boundary's distance stays what it was in ``w``: the
    move lies in the span of the normals and is orthogonal to the other normals, so
    other attributes (as the boundaries see them) and everything outside that span are
    unchanged.

    Args:
        sampler_or_boundaries: a fitted :class:`FairLatentSampler` or its boundaries.
        attribute: index or name of the attribute to flip.
        distance: latent units; default :data:`DEFAULT_CF_SIGMAS` × the spread (std) of
            that attribute's signed distances over the sampler's fitted codes; required
            with bare boundaries.
        scorers: optional; when given, every image is scored (and ``<attribute>_measured``
            written when one of them is the attribute).
        names: attribute names (default the sampler's, else ``attr0``…).
    Returns:
        The label table (module docstring): rows ``2 · n_pairs``, pair ``p`` at rows
        ``2p`` (side 0) and ``2p + 1`` (side 1).
    """
    check_generator(generator)
    boundaries, names, spread = _boundaries_of(sampler_or_boundaries, names)
    if isinstance(attribute, str):
        if attribute not in names:
            raise SpecError(f"unknown attribute {attribute!r}; the sampler's attributes are {names}")
        i = names.index(attribute)
    elif isinstance(attribute, (int, np.integer)) and 0 <= attribute < len(names):
        i = int(attribute)
    else:
        raise SpecError(f"attribute must be a name in {names} or an index below {len(names)}, got {attribute!r}")
    if distance is None:
        if spread is None:
            raise SpecError("distance is required when bare boundaries are given")
        distance = DEFAULT_CF_SIGMAS * float(spread[i])
    if not (np.isfinite(distance) and distance > 0):
        raise SpecError(f"distance must be a positive number of latent units, got {distance!r}")
    if not isinstance(n_pairs, (int, np.integer)) or n_pairs < 1:
        raise SpecError(f"n_pairs must be a positive integer, got {n_pairs!r}")
    scorer_names = check_scorers(scorers) if scorers else []
    normals, offsets = stack_normals(boundaries)
    base = prior_codes(generator, int(n_pairs), int_seed(seed, "export-counterfactual"))
    targets = base @ normals.T + offsets
    codes = np.empty((2 * len(base), base.shape[1]))
    for side, sign in ((0, -1.0), (1, 1.0)):
        t = targets.copy()
        t[:, i] = sign * distance
        codes[side::2] = edit_many(base, boundaries, t)
    attr = names[i]
    ids = [f"pair{p:05d}_{s}" for p in range(len(base)) for s in (0, 1)]
    table = pd.DataFrame({"image_id": ids, "path": [f"images/{x}.png" for x in ids],
                          "pair_id": np.repeat(np.arange(len(base)), 2), "side": np.tile([0, 1], len(base))})
    table[attr] = table["side"]
    table["distance"] = codes @ normals[i] + offsets[i]
    writer = png_writer(Path(out_dir) / "images", ids)
    if scorers:
        labels = render_and_label(generator, codes, scorers, batch_size=batch_size, on_images=writer)
        if attr in scorer_names:
            table[f"{attr}_measured"] = labels[attr]
        table = pd.concat([table, labels.drop(columns=scorer_names)], axis=1)
    else:
        for start in range(0, len(codes), 256):
            writer(start, generator.synthesize(codes[start:start + 256].astype(np.float32), batch_size=batch_size))
    _write_table(Path(out_dir), table, codes)
    return table


__all__ = ["export_balanced", "export_counterfactual", "load_sampler", "png_writer", "save_latents", "save_sampler"]
