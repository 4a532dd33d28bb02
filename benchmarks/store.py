"""Cost of the result store with many parts in one cell: appends, resume scan, load_results.

Writes ``--parts`` parts of ``--rows`` rows each (rows shaped as the runner writes them:
the demo's measures, float64 numbers, object ``error``/``checkpoint`` that are None) into
one cell of a fresh run directory with ``RunStore.append``, then times

- the appends (each one a part, as one batch of one cell is), and one listing of the
  cell folder once it holds them all (what each append cost before parts were counted),
- ``scan_cell`` (what a resume reads) and ``load_results`` on the uncompacted cell,
- ``RunStore.compact`` (which ``mark_done`` runs when a cell finishes),
- ``scan_cell`` and ``load_results`` again on the one merged part,

and checks that ``load_results`` gives the same table before and after compaction. Run it
against another checkout of fairbits (``PYTHONPATH=OTHER/src``) for the figures of that
version; a store without ``compact`` reports only the uncompacted figures.

    python benchmarks/store.py --parts 1000 --rows 32
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import fairbits
from fairbits.audit.store import RunStore, load_results
from fairbits.fileio import next_part

CELL = "jpeg__q10"
MEASURES = ("bpp", "psnr", "psnr_y", "ssim", "ms_ssim", "ciede2000")
CHECKS = ("exact_bpp", "rate_rel_error", "recon_max_diff")


def batch_rows(ids: list[str], rng: np.random.Generator) -> pd.DataFrame:
    """One batch's rows of the cell, with the runner's columns and dtypes."""
    n = len(ids)
    df = pd.DataFrame({"image_id": ids, "codec": "jpeg", "setting": "q10", "mode": "exact", "target_bpp": np.nan,
                       "quality": 10.0, "checkpoint": None, "num_bytes": rng.integers(500, 5000, n).astype(float),
                       "height": 256.0, "width": 256.0, **{m: rng.random(n) for m in MEASURES},
                       **{c: np.nan for c in CHECKS}, "error": None})
    return df.astype({"error": object, "checkpoint": object})


def make_run(root: Path, parts: int, rows: int) -> tuple[RunStore, list[list[str]]]:
    store = RunStore(root)
    ids = [f"img/{k:07d}.png" for k in range(parts * rows)]
    store.write_info({"cells": [{"id": CELL, "codec": "jpeg", "setting": "q10"}]})
    store.write_manifest(pd.DataFrame({"image_id": ids, "path": ids, "checksum": None,
                                       "grp": np.where(np.arange(len(ids)) % 2, "a", "b")}))
    return store, [ids[k:k + rows] for k in range(0, len(ids), rows)]


def timed(fn, repeat: int = 1):
    """(result of the last call, best wall seconds of ``repeat`` calls)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=int, default=1000, help="parts (batches) in the one cell")
    ap.add_argument("--rows", type=int, default=32, help="rows per part (the default batch_size)")
    ap.add_argument("--repeat", type=int, default=3, help="reads timed this many times, best kept")
    args = ap.parse_args()
    print(f"fairbits {Path(fairbits.__file__).parent}, pandas {pd.__version__}, "
          f"machine {platform.machine()}, {args.parts} parts x {args.rows} rows in one cell")
    work = Path(tempfile.mkdtemp(prefix="fairbits-store-bench-"))
    try:
        store, batches = make_run(work / "run", args.parts, args.rows)
        rng = np.random.default_rng(0)
        frames = [batch_rows(ids, rng) for ids in batches]
        _, t_append = timed(lambda: [store.append(CELL, f) for f in frames])
        print(f"appends       : {t_append:7.2f} s for {args.parts} parts ({1e3 * t_append / args.parts:.2f} ms/part)")
        _, t_list = timed(lambda: next_part(store.cell_dir(CELL), ".parquet"), args.repeat)
        print(f"folder listing: {1e3 * t_list:7.2f} ms at {args.parts} parts (next_part; paid by every "
              "append before parts were counted)")
        scan, t_scan = timed(lambda: store.scan_cell(CELL), args.repeat)
        assert len(scan.ids) == args.parts * args.rows
        before, t_load = timed(lambda: load_results(store.root), args.repeat)
        print(f"uncompacted   : scan_cell {t_scan:6.3f} s, load_results {t_load:6.3f} s "
              f"({1e3 * t_load / args.parts:.2f} ms/part)")
        if not hasattr(store, "compact"):
            print("compacted     : this fairbits has no RunStore.compact")
            return
        _, t_compact = timed(lambda: store.compact(CELL))
        assert len(store.parts(CELL)) == 1
        scan, t_scan = timed(lambda: store.scan_cell(CELL), args.repeat)
        after, t_load = timed(lambda: load_results(store.root), args.repeat)
        pd.testing.assert_frame_equal(after, before)
        print(f"compact       : {t_compact:6.3f} s ({args.parts} parts -> 1)")
        print(f"compacted     : scan_cell {t_scan:6.3f} s, load_results {t_load:6.3f} s (table unchanged)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
