"""Helpers shared by the dataset readers: paths kept under the dataset root, ids, tables.

Safety rule shared by all readers: every image path is resolved (symlinks followed) and
must lie under the dataset root; an entry that escapes it (``..``, an absolute path
elsewhere, a symlink pointing outside) raises :class:`~fairbits.errors.DatasetError`
naming the entry.

Image ids are paths relative to the root, with forward slashes and without the file
suffix (``img/0001.png`` → ``img/0001``). When two files differ only by their suffix
(``x.jpg`` and ``x.png`` in one folder) each of them keeps its suffix in the id
(``g/x.jpg``, ``g/x.png``) so every file gets its own id; files without such a twin keep
the short id, so the ids of a dataset without clashes never change.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from fairbits.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
RESERVED_COLUMNS = ("image_id", "path")
REL = "_rel"   # private column: the entry's path relative to the root, suffix kept


def existing_dir(path: str | Path, what: str) -> Path:
    """Resolve ``path`` and require it to be a directory."""
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise DatasetError(f"{what} {str(path)!r} is not a directory")
    return p


def existing_file(path: str | Path, what: str) -> Path:
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


def relative_entry(root: Path, entry: str | Path) -> str:
    """The entry's path relative to root with forward slashes, suffix kept.

    ``entry`` must already have passed :func:`resolve_under`; ``a/../b.png`` → ``b.png``.
    """
    lexical = Path(os.path.normpath(root / entry))
    rel = lexical.relative_to(root) if lexical.is_relative_to(root) else (root / entry).resolve().relative_to(root)
    return rel.as_posix()


def strip_suffix(rel: str) -> str:
    """``a/b.png`` → ``a/b`` (the default image id)."""
    return Path(rel).with_suffix("").as_posix() if Path(rel).suffix else rel


def is_image(p: Path) -> bool:
    """True for a visible file name with a known image suffix (any case)."""
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (sorted; hidden entries and folders skipped)."""
    return [f for f in sorted(folder.iterdir()) if is_image(f) and not f.is_dir()]


def subfolders(folder: Path) -> list[Path]:
    """The visible folders directly in ``folder`` (sorted; names starting with ``.`` skipped)."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def file_row(root: Path, rel: str, image_id: str | None = None, **labels) -> dict:
    """A reader row for the file ``rel`` found under ``root``: ``image_id`` (default
    :func:`strip_suffix` of ``rel``), ``path`` (checked by :func:`resolve_under`), the
    labels, and :data:`REL`."""
    return {"image_id": strip_suffix(rel) if image_id is None else image_id,
            "path": str(resolve_under(root, rel)), **labels, REL: rel}


def check_label_names(columns, reader: str) -> None:
    """Refuse label columns that would clash with the manifest's own columns."""
    clash = [c for c in columns if c in RESERVED_COLUMNS + ("checksum",)]
    if clash:
        raise DatasetError(f"{reader}: label column(s) {clash} clash with reserved manifest columns")


def frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """Build a DataFrame with a fixed column order, also when there are no rows."""
    return pd.DataFrame(rows, columns=columns)


def check_split(split: str, allowed: tuple[str, ...], reader: str) -> str:
    """Validate a split name against the reader's list."""
    if split not in allowed:
        raise DatasetError(f"{reader}: unknown split {split!r}; choose one of {list(allowed)}")
    return split


def read_table(path: Path, reader: str, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv`` with parse failures turned into DatasetError."""
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise DatasetError(f"{reader}: cannot parse {path}: {e}") from None


def first_dir(candidates: list[Path]) -> Path | None:
    """The first existing directory of ``candidates`` (None if none exists)."""
    return next((c for c in candidates if c.is_dir()), None)


def unique_ids(df: pd.DataFrame, reader: str) -> pd.DataFrame:
    """Give files that share an id apart from their suffix an id that keeps the suffix.

    ``df`` has ``image_id`` (the short id) and :data:`REL` (the relative path with its
    suffix). Rows whose short id is shared by rows with *different* relative paths get
    their :data:`REL` as id; the list of those paths goes to ``df.attrs["id_clashes"]``
    and a warning names the first ones. Rows listing the very same file twice are left
    alone (the manifest reports them as duplicated ids). The :data:`REL` column stays.
    """
    df.attrs.setdefault("id_clashes", [])
    if df.empty:
        return df
    changed = pd.Series(False, index=df.index)
    while True:   # a kept suffix can meet another file's short id (x.jpg vs x.jpg.png): repeat
        clash = df.groupby("image_id", sort=False)[REL].transform("nunique") > 1
        clash &= df["image_id"] != df[REL]
        if not clash.any():
            break
        df.loc[clash, "image_id"] = df.loc[clash, REL]
        changed |= clash
    if changed.any():
        names = sorted(df.loc[changed, REL].unique().tolist())
        df.attrs["id_clashes"] = names
        warnings.warn(f"{reader}: {len(names)} file(s) differ from another only by their suffix, e.g. "
                      f"{names[:4]}; their image ids keep the suffix (listed in df.attrs['id_clashes'])",
                      stacklevel=3)
    return df


__all__ = ["IMAGE_SUFFIXES", "RESERVED_COLUMNS", "REL", "check_label_names", "check_split", "existing_dir",
           "existing_file", "file_row", "first_dir", "frame", "image_files", "is_image", "read_table",
           "relative_entry", "resolve_under", "strip_suffix", "subfolders", "unique_ids"]
