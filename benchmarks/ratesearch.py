"""Cost of the per-image rate search, before and after issue 10, on the same images.

For each codec, every image is searched at every target with one shared cache per image
(as the audit does per batch): first with the search as it was (``reference_search_rate``
in ``tests/test_ratesearch.py``: every probe encoded *and* decoded), then with
:func:`fairbits.codecs.ratesearch.search_rate` (probes encoded only, the chosen setting
decoded). Prints encodes and decodes per image per target, and wall and CPU ms per image
(all its targets; the fastest of ``--repeat`` interleaved runs; CPU time counts the codec
library's threads and is the steadier figure on a shared machine), and checks that both
choose the same settings with identical bytes.

    python benchmarks/ratesearch.py --n 24 --size 256 --codecs webp:0.1,0.25,0.5 avif:0.1,0.25 jpeg:0.25,0.5,1
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from fairbits.codecs import get_codec
from fairbits.codecs.ratesearch import search_rate
from fairbits.data.phantom import render_face, sample_labels

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_ratesearch import Counting, reference_search_rate  # noqa: E402  (the old search)


def run(search, name: str, images: list[np.ndarray], targets: list[float]) -> tuple[dict, list]:
    """Search every image at every target; returns costs and the chosen (setting, bytes)."""
    codec = Counting(get_codec(name))
    chosen = []
    t0, c0 = time.perf_counter(), time.process_time()
    for k, image in enumerate(images):
        cache: dict = {}
        for target in targets:
            coded = search(codec, image, target, cache=cache, key=k)
            chosen.append((coded.setting, coded.data))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    cells = len(images) * len(targets)
    return {"enc": codec.encodes / cells, "dec": codec.decodes / cells,
            "ms": 1000 * seconds / len(images), "cpu_ms": 1000 * cpu / len(images)}, chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="phantom faces")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--codecs", nargs="+", default=["webp:0.1,0.25,0.5", "avif:0.1,0.25", "jpeg:0.25,0.5,1"],
                    help="NAME:TARGET,TARGET,... (the demo's rate-searched cells by default)")
    ap.add_argument("--repeat", type=int, default=3, help="timing runs; the fastest is shown")
    args = ap.parse_args()

    labels = sample_labels(args.n, seed=11)
    images = [render_face(labels.iloc[i].to_dict(), seed=500 + i, size=args.size)[0] for i in range(args.n)]
    print(f"machine: {platform.machine()}, cores: {os.cpu_count()}, python {platform.python_version()}; "
          f"{args.n} phantom faces {args.size}x{args.size}, one cache per image shared by its targets")
    print(f"{'codec':8s} {'targets':16s} {'':7s} {'enc/target':>10s} {'dec/target':>10s} {'ms/image':>9s} "
          f"{'cpu ms/image':>12s}")
    for spec in args.codecs:
        name, _, tlist = spec.partition(":")
        targets = [float(t) for t in tlist.split(",")]
        searches = {"before": reference_search_rate, "after": search_rate}
        for search in searches.values():  # warm-up: plugin loading, first-call set-up
            search(get_codec(name), images[0], targets[0])
        runs: dict[str, list] = {label: [] for label in searches}
        for _ in range(args.repeat):  # interleaved, so a busy spell hits both alike
            for label, search in searches.items():
                runs[label].append(run(search, name, images, targets))
        rows = {}
        for label, done in runs.items():
            cost = {k: min(r[0][k] for r in done) for k in done[0][0]}
            rows[label] = (cost, done[0][1])
            print(f"{name:8s} {tlist:16s} {label:7s} {cost['enc']:10.2f} {cost['dec']:10.2f} {cost['ms']:9.1f} "
                  f"{cost['cpu_ms']:12.1f}")
        if rows["before"][1] != rows["after"][1]:
            raise SystemExit(f"{name}: the searches chose different settings or bytes")
        print(f"{name:8s} same settings and bytes for all {len(rows['after'][1])} (image, target); "
              f"after/before: wall {rows['after'][0]['ms'] / rows['before'][0]['ms']:.2f}, "
              f"cpu {rows['after'][0]['cpu_ms'] / rows['before'][0]['cpu_ms']:.2f}")


if __name__ == "__main__":
    main()
