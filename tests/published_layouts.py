"""Miniature copies of face datasets in the layouts they are published in (see docs/datasets.md).

Each ``write_*`` function builds the folders, file names and label files of one dataset
under a given root, with tiny solid-colour images, and returns what a test needs to check
the reader against (the labels it wrote), so expectations never come from the reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PUBLISHED_COLUMNS = ("Class_ID", "skintype", "lips", "nose", "eye", "hairtype", "haircolor")


def image(path: Path, value: int = 0, size: int = 8) -> Path:
    """A tiny solid-colour image (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (value % 256, 40, 90)).save(path)
    return path


# --------------------------------------------------------------------------- RFW

def write_rfw(root: Path, identities: dict[str, list[str]], per_identity: int = 2, size: int = 8) -> Path:
    """``root/<Race>/<identity>/<identity>_000k.jpg`` (k = 1..per_identity); returns root."""
    v = 0
    for race, idents in identities.items():
        for ident in idents:
            for k in range(1, per_identity + 1):
                image(root / race / ident / f"{ident}_{k:04d}.jpg", v, size)
                v += 1
    return root


def write_rfw_landmarks(txts: Path, race: str, points: dict[tuple[str, str], list[float]]) -> Path:
    """``txts/<Race>/<Race>_lmk.txt``: per line the image path, a second field, then 10 numbers.

    ``points`` maps ``(identity, file name)`` to ``[x1, y1, ..., x5, y5]``.
    """
    f = txts / race / f"{race}_lmk.txt"
    f.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"./test/data/{race}/{ident}/{name}\t{i}\t" + "\t".join(f"{v:.3f}" for v in vals)
             for i, ((ident, name), vals) in enumerate(points.items())]
    f.write_text("\n".join(lines) + "\n")
    return f


def write_rfw_metadata(path: Path, rows: list[dict]) -> Path:
    """The published per-identity CSV (``RFW_metadata_FDA.csv``), with pandas' index column first."""
    import pandas as pd

    pd.DataFrame(rows, columns=list(PUBLISHED_COLUMNS)).to_csv(path, index=True)
    return path


def random_published_rows(identities: dict[str, list[str]], seed: int = 0) -> list[dict]:
    """One published label row per identity, values drawn from the published vocabulary."""
    rng = np.random.default_rng(seed)
    rows = []
    for race, idents in identities.items():
        for ident in idents:
            rows.append({"Class_ID": f"{race}/{ident}", "skintype": f"type{rng.integers(1, 7)}",
                         "lips": rng.choice(["big", "small"]), "nose": rng.choice(["wide", "narrow"]),
                         "eye": rng.choice(["narrow", "normal"]),
                         "hairtype": rng.choice(["bald", "curly", "straight", "wavy"]),
                         "haircolor": rng.choice(["black", "blonde", "brown", "gray", "red"])})
    return rows


# --------------------------------------------------------------------------- FairFace

FAIRFACE_FOLDERS = {0.25: "fairface-img-margin025-trainval", 1.25: "fairface-img-margin125-trainval"}


def write_fairface(root: Path, n: dict[str, int], paddings=(0.25, 1.25), nested: bool = False) -> dict[str, list]:
    """Label CSVs ``fairface_label_{train,val}.csv`` in root and one image folder per padding.

    Images of padding 0.25 are 8 px, of 1.25 16 px (to tell them apart). ``nested`` unzips
    into a same-named folder (``X/X/train/1.jpg``). Returns the label rows per split.
    """
    races = ["White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern"]
    ages = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"]
    written = {}
    root.mkdir(parents=True, exist_ok=True)
    for split, count in n.items():
        rows = []
        for i in range(1, count + 1):
            rows.append({"file": f"{split}/{i}.jpg", "age": ages[i % len(ages)],
                         "gender": "Male" if i % 2 else "Female", "race": races[i % len(races)],
                         "service_test": "True" if i % 3 else "False"})
            for pad in paddings:
                folder = root / FAIRFACE_FOLDERS[pad]
                folder = folder / FAIRFACE_FOLDERS[pad] if nested else folder
                image(folder / split / f"{i}.jpg", i, 8 if pad == 0.25 else 16)
        lines = ["file,age,gender,race,service_test"] + [",".join(r.values()) for r in rows]
        (root / f"fairface_label_{split}.csv").write_text("\n".join(lines) + "\n")
        written[split] = rows
    return written


# --------------------------------------------------------------------------- UTKFace

def write_utkface(root: Path, aligned: list[str], wild: dict[str, list[str]]) -> Path:
    """``root/UTKFace/<name>.jpg.chip.jpg`` (aligned) and ``root/partK/<name>.jpg`` (in the wild)."""
    for i, name in enumerate(aligned):
        image(root / "UTKFace" / f"{name}.jpg.chip.jpg", i)
    for part, names in wild.items():
        for i, name in enumerate(names):
            image(root / part / f"{name}.jpg", i, 16)
    return root


# --------------------------------------------------------------------------- CelebA

def write_celeba(root: Path, attributes: list[str], values: np.ndarray, partitions: list[int],
                 identities: list[int] | None = None, drive_layout: bool = False) -> list[str]:
    """CelebA's label files and ``img_align_celeba/``; returns the file names.

    ``list_attr_celeba.txt``: the count line, the header line of attribute names, then per
    image the file name and values -1/1 right-aligned in 2 characters (as published).
    ``drive_layout`` puts files where the Google Drive download has them: ``Anno/``,
    ``Eval/``, ``Img/img_align_celeba/``; otherwise flat, as torchvision keeps them.
    """
    names = [f"{i + 1:06d}.jpg" for i in range(len(values))]
    anno, ev, img = (root / "Anno", root / "Eval", root / "Img") if drive_layout else (root, root, root)
    for d in (anno, ev, img):
        d.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        image(img / "img_align_celeba" / n, i)
    lines = [str(len(names)), " ".join(attributes) + " "]
    lines += [n + " " + " ".join(f"{v:2d}" for v in row) for n, row in zip(names, values)]
    (anno / "list_attr_celeba.txt").write_text("\r\n".join(lines) + "\r\n")
    (ev / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, partitions)))
    if identities is not None:
        (anno / "identity_CelebA.txt").write_text("".join(f"{n} {k}\n" for n, k in zip(names, identities)))
    return names
