"""Work shared by the measures of one batch (``fairbits.measures.memo``): with and without a memo.

One batch of ``--n`` phantom faces at ``--size`` px, measured on CPU the way the audit
engine does it (chunks of 4 images; one :class:`BatchMemo` per batch, shared by its cells):

* **CIELAB**: ``ciede2000`` + ``skin_tone`` over ``--cells`` JPEG cells (skin, lip and
  hair masks from the phantoms' own region maps, so no face detector runs);
* **SFace**: for one cell, the demo's phenotype classifiers (``skin_group`` on
  ``colour``, ``hair_type`` on ``sface+colour``, fitted on the batch itself) followed by
  the realism extractor ``sface`` on the originals and the reconstructions.

Each is timed without a memo (every measure computes for itself) and with one, alternately,
on ``--threads`` torch and OpenCV threads (default 1, so the CPU time is the work even on a
busy machine); the outputs are checked to be identical (``torch.equal`` / ``np.array_equal``).
Run it with the measures of an older checkout on ``PYTHONPATH`` for a before/after figure.

    python benchmarks/measure_memo.py --n 32 --size 256 --cells 7
"""

from __future__ import annotations

import argparse
import io
import platform
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fairbits.audit.faces import FaceBatch
from fairbits.data.images import to_tensor
from fairbits.data.phantom import REGIONS, render_face, sample_labels
from fairbits.measures.base import get_measure, resolve_measure
from fairbits.measures.features import get_extractor
from fairbits.measures.memo import BatchMemo, image_features

CHUNK = 4  # the engine's CPU measure chunk
QUALITIES = (5, 10, 20, 30, 50, 70, 90)


def _jpeg(image: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _faces(regions: list[np.ndarray]) -> FaceBatch:
    """A FaceBatch whose masks are the phantoms' region maps (face = skin, lips, eyes)."""
    codes = np.stack(regions)
    masks = {name: torch.from_numpy(codes == REGIONS[name]) for name in ("skin", "lips", "eyes", "hair")}
    masks["face"] = torch.from_numpy(np.isin(codes, [REGIONS[k] for k in ("skin", "lips", "eyes")]))
    n = len(regions)
    return FaceBatch(np.ones(n, bool), np.full((n, 478, 2), np.nan, np.float32), masks,
                     np.full((n, 128), np.nan, np.float32))


def _loop(measures, ids, originals, cells: dict[str, list[np.ndarray]], memo, faces=None, labels=None,
          realism=None):
    """The engine's measure loop over one batch: per cell, chunks of CHUNK images through
    every measure, then (with ``realism``) that cell's realism features; finally the
    originals' realism features. Returns every output, in order."""
    out = []
    for cell, recons in cells.items():
        for k in range(0, len(ids), CHUNK):
            x, y = to_tensor(originals[k:k + CHUNK]), to_tensor(recons[k:k + CHUNK])
            context = {} if memo is None else {"ids": ids[k:k + CHUNK], "cell": cell, "memo": memo}
            if faces is not None:
                context["faces"] = faces.take(slice(k, k + CHUNK))
            if labels is not None:
                context["labels"] = labels.iloc[k:k + CHUNK]
            for m in measures:
                out.append(m.fn(x, y, context))
        if realism is not None:
            out.append(image_features(memo, realism, ids, recons, cell))
    if realism is not None:
        out.append(image_features(memo, realism, ids, originals))
    return out


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return np.array_equal(a, b, equal_nan=True)


def _compare(without, with_memo, repeat: int) -> tuple[list[float], list]:
    """Runs the two alternately ``repeat`` times; returns the best wall and CPU seconds
    (this process) of each, ``[wall_without, wall_with, cpu_without, cpu_with]``, and the
    last outputs of each."""
    best = [float("inf")] * 4
    outs: list = [None, None]
    for _ in range(repeat):
        for k, fn in enumerate((without, with_memo)):
            t, c = time.perf_counter(), time.process_time()
            outs[k] = fn()
            best[k] = min(best[k], time.perf_counter() - t)
            best[2 + k] = min(best[2 + k], time.process_time() - c)
    return best, outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--cells", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: CPU time is the work, not other threads' spinning)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    try:
        import cv2  # SFace runs in OpenCV's thread pool

        cv2.setNumThreads(args.threads)
    except ImportError:
        pass

    labels = sample_labels(args.n, seed=0)
    rendered = [render_face(row, seed=i, size=args.size) for i, row in labels.iterrows()]
    originals = [im for im, _ in rendered]
    ids = [str(i) for i in labels["image_id"]]
    faces = _faces([r for _, r in rendered])
    cells = {f"jpeg__{q}": [_jpeg(im, q) for im in originals] for q in QUALITIES[:args.cells]}
    print(f"{args.n} phantom faces at {args.size} px, torch threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}; best of {args.repeat}")

    lab = [get_measure("ciede2000"), get_measure("skin_tone")]
    memos: list[BatchMemo] = []

    def with_memo():
        memos.append(BatchMemo())
        return _loop(lab, ids, originals, cells, memos[-1], faces)

    lab_times, (a, b) = _compare(lambda: _loop(lab, ids, originals, cells, None, faces), with_memo, args.repeat)
    print(f"ciede2000 + skin_tone, {len(cells)} cells: identical: {_same(a, b)}; "
          f"memo held {memos[-1].nbytes / 2**20:.0f} MiB at the end")

    from fairbits.face.phenotype import PhenotypeModel

    x = to_tensor(originals)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for target, features in {"skin_group": "colour", "hair_type": "sface+colour"}.items():
            model = PhenotypeModel.fit(x, labels[target], features=features, target=target)
            paths.append(model.save(Path(tmp) / f"{target}.npz"))
        spec = SimpleNamespace(phenotype_models=paths)
        realism = get_extractor("sface")
        one = dict(list(cells.items())[:1])
        manifest = labels.assign(image_id=ids)

        def run(memo_on: bool):
            phenotype = resolve_measure("phenotype", spec)  # fresh: its originals are computed again
            return _loop([phenotype], ids, originals, one, BatchMemo() if memo_on else None,
                         labels=manifest, realism=realism)

        sface_times, (c, d) = _compare(lambda: run(False), lambda: run(True), args.repeat)
    print(f"phenotype (colour; sface+colour) + realism sface, 1 cell with its originals: identical: {_same(c, d)}")
    table = pd.DataFrame([lab_times, sface_times],
                         columns=["wall_without_s", "wall_with_s", "cpu_without_s", "cpu_with_s"],
                         index=[f"ciede2000+skin_tone, {len(cells)} cells", "phenotype+realism sface, 1 cell"])
    table["cpu_speedup"] = table["cpu_without_s"] / table["cpu_with_s"]
    print(table.round(2).to_string())


if __name__ == "__main__":
    main()
