"""Time of the run statistics (``summarize_run`` / ``write_stats``) on a paper-scale cell.

Synthetic results table: ``--n`` images (default 40,000) in one cell, two group attributes
(``skin``: 4 groups, ``gender``: 3 groups), ten measure columns (seven continuous, one 0/1
rate, two with 2 % of rows NaN, as face measures are for images without a face), ``n_perm`` and
``n_boot`` at the spec's defaults (1,000 each).

Prints, in wall-clock and CPU seconds: ``summarize_run`` with the permutation test, the
same with ``n_perm=0`` (bootstrap and group statistics only; the difference is the
permutation test's share), and one ``write_stats`` into a temporary run directory (which
adds ``bpp``: eleven columns).

``--baseline REV`` also times ``fairbits.bias.stats`` as it was at git revision ``REV``
(read with ``git show``, loaded beside the current module), in the same process, so the
before/after figures come from the same machine at the same moment.

    python benchmarks/statistics.py
    python benchmarks/statistics.py --baseline cdaa652
    python benchmarks/statistics.py --n 240 --cells 12 --baseline cdaa652   # many small cells
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # this file must not stand in for the standard library's ``statistics``

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fairbits.bias import stats as current  # noqa: E402

GROUPS = {"skin": ["I-II", "III-IV", "V", "VI"], "gender": ["f", "m", "x"]}
MEASURES = [f"m{k}" for k in range(10)]
DIRECTIONS = {m: True for m in MEASURES}


def results_table(n: int, cells: int = 1, seed: int = 0) -> pd.DataFrame:
    """``cells`` cells of the same ``n`` images; ``skin`` shifts the first five measures a little."""
    if cells > 1:
        return pd.concat([results_table(n, seed=seed + k).assign(setting=f"q{k}") for k in range(cells)],
                         ignore_index=True)
    rng = np.random.default_rng(seed)
    skin = rng.choice(GROUPS["skin"], n, p=[0.4, 0.3, 0.2, 0.1])
    gender = rng.choice(GROUPS["gender"], n, p=[0.49, 0.49, 0.02])
    shift = pd.Series(skin).map(dict(zip(GROUPS["skin"], [0.0, 0.02, 0.05, 0.1]))).to_numpy()
    cols = {}
    for k, m in enumerate(MEASURES[:7]):
        cols[m] = 30 + rng.normal(0, 2, n) + (shift if k < 5 else 0)
    cols["m7"] = (rng.random(n) < 0.1 + shift).astype(float)  # a rate (flips)
    for m in ("m8", "m9"):
        v = rng.normal(5, 1, n)
        v[rng.random(n) < 0.02] = np.nan  # undefined for that image
        cols[m] = v
    return pd.DataFrame({"image_id": [f"i{i:06d}" for i in range(n)], "codec": "bmshj2018-hyperprior",
                         "setting": "q4", "bpp": rng.normal(0.4, 0.05, n), "skin": skin, "gender": gender,
                         "error": None, **cols})


def baseline_module(rev: str) -> types.ModuleType:
    """``fairbits.bias.stats`` as of git revision ``rev``, loaded under another name."""
    root = Path(__file__).resolve().parents[1]
    text = subprocess.run(["git", "show", f"{rev}:src/fairbits/bias/stats.py"], cwd=root, check=True,
                          capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader(f"fairbits_stats_{rev}", loader=None)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    exec(compile(text, f"{rev}:stats.py", "exec"), mod.__dict__)
    return mod


def timed(fn) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of ``fn()``; CPU time (all threads of this process) is the
    steadier figure on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(mod: types.ModuleType, results: pd.DataFrame, n_perm: int, n_boot: int) -> dict[str, np.ndarray]:
    groups = list(GROUPS)
    mod.summarize_run(results.head(500), groups, MEASURES, n_boot=10, n_perm=10)  # warm-up, not timed
    full = timed(lambda: mod.summarize_run(results, groups, MEASURES, n_boot=n_boot, n_perm=n_perm,
                                           directions=DIRECTIONS))
    no_perm = timed(lambda: mod.summarize_run(results, groups, MEASURES, n_boot=n_boot, n_perm=0,
                                              directions=DIRECTIONS))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "run.json").write_text(json.dumps({"groups": groups, "measures": MEASURES, "seed": 0,
                                                        "n_boot": n_boot, "n_perm": n_perm, "cells": []}))
        write = timed(lambda: mod.write_stats(tmp, results))
    full, no_perm = np.array(full), np.array(no_perm)
    return {"summarize_run": full, "without_permutation": no_perm, "permutation": full - no_perm,
            "write_stats": np.array(write)}


def report(name: str, t: dict[str, np.ndarray], cell_columns: int) -> None:
    for k, clock in enumerate(("wall", "cpu")):
        share = t["permutation"][k] / t["summarize_run"][k]
        print(f"{name:>8} {clock:>4}: summarize_run {t['summarize_run'][k]:6.2f} s | without permutation test "
              f"{t['without_permutation'][k]:6.2f} s | permutation test {t['permutation'][k]:6.2f} s "
              f"({share:4.0%}, {t['permutation'][k] / cell_columns * 1000:5.0f} ms per cell-column) | "
              f"write_stats {t['write_stats'][k]:6.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40_000, help="images in a cell")
    ap.add_argument("--cells", type=int, default=1, help="cells (settings) of the same images")
    ap.add_argument("--n-perm", type=int, default=1000)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--baseline", metavar="REV", help="also time stats.py at this git revision")
    args = ap.parse_args()
    results = results_table(args.n, args.cells)
    cell_columns = args.cells * len(GROUPS) * len(MEASURES)
    attributes = ", ".join(f"{g} ({len(v)} groups)" for g, v in GROUPS.items())
    print(f"{args.n} images, {args.cells} cell(s), attributes {attributes}, "
          f"{len(MEASURES)} measure columns; n_perm={args.n_perm}, n_boot={args.n_boot}; "
          f"{platform.processor() or platform.machine()}, numpy {np.__version__}")
    runs = [("current", current)] + ([(args.baseline, baseline_module(args.baseline))] if args.baseline else [])
    for name, mod in runs:
        report(name, measure(mod, results, args.n_perm, args.n_boot), cell_columns)


if __name__ == "__main__":
    main()
