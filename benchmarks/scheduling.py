"""Planning the work left in a half-finished run: before (per batch, ``isin`` against each
cell's growing set of finished ids) and after (one mask per cell, sliced per batch).

    python benchmarks/scheduling.py --images 40000 --cells 36 --done 0.5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from fairbits.audit.runner import pending_batches


def before(manifest: pd.DataFrame, cells: list[str], todo: dict[str, set[str]], bs: int):
    """The planning of fairbits ≤ 0.1 (kept here as the reference)."""
    for start in range(0, len(manifest), bs):
        batch = manifest.iloc[start:start + bs]
        pending = [(c, batch[~batch["image_id"].isin(todo[c])]) for c in cells if c in todo]
        pending = [(c, b) for c, b in pending if len(b)]
        if pending:
            yield pending


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=40000)
    ap.add_argument("--cells", type=int, default=36)
    ap.add_argument("--done", type=float, default=0.5, help="share of each cell already finished")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    ids = pd.Series([f"img/{k:06d}" for k in range(args.images)])
    manifest = pd.DataFrame({"image_id": ids})
    cells = [f"codec__q{k}" for k in range(args.cells)]
    n_done = int(args.done * args.images)
    todo = {c: set(ids[:n_done]) for c in cells}
    t0 = time.perf_counter()
    old = sum(sum(len(b) for _, b in p) for p in before(manifest, cells, todo, args.batch))
    t_old = time.perf_counter() - t0
    t0 = time.perf_counter()
    has_row = {c: ids.isin(todo[c]).to_numpy() for c in cells}
    new = sum(len(p.ids) for _, _, pend in pending_batches(ids, has_row, args.batch, {}) for p in pend)
    t_new = time.perf_counter() - t0
    assert old == new
    batches = -(-args.images // args.batch)
    print(f"{args.images} images × {args.cells} cells, {args.done:.0%} done, {new} image-cells pending")
    print(f"before: {t_old:.2f} s ({1000 * t_old / (batches * args.cells):.2f} ms per batch-cell)")
    print(f"after : {t_new:.2f} s ({1000 * t_new / (batches * args.cells):.3f} ms per batch-cell)  {t_old / t_new:.0f}x")


if __name__ == "__main__":
    main()
