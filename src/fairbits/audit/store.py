"""The result store of a run directory: Parquet parts per cell, written atomically.

Layout of ``RUN_DIR``::

    run.json                    what was asked (spec, cells, groups, measures, seed)
    manifest.parquet            one row per image (labels, path, checksum)
    cells/<cell_id>/part-*.parquet   per-image rows, one file per finished batch
    cells/<cell_id>/DONE        written once every image of the cell has a row

A part becomes visible only through ``os.replace`` of a finished temporary file, so a
killed run leaves whole parts or nothing; resuming skips the image ids already stored,
so no row is written twice and none is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fairbits.data.manifest import read_manifest_file, write_manifest
from fairbits.errors import FairbitsError
from fairbits.fileio import atomic_write, atomic_write_text

RESULT_KEY = ("image_id", "codec", "setting")


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` atomically."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def write_json(obj, path: Path) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


class RunStore:
    """Read and write one run directory."""

    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir)

    def remove_partial_writes(self) -> int:
        """Delete the temporary files of writes a killed run left unfinished; returns how many.

        Only files named as :func:`fairbits.fileio.atomic_write` names its temporaries
        (``.NAME.XXXX.tmp``) are removed; finished files are never touched.
        """
        stale = [p for p in self.root.rglob(".*.tmp") if p.is_file()] if self.root.is_dir() else []
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
        return json.loads(self.info_path.read_text())

    def write_info(self, info: dict) -> None:
        write_json(info, self.info_path)

    def read_manifest(self) -> pd.DataFrame:
        return read_manifest_file(self.root / "manifest.parquet")

    def write_manifest(self, manifest: pd.DataFrame) -> None:
        write_manifest(manifest, self.root / "manifest.parquet")

    # -- cells -------------------------------------------------------------
    def cell_dir(self, cell_id: str) -> Path:
        return self.root / "cells" / cell_id

    def is_done(self, cell_id: str) -> bool:
        return (self.cell_dir(cell_id) / "DONE").is_file()

    def mark_done(self, cell_id: str) -> None:
        atomic_write_text(self.cell_dir(cell_id) / "DONE", "done\n")

    def parts(self, cell_id: str) -> list[Path]:
        d = self.cell_dir(cell_id)
        return sorted(d.glob("part-*.parquet")) if d.is_dir() else []

    def done_ids(self, cell_id: str) -> set[str]:
        """Image ids that already have a row in this cell."""
        ids: set[str] = set()
        for p in self.parts(cell_id):
            ids.update(pq.read_table(p, columns=["image_id"]).column("image_id").to_pylist())
        return ids

    def append(self, cell_id: str, rows: pd.DataFrame) -> Path:
        """Write ``rows`` as the next part of the cell, atomically."""
        existing = self.parts(cell_id)
        n = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        path = self.cell_dir(cell_id) / f"part-{n:06d}.parquet"
        write_parquet(rows, path)
        return path

    def read_cell(self, cell_id: str) -> pd.DataFrame:
        frames = [pd.read_parquet(p) for p in self.parts(cell_id)]
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """All per-image rows of a run as one DataFrame.

    Columns: ``image_id, codec, setting, quality, target_bpp, bpp, num_bytes, height,
    width``, the measure columns, ``error`` (None when fine), then the dataset's label
    columns from the manifest (so the group columns are there). One row per
    ``(image_id, codec, setting)``, sorted by cell order then image id.
    """
    store = RunStore(run_dir)
    info = store.read_info()
    frames = [store.read_cell(c["id"]) for c in info["cells"]]
    frames = [f for f in frames if len(f)]
    if not frames:
        raise FairbitsError(f"{run_dir} has no results yet: run `fairbits audit` first")
    results = pd.concat(frames, ignore_index=True).drop_duplicates(list(RESULT_KEY), keep="last")
    manifest = store.read_manifest()
    labels = manifest.drop(columns=[c for c in ("path", "checksum") if c in manifest.columns])
    results = results.merge(labels, on="image_id", how="left", validate="many_to_one")
    order = {c["id"]: i for i, c in enumerate(info["cells"])}
    results["_order"] = (results["codec"] + "__" + results["setting"]).map(order)
    return results.sort_values(["_order", "image_id"]).drop(columns="_order").reset_index(drop=True)
