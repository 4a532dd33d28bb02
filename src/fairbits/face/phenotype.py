"""Phenotype classifiers trained on original face images.

In a codec audit a classifier trained on the *originals* for one label column (skin
type, eyelid, nose, lips, hair type, hair colour…) is applied to the originals and to the
codec reconstructions; a prediction that changes, or a loss of the true label that grows,
says the codec removed what the label is about.

A :class:`PhenotypeModel` is a standardised multinomial logistic regression (scikit-learn's
``StandardScaler`` + ``LogisticRegression``) on image features, stored as plain arrays::

    model = PhenotypeModel.fit(images, labels)   # features="sface+sface-inner+colour"
    p = model.predict_proba(images)      # images: float (N, 3, H, W) in [0, 1] -> (N, K)
    model.loss(recons, labels)           # -log p(true label), nats; NaN for unknown labels
    model.save("skin.npz"); PhenotypeModel.load("skin.npz")

Feature sets are components (:data:`FEATURE_COMPONENTS`) joined with ``+``; the default
:data:`DEFAULT_FEATURES` is ``sface+sface-inner+colour``:

``sface``
    the 128-d SFace embedding of the central 80 % square (:mod:`fairbits.measures.features`):
    the whole head, hair included.
``sface-inner``
    the SFace embedding of the central 40 % square (:data:`INNER_CROP`): eyes, nose and
    mouth enlarged to the network's 112×112 input. It is what makes eyelid, nose and lip
    shape learnable (on phantoms: nose 0.6 → 0.9, lips 0.8 → 0.95 held-out accuracy).
``colour``
    CIELAB colour statistics of the central face area (:func:`colour_features`): the mean
    L*, a*, b* of each cell of a 4×4 grid over the central crop, the L*a*b* spread over
    the crop and the mean L* gradient magnitude (fine texture) per cell; 67 values.
``pixels``
    the 16×16 RGB thumbnail (768-d), a weak baseline.
``inception``
    Inception-v3 pool3 (2048-d), only where its weights are on disk.

Features depend on the image size only through resampling (every component pools or
resizes), so the model accepts any ``H × W``; it is meant for images of the size it was
trained on (recorded in the card).

Files (:meth:`PhenotypeModel.save`): ``MODEL.npz`` holds only numeric and fixed-width
string arrays (it loads with ``allow_pickle=False``), and ``MODEL.json`` beside it is the
human-readable card (target, classes, features, held-out accuracy, training data, date,
fairbits version). Nothing is ever unpickled.

:func:`train_phenotype` builds the manifest of a :class:`~fairbits.spec.DatasetSpec`,
loads the images (unreadable ones are skipped and counted), splits them stratified and
seeded, fits on the training part and reports held-out accuracy and the confusion matrix.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from fairbits.errors import DatasetError, FairbitsError, ImageError, SpecError
from fairbits.face.phenotype_features import (DEFAULT_FEATURES, FEATURE_COMPONENTS, INNER_CROP,  # noqa: F401
                                              ColourExtractor, colour_features, extract_features,
                                              features_of_arrays, parse_features)
from fairbits.fileio import atomic_write, atomic_write_text, read_npz

FORMAT = "fairbits-phenotype/1"
DEFAULT_C = 1.0


# --------------------------------------------------------------------------- labels

def label_str(value) -> str | None:
    """A label as the string the classifier uses: None/NaN → None, ``3.0`` → ``"3"``."""
    if value is None:
        return None
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        if float(value).is_integer():
            return str(int(value))
    if isinstance(value, (np.integer,)):
        return str(int(value))
    s = str(value)
    return s if s.strip() else None


def _class_key(c: str):
    """Numbers in numeric order first, then strings alphabetically."""
    try:
        return (0, float(c), c)
    except ValueError:
        return (1, 0.0, c)


def sorted_classes(labels) -> list[str]:
    return sorted({c for c in labels if c is not None}, key=_class_key)


# --------------------------------------------------------------------------- model

def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@dataclass
class PhenotypeModel:
    """A multinomial logistic regression on standardised image features.

    ``predict_proba(x) = softmax(((f(x) - mean) / scale) @ coef.T + intercept)`` with ``f``
    the feature set ``features``. ``coef`` has one row per class (for two classes the first
    row is zero, which gives scikit-learn's binary probabilities exactly).

    Every method that takes ``images`` also accepts a precomputed 2-D feature array
    (``extract_features(images, model.features)``), so one extraction can serve several
    models of the same feature set.
    """

    target: str
    classes: list[str]
    features: str
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    card: dict = field(default_factory=dict)
    held_out_ids: list[str] = field(default_factory=list)

    # ---- construction
    @classmethod
    def fit(cls, images, labels: Sequence, *, features: str = DEFAULT_FEATURES, target: str = "label",
            seed: int = 0, C: float = DEFAULT_C, max_iter: int = 2000) -> "PhenotypeModel":
        """Fit on ``images`` (``(N, 3, H, W)`` in [0, 1]) or their feature array, and ``labels``.

        Labels are compared as strings (:func:`label_str`); classes are sorted (numbers
        numerically). Raises :class:`~fairbits.errors.SpecError` for missing labels, fewer
        than two classes or a class with fewer than two images.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        features = "+".join(parse_features(features))
        if not C > 0:
            raise SpecError(f"C must be > 0, got {C}")
        X = cls._as_features(images, features)
        y = [label_str(v) for v in labels]
        if len(y) != len(X):
            raise SpecError(f"{len(X)} images but {len(y)} labels")
        if any(v is None for v in y):
            raise SpecError(f"{sum(v is None for v in y)} image(s) have no {target!r} label; drop them first")
        classes = sorted_classes(y)
        check_classes(pd.Series(y).value_counts().to_dict(), target)
        scaler = StandardScaler().fit(X)
        Z = scaler.transform(X)
        idx = np.array([classes.index(v) for v in y])
        clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed).fit(Z, idx)
        coef, intercept = clf.coef_.astype(np.float64), clf.intercept_.astype(np.float64)
        if len(classes) == 2:  # sklearn's binary form: p(class 1) = sigmoid(w·z + b)
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([np.zeros(1), intercept])
        model = cls(target=str(target), classes=classes, features=features,
                    mean=scaler.mean_.astype(np.float64), scale=scaler.scale_.astype(np.float64),
                    coef=coef, intercept=intercept)
        model.card = {"format": FORMAT, "target": model.target, "classes": classes, "features": features,
                      "feature_dim": int(X.shape[1]), "C": float(C), "n_train": int(len(X)),
                      "train_class_counts": {c: int(n) for c, n in zip(classes, np.bincount(idx))}}
        return model

    @staticmethod
    def _as_features(images, features: str) -> np.ndarray:
        if isinstance(images, torch.Tensor):
            return extract_features(images, features).astype(np.float64)
        X = np.asarray(images, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"expected images (N, 3, H, W) as a torch tensor or a (N, D) feature array, "
                             f"got an array of shape {X.shape}")
        return X

    # ---- inference
    def features_of(self, images) -> np.ndarray:
        """The feature array of ``images`` (a feature array is checked and passed through)."""
        X = self._as_features(images, self.features)
        if X.shape[1] != len(self.mean):
            raise ValueError(f"features have {X.shape[1]} columns; the model ({self.features}) "
                             f"expects {len(self.mean)}")
        return X

    def decision_function(self, images) -> np.ndarray:
        """Class logits ``(N, K)``."""
        Z = (self.features_of(images) - self.mean) / self.scale
        return Z @ self.coef.T + self.intercept

    def predict_log_proba(self, images) -> np.ndarray:
        return _log_softmax(self.decision_function(images))

    def predict_proba(self, images) -> np.ndarray:
        """Class probabilities ``(N, K)`` in the order of :attr:`classes`."""
        return np.exp(self.predict_log_proba(images))

    def predict(self, images) -> np.ndarray:
        """Index (into :attr:`classes`) of the most probable class, ``(N,)`` int."""
        return self.decision_function(images).argmax(axis=1)

    def predict_labels(self, images) -> list[str]:
        return [self.classes[i] for i in self.predict(images)]

    def class_index(self, labels: Sequence) -> np.ndarray:
        """Index of each label in :attr:`classes`, ``-1`` for a missing or unknown label."""
        lookup = {c: i for i, c in enumerate(self.classes)}
        return np.array([lookup.get(label_str(v), -1) for v in labels], dtype=np.int64)

    def loss(self, images, labels: Sequence) -> np.ndarray:
        """Cross-entropy of the true label, ``-log p(label)`` in nats, ``(N,)``.

        NaN where the label is missing or not one of :attr:`classes`.
        """
        logp = self.predict_log_proba(images)
        y = self.class_index(labels)
        if len(y) != len(logp):
            raise ValueError(f"{len(logp)} images but {len(y)} labels")
        out = np.full(len(y), np.nan)
        ok = y >= 0
        out[ok] = -logp[np.flatnonzero(ok), y[ok]]
        return out

    def score(self, images, labels: Sequence) -> float:
        """Accuracy on ``labels`` (unknown labels count as wrong)."""
        y = self.class_index(labels)
        return float(np.mean(self.predict(images) == y)) if len(y) else float("nan")

    # ---- files
    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.npz``, arrays only) and the JSON card beside it; returns ``path``."""
        path = _npz_path(path)
        card = {**self.card, "format": FORMAT, "target": self.target, "classes": list(self.classes),
                "features": self.features, "feature_dim": int(len(self.mean))}
        arrays = {
            "format": np.array(FORMAT), "target": np.array(self.target),
            "features": np.array(self.features), "classes": np.array(self.classes, dtype=str),
            "mean": self.mean, "scale": self.scale, "coef": self.coef, "intercept": self.intercept,
            "held_out_ids": np.array(self.held_out_ids, dtype=str),
            "card": np.array(json.dumps(card, sort_keys=True, default=str)),
        }

        def write(tmp: str) -> None:
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)   # to a buffer: savez would append .npz to a name
            Path(tmp).write_bytes(buf.getvalue())

        atomic_write(path, write)
        atomic_write_text(card_path(path), json.dumps(card, indent=1, sort_keys=True, default=str) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PhenotypeModel":
        """Read a model written by :meth:`save` (never unpickles).

        Raises:
            FairbitsError: missing file, or not a fairbits phenotype model.
        """
        p = Path(path)
        a = read_npz(p, FORMAT, "phenotype model", "make one with `fairbits train-phenotype`")
        model = cls(target=str(a["target"]), classes=[str(c) for c in a["classes"]],
                    features=str(a["features"]), mean=a["mean"].astype(np.float64),
                    scale=a["scale"].astype(np.float64), coef=a["coef"].astype(np.float64),
                    intercept=a["intercept"].astype(np.float64),
                    card=json.loads(str(a["card"])), held_out_ids=[str(i) for i in a["held_out_ids"]])
        parse_features(model.features)
        k, d = len(model.classes), len(model.mean)
        if model.coef.shape != (k, d) or model.intercept.shape != (k,) or model.scale.shape != (d,):
            raise FairbitsError(f"{p}: inconsistent array shapes")
        return model


def _npz_path(path: str | Path) -> Path:
    p = Path(path)
    if p.suffix != ".npz":
        raise SpecError(f"a phenotype model file must end in .npz, got {str(p)!r}")
    return p


def card_path(path: str | Path) -> Path:
    """The JSON card beside a model file: ``skin.npz`` → ``skin.json``."""
    return Path(path).with_suffix(".json")


def check_classes(counts: dict[str, int], target: str) -> None:
    """At least two classes and at least two images in each.

    Raises:
        SpecError: naming the classes and their counts.
    """
    if len(counts) < 2:
        raise SpecError(f"column {target!r} needs at least 2 classes to train a classifier; "
                        f"found {len(counts)}: {dict(counts)}")
    small = {c: int(n) for c, n in counts.items() if n < 2}
    if small:
        shown = dict(list(small.items())[:10])
        more = f" and {len(small) - 10} more" if len(small) > 10 else ""
        hint = " (is it a continuous column?)" if len(small) > 10 else ""
        raise SpecError(f"column {target!r}: class(es) with fewer than 2 images {shown}{more}{hint}; "
                        "add images, or drop or merge those classes")


# --------------------------------------------------------------------------- training

def stratified_split(labels: Sequence[str], test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split: indices ``(train, test)``, each sorted.

    Each class puts ``round(test_fraction · n)`` of its ``n`` images in the test part, at
    least one and at most ``n - 1`` when ``test_fraction > 0`` (so every class is in both).
    """
    if not 0.0 <= test_fraction < 1.0:
        raise SpecError(f"test_fraction must be in [0, 1), got {test_fraction}")
    y = np.asarray(labels, dtype=object)
    rng = np.random.default_rng(seed)
    test: list[int] = []
    if test_fraction > 0:
        for c in sorted_classes(y):
            idx = np.flatnonzero(y == c)
            k = min(max(1, round(test_fraction * len(idx))), len(idx) - 1)
            test.extend(rng.permutation(idx)[:k].tolist())
    test_idx = np.array(sorted(test), dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    return train_idx, test_idx


def _manifest(dataset, target: str, seed: int) -> tuple[pd.DataFrame, dict, int | None, int]:
    """Manifest, a description of the data, the image size and ``max_pixels``."""
    from fairbits.data.manifest import build_manifest
    from fairbits.spec import DatasetSpec

    if isinstance(dataset, pd.DataFrame):
        return dataset, {"reader": dataset.attrs.get("reader", "manifest")}, None, 40_000_000
    if not isinstance(dataset, DatasetSpec):
        raise SpecError(f"dataset must be a DatasetSpec or a manifest DataFrame, not {type(dataset).__name__}")
    if not Path(dataset.path).exists():
        raise DatasetError(f"dataset path not found: {dataset.path}")
    groups = [target] if dataset.limit_per_group is not None and not dataset.balance_by else None
    try:
        df = build_manifest(dataset.reader, dataset.path, options=dataset.reader_options, split=dataset.split,
                            limit_per_group=dataset.limit_per_group, balance_by=dataset.balance_by,
                            group_columns=groups, seed=seed)
    except DatasetError as e:
        if groups and "unknown column" in str(e):
            raise SpecError(f"target column {target!r} not in the dataset: {e}") from None
        raise
    desc = {"reader": dataset.reader, "path": str(dataset.path), "split": dataset.split,
            "size": dataset.size, "limit_per_group": dataset.limit_per_group,
            "balance_by": dataset.balance_by, "options": dataset.reader_options}
    return df, desc, dataset.size, dataset.max_pixels


def _load_images(paths: list[str], size: int | None, max_pixels: int, progress: bool):
    """``(arrays, ok_rows, skipped)``: decoded images, their rows, and ``{path: reason}``."""
    from concurrent.futures import ThreadPoolExecutor

    from fairbits.data.images import fit_size, load_rgb

    def read(p: str):
        try:
            return fit_size(load_rgb(p, max_pixels), size)
        except ImageError as e:
            return str(e)

    with ThreadPoolExecutor(max_workers=4) as pool:
        it = pool.map(read, paths)
        if progress:
            from rich.progress import track
            it = track(it, total=len(paths), description="loading images")
        results = list(it)
    arrays, rows, skipped = [], [], {}
    for i, r in enumerate(results):
        if isinstance(r, str):
            skipped[paths[i]] = r
        else:
            arrays.append(r)
            rows.append(i)
    return arrays, rows, skipped


def train_phenotype(dataset, target: str, out: str | Path | None, *, features: str = DEFAULT_FEATURES,
                    test_fraction: float = 0.2, seed: int = 0, C: float = DEFAULT_C,
                    progress: bool = True) -> tuple[PhenotypeModel, dict[str, Any]]:
    """Train a phenotype classifier for column ``target`` of a dataset and save it to ``out``.

    Args:
        dataset: a :class:`~fairbits.spec.DatasetSpec` (read with ``build_manifest``, images
            fitted to its ``size``) or a manifest DataFrame (``path`` plus label columns).
        target: the label column.
        out: model file (``.npz``; the card goes to ``.json`` beside it); None saves nothing.
        features: feature set (:func:`parse_features`).
        test_fraction: stratified held-out fraction (0: train on everything, no accuracy).
        seed: seed of the manifest subsampling and of the split.
        C: inverse L2 regularisation strength of the logistic regression.
        progress: show progress bars.

    Returns:
        ``(model, report)``; the report has ``held_out_accuracy``, ``balanced_accuracy``,
        ``held_out_loss`` (mean nats), ``class_counts`` (``{class: {train, test}}``),
        ``confusion`` (rows true, columns predicted, in ``classes`` order), ``n_images``,
        ``n_skipped`` (unreadable images) and ``skipped`` (path → reason, at most 20),
        ``n_unlabelled`` and ``path``.

    Raises:
        SpecError: unknown target column (the message lists the columns), fewer than two
            classes, a class with fewer than two images, bad ``features``/``test_fraction``,
            ``out`` not ending in ``.npz``.
        DatasetError: the dataset cannot be read, or no image can be loaded.
    """
    features = "+".join(parse_features(features))
    if out is not None:
        out = _npz_path(out)
    if not 0.0 <= test_fraction < 1.0:
        raise SpecError(f"test_fraction must be in [0, 1), got {test_fraction}")
    manifest, desc, size, max_pixels = _manifest(dataset, target, seed)
    if target not in manifest.columns:
        cols = [c for c in manifest.columns if c not in ("image_id", "path", "checksum")]
        raise SpecError(f"target column {target!r} not in the dataset; its columns are {cols}")
    if "path" not in manifest.columns or manifest.empty:
        raise DatasetError("the manifest needs rows and a `path` column")

    labels = [label_str(v) for v in manifest[target]]
    keep = [i for i, v in enumerate(labels) if v is not None]
    n_unlabelled = len(labels) - len(keep)
    manifest = manifest.iloc[keep].reset_index(drop=True)
    labels = [labels[i] for i in keep]
    check_classes(pd.Series(labels, dtype=object).value_counts().to_dict(), target)

    arrays, rows, skipped = _load_images(manifest["path"].astype(str).tolist(), size, max_pixels, progress)
    if skipped:
        warnings.warn(f"{len(skipped)} image(s) could not be loaded and were skipped", stacklevel=2)
    if not rows:
        raise DatasetError(f"none of the {len(manifest)} images could be loaded")
    labels = [labels[i] for i in rows]
    ids = (manifest["image_id"] if "image_id" in manifest.columns else manifest["path"]).astype(str)
    ids = [ids.iloc[i] for i in rows]
    classes = sorted_classes(labels)
    check_classes(pd.Series(labels, dtype=object).value_counts().to_dict(), target)

    X = features_of_arrays(arrays, features, progress=progress).astype(np.float64)
    del arrays
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    y = np.array(labels, dtype=object)
    model = PhenotypeModel.fit(X[train_idx], y[train_idx], features=features, target=target, seed=seed, C=C)
    if model.classes != classes:  # every class has a training image by construction
        raise AssertionError("training split lost a class")

    report: dict[str, Any] = {"target": target, "features": features, "classes": classes,
                              "n_images": len(rows), "n_train": int(len(train_idx)),
                              "n_test": int(len(test_idx)), "n_skipped": len(skipped),
                              "skipped": dict(list(skipped.items())[:20]), "n_unlabelled": n_unlabelled,
                              "held_out_accuracy": None, "balanced_accuracy": None,
                              "held_out_loss": None, "confusion": None}
    counts = {c: {"train": 0, "test": 0} for c in classes}
    for i in train_idx:
        counts[labels[i]]["train"] += 1
    for i in test_idx:
        counts[labels[i]]["test"] += 1
    report["class_counts"] = counts
    if len(test_idx):
        yt = model.class_index(y[test_idx])
        pred = model.predict(X[test_idx])
        conf = np.zeros((len(classes), len(classes)), np.int64)
        np.add.at(conf, (yt, pred), 1)
        report["held_out_accuracy"] = float(np.mean(pred == yt))
        report["balanced_accuracy"] = float(np.mean(np.diag(conf) / conf.sum(axis=1)))
        report["held_out_loss"] = float(np.mean(model.loss(X[test_idx], y[test_idx])))
        report["confusion"] = conf.tolist()

    from fairbits import __version__

    model.held_out_ids = [ids[i] for i in test_idx]
    model.card.update({
        "held_out_accuracy": report["held_out_accuracy"], "balanced_accuracy": report["balanced_accuracy"],
        "held_out_loss": report["held_out_loss"], "confusion": report["confusion"],
        "class_counts": counts, "n_images": len(rows), "n_test": int(len(test_idx)),
        "n_skipped": len(skipped), "n_unlabelled": n_unlabelled, "test_fraction": float(test_fraction),
        "seed": int(seed), "data": desc, "image_size": size,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "fairbits_version": __version__,
    })
    report["path"] = None
    if out is not None:
        report["path"] = str(model.save(out))
    return model, report


__all__ = ["DEFAULT_FEATURES", "FEATURE_COMPONENTS", "FORMAT", "PhenotypeModel", "card_path",
           "check_classes", "colour_features", "extract_features", "features_of_arrays", "label_str",
           "parse_features", "stratified_split", "train_phenotype"]
