"""RFW (Racial Faces in-the-Wild) with its landmarks and the published phenotype labels.

Layout (see ``docs/datasets.md`` for where each detail comes from)::

    <root>/<Race>/<identity>/<identity>_0001.jpg      Race: African, Asian, Caucasian, Indian
    <root>/txts/<Race>/<Race>_lmk.txt                 optional 5-point landmarks

``root`` may also be the released ``test/`` folder, whose images are in ``test/data/`` and
landmarks in ``test/txts/``. Image ids are ``<Race>/<identity>/<file stem>``.

Phenotype labels (Yucer et al., WACV 2022) come in two forms, told apart by their columns:

* **per identity, as published** (``RFW_metadata_FDA.csv``): a ``Class_ID`` column
  ``<Race>/<identity>`` and the columns ``skintype`` (``type1``…``type6``), ``eye``
  (``narrow``/``normal``), ``nose`` (``wide``/``narrow``), ``lips`` (``big``/``small``),
  ``hairtype`` (``bald``/``curly``/``straight``/``wavy``) and ``haircolor``
  (``black``/``blonde``/``brown``/``gray``/``red``). Every image of an identity gets its
  labels; values are checked (case and surrounding spaces ignored) and an unknown one is a
  DatasetError naming the row and the allowed values. Identities with no image here are
  counted, not errors.
* **per image** (the older form): an image column (``image``, ``file``, ``path``…) and
  phenotype columns under common spellings (``"Skin Type"``, ``hair_color``…).

Both give the columns ``skin_type`` (1–6, nullable int), ``eyelid`` (``monolid``/``other``:
the file's ``eye`` ``narrow`` means monolid, ``normal`` means another eyelid), ``nose``,
``lips``, ``hair_type`` and ``hair_colour``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from fairbits.data.layout import (REL, existing_dir, file_row, first_dir, frame, image_files, read_table,
                                  subfolders, unique_ids)
from fairbits.errors import DatasetError

RFW_RACES = ("African", "Asian", "Caucasian", "Indian")
PHENOTYPE_COLUMNS = ("skin_type", "eyelid", "nose", "lips", "hair_type", "hair_colour")
LANDMARK_POINTS = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
LANDMARK_COLUMNS = tuple(f"lmk_{p}_{a}" for p in LANDMARK_POINTS for a in ("x", "y"))

# published column → (canonical column, {published value: canonical value})
PUBLISHED_VALUES: dict[str, tuple[str, dict[str, object]]] = {
    "skintype": ("skin_type", {f"type{k}": k for k in range(1, 7)}),
    "eye": ("eyelid", {"narrow": "monolid", "normal": "other", "monolid": "monolid", "other": "other"}),
    "nose": ("nose", {"wide": "wide", "narrow": "narrow"}),
    "lips": ("lips", {"big": "big", "small": "small"}),
    "hairtype": ("hair_type", {v: v for v in ("bald", "curly", "straight", "wavy")}),
    "haircolor": ("hair_colour", {v: v for v in ("black", "blonde", "brown", "gray", "red")}),
}
_PHENOTYPE_ALIASES = {
    "skin_type": ("skintype", "skin", "skincolour", "skincolor", "skintone", "fitzpatrick"),
    "eyelid": ("eyelid", "eyelids", "eyelidtype", "eyelidshape", "eye"),
    "nose": ("nose", "noseshape", "nosetype", "nosewidth"),
    "lips": ("lips", "lip", "lipshape", "lipsshape", "liptype", "lipstype"),
    "hair_type": ("hairtype", "hairtexture", "hair"),
    "hair_colour": ("haircolour", "haircolor"),
}
_IMAGE_ALIASES = ("image", "imagename", "imagepath", "img", "file", "filename", "path")


def _squash(name) -> str:
    """Column-name key: lower case, letters and digits only (``"Skin Type"`` → ``skintype``)."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def normalise_phenotype_columns(columns) -> dict[str, str]:
    """Map original column names to the canonical phenotype names they denote.

    Matching ignores case, spaces, ``_`` and ``-``. Columns that are not recognised
    are left out of the mapping. Two columns mapping to one phenotype → DatasetError.
    """
    lookup = {alias: canon for canon, aliases in _PHENOTYPE_ALIASES.items() for alias in aliases}
    mapping: dict[str, str] = {}
    for col in columns:
        canon = lookup.get(_squash(col))
        if canon is None:
            continue
        if canon in mapping.values():
            raise DatasetError(f"rfw phenotypes: more than one column means {canon!r} (e.g. {col!r})")
        mapping[col] = canon
    return mapping


# --------------------------------------------------------------------------- images

def rfw_image_root(root: Path) -> Path:
    """The folder holding the race folders: ``root`` itself or ``root/data`` (released ``test/``)."""
    for cand in (root, root / "data"):
        if any((cand / r).is_dir() for r in RFW_RACES):
            return cand
    raise DatasetError(f"rfw: none of the race folders {list(RFW_RACES)} found under {root} "
                       f"(nor under {root / 'data'})")


def _scan(root: Path) -> pd.DataFrame:
    """One row per image of ``root/<Race>/<identity>/``: image_id, path, race, identity, _rel."""
    rows = [file_row(root, f.relative_to(root).as_posix(), race=race, identity=ident.name)
            for race in RFW_RACES if (root / race).is_dir()
            for ident in subfolders(root / race) for f in image_files(ident)]
    return unique_ids(frame(rows, ["image_id", "path", "race", "identity", REL]), "rfw")


# --------------------------------------------------------------------------- landmarks

def _txts_dir(root: Path, image_root: Path) -> Path | None:
    return first_dir([image_root / "txts", root / "txts", image_root.parent / "txts"])


def read_landmark_file(path: Path) -> dict[tuple[str, str], list[float]]:
    """Parse one ``<Race>_lmk.txt``: ``{(identity, file stem): [x1, y1, …, x5, y5]}``.

    Each line: the image path (its last two parts are ``<identity>/<file>``), then
    whitespace-separated fields of which the last ten are five ``(x, y)`` points in
    pixels of the original image; anything between is ignored. A repeated image keeps
    its first line.

    Raises:
        DatasetError: a line with fewer than 11 fields or a point that is not a number.
    """
    out: dict[tuple[str, str], list[float]] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            fields = line.split()
            if not fields:
                continue
            parts = fields[0].replace("\\", "/").split("/")
            try:
                if len(fields) < 11 or len(parts) < 2:
                    raise ValueError(f"expected '<...>/<identity>/<file>' and 10 coordinates, "
                                     f"found {len(fields)} field(s)")
                values = [float(v) for v in fields[-10:]]
            except ValueError as e:
                raise DatasetError(f"rfw landmarks: line {n} of {path}: {e}") from None
            out.setdefault((parts[-2], Path(parts[-1]).stem), values)
    return out


def _add_landmarks(df: pd.DataFrame, root: Path, image_root: Path) -> None:
    """Fill :data:`LANDMARK_COLUMNS` from ``txts/<Race>/<Race>_lmk.txt`` where present."""
    txts = _txts_dir(root, image_root)
    files = [txts / r / f"{r}_lmk.txt" for r in RFW_RACES] if txts else []
    files = [f for f in files if f.is_file()]
    if not files:
        return
    points: dict[tuple[str, str, str], list[float]] = {}
    for f in files:
        race = f.parent.name
        points.update({(race, ident, stem): v for (ident, stem), v in read_landmark_file(f).items()})
    keys = list(zip(df["race"], df["identity"], [Path(r).stem for r in df[REL]]))
    table = np.full((len(df), 10), np.nan)
    for i, key in enumerate(keys):
        if key in points:
            table[i] = points[key]
    for j, col in enumerate(LANDMARK_COLUMNS):
        df[col] = table[:, j]
    df.attrs["landmark_files"] = [str(f) for f in files]
    df.attrs["images_without_landmarks"] = int(len(df) - np.isfinite(table[:, 0]).sum())
    df.attrs["landmarks_without_images"] = len(points.keys() - set(keys))


# --------------------------------------------------------------------------- phenotypes

def _skin_value(value, where: str, allowed_hint: str):
    """``type4``, ``4``, ``4.0`` → 4; missing → None; anything else → DatasetError."""
    s = _cell(value)
    if s is None:
        return None
    if s.startswith("type"):
        s = s[4:].strip()
    try:
        k = float(s)
    except ValueError:
        k = float("nan")
    if k in (1, 2, 3, 4, 5, 6):
        return int(k)
    raise DatasetError(f"rfw phenotypes: {where}: skin type must be 1-6 ({allowed_hint}), found {value!r}")


def _cell(value) -> str | None:
    """A label cell as stripped lower-case text; missing → None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    s = str(value).strip()
    return s.lower() if s else None


def _phenotype_file(root: Path, phenotypes: str | Path) -> Path:
    p = Path(phenotypes).expanduser()
    file = p if p.is_absolute() else root / p
    if not file.is_file():
        raise DatasetError(f"rfw: phenotype file {str(phenotypes)!r} not found (relative paths are "
                           f"taken relative to the dataset root {root})")
    return file


def _find_column(table: pd.DataFrame, wanted: str, aliases=()) -> str | None:
    """A column by exact name, then ignoring case/spaces/``_``/``-``, then by aliases."""
    if wanted in table.columns:
        return wanted
    squashed = {_squash(c): c for c in table.columns}
    return next((squashed[k] for k in (_squash(wanted), *aliases) if k in squashed), None)


def identity_labels(table: pd.DataFrame, file: Path) -> tuple[dict[tuple[str, str], dict], list[str]]:
    """Parse the published per-identity table → ``({(race, identity): labels}, ignored columns)``.

    Raises:
        DatasetError: a malformed ``Class_ID``, an identity listed twice, a phenotype column
            missing, or a value outside the published vocabulary (naming row and values).
    """
    id_col = _find_column(table, "Class_ID")
    columns = {}
    for published in PUBLISHED_VALUES:
        col = _find_column(table, published)
        if col is None:
            raise DatasetError(f"rfw phenotypes: {file} has Class_ID but no {published!r} column "
                               f"(published columns: Class_ID, {', '.join(PUBLISHED_VALUES)})")
        columns[published] = col
    ignored = [c for c in table.columns if c not in (id_col, *columns.values())]
    out: dict[tuple[str, str], dict] = {}
    first_row: dict[tuple[str, str], int] = {}
    for i, rec in enumerate(table.to_dict("records")):
        line = i + 2
        raw = str(rec[id_col]).strip().replace("\\", "/")
        race, _, ident = raw.partition("/")
        if race not in RFW_RACES or not ident or "/" in ident:
            raise DatasetError(f"rfw phenotypes: row {line} of {file}: Class_ID {rec[id_col]!r} is not "
                               f"'<Race>/<identity>' with Race one of {list(RFW_RACES)}")
        where = f"row {line} of {file} (Class_ID {raw!r})"
        if (race, ident) in out:
            raise DatasetError(f"rfw phenotypes: {where}: identity already labelled in row "
                               f"{first_row[(race, ident)]}")
        labels = {}
        for published, col in columns.items():
            canon, vocab = PUBLISHED_VALUES[published]
            if published == "skintype":
                labels[canon] = _skin_value(rec[col], where, "type1..type6")
                continue
            v = _cell(rec[col])
            if v is not None and v not in vocab:
                allowed = [k for k in vocab if published != "eye" or k in ("narrow", "normal")]
                raise DatasetError(f"rfw phenotypes: {where}: {published} {rec[col]!r} is not one of {allowed}")
            labels[canon] = None if v is None else vocab[v]
        out[(race, ident)] = labels
        first_row[(race, ident)] = line
    return out, ignored


def _per_image_labels(table: pd.DataFrame, image_col: str, file: Path) -> pd.DataFrame:
    """The older per-image form → columns ``entry`` + canonical phenotype names."""
    mapping = normalise_phenotype_columns([c for c in table.columns if c != image_col])
    if not mapping:
        raise DatasetError(f"rfw phenotypes: no phenotype column recognised in {file} "
                           f"(expected some of {list(PHENOTYPE_COLUMNS)})")
    out = table[[image_col, *mapping]].rename(columns={image_col: "entry", **mapping})
    out["entry"] = out["entry"].map(_normalise_entry)
    if "skin_type" in out:
        out["skin_type"] = pd.array([_skin_value(v, f"row {i + 2} of {file}", "or type1..type6")
                                     for i, v in enumerate(out["skin_type"])], dtype="Int64")
    if "eyelid" in out:   # the published eye values, read as the eyelid they mean
        eyelid = PUBLISHED_VALUES["eye"][1]
        out["eyelid"] = [eyelid[c] if (c := _cell(v)) in ("narrow", "normal") else v for v in out["eyelid"]]
    return out


def _normalise_entry(value) -> str:
    """Phenotype image entry with forward slashes and no leading ``./``."""
    s = str(value).strip().replace("\\", "/")
    while s.startswith("./"):
        s = s[2:]
    return s


def _match_keys(rel: str) -> list[str]:
    """Strings a phenotype entry may use for an image (relative path or basename, ± suffix)."""
    p = Path(rel)
    return list(dict.fromkeys([rel, p.with_suffix("").as_posix(), p.name, p.stem]))


def _apply_per_image(df: pd.DataFrame, labels: pd.DataFrame) -> None:
    index: dict[str, list[int]] = {}
    for i, rel in enumerate(df[REL]):
        for key in _match_keys(rel):
            index.setdefault(key, []).append(i)
    target: dict[int, int] = {}
    unmatched = 0
    for j, entry in enumerate(labels["entry"]):
        hits = index.get(entry, [])
        if len(hits) > 1:
            raise DatasetError(f"rfw phenotypes: entry {entry!r} matches {len(hits)} images; use the path "
                               "relative to the root")
        if not hits:
            unmatched += 1
            continue
        if hits[0] in target:
            raise DatasetError(f"rfw phenotypes: image {df[REL].iloc[hits[0]]!r} is labelled twice")
        target[hits[0]] = j
    for col in [c for c in labels.columns if c != "entry"]:
        picked = labels[col].reindex([target.get(i, -1) for i in range(len(df))])
        df[col] = picked.to_numpy()
        if col == "skin_type":
            df[col] = df[col].astype("Int64")
    df.attrs["unmatched_phenotypes"] = unmatched
    df.attrs["images_without_phenotypes"] = int(len(df) - len(target))


def _apply_identity(df: pd.DataFrame, labels: dict[tuple[str, str], dict], ignored: list[str]) -> None:
    keys = list(zip(df["race"], df["identity"]))
    for col in PHENOTYPE_COLUMNS:
        values = [labels.get(k, {}).get(col) for k in keys]
        df[col] = pd.array(values, dtype="Int64") if col == "skin_type" else \
            pd.Series(values, index=df.index, dtype=object)
    present = set(keys)
    missing = sorted(f"{r}/{i}" for r, i in labels if (r, i) not in present)
    df.attrs["phenotype_form"] = "identity"
    df.attrs["identities_without_images"] = len(missing)
    df.attrs["identities_without_images_examples"] = missing[:10]
    df.attrs["unmatched_phenotypes"] = len(missing)
    df.attrs["images_without_phenotypes"] = int(sum(k not in labels for k in keys))
    df.attrs["phenotype_columns_ignored"] = [str(c) for c in ignored]


def add_phenotypes(df: pd.DataFrame, root: Path, phenotypes: str | Path, image_column: str) -> None:
    """Read the phenotype file (either form, see the module docstring) into ``df``'s columns."""
    file = _phenotype_file(root, phenotypes)
    table = read_table(file, "rfw phenotypes")
    image_col = _find_column(table, image_column, _IMAGE_ALIASES)
    if image_col is None and _find_column(table, "Class_ID") is not None:
        labels, ignored = identity_labels(table, file)
        _apply_identity(df, labels, ignored)
        return
    if image_col is None:
        raise DatasetError(f"rfw phenotypes: {file} has neither an image column {image_column!r} nor "
                           f"Class_ID (columns: {list(table.columns)})")
    _apply_per_image(df, _per_image_labels(table, image_col, file))
    df.attrs["phenotype_form"] = "image"


def read_rfw(path: str | Path, *, phenotypes: str | Path | None = None, image_column: str = "image",
             landmarks: bool = True) -> pd.DataFrame:
    """RFW images with their race and identity, landmarks where shipped, phenotypes if given.

    Args:
        path: the dataset root (race folders in it, or in its ``data/``).
        phenotypes: CSV of phenotype labels, absolute or relative to ``path``; either form
            of the module docstring (the published per-identity file is recognised by its
            ``Class_ID`` column and the absence of an image column).
        image_column: the image column of a per-image phenotype file.
        landmarks: read ``txts/<Race>/<Race>_lmk.txt`` into :data:`LANDMARK_COLUMNS` (pixels
            of the original image; NaN for an image without a line) when such files exist.

    Returns:
        Columns ``image_id, path, race, identity``, then the landmark columns (if read),
        then :data:`PHENOTYPE_COLUMNS` (if ``phenotypes``; missing labels are NaN/<NA>).
        ``attrs`` notes: ``unmatched_phenotypes`` (entries or identities matching no image),
        ``images_without_phenotypes``, for the published form ``identities_without_images``
        (and up to 10 examples) and ``phenotype_columns_ignored``; with landmarks
        ``landmark_files``, ``images_without_landmarks``, ``landmarks_without_images``;
        ``id_clashes`` (see :func:`fairbits.data.layout.unique_ids`).
    """
    root = existing_dir(path, "rfw root")
    image_root = rfw_image_root(root)
    df = _scan(image_root)
    if landmarks:
        _add_landmarks(df, root, image_root)
    if phenotypes is not None:
        add_phenotypes(df, root, phenotypes, image_column)
    return df.drop(columns=REL)


__all__ = ["LANDMARK_COLUMNS", "LANDMARK_POINTS", "PHENOTYPE_COLUMNS", "PUBLISHED_VALUES", "RFW_RACES",
           "identity_labels", "normalise_phenotype_columns", "read_landmark_file", "read_rfw", "rfw_image_root"]
