"""Shared fixtures: tiny labelled image sets the tests make themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image


def textured_image(rng: np.random.Generator, size=(48, 48), tone: float = 0.5) -> np.ndarray:
    """A smooth gradient with a blob and noise: uint8 (H, W, 3). ``tone`` sets its brightness."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([tone + 0.3 * xx, tone * 0.8 + 0.2 * yy, tone * 0.6 + 0.1 * (xx + yy)], -1)
    blob = np.exp(-(((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.05))[..., None] * 0.2
    img = base + blob + rng.normal(0, 0.04, (h, w, 3))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def write_csv_dataset(root: Path, groups=("a", "b"), n_per_group: int = 6, size=(48, 48),
                      seed: int = 0) -> Path:
    """PNG images plus ``labels.csv`` (columns path, grp) under ``root``; returns the CSV path."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for gi, g in enumerate(groups):
        for k in range(n_per_group):
            rel = f"img/{g}_{k:03d}.png"
            Image.fromarray(textured_image(rng, size, tone=0.3 + 0.3 * gi)).save(root / rel)
            rows.append({"path": rel, "grp": g})
    csv = root / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test downloads weights: FAIRBITS_OFFLINE=1 (tests of the download path unset it
    and serve files from 127.0.0.1)."""
    monkeypatch.setenv("FAIRBITS_OFFLINE", "1")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread: tiny models gain nothing from threads and lose a lot on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def csv_dataset(tmp_path) -> Path:
    return write_csv_dataset(tmp_path / "data")


ISSUE_SPEC = """\
dataset:
  reader: csv
  path: labels.csv
  path_column: path
groups: [grp]
codecs:
  - name: jpeg
    quality: [10, 50]
  - name: jpeg444
    quality: [10]
measures: [psnr, ms_ssim]
seed: 0
"""
