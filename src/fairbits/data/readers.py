"""Dataset readers: turn a labelled face dataset on disk into a table of images.

Every reader is a function ``read_<name>(path, **options) -> pandas.DataFrame`` that
returns one row per image with the columns ``image_id`` (unique string), ``path``
(absolute, resolved) and the dataset's label columns. Checksums are added later by
:func:`fairbits.data.manifest.build_manifest`. Readers are reached by name through
:data:`READERS` / :func:`get_reader`. Each reader reads the layout its dataset ships in;
``docs/datasets.md`` says where each detail of those layouts comes from.

Paths and ids follow :mod:`fairbits.data.layout`: every image path must resolve under
the dataset root (else DatasetError naming the entry); ids are relative paths without
the suffix, except that files differing only by their suffix keep it (``g/x.jpg`` and
``g/x.png``). A listed image that does not exist is *not* an error here. Notes about
what a reader skipped or could not match go to ``df.attrs``.

Readers that accept a ``split`` keyword (csv, fairface, celeba) support splits;
:func:`supports_split` tells which. RFW lives in :mod:`fairbits.data.rfw`.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Callable

import pandas as pd

from fairbits.data.layout import (IMAGE_SUFFIXES, REL, RESERVED_COLUMNS, check_label_names, check_split,  # noqa: F401
                                  existing_dir, existing_file, file_row, first_dir, frame, image_files, is_image,
                                  read_table, relative_entry, resolve_under, strip_suffix, subfolders, unique_ids)
from fairbits.data.rfw import (LANDMARK_COLUMNS, PHENOTYPE_COLUMNS, RFW_RACES,  # noqa: F401
                               normalise_phenotype_columns, read_rfw)
from fairbits.errors import DatasetError

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
            CSV has one, else the relative path without suffix (with it for files that
            differ only by their suffix).
        root: dataset root; default the CSV's folder; a relative root is taken relative
            to the CSV's folder.
        split: keep only rows whose ``split`` column equals this value (the CSV must
            have a ``split`` column).
    """
    csv_path = existing_file(path, "csv label file")
    base = csv_path.parent
    root_dir = existing_dir(base / root if root is not None else base, "csv root")
    table = read_table(csv_path, "csv")
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
    check_label_names(labels, "csv")
    rows = []
    for i, rec in enumerate(table.to_dict("records")):
        entry = rec[path_column]
        if not isinstance(entry, str) or not entry.strip():
            raise DatasetError(f"csv: row {i + 2} of {csv_path} has an empty {path_column!r}")
        resolved = resolve_under(root_dir, entry.strip())
        rel = relative_entry(root_dir, entry.strip())
        image_id = str(rec[id_column]) if id_column is not None else strip_suffix(rel)
        rows.append({"image_id": image_id, "path": str(resolved), **{c: rec[c] for c in labels}, REL: rel})
    df = frame(rows, ["image_id", "path", *labels, REL])
    if id_column is None:
        df = unique_ids(df, "csv")
    return df.drop(columns=REL)


# ---------------------------------------------------------------------------
# folder
# ---------------------------------------------------------------------------


def read_folder(path: str | Path, *, group_column: str = "group") -> pd.DataFrame:
    """One sub-folder per group: ``root/<group>/<image>`` (image suffixes any case).

    Hidden entries (names starting with ``.``) and files directly in ``root`` are ignored.
    Ids are ``<group>/<stem>``; ``x.jpg`` and ``x.png`` in one folder become
    ``<group>/x.jpg`` and ``<group>/x.png`` (noted in ``df.attrs["id_clashes"]``).
    """
    root = existing_dir(path, "folder dataset root")
    check_label_names([group_column], "folder")
    rows = [file_row(root, f.relative_to(root).as_posix(), **{group_column: group_dir.name})
            for group_dir in subfolders(root) for f in image_files(group_dir)]
    return unique_ids(frame(rows, ["image_id", "path", group_column, REL]), "folder").drop(columns=REL)


# ---------------------------------------------------------------------------
# FairFace
# ---------------------------------------------------------------------------

FAIRFACE_SPLITS = ("train", "val")
FAIRFACE_COLUMNS = ("file", "age", "gender", "race", "service_test")
FAIRFACE_PADDINGS = {0.25: "fairface-img-margin025-trainval", 1.25: "fairface-img-margin125-trainval"}


def _fairface_padding_dir(root: Path, padding) -> Path:
    """The image folder of one padding variant (also when unzipped into a same-named folder)."""
    try:
        name = FAIRFACE_PADDINGS[float(padding)]
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"fairface: padding must be 0.25 or 1.25, got {padding!r}") from None
    folder = root / name
    if (folder / name).is_dir():
        folder = folder / name
    if not folder.is_dir():
        raise DatasetError(f"fairface: padding {padding} asks for the image folder {folder}, which does "
                           f"not exist (unzip {name}.zip there, or give image_dir)")
    return folder


def _fairface_image_dir(root: Path, split: str, image_dir, padding) -> tuple[Path, float | None]:
    """``(folder holding train/ and val/, padding or None)``."""
    if image_dir is not None and padding is not None:
        raise DatasetError("fairface: give image_dir or padding, not both")
    if image_dir is not None:
        folder = resolve_under(root, image_dir)
        pad = next((p for p, n in FAIRFACE_PADDINGS.items() if n in folder.parts), None)
    elif padding is not None:
        folder, pad = _fairface_padding_dir(root, padding), float(padding)
    elif (root / split).is_dir():
        folder, pad = root, None
    else:
        found = [p for p, n in FAIRFACE_PADDINGS.items() if (root / n).is_dir()]
        if len(found) > 1:
            raise DatasetError(f"fairface: both image folders {list(FAIRFACE_PADDINGS.values())} are under "
                               f"{root}; choose one with padding: 0.25 or padding: 1.25")
        if not found:
            raise DatasetError(f"fairface: no image folder for split {split!r}: expected {root / split}/ or "
                               f"{root}/<{' or '.join(FAIRFACE_PADDINGS.values())}>/{split}/ "
                               "(or set image_dir)")
        folder, pad = _fairface_padding_dir(root, found[0]), found[0]
    if not (folder / split).is_dir():
        raise DatasetError(f"fairface: image folder {folder} has no {split}/ folder")
    return folder, pad


def read_fairface(path: str | Path, *, split: str = "val", padding: float | None = None,
                  image_dir: str | None = None) -> pd.DataFrame:
    """FairFace: ``root/fairface_label_<split>.csv`` whose ``file`` is like ``val/1.jpg``.

    ``file`` is relative to the image folder, which is ``root`` itself (``root/val/``),
    or one of the two published padding variants unzipped under ``root``:
    ``fairface-img-margin025-trainval/`` (padding 0.25) and
    ``fairface-img-margin125-trainval/`` (padding 1.25, more background around the face).
    With both present, ``padding`` chooses; ``image_dir`` names any other folder under
    ``root``. Ids are ``file`` without suffix (``val/1``), the same for both paddings.

    Columns: image_id, path, age (bin such as ``"20-29"``), gender, race, service_test
    (bool), split. ``attrs``: ``image_dir`` (relative to root) and ``padding``.
    """
    root = existing_dir(path, "fairface root")
    check_split(split, FAIRFACE_SPLITS, "fairface")
    label_file = root / f"fairface_label_{split}.csv"
    if not label_file.is_file():
        raise DatasetError(f"fairface: label file {label_file} not found")
    folder, pad = _fairface_image_dir(root, split, image_dir, padding)
    table = read_table(label_file, "fairface", dtype={"file": str, "age": str})
    missing = [c for c in FAIRFACE_COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(f"fairface: {label_file} lacks column(s) {missing}")
    rows = []
    for rec in table.to_dict("records"):
        entry = str(rec["file"]).strip()
        resolved = resolve_under(root, folder / entry)
        rel = relative_entry(folder, entry)
        rows.append({"image_id": strip_suffix(rel), "path": str(resolved), "age": rec["age"],
                     "gender": rec["gender"], "race": rec["race"], "service_test": _bool(rec["service_test"]),
                     "split": split, REL: rel})
    df = unique_ids(frame(rows, ["image_id", "path", "age", "gender", "race", "service_test", "split", REL]),
                    "fairface").drop(columns=REL)
    df.attrs.update({"image_dir": folder.relative_to(root).as_posix(), "padding": pad})
    return df


def _bool(value):
    """``True``/``"True"``/``"true"`` → True (and False alike); anything else unchanged."""
    s = str(value).strip().lower()
    return True if s == "true" else False if s == "false" else value


# ---------------------------------------------------------------------------
# UTKFace
# ---------------------------------------------------------------------------

UTK_GENDERS = ("male", "female")
UTK_RACES = ("White", "Black", "Asian", "Indian", "Others")
UTK_PARTS = {"aligned": ("UTKFace",), "cropped": ("crop_part1",), "wild": ("part1", "part2", "part3")}


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


def _utk_folders(root: Path, part: str | None, recursive: bool) -> list[Path]:
    """The folders to list: ``root`` itself or the published parts found under it."""
    if part is not None:
        if part not in UTK_PARTS:
            raise DatasetError(f"utkface: part must be one of {list(UTK_PARTS)}, got {part!r}")
        found = [root / d for d in UTK_PARTS[part] if (root / d).is_dir()]
        if not found:
            raise DatasetError(f"utkface: part {part!r} needs {' or '.join(UTK_PARTS[part])}/ under {root}")
        return found
    if recursive or image_files(root):
        return [root]
    present = {p: [root / d for d in ds if (root / d).is_dir()] for p, ds in UTK_PARTS.items()}
    present = {p: fs for p, fs in present.items() if fs}
    if len(present) > 1:
        raise DatasetError(f"utkface: {root} holds several published parts {sorted(present)} (the same people, "
                           f"cropped differently); choose one with part: {' | '.join(sorted(present))}")
    return next(iter(present.values()), [root])


def read_utkface(path: str | Path, *, recursive: bool = False, part: str | None = None) -> pd.DataFrame:
    """UTKFace: labels encoded in file names (see :func:`parse_utkface_name`).

    The images are the files directly in ``path``, all files below it with
    ``recursive``, or one published part under ``path``: ``part: aligned`` (``UTKFace/``,
    aligned and cropped, names ``*.jpg.chip.jpg``), ``cropped`` (``crop_part1/``) or
    ``wild`` (the in-the-wild ``part1/``, ``part2/``, ``part3/``). Without ``part`` and
    with no images directly in ``path``, the one part present is used (several present:
    DatasetError asking to choose). Ids are relative paths without ``.chip.jpg``/suffix.

    Files with an image suffix whose name is malformed (e.g. a missing field, as in
    ``39_1_20170116174525125.jpg.chip.jpg``) are skipped, never guessed: they are listed
    as ``(relative file name, reason)`` in ``df.attrs["skipped"]`` and a warning gives
    their count. Other files are ignored.
    """
    root = existing_dir(path, "utkface root")
    rows, skipped = [], []
    for folder in _utk_folders(root, part, recursive):
        files = sorted(folder.rglob("*")) if recursive else image_files(folder)
        for f in files:
            if f.is_dir() or not is_image(f):
                continue
            rel = f.relative_to(root).as_posix()
            try:
                age, gender, race = parse_utkface_name(f.name)
            except ValueError as e:
                skipped.append((rel, str(e)))
                continue
            short = rel[: -len(".chip.jpg")] if rel.lower().endswith(".chip.jpg") else rel
            rows.append(file_row(root, rel, strip_suffix(short), age=age, gender=gender, race=race))
    df = unique_ids(frame(rows, ["image_id", "path", "age", "gender", "race", REL]), "utkface").drop(columns=REL)
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
    table = read_table(attr_file, "celeba", sep=r"\s+", skiprows=2, header=None,
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


def _celeba_file(root: Path, name: str, folders: tuple[str, ...]) -> Path | None:
    """``name`` in ``root`` or one of its ``folders`` (the Google Drive layout's Anno/, Eval/)."""
    return next((root / d / name for d in ("", *folders) if (root / d / name).is_file()), None)


def read_celeba(path: str | Path, *, split: str = "test", image_dir: str = "img_align_celeba") -> pd.DataFrame:
    """CelebA: 40 binary attributes (1 → True, -1 → False), the official partition, identities.

    Needs ``list_attr_celeba.txt`` (first line the image count, second the attribute
    names) and ``list_eval_partition.txt`` (``file partition``, 0 train / 1 val / 2 test)
    in ``root`` (torchvision's layout) or in ``root/Anno`` and ``root/Eval`` (the Google
    Drive layout). Images live in ``root/<image_dir>`` or ``root/Img/<image_dir>``.
    ``identity_CelebA.txt`` (``file identity``), where present, adds an ``identity``
    column (int). ``split`` is train, val, test or all. Columns: image_id (file name
    without suffix), path, split, [identity], then the attributes.
    """
    root = existing_dir(path, "celeba root")
    check_split(split, CELEBA_SPLITS, "celeba")
    attr_file = _celeba_file(root, "list_attr_celeba.txt", ("Anno",))
    part_file = _celeba_file(root, "list_eval_partition.txt", ("Eval", "Anno"))
    for f, name in ((attr_file, "list_attr_celeba.txt"), (part_file, "list_eval_partition.txt")):
        if f is None:
            raise DatasetError(f"celeba: label file {root / name} not found (nor in Anno/ or Eval/)")
    attrs = _read_celeba_attributes(attr_file)
    parts = read_table(part_file, "celeba", sep=r"\s+", header=None, names=["file", "partition"],
                       dtype={"file": str})
    if not parts["partition"].isin(list(CELEBA_PARTITIONS)).all():
        raise DatasetError(f"celeba: {part_file} has partitions other than 0, 1, 2")
    part_of = dict(zip(parts["file"], parts["partition"].map(CELEBA_PARTITIONS)))
    lacking = [f for f in attrs["file"] if f not in part_of]
    if lacking:
        raise DatasetError(f"celeba: {len(lacking)} image(s) have no partition, e.g. {lacking[0]!r}")
    attrs.insert(1, "split", attrs["file"].map(part_of))
    id_file = _celeba_file(root, "identity_CelebA.txt", ("Anno",))
    if id_file is not None:
        ids = read_table(id_file, "celeba", sep=r"\s+", header=None, names=["file", "identity"],
                         dtype={"file": str})
        identity = attrs["file"].map(dict(zip(ids["file"], ids["identity"])))
        attrs.insert(2, "identity", identity.astype("Int64"))
    if split != "all":
        attrs = attrs[attrs["split"] == split]
    img_root = first_dir([root / image_dir, root / "Img" / image_dir]) or root / image_dir
    img_root = resolve_under(root, img_root)
    attrs.insert(0, "path", [str(resolve_under(root, img_root / f)) for f in attrs["file"]])
    attrs.insert(0, "image_id", [strip_suffix(f) for f in attrs["file"]])
    attrs[REL] = attrs["file"]
    return unique_ids(attrs.drop(columns="file").reset_index(drop=True), "celeba").drop(columns=REL)


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
