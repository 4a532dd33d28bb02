"""Manifests: the fixed list of images an audit runs on.

A manifest is a DataFrame with one row per image: ``image_id`` (unique string),
``path`` (absolute, resolved), the dataset's label columns and ``checksum`` (SHA-256
of the file bytes, or None when the file is missing or unreadable — such images are
not rejected here; they become error rows in the audit). Rows are sorted by
``image_id``.

Subsampling is deterministic for a given ``seed``: every row gets one random rank
(drawn after sorting by ``image_id``), and each group keeps its lowest-ranked rows.
So a smaller ``limit_per_group`` always gives a subset of a larger one.
"""

from __future__ import annotations

import inspect
import typing
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from fairbits.data.images import file_checksum
from fairbits.data.readers import get_reader, reader_options, supports_split
from fairbits.errors import DatasetError
from fairbits.fileio import atomic_write

MANIFEST_COLUMNS = ("image_id", "path", "checksum")
_RANK = "__rank__"


def _as_list(columns: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``"a"`` → ``["a"]``, lists kept, None → ``[]``."""
    if columns is None:
        return []
    return [columns] if isinstance(columns, str) else list(columns)


def _check_columns(df: pd.DataFrame, columns: list[str], what: str) -> None:
    """Every name in ``columns`` must be a column of ``df``."""
    unknown = [c for c in columns if c not in df.columns]
    if unknown:
        labels = [c for c in df.columns if c not in MANIFEST_COLUMNS and c != _RANK]
        raise DatasetError(f"{what}: unknown column(s) {unknown}; dataset columns are {labels}")


def _check_option_types(reader: str, fn, opts: dict) -> None:
    """Each option's value must fit the reader's annotation of that keyword.

    The check is generic (the reader's own signature is the rule), lax as pydantic
    is (a string is a fine ``Path``) but never accepting a list or a number where a
    string goes. Raises DatasetError naming the option, the type it wants and the value.
    """
    from pydantic import TypeAdapter, ValidationError

    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that cannot be resolved: leave the check to the reader
        return
    params = inspect.signature(fn).parameters
    for key, value in opts.items():
        if key not in hints:
            continue
        try:
            TypeAdapter(hints[key]).validate_python(value)
        except ValidationError:
            wanted = params[key].annotation
            wanted = wanted if isinstance(wanted, str) else getattr(wanted, "__name__", str(wanted))
            raise DatasetError(f"reader {reader!r} option {key!r} must be {wanted}, got {type(value).__name__} "
                               f"{value!r}") from None


def _read_dataset(reader: str, path: str | Path, options: dict | None, split) -> pd.DataFrame:
    """Call the named reader with validated options and split."""
    fn = get_reader(reader)
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"dataset path {str(path)!r} does not exist (relative paths in a spec "
                           "are taken relative to the spec file's folder)")
    opts = dict(options or {})
    allowed = reader_options(reader)
    unknown = [k for k in opts if k not in allowed]
    if unknown:
        raise DatasetError(f"reader {reader!r} has no option(s) {unknown}; it accepts {allowed}")
    _check_option_types(reader, fn, opts)
    if split is not None:
        if not supports_split(reader):
            raise DatasetError(f"reader {reader!r} has no splits; remove split={split!r}")
        if "split" in opts and opts["split"] != split:
            raise DatasetError(f"split given twice: {split!r} and options split={opts['split']!r}")
        opts["split"] = split
    return fn(p, **opts)


def _check_ids(df: pd.DataFrame, reader: str) -> None:
    """Required columns present and ``image_id`` unique."""
    _check_columns(df, ["image_id", "path"], f"reader {reader!r} output")
    dup = df["image_id"][df["image_id"].duplicated()]
    if len(dup):
        examples = sorted(set(map(str, dup)))[:5]
        raise DatasetError(f"{len(dup)} duplicated image_id(s), e.g. {examples}; set a unique id column")


def _balance(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Keep the same number of rows (the smallest group's) for every value combination.

    Rows missing a value in ``columns`` cannot be balanced and are dropped (warning).
    """
    missing = df[columns].isna().any(axis=1)
    if missing.any():
        warnings.warn(f"balance_by {columns}: dropped {int(missing.sum())} row(s) with no value",
                      stacklevel=3)
        df = df[~missing]
    if df.empty:
        return df
    smallest = int(df.groupby(columns, sort=False).size().min())
    return _limit(df, columns, smallest)


def _limit(df: pd.DataFrame, columns: list[str], k: int) -> pd.DataFrame:
    """At most ``k`` rows per group of ``columns``: the ``k`` lowest random ranks."""
    ranked = df.sort_values(_RANK, kind="stable")
    return ranked.groupby(columns, sort=False, dropna=False).head(k)


def add_checksums(df: pd.DataFrame, workers: int = 8) -> pd.DataFrame:
    """Set ``checksum`` to each file's SHA-256 (None when unreadable)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        sums = list(pool.map(file_checksum, df["path"]))
    df["checksum"] = pd.Series(sums, index=df.index, dtype=object)
    return df


def build_manifest(
    reader: str,
    path: str | Path,
    *,
    options: dict | None = None,
    split=None,
    limit_per_group: int | None = None,
    balance_by: str | list[str] | None = None,
    group_columns: list[str] | None = None,
    seed: int = 0,
    checksums: bool = True,
) -> pd.DataFrame:
    """Read a dataset with a named reader and fix the images an audit will use.

    Args:
        reader: a name in :data:`fairbits.data.readers.READERS`.
        path: the dataset path (folder or label file, as the reader wants).
        options: keyword options for the reader.
        split: passed to readers that have splits (csv, fairface, celeba).
        limit_per_group: keep at most this many images per group of
            ``group_columns`` (default: the ``balance_by`` columns).
        balance_by: column(s); subsample so every value (combination) has as many
            images as the smallest one.
        group_columns: grouping for ``limit_per_group``.
        seed: seed of the random subsampling.
        checksums: compute SHA-256 checksums (else the column holds None).

    Returns:
        The manifest, sorted by ``image_id``, columns ``image_id, path, <labels>, checksum``.
        ``attrs`` carries the reader's notes (e.g. ``skipped`` for utkface).

    Raises:
        DatasetError: unknown reader or option, missing path, unsupported split,
            unknown column, duplicated ids, or an empty result.
    """
    df = _read_dataset(reader, path, options, split)
    notes = dict(df.attrs)
    _check_ids(df, reader)
    df = df.drop(columns=[c for c in ("checksum",) if c in df.columns])
    df = df.sort_values("image_id", kind="stable").reset_index(drop=True)
    df[_RANK] = np.random.default_rng(seed).permutation(len(df))

    balance = _as_list(balance_by)
    _check_columns(df, balance, "balance_by")
    if balance:
        df = _balance(df, balance)
    if limit_per_group is not None:
        if isinstance(limit_per_group, bool) or not isinstance(limit_per_group, (int, np.integer)) \
                or limit_per_group < 1:
            raise DatasetError(f"limit_per_group must be a positive integer, got {limit_per_group!r}")
        groups = _as_list(group_columns) or balance
        if not groups:
            raise DatasetError("limit_per_group needs group_columns (or balance_by)")
        _check_columns(df, groups, "group_columns")
        df = _limit(df, groups, int(limit_per_group))

    df = df.drop(columns=_RANK).sort_values("image_id", kind="stable").reset_index(drop=True)
    if df.empty:
        raise DatasetError(f"dataset {str(path)!r} (reader {reader!r}) gives no images with these options")
    if checksums:
        add_checksums(df)
    else:
        df["checksum"] = pd.Series([None] * len(df), index=df.index, dtype=object)
    df.attrs = {"reader": reader, **notes}
    return df


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Store a manifest as Parquet, atomically (temporary file, then ``os.replace``)."""
    _check_columns(df, list(MANIFEST_COLUMNS), "manifest")
    return atomic_write(path, lambda tmp: df.to_parquet(tmp, engine="pyarrow", index=False))


def read_manifest_file(path: str | Path) -> pd.DataFrame:
    """Load a manifest written by :func:`write_manifest` (missing checksums read as None)."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"manifest file {str(path)!r} not found")
    df = pd.read_parquet(p, engine="pyarrow")
    _check_columns(df, list(MANIFEST_COLUMNS), f"manifest {p}")
    sums = df["checksum"].astype(object)
    df["checksum"] = sums.where(sums.notna(), None)
    return df


__all__ = ["MANIFEST_COLUMNS", "build_manifest", "write_manifest", "read_manifest_file", "add_checksums"]
