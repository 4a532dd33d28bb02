"""Dataset readers: turn a labelled face dataset on disk into a table of images.

Every reader is a function ``read_<name>(path, **options) -> pandas.DataFrame`` that
returns one row per image with the columns ``image_id`` (unique string), ``path``
(absolute, resolved) and the dataset's label columns. Checksums are added later by
:func:`fairbits.data.manifest.build_manifest`. Readers are reached by name through
:data:`READERS` / :func:`get_reader`.

Safety rule shared by all readers: every image path is resolved (symlinks followed)
and must lie under the dataset root; an entry that escapes it (``..``, an absolute
path elsewhere, a symlink pointing outside) raises :class:`~fairbits.errors.DatasetError`
naming the entry. A listed image that does not exist is *not* an error here.

Readers that accept a ``split`` keyword (csv, fairface, celeba) support splits;
:func:`supports_split` tells which.
"""

from __future__ import annotations

import inspect
import os
import re
import warnings
from pathlib import Path
from typing import Callable

import pandas as pd

from fairbits.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
RESERVED_COLUMNS = ("image_id", "path")

# ---------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------


def _existing_dir(path: str | Path, what: str) -> Path:
    """Resolve ``path`` and require it to be a directory."""
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise DatasetError(f"{what} {str(path)!r} is not a directory")
    return p


def _existing_file(path: str | Path, what: str) -> Path:
    """Resolve ``path`` and require it to be a file."""
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise DatasetError(f"{what} {str(path)!r} not found")
    return p


def resolve_under(root: Path, entry: str | Path) -> Path:
    """Resolve ``entry`` (relative to ``root`` unless absolute) and keep it inside root.

    ``root`` must already be resolved. Symlinks are followed, so a link that points
    outside the root is rejected like ``..`` or a foreign absolute path.

    Raises:
        DatasetError: the resolved path is not under ``root``.
    """
    p = Path(entry)
    resolved = (p if p.is_absolute() else root / p).resolve()
    if not resolved.is_relative_to(root):
        raise DatasetError(
            f"image entry {str(entry)!r} resolves to {resolved}, outside the dataset "
            f"root {root}; paths must stay inside the root"
        )
    return resolved


def _relative_id(root: Path, entry: str | Path) -> str:
    """Default image id: the entry's path relative to root, forward slashes, no suffix.

    ``entry`` must already have passed :func:`resolve_under`.
    """
    lexical = Path(os.path.normpath(root / entry))
    rel = lexical.relative_to(root) if lexical.is_relative_to(root) else (root / entry).resolve().relative_to(root)
    return rel.with_suffix("").as_posix()


def _is_image(p: Path) -> bool:
    """True for a visible regular-looking file with a known image suffix (any case)."""
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _check_label_names(columns, reader: str) -> None:
    """Refuse label columns that would clash with the manifest's own columns."""
    clash = [c for c in columns if c in RESERVED_COLUMNS + ("checksum",)]
    if clash:
        raise DatasetError(f"{reader}: label column(s) {clash} clash with reserved manifest columns")


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """Build a DataFrame with a fixed column order, also when there are no rows."""
    return pd.DataFrame(rows, columns=columns)


def _check_split(split: str, allowed: tuple[str, ...], reader: str) -> str:
    """Validate a split name against the reader's list."""
    if split not in allowed:
        raise DatasetError(f"{reader}: unknown split {split!r}; choose one of {list(allowed)}")
    return split


def _read_table(path: Path, reader: str, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv`` with parse failures turned into DatasetError."""
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise DatasetError(f"{reader}: cannot parse {path}: {e}") from None


# ---------------------------------------------------------------------------
# csv
# ---------------------------------------------------------------------------


def read_csv(
    path: str | Path,
    *,
    path_column: str = "path",
    id_column: str | None = None,
    root: str | Path | None = None,
    split: str | None = None,
) -> pd.DataFrame:
    """Generic labelled CSV: one row per image, every non-path/id column is a label.

    Args:
        path: the CSV file.
        path_column: column holding each image path, relative to ``root`` (absolute
            paths are allowed if they lie under ``root``).
        id_column: column holding the image id; default: an ``image_id`` column if the
            CSV has one, else the relative path without suffix.
        root: dataset root; default the CSV's folder; a relative root is taken relative
            to the CSV's folder.
        split: keep only rows whose ``split`` column equals this value (the CSV must
            have a ``split`` column).
    """
    csv_path = _existing_file(path, "csv label file")
    base = csv_path.parent
    root_dir = _existing_dir(base / root if root is not None else base, "csv root")
    table = _read_table(csv_path, "csv")
    if id_column is None and "image_id" in table.columns:
        id_column = "image_id"
    for col in (path_column, id_column):
        if col is not None and col not in table.columns:
            raise DatasetError(f"csv: column {col!r} not in {csv_path} (columns: {list(table.columns)})")
    if split is not None:
        if "split" not in table.columns:
            raise DatasetError(f"csv: split {split!r} asked but {csv_path} has no 'split' column")
        table = table[table["split"].astype(str) == str(split)]
    labels = [c for c in table.columns if c not in (path_column, id_column)]
    _check_label_names(labels, "csv")
    rows = []
    for i, rec in enumerate(table.to_dict("records")):
        entry = rec[path_column]
        if not isinstance(entry, str) or not entry.strip():
            raise DatasetError(f"csv: row {i + 2} of {csv_path} has an empty {path_column!r}")
        resolved = resolve_under(root_dir, entry.strip())
        if id_column is not None:
            image_id = str(rec[id_column])
        else:
            image_id = _relative_id(root_dir, entry.strip())
        rows.append({"image_id": image_id, "path": str(resolved), **{c: rec[c] for c in labels}})
    return _frame(rows, ["image_id", "path", *labels])


# ---------------------------------------------------------------------------
# folder
# ---------------------------------------------------------------------------


def read_folder(path: str | Path, *, group_column: str = "group") -> pd.DataFrame:
    """One sub-folder per group: ``root/<group>/<image>`` (image suffixes any case).

    Hidden entries (names starting with ``.``) and files directly in ``root`` are ignored.
    """
    root = _existing_dir(path, "folder dataset root")
    _check_label_names([group_column], "folder")
    rows = []
    for group_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(group_dir.iterdir()):
            if not _is_image(f) or f.is_dir():
                continue
            rel = f.relative_to(root)
            resolved = resolve_under(root, rel)
            rows.append({"image_id": rel.with_suffix("").as_posix(), "path": str(resolved),
                         group_column: group_dir.name})
    return _frame(rows, ["image_id", "path", group_column])


# ---------------------------------------------------------------------------
# FairFace
# ---------------------------------------------------------------------------

FAIRFACE_SPLITS = ("train", "val")
FAIRFACE_COLUMNS = ("file", "age", "gender", "race", "service_test")


def read_fairface(path: str | Path, *, split: str = "val") -> pd.DataFrame:
    """FairFace: ``root/fairface_label_<split>.csv`` with ``file`` like ``val/1.jpg``.

    Columns: image_id (``file`` without suffix), path, age (bin such as ``"20-29"``),
    gender, race, service_test, split.
    """
    root = _existing_dir(path, "fairface root")
    _check_split(split, FAIRFACE_SPLITS, "fairface")
    label_file = root / f"fairface_label_{split}.csv"
    if not label_file.is_file():
        raise DatasetError(f"fairface: label file {label_file} not found")
    table = _read_table(label_file, "fairface", dtype={"file": str, "age": str})
    missing = [c for c in FAIRFACE_COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(f"fairface: {label_file} lacks column(s) {missing}")
    rows = []
    for rec in table.to_dict("records"):
        entry = str(rec["file"]).strip()
        rows.append({
            "image_id": _relative_id(root, entry),
            "path": str(resolve_under(root, entry)),
            "age": rec["age"], "gender": rec["gender"], "race": rec["race"],
            "service_test": rec["service_test"], "split": split,
        })
    return _frame(rows, ["image_id", "path", "age", "gender", "race", "service_test", "split"])


# ---------------------------------------------------------------------------
# UTKFace
# ---------------------------------------------------------------------------

UTK_GENDERS = ("male", "female")
UTK_RACES = ("White", "Black", "Asian", "Indian", "Others")


def parse_utkface_name(name: str) -> tuple[int, str, str]:
    """Parse ``age_gender_race_datetime.jpg[.chip.jpg]`` into (age, gender, race).

    Raises:
        ValueError: the name does not follow the scheme; the message is the reason.
    """
    stem = name
    if stem.lower().endswith(".chip.jpg"):
        stem = stem[: -len(".chip.jpg")]
    stem = Path(stem).stem if Path(stem).suffix.lower() in IMAGE_SUFFIXES else stem
    fields = stem.split("_")
    if len(fields) != 4:
        raise ValueError(f"expected 4 fields age_gender_race_datetime, found {len(fields)}")
    age, gender, race, stamp = fields
    if not age.isdigit():
        raise ValueError(f"age {age!r} is not a whole number")
    if gender not in ("0", "1"):
        raise ValueError(f"gender {gender!r} is not 0 or 1")
    if race not in ("0", "1", "2", "3", "4"):
        raise ValueError(f"race {race!r} is not in 0-4")
    if not stamp.isdigit():
        raise ValueError(f"datetime {stamp!r} is not digits")
    return int(age), UTK_GENDERS[int(gender)], UTK_RACES[int(race)]


def read_utkface(path: str | Path, *, recursive: bool = False) -> pd.DataFrame:
    """UTKFace: labels encoded in file names (see :func:`parse_utkface_name`).

    Files with an image suffix whose name is malformed are skipped, never guessed:
    they are listed as ``(relative file name, reason)`` in ``df.attrs["skipped"]`` and
    a warning gives their count. Other files are ignored.
    """
    root = _existing_dir(path, "utkface root")
    files = root.rglob("*") if recursive else root.iterdir()
    rows, skipped = [], []
    for f in sorted(files):
        if f.is_dir() or not _is_image(f):
            continue
        rel = f.relative_to(root)
        try:
            age, gender, race = parse_utkface_name(f.name)
        except ValueError as e:
            skipped.append((rel.as_posix(), str(e)))
            continue
        image_id = rel.as_posix()
        image_id = image_id[: -len(".chip.jpg")] if image_id.lower().endswith(".chip.jpg") else image_id
        rows.append({"image_id": str(Path(image_id).with_suffix("").as_posix()),
                     "path": str(resolve_under(root, rel)), "age": age, "gender": gender, "race": race})
    df = _frame(rows, ["image_id", "path", "age", "gender", "race"])
    df["age"] = df["age"].astype("int64")
    df.attrs["skipped"] = skipped
    if skipped:
        warnings.warn(f"utkface: skipped {len(skipped)} file(s) with malformed names "
                      "(listed in df.attrs['skipped'])", stacklevel=2)
    return df


# ---------------------------------------------------------------------------
# CelebA
# ---------------------------------------------------------------------------

CELEBA_SPLITS = ("train", "val", "test", "all")
CELEBA_PARTITIONS = {0: "train", 1: "val", 2: "test"}


def _read_celeba_attributes(attr_file: Path) -> pd.DataFrame:
    """Parse ``list_attr_celeba.txt`` into ``file`` + boolean attribute columns."""
    with open(attr_file, encoding="utf-8") as fh:
        head = [fh.readline(), fh.readline()]
    try:
        count = int(head[0].strip())
    except ValueError:
        raise DatasetError(f"celeba: first line of {attr_file} should be the image count") from None
    names = head[1].split()
    if not names:
        raise DatasetError(f"celeba: second line of {attr_file} should list attribute names")
    table = _read_table(attr_file, "celeba", sep=r"\s+", skiprows=2, header=None,
                        names=["file", *names], dtype={"file": str})
    if len(table) != count:
        raise DatasetError(f"celeba: {attr_file} announces {count} images but lists {len(table)}")
    values = table[names]
    if not values.isin([1, -1]).all().all():
        raise DatasetError(f"celeba: {attr_file} has attribute values other than 1 and -1")
    out = pd.DataFrame({"file": table["file"]})
    for n in names:
        out[n] = values[n] == 1
    return out


def read_celeba(path: str | Path, *, split: str = "test", image_dir: str = "img_align_celeba") -> pd.DataFrame:
    """CelebA: 40 binary attributes (1 → True, -1 → False) and the official partition.

    Needs ``root/list_attr_celeba.txt`` and ``root/list_eval_partition.txt``; images
    live in ``root/<image_dir>``. ``split`` is train, val, test or all. Columns:
    image_id (file name without suffix), path, split, then the attributes.
    """
    root = _existing_dir(path, "celeba root")
    _check_split(split, CELEBA_SPLITS, "celeba")
    attr_file, part_file = root / "list_attr_celeba.txt", root / "list_eval_partition.txt"
    for f in (attr_file, part_file):
        if not f.is_file():
            raise DatasetError(f"celeba: label file {f} not found")
    attrs = _read_celeba_attributes(attr_file)
    parts = _read_table(part_file, "celeba", sep=r"\s+", header=None, names=["file", "partition"],
                        dtype={"file": str})
    if not parts["partition"].isin(list(CELEBA_PARTITIONS)).all():
        raise DatasetError(f"celeba: {part_file} has partitions other than 0, 1, 2")
    part_of = dict(zip(parts["file"], parts["partition"].map(CELEBA_PARTITIONS)))
    lacking = [f for f in attrs["file"] if f not in part_of]
    if lacking:
        raise DatasetError(f"celeba: {len(lacking)} image(s) have no partition, e.g. {lacking[0]!r}")
    attrs.insert(1, "split", attrs["file"].map(part_of))
    if split != "all":
        attrs = attrs[attrs["split"] == split]
    img_root = resolve_under(root, image_dir)
    attrs.insert(0, "path", [str(resolve_under(root, img_root / f)) for f in attrs["file"]])
    attrs.insert(0, "image_id", [Path(f).stem for f in attrs["file"]])
    return attrs.drop(columns="file").reset_index(drop=True)


# ---------------------------------------------------------------------------
# RFW + phenotypes
# ---------------------------------------------------------------------------

RFW_RACES = ("African", "Asian", "Caucasian", "Indian")
PHENOTYPE_COLUMNS = ("skin_type", "eyelid", "nose", "lips", "hair_type", "hair_colour")
_PHENOTYPE_ALIASES = {
    "skin_type": ("skintype", "skin", "skincolour", "skincolor", "skintone", "fitzpatrick"),
    "eyelid": ("eyelid", "eyelids", "eyelidtype", "eyelidshape"),
    "nose": ("nose", "noseshape", "nosetype", "nosewidth"),
    "lips": ("lips", "lip", "lipshape", "lipsshape", "liptype", "lipstype"),
    "hair_type": ("hairtype", "hairtexture", "hair"),
    "hair_colour": ("haircolour", "haircolor"),
}
_IMAGE_ALIASES = ("image", "imagename", "imagepath", "img", "file", "filename", "path")


def _squash(name: str) -> str:
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


def _match_keys(rel: str) -> list[str]:
    """Strings a phenotype entry may use for an image (relative path or basename, ± suffix)."""
    p = Path(rel)
    return list(dict.fromkeys([rel, p.with_suffix("").as_posix(), p.name, p.stem]))


def _normalise_entry(value) -> str:
    """Phenotype image entry with forward slashes and no leading ``./``."""
    s = str(value).strip().replace("\\", "/")
    while s.startswith("./"):
        s = s[2:]
    return s


def _find_image_column(table: pd.DataFrame, image_column: str) -> str:
    """The phenotype table's image column: exact, then case/space-insensitive, then aliases."""
    if image_column in table.columns:
        return image_column
    squashed = {_squash(c): c for c in table.columns}
    for key in (_squash(image_column), *_IMAGE_ALIASES):
        if key in squashed:
            return squashed[key]
    raise DatasetError(f"rfw phenotypes: no image column {image_column!r} (columns: {list(table.columns)})")


def _load_phenotypes(root: Path, phenotypes: str | Path, image_column: str) -> pd.DataFrame:
    """Read the phenotype CSV → columns ``entry`` + canonical phenotype names."""
    p = Path(phenotypes)
    file = p if p.is_absolute() else root / p
    if not file.is_file():
        raise DatasetError(f"rfw: phenotype file {str(phenotypes)!r} not found (relative paths are "
                           f"taken relative to the dataset root {root})")
    table = _read_table(file, "rfw phenotypes")
    col = _find_image_column(table, image_column)
    mapping = normalise_phenotype_columns([c for c in table.columns if c != col])
    if not mapping:
        raise DatasetError(f"rfw phenotypes: no phenotype column recognised in {file} "
                           f"(expected some of {list(PHENOTYPE_COLUMNS)})")
    out = table[[col, *mapping]].rename(columns={col: "entry", **mapping})
    out["entry"] = out["entry"].map(_normalise_entry)
    if "skin_type" in out:
        skin = pd.to_numeric(out["skin_type"], errors="coerce")
        bad = out["skin_type"].notna() & ~skin.isin([1, 2, 3, 4, 5, 6])
        if bad.any():
            raise DatasetError(f"rfw phenotypes: skin type must be 1-6, found {out['skin_type'][bad].iloc[0]!r}")
        out["skin_type"] = skin.astype("Int64")
    return out


def _scan_rfw(root: Path) -> list[dict]:
    """Rows for ``root/<Race>/<identity>/<image>`` over the four RFW race folders."""
    present = [r for r in RFW_RACES if (root / r).is_dir()]
    if not present:
        raise DatasetError(f"rfw: none of the race folders {list(RFW_RACES)} found under {root}")
    rows = []
    for race in present:
        for ident in sorted(d for d in (root / race).iterdir() if d.is_dir() and not d.name.startswith(".")):
            for f in sorted(ident.iterdir()):
                if f.is_dir() or not _is_image(f):
                    continue
                rel = f.relative_to(root)
                rows.append({"image_id": rel.with_suffix("").as_posix(), "path": str(resolve_under(root, rel)),
                             "race": race, "identity": ident.name, "_rel": rel.as_posix()})
    return rows


def read_rfw(path: str | Path, *, phenotypes: str | Path | None = None, image_column: str = "image") -> pd.DataFrame:
    """RFW (``root/<Race>/<identity>/<image>``) with optional phenotype labels.

    Phenotype labels (Yucer et al., WACV 2022) come from the CSV ``phenotypes``
    (absolute, or relative to ``root``). Its columns are renamed to
    ``skin_type, eyelid, nose, lips, hair_type, hair_colour`` ignoring case, spaces,
    ``_``/``-`` and common variants (``"Skin Type"``, ``skin_colour``, ``hair_color``...);
    ``skin_type`` must be 1-6.

    Matching rule: an entry of the image column (backslashes read as ``/``) matches an
    image whose path relative to ``root`` equals it, or whose file name equals it, in
    both cases with or without the file suffix. An entry that matches several images,
    or two entries for one image, raise DatasetError; entries matching no image are
    counted in ``df.attrs["unmatched_phenotypes"]``. Images without labels get NaN.
    """
    root = _existing_dir(path, "rfw root")
    rows = _scan_rfw(root)
    df = _frame(rows, ["image_id", "path", "race", "identity", "_rel"])
    if phenotypes is None:
        return df.drop(columns="_rel")
    labels = _load_phenotypes(root, phenotypes, image_column)
    index: dict[str, list[int]] = {}
    for i, rel in enumerate(df["_rel"]):
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
            raise DatasetError(f"rfw phenotypes: image {df['_rel'][hits[0]]!r} is labelled twice")
        target[hits[0]] = j
    for col in [c for c in labels.columns if c != "entry"]:
        picked = labels[col].reindex([target.get(i, -1) for i in range(len(df))])
        df[col] = picked.to_numpy()
        if col == "skin_type":
            df[col] = df[col].astype("Int64")
    df.attrs["unmatched_phenotypes"] = unmatched
    return df.drop(columns="_rel")


# ---------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------

READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "csv": read_csv,
    "folder": read_folder,
    "fairface": read_fairface,
    "utkface": read_utkface,
    "celeba": read_celeba,
    "rfw": read_rfw,
}


def get_reader(name: str) -> Callable[..., pd.DataFrame]:
    """The reader registered as ``name``; unknown names → DatasetError listing known ones."""
    try:
        return READERS[name]
    except (KeyError, TypeError):
        raise DatasetError(f"unknown dataset reader {name!r}; known readers: {sorted(READERS)}") from None


def reader_options(name: str) -> list[str]:
    """Keyword options accepted by reader ``name``."""
    params = inspect.signature(get_reader(name)).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def supports_split(name: str) -> bool:
    """Whether reader ``name`` takes a ``split`` option."""
    return "split" in reader_options(name)
