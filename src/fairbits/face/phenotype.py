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

Training (:func:`train_phenotype`, identity-disjoint splits, merged classes) lives in
:mod:`fairbits.face.phenotype_training`; its names are importable from here too. A model
keeps the class merges it was trained with (:attr:`PhenotypeModel.merges`).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from fairbits.errors import FairbitsError, SpecError
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
    merges: dict = field(default_factory=dict)   # {"*" or group: [[class, class, ...], ...]}

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
        """Index of each label in :attr:`classes`, ``-1`` for a missing or unknown label.

        A label merged before training (a ``"*"`` merge) counts as its merged class.
        """
        lookup = {c: i for i, c in enumerate(self.classes)}
        lookup.update({c: lookup[m] for c, m in merge_map(self.merges.get(MERGE_ALL, [])).items() if m in lookup})
        return np.array([lookup.get(label_str(v), -1) for v in labels], dtype=np.int64)

    def group_label_map(self, group) -> dict[str, str]:
        """``{class: merged class}`` for scoring images of ``group`` (its own merges; empty if none)."""
        return merge_map(self.merges.get(label_str(group) or "", []))

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
            "merges": np.array(json.dumps(self.merges, sort_keys=True)),
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
                    card=json.loads(str(a["card"])), held_out_ids=[str(i) for i in a["held_out_ids"]],
                    merges=_checked_merges(json.loads(str(a["merges"])) if "merges" in a else {}, p))
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


# --------------------------------------------------------------------------- merged classes

MERGE_ALL = "*"


def merge_name(classes: Sequence[str]) -> str:
    """The merged class of ``classes``: ``["5", "4"]`` → ``"4+5"``."""
    return "+".join(sorted({str(c) for c in classes}, key=_class_key))


def merge_map(merges: Sequence[Sequence[str]]) -> dict[str, str]:
    """``[["4", "5"]]`` → ``{"4": "4+5", "5": "4+5"}``."""
    return {str(c): merge_name(m) for m in merges for c in m}


def _checked_merges(merges, where) -> dict[str, list[list[str]]]:
    """Validate a ``{group: [[class, ...], ...]}`` mapping (from specs or a model file)."""
    if not isinstance(merges, dict):
        raise FairbitsError(f"{where}: merges must be a mapping, got {type(merges).__name__}")
    out: dict[str, list[list[str]]] = {}
    for group, lists in merges.items():
        if not isinstance(lists, list) or not all(isinstance(m, list) and len(m) >= 2 for m in lists):
            raise FairbitsError(f"{where}: merges of {group!r} must be lists of two or more classes")
        seen: dict[str, list[str]] = {}
        for m in lists:
            for c in m:
                if str(c) in seen:
                    raise SpecError(f"{where}: class {c!r} of group {group!r} is in two merges: "
                                    f"{seen[str(c)]} and {m}")
                seen[str(c)] = m
        out[str(group)] = [[str(c) for c in m] for m in lists]
    return out


_TRAINING = ("identity_split", "parse_merges", "per_group_accuracy", "stratified_split", "train_phenotype")


def __getattr__(name: str):
    """The training names of :mod:`fairbits.face.phenotype_training`, imported on first use."""
    if name in _TRAINING:
        from fairbits.face import phenotype_training

        return getattr(phenotype_training, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_FEATURES", "FEATURE_COMPONENTS", "FORMAT", "MERGE_ALL", "PhenotypeModel", "card_path",
           "check_classes", "colour_features", "extract_features", "features_of_arrays", "label_str",
           "merge_map", "merge_name", "parse_features", *_TRAINING]
