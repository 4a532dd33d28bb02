"""Training phenotype classifiers (:class:`~fairbits.face.phenotype.PhenotypeModel`).

:func:`train_phenotype` builds the manifest of a :class:`~fairbits.spec.DatasetSpec`,
loads the images (unreadable ones are skipped and counted), splits them seeded and
stratified, fits on the training part and reports held-out accuracy, the confusion matrix
and, with a group column, the held-out accuracy per group.

**No identity leakage.** Photos of one person look alike, so a held-out part that shares
people with the training part measures recognition of those people, not of the phenotype.
Whenever the manifest has an identity column (``identity``: RFW, CelebA with its identity
file) the split is by identity (:func:`identity_split`, scikit-learn's
``StratifiedGroupKFold``): nobody is in both parts.

**Merged classes** (:func:`parse_merges`), written ``[GROUP:]A,B[,C…]``: without a group
the classes are merged before training (the model has the class ``A+B`` and reads the
labels ``A`` and ``B`` as it); with a group they are merged only when scoring that group's
images (prediction and truth alike), as the GwtB authors' code did for classes that are
rare within one race (e.g. ``African:5,6``). Both are recorded in the model card
(``merges``); :meth:`PhenotypeModel.group_label_map` gives one group's mapping.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fairbits.errors import DatasetError, ImageError, SpecError
from fairbits.face.phenotype import (DEFAULT_C, DEFAULT_FEATURES, MERGE_ALL, PhenotypeModel, _checked_merges,
                                     _class_key, _npz_path, check_classes, features_of_arrays, label_str,
                                     merge_map, parse_features, sorted_classes)


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


def identity_split(labels: Sequence[str], identities: Sequence, test_fraction: float,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split in which no identity is in both parts: indices ``(train, test)``, sorted.

    scikit-learn's ``StratifiedGroupKFold`` with ``k = round(1 / test_fraction)`` folds
    (at least 2, at most the number of identities) keeps the class mix of each fold close
    to the whole; the held-out part is the first fold whose training part still has every
    class, so the held-out fraction is about ``1 / k``. Missing identities (None/NaN)
    count as one person each.

    Raises:
        SpecError: ``test_fraction`` outside (0, 1), fewer than two identities, or no fold
            leaves every class in training (the message names the classes and their
            number of identities).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0.0 < test_fraction < 1.0:
        raise SpecError(f"test_fraction must be in (0, 1) for an identity split, got {test_fraction}")
    y = np.array([str(v) for v in labels], dtype=object)
    groups = np.array([label_str(g) or f"\x00row{i}" for i, g in enumerate(identities)], dtype=object)
    n_ids = len(set(groups))
    if n_ids < 2:
        raise SpecError(f"an identity-disjoint split needs at least 2 identities, found {n_ids}")
    k = int(min(max(2, round(1.0 / test_fraction)), n_ids))
    classes = set(y)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups)
        for train_idx, test_idx in folds:
            if set(y[train_idx]) == classes:
                return np.sort(train_idx), np.sort(test_idx)
    people = {c: len(set(groups[y == c])) for c in sorted_classes(classes)}
    raise SpecError(f"no identity-disjoint split keeps every class in training (identities per class: "
                    f"{people}); merge rare classes (e.g. --merge-classes A,B) or add people")


def parse_merges(specs: Sequence[str] | str | None) -> dict[str, list[list[str]]]:
    """Parse merge specs ``[GROUP:]A,B[,C...]`` (several per string separated by ``;``).

    Returns ``{group or "*": [[A, B], ...]}`` with class names as :func:`label_str` writes
    them. The group is everything before the last ``:`` (so group names may contain ``:``).

    Raises:
        SpecError: a spec with fewer than two classes, or a class in two merges of one group.
    """
    if isinstance(specs, str):
        specs = [specs]
    out: dict[str, list[list[str]]] = {}
    for spec in specs or []:
        for part in (p.strip() for p in str(spec).split(";")):
            if not part:
                continue
            group, sep, body = part.rpartition(":")
            group = group.strip() if sep else MERGE_ALL
            classes = [label_str(c.strip()) for c in body.split(",")]
            classes = list(dict.fromkeys(c for c in classes if c is not None))
            if len(classes) < 2 or not group:
                raise SpecError(f"merge {part!r}: write [GROUP:]CLASS,CLASS[,...], e.g. 'African:5,6' or '1,2'")
            out.setdefault(group, []).append(classes)
    return _checked_merges(out, "merge specs")


def _check_merge_targets(merges: dict, classes: Sequence[str], groups: set[str] | None) -> None:
    """Every merged class must be a class of the data; every group a value of the group column."""
    known = set(classes)
    for group, lists in merges.items():
        unknown = sorted({c for m in lists for c in m} - known, key=_class_key)
        if unknown:
            raise SpecError(f"merge for {group!r}: unknown class(es) {unknown}; classes are {sorted_classes(known)}")
        if group != MERGE_ALL:
            if groups is None:
                raise SpecError(f"merge for group {group!r} needs a group column (--group-column)")
            if group not in groups:
                raise SpecError(f"merge for group {group!r}: no such group; groups are {sorted(groups)}")


def per_group_accuracy(model: "PhenotypeModel", pred: np.ndarray, labels: Sequence, groups: Sequence) -> dict:
    """Held-out accuracy per group, with that group's merges applied to prediction and truth.

    Args:
        pred: predicted class indices ``(N,)``; labels, groups: ``N`` values each.
    Returns:
        ``{group: {"n", "accuracy", "accuracy_unmerged", "merged"}}`` (groups sorted;
        ``accuracy_unmerged`` equals ``accuracy`` for a group without merges).
    """
    true = model.class_index(labels)
    names = np.array(model.classes + ["?"], dtype=object)
    out = {}
    g = np.array([label_str(v) or "(none)" for v in groups], dtype=object)
    for group in sorted(set(g), key=_class_key):
        idx = np.flatnonzero(g == group)
        mapping = model.group_label_map(group)
        p = [mapping.get(c, c) for c in names[pred[idx]]]
        t = [mapping.get(c, c) for c in names[true[idx]]]
        out[group] = {"n": int(len(idx)), "accuracy": float(np.mean([a == b for a, b in zip(p, t)])),
                      "accuracy_unmerged": float(np.mean(pred[idx] == true[idx])),
                      "merged": model.merges.get(group, [])}
    return out


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

    from fairbits.data.images import load_original

    def read(p: str):
        try:
            return load_original(p, max_pixels=max_pixels, size=size, min_side=1)
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


def _optional_column(manifest: pd.DataFrame, name: str | None, what: str, auto: str | None = None) -> str | None:
    """``name`` checked against the manifest's columns; ``"auto"`` → ``auto`` if present, else None."""
    if name == "auto":
        return auto if auto is not None and auto in manifest.columns else None
    if name is None or name == "" or str(name).lower() == "none":
        return None
    if name not in manifest.columns:
        cols = [c for c in manifest.columns if c not in ("image_id", "path", "checksum")]
        raise SpecError(f"{what} column {name!r} not in the dataset; its columns are {cols}")
    return name


def _split(labels: list[str], identities: list | None, test_fraction: float, seed: int):
    """``(train_idx, test_idx, split description)``: by identity when there are identities."""
    if test_fraction == 0:
        return np.arange(len(labels)), np.array([], dtype=np.int64), {"by": "none"}
    if identities is None:
        tr, te = stratified_split(labels, test_fraction, seed)
        return tr, te, {"by": "image"}
    tr, te = identity_split(labels, identities, test_fraction, seed)
    ids = np.array([label_str(v) for v in identities], dtype=object)
    shared = {v for v in ids[tr] if v is not None} & {v for v in ids[te] if v is not None}
    if shared:  # cannot happen with a group split; a leak would silently inflate accuracy
        raise AssertionError(f"identities in both parts: {sorted(shared)[:5]}")
    return tr, te, {"by": "identity", "identities": {"train": len(set(ids[tr])), "test": len(set(ids[te]))}}


def _evaluate(model: PhenotypeModel, X: np.ndarray, y: np.ndarray, test_idx: np.ndarray,
              groups: list | None) -> dict[str, Any]:
    """Held-out accuracy, balanced accuracy, mean loss, confusion and per-group accuracy."""
    out: dict[str, Any] = {"held_out_accuracy": None, "balanced_accuracy": None, "held_out_loss": None,
                           "confusion": None, "by_group": None, "group_gap": None}
    if not len(test_idx):
        return out
    k = len(model.classes)
    yt = model.class_index(y[test_idx])
    pred = model.predict(X[test_idx])
    conf = np.zeros((k, k), np.int64)
    np.add.at(conf, (yt, pred), 1)
    with np.errstate(invalid="ignore"):
        per_class = np.diag(conf) / conf.sum(axis=1)
    out.update(held_out_accuracy=float(np.mean(pred == yt)), balanced_accuracy=float(np.nanmean(per_class)),
               held_out_loss=float(np.mean(model.loss(X[test_idx], y[test_idx]))), confusion=conf.tolist())
    if groups is not None:
        by_group = per_group_accuracy(model, pred, list(y[test_idx]), [groups[i] for i in test_idx])
        accs = [v["accuracy"] for v in by_group.values()]
        out.update(by_group=by_group, group_gap=float(max(accs) - min(accs)))
    return out


def train_phenotype(dataset, target: str, out: str | Path | None, *, features: str = DEFAULT_FEATURES,
                    test_fraction: float = 0.2, seed: int = 0, C: float = DEFAULT_C, progress: bool = True,
                    identity_column: str | None = "auto", group_column: str | None = None,
                    merge_classes: Sequence[str] | str | None = None) -> tuple[PhenotypeModel, dict[str, Any]]:
    """Train a phenotype classifier for column ``target`` of a dataset and save it to ``out``.

    Args:
        dataset: a :class:`~fairbits.spec.DatasetSpec` (read with ``build_manifest``, images
            fitted to its ``size``) or a manifest DataFrame (``path`` plus label columns).
        target: the label column.
        out: model file (``.npz``; the card goes to ``.json`` beside it); None saves nothing.
        features: feature set (:func:`parse_features`).
        test_fraction: held-out fraction (0: train on everything, no accuracy); with an
            identity column about ``1 / round(1 / test_fraction)`` (:func:`identity_split`).
        seed: seed of the manifest subsampling and of the split.
        C: inverse L2 regularisation strength of the logistic regression.
        progress: show progress bars.
        identity_column: column naming the person in each image; the split keeps every
            person in one part. ``"auto"``: ``identity`` when the manifest has it; None
            (or ``"none"``): split by image.
        group_column: column (e.g. ``race``) whose groups get their own held-out accuracy
            and may have their own merges.
        merge_classes: merge specs ``[GROUP:]A,B[,C...]`` (:func:`parse_merges`).

    Returns:
        ``(model, report)``; the report has ``held_out_accuracy``, ``balanced_accuracy``,
        ``held_out_loss`` (mean nats), ``class_counts`` (``{class: {train, test}}``),
        ``confusion`` (rows true, columns predicted, in ``classes`` order), ``split``
        (``{"by": "identity"|"image"|"none", ...}`` with identities per part),
        ``by_group`` (``{group: {n, accuracy, accuracy_unmerged, merged}}`` or None),
        ``group_gap`` (max − min of the per-group accuracies), ``merges``, ``n_images``,
        ``n_skipped`` (unreadable images) and ``skipped`` (path → reason, at most 20),
        ``n_unlabelled`` and ``path``.

    Raises:
        SpecError: unknown target, identity or group column (the message lists the
            columns), fewer than two classes, a class with fewer than two images, a bad
            merge, no identity split that keeps every class in training, bad
            ``features``/``test_fraction``, ``out`` not ending in ``.npz``.
        DatasetError: the dataset cannot be read, or no image can be loaded.
    """
    features = "+".join(parse_features(features))
    if out is not None:
        out = _npz_path(out)
    if not 0.0 <= test_fraction < 1.0:
        raise SpecError(f"test_fraction must be in [0, 1), got {test_fraction}")
    merges = parse_merges(merge_classes) if not isinstance(merge_classes, dict) else \
        _checked_merges(merge_classes, "merge_classes")
    manifest, desc, size, max_pixels = _manifest(dataset, target, seed)
    if target not in manifest.columns:
        cols = [c for c in manifest.columns if c not in ("image_id", "path", "checksum")]
        raise SpecError(f"target column {target!r} not in the dataset; its columns are {cols}")
    if "path" not in manifest.columns or manifest.empty:
        raise DatasetError("the manifest needs rows and a `path` column")
    id_col = _optional_column(manifest, identity_column, "identity", auto="identity")
    group_col = _optional_column(manifest, group_column, "group")

    labels = [label_str(v) for v in manifest[target]]
    keep = [i for i, v in enumerate(labels) if v is not None]
    n_unlabelled = len(labels) - len(keep)
    manifest = manifest.iloc[keep].reset_index(drop=True)
    labels = [labels[i] for i in keep]
    global_merges = {MERGE_ALL: merges[MERGE_ALL]} if MERGE_ALL in merges else {}
    group_merges = {g: m for g, m in merges.items() if g != MERGE_ALL}
    _check_merge_targets(global_merges, sorted_classes(labels), None)
    merged = merge_map(global_merges.get(MERGE_ALL, []))
    labels = [merged.get(v, v) for v in labels]
    groups_all = [label_str(v) or "(none)" for v in manifest[group_col]] if group_col else None
    _check_merge_targets(group_merges, sorted_classes(labels), set(groups_all) if groups_all else None)
    check_classes(pd.Series(labels, dtype=object).value_counts().to_dict(), target)

    arrays, rows, skipped = _load_images(manifest["path"].astype(str).tolist(), size, max_pixels, progress)
    if skipped:
        warnings.warn(f"{len(skipped)} image(s) could not be loaded and were skipped", stacklevel=2)
    if not rows:
        raise DatasetError(f"none of the {len(manifest)} images could be loaded")
    labels = [labels[i] for i in rows]
    ids = (manifest["image_id"] if "image_id" in manifest.columns else manifest["path"]).astype(str)
    ids = [ids.iloc[i] for i in rows]
    identities = [manifest[id_col].iloc[i] for i in rows] if id_col else None
    groups = [groups_all[i] for i in rows] if groups_all else None
    classes = sorted_classes(labels)
    check_classes(pd.Series(labels, dtype=object).value_counts().to_dict(), target)

    X = features_of_arrays(arrays, features, progress=progress).astype(np.float64)
    del arrays
    train_idx, test_idx, split = _split(labels, identities, test_fraction, seed)
    split.update(column=id_col)
    y = np.array(labels, dtype=object)
    model = PhenotypeModel.fit(X[train_idx], y[train_idx], features=features, target=target, seed=seed, C=C)
    if model.classes != classes:  # every class has a training image by construction
        raise AssertionError("training split lost a class")
    model.merges = merges

    report: dict[str, Any] = {"target": target, "features": features, "classes": classes,
                              "n_images": len(rows), "n_train": int(len(train_idx)),
                              "n_test": int(len(test_idx)), "n_skipped": len(skipped),
                              "skipped": dict(list(skipped.items())[:20]), "n_unlabelled": n_unlabelled,
                              "split": split, "group_column": group_col, "merges": merges}
    counts = {c: {"train": 0, "test": 0} for c in classes}
    for i in train_idx:
        counts[labels[i]]["train"] += 1
    for i in test_idx:
        counts[labels[i]]["test"] += 1
    report["class_counts"] = counts
    report.update(_evaluate(model, X, y, test_idx, groups))

    from fairbits import __version__

    model.held_out_ids = [ids[i] for i in test_idx]
    model.card.update({k: report[k] for k in ("held_out_accuracy", "balanced_accuracy", "held_out_loss",
                                              "confusion", "split", "group_column", "by_group", "group_gap",
                                              "merges")})
    model.card.update({
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


__all__ = ["identity_split", "parse_merges", "per_group_accuracy", "stratified_split", "train_phenotype"]
