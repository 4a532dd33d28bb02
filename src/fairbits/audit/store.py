"""The result store of a run directory: Parquet parts per cell, written atomically.

Layout of ``RUN_DIR``::

    run.json                    what was asked (spec, cells, groups, measures, seed)
    manifest.parquet            one row per image (labels, path, checksum)
    cells/<cell_id>/part-*.parquet   per-image rows, one file per finished batch; merged
                                     into one part when the cell finishes
    cells/<cell_id>/DONE        written once every image of the cell has a row

    faces/part-*.parquet        face analyses of the originals (fairbits.audit.faces)
    features/<space>/<key>/part-*.npz   realism features (fairbits.measures.realism)
    figures/, *.csv, report.html, identity.json   derived by ``fairbits report``
    .fairbits.lock              held by the process writing the run (fairbits.audit.lock)

A part becomes visible only through ``os.replace`` of a finished temporary file, so a
killed run leaves whole parts or nothing; resuming skips the image ids already stored,
so no row is written twice and none is missing. A part that is lost or unreadable is
noticed on resume (:meth:`RunStore.scan_cell`): an unreadable one is moved aside as
``part-*.parquet.corrupt`` and the rows it held are computed again.

A finished cell's parts are merged into one (:meth:`RunStore.compact`): the merged part
is written first, under a number after every part it merges, and the merged parts are
removed after, so a kill in between leaves each row twice, never once less; readers keep
the last copy of a row (:data:`RESULT_KEY`) and resume counts image ids, so both states
read the same. Parts of one cell are read as one Arrow table (column types unified:
a column that is empty in one part and text in another is text), so the rows read the
same however they were split into parts.

fairbits writes only into a new folder, an empty one, or a run it made, and removes
only the temporaries of its own writes inside that layout.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fairbits.audit.lock import LOCK_NAME
from fairbits.data.manifest import read_manifest_file, write_manifest
from fairbits.errors import DiskFull, FairbitsError, FairbitsWarning
from fairbits.fileio import atomic_write, atomic_write_text, last_part_number, part_path

RESULT_KEY = ("image_id", "codec", "setting")


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` atomically."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def write_json(obj, path: Path) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


class UnreadablePart(FairbitsError):
    """A stored part file cannot be read; the message names it and says how to recover."""


def _unreadable(path: Path, error: Exception) -> UnreadablePart:
    return UnreadablePart(
        f"{path} is unreadable ({type(error).__name__}: {error}). Re-run the same "
        "`fairbits audit SPEC --out RUN_DIR` command: it moves the file aside and computes its rows again")


def _read_part(path: Path) -> pa.Table:
    """One part as an Arrow table (``ParquetFile.read``: about 0.3 ms for a batch's part,
    where ``pd.read_parquet`` and ``pq.read_table`` spend about 3 ms setting up a dataset).

    Raises:
        UnreadablePart: the file cannot be read.
    """
    try:
        with pq.ParquetFile(path) as f:
            return f.read(use_threads=False)
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(path, e) from None


def _concat(tables: list[pa.Table]) -> pa.Table | None:
    """The non-empty ``tables`` as one, in order, column types unified (None: nothing, or
    parts that disagree on a column's type, e.g. text in one and numbers in another)."""
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return None
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _to_frame(tables: list[pa.Table]) -> pd.DataFrame:
    """One DataFrame of the rows of ``tables``, in order (empty tables add nothing)."""
    table = _concat(tables)
    if table is not None:
        return table.to_pandas()
    frames = [t.to_pandas() for t in tables if t.num_rows]  # types disagree: pandas unifies them
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _keep_last(table: pa.Table) -> pa.Table:
    """``table`` without the earlier copies of a row (same :data:`RESULT_KEY`), order kept."""
    key = [c for c in RESULT_KEY if c in table.column_names]
    if not key:
        return table
    last = ~table.select(key).to_pandas().duplicated(keep="last").to_numpy()
    return table if last.all() else table.filter(pa.array(last))


@dataclass
class CellScan:
    """What a cell's parts hold: ``ids`` with a row, ``unreadable`` part files (with the reason)."""

    ids: set[str] = field(default_factory=set)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


class RunStore:
    """Read and write one run directory.

    A store numbers the parts it appends to a cell from a count (the cell folder is listed
    once, at its first part), so one writer per cell per store: the run's lock
    (:mod:`fairbits.audit.lock`) allows one writing process per run. A part is published
    only under a free name, so a second writer that took a number makes this one list the
    folder again instead of replacing that part.
    """

    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir)
        self._next_part: dict[str, int] = {}  # cell id -> number of the next part it writes

    def check_target(self) -> None:
        """Refuse a ``--out`` that fairbits must not write into.

        Raises:
            FairbitsError: the path is a file, or an existing non-empty folder that is not a
                fairbits run (no ``run.json``).
        """
        if self.root.exists() and not self.root.is_dir():
            raise FairbitsError(f"--out {self.root} is a file, not a folder: give a folder for the run")
        if self.root.is_dir() and not self.info_path.is_file():
            others = sorted(p.name for p in self.root.iterdir() if p.name != LOCK_NAME)
            if others:
                raise FairbitsError(
                    f"--out {self.root} is a folder with other files ({', '.join(others[:3])}"
                    f"{', ...' if len(others) > 3 else ''}) and not a fairbits run (no run.json); "
                    "fairbits writes only into a new or empty folder or a run it made: choose another --out")

    def _layout_dirs(self) -> list[Path]:
        """Every folder of the run layout that fairbits writes files into."""
        dirs = [self.root, self.root / "faces", self.root / "figures"]
        dirs += [d for d in (self.root / "cells").glob("*") if d.is_dir()]
        dirs += [d for d in (self.root / "features").glob("*/*") if d.is_dir()]
        return dirs

    def remove_partial_writes(self) -> int:
        """Delete the temporary files of writes a killed run left unfinished; returns how many.

        Only files named as :func:`fairbits.fileio.atomic_write` names its temporaries
        (``.NAME.XXXX.tmp``), and only in the folders of the run layout (not in any folder
        below them), are removed; finished files are never touched.
        """
        stale = [p for d in self._layout_dirs() for p in d.glob(".*.tmp") if p.is_file()]
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)

    # -- run description -------------------------------------------------
    @property
    def info_path(self) -> Path:
        return self.root / "run.json"

    def read_info(self) -> dict:
        if not self.info_path.is_file():
            raise FairbitsError(f"{self.root} is not a fairbits run directory (no run.json)")
        try:
            return json.loads(self.info_path.read_text())
        except (OSError, ValueError) as e:
            raise FairbitsError(f"{self.info_path} is unreadable ({e}); the run cannot be resumed or "
                                "reported: start a new run with another --out") from None

    def write_info(self, info: dict) -> None:
        write_json(info, self.info_path)

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.parquet"

    def read_manifest(self) -> pd.DataFrame:
        """The stored manifest. Raises :class:`UnreadablePart` if the file is damaged."""
        try:
            return read_manifest_file(self.manifest_path)
        except (pa.ArrowException, OSError) as e:
            raise _unreadable(self.manifest_path, e) from None

    def write_manifest(self, manifest: pd.DataFrame) -> None:
        write_manifest(manifest, self.manifest_path)

    # -- cells -------------------------------------------------------------
    def cell_dir(self, cell_id: str) -> Path:
        """``cells/<cell_id>``; an id that would leave that folder (``/``, ``..``) is refused."""
        if not cell_id or any(c in cell_id for c in "/\\\0") or cell_id.startswith("."):
            raise FairbitsError(f"{cell_id!r} is not a cell id (codec__setting, no path separators); "
                                "a codec name or setting must not contain '/' or start with '.'")
        return self.root / "cells" / cell_id

    def is_done(self, cell_id: str) -> bool:
        return (self.cell_dir(cell_id) / "DONE").is_file()

    def mark_done(self, cell_id: str) -> None:
        """Merge the cell's parts into one (:meth:`compact`), then write ``DONE``.

        A part that cannot be read, or a full disk, leaves the parts as they are (with a
        warning); the next resume sets an unreadable part aside and computes its rows again.
        """
        try:
            self.compact(cell_id)
        except (UnreadablePart, DiskFull) as e:
            warnings.warn(f"cell {cell_id} was not compacted: {e}", FairbitsWarning, stacklevel=2)
        atomic_write_text(self.cell_dir(cell_id) / "DONE", "done\n")

    def unmark_done(self, cell_id: str) -> None:
        (self.cell_dir(cell_id) / "DONE").unlink(missing_ok=True)

    def scan_cell(self, cell_id: str) -> CellScan:
        """Read every part's ``image_id`` column; parts that cannot be read are listed."""
        scan = CellScan()
        for p in self.parts(cell_id):
            try:
                with pq.ParquetFile(p) as f:
                    scan.ids.update(f.read(columns=["image_id"], use_threads=False).column("image_id").to_pylist())
            except (pa.ArrowException, OSError, KeyError) as e:
                scan.unreadable.append((p, f"{type(e).__name__}: {e}"))
        return scan

    @staticmethod
    def set_aside(part: Path) -> Path:
        """Rename an unreadable part to ``NAME.corrupt`` (kept for inspection, no longer read)."""
        target = part.with_name(part.name + ".corrupt")
        part.replace(target)
        return target

    def parts(self, cell_id: str) -> list[Path]:
        d = self.cell_dir(cell_id)
        return sorted(d.glob("part-*.parquet")) if d.is_dir() else []

    def append(self, cell_id: str, rows: pd.DataFrame) -> Path:
        """Write ``rows`` as the next part of the cell, atomically; returns its path."""
        return self._write_part(cell_id, pa.Table.from_pandas(rows, preserve_index=False))

    def _write_part(self, cell_id: str, table: pa.Table, at_least: int = 0) -> Path:
        """Publish ``table`` as the cell's next part (number ``at_least`` or more) under a
        name no other part has."""
        folder = self.cell_dir(cell_id)
        n = self._next_part.get(cell_id)
        n = max(last_part_number(folder, ".parquet") + 1 if n is None else n, at_least)
        while True:
            path = part_path(folder, n, ".parquet")
            try:
                atomic_write(path, lambda tmp: pq.write_table(table, tmp), replace=False)
            except FileExistsError:
                if not path.exists():  # not a clash of part names (e.g. the cell folder is a file)
                    raise
                n = max(n + 1, last_part_number(folder, ".parquet") + 1)  # another writer: list again
                continue
            self._next_part[cell_id] = n + 1
            return path

    def compact(self, cell_id: str) -> Path | None:
        """Merge the cell's parts into one part; returns it (None: no part, no row, or
        parts that disagree on column types).

        The merged part holds every row of the parts, in order, the last copy of a row kept,
        with the column types :meth:`read_cell` gives, so :func:`load_results` reads the same
        table before and after. It is written (atomically) before any part is removed; a
        kill between the two leaves rows twice, which every reader tolerates, and the next
        compaction merges them. Parts whose column types disagree are left as they are
        (with a warning).

        Raises:
            UnreadablePart: a part cannot be read (nothing was changed).
        """
        parts = self.parts(cell_id)
        if len(parts) <= 1:
            return parts[0] if parts else None
        tables = [_read_part(p) for p in parts]
        if not any(t.num_rows for t in tables):
            return None
        merged = _concat(tables)
        if merged is None:
            warnings.warn(f"cell {cell_id}: its parts disagree on column types; they were not merged",
                          FairbitsWarning, stacklevel=2)
            return None
        after = last_part_number(self.cell_dir(cell_id), ".parquet") + 1  # read after every part it merges
        path = self._write_part(cell_id, _keep_last(merged), at_least=after)
        for p in parts:
            self._remove_part(p)
        return path

    @staticmethod
    def _remove_part(part: Path) -> None:
        part.unlink(missing_ok=True)

    def read_cell(self, cell_id: str) -> pd.DataFrame:
        """Every row of a cell, parts in order, column types unified across parts (an empty
        DataFrame when it has none). Raises :class:`UnreadablePart` naming a part that
        cannot be read."""
        return _to_frame(self._read_tables(cell_id))

    def _read_tables(self, cell_id: str) -> list[pa.Table]:
        return [_read_part(p) for p in self.parts(cell_id)]


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """All per-image rows of a run as one DataFrame.

    Columns: ``image_id, codec, setting, quality, target_bpp, bpp, num_bytes, height,
    width``, the measure columns, ``error`` (missing when fine), then the dataset's label
    columns from the manifest (so the group columns are there). One row per
    ``(image_id, codec, setting)`` (the last stored copy), sorted by cell order then image
    id. Every part of every cell is read as one Arrow table, so a column's type does not
    depend on how the rows were split into parts or cells (``error`` is text when any row
    has one, else all None).
    """
    store = RunStore(run_dir)
    info = store.read_info()
    results = _to_frame([t for c in info["cells"] for t in store._read_tables(c["id"])])
    if not len(results):
        raise FairbitsError(f"{run_dir} has no results yet: run `fairbits audit` first")
    results = results.drop_duplicates(list(RESULT_KEY), keep="last")
    manifest = store.read_manifest()
    labels = manifest.drop(columns=[c for c in ("path", "checksum") if c in manifest.columns])
    results = results.merge(labels, on="image_id", how="left", validate="many_to_one")
    order = {c["id"]: i for i, c in enumerate(info["cells"])}
    results["_order"] = (results["codec"] + "__" + results["setting"]).map(order)
    return results.sort_values(["_order", "image_id"]).drop(columns="_order").reset_index(drop=True)
