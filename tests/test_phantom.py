"""Synthetic phantom faces: labels, determinism, region masks, skin tone fidelity, files."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from fairbits.colour import ita_degrees, ita_to_fitzpatrick, srgb_to_lab
from fairbits.data.phantom import (EYELIDS, HAIR_COLOURS, HAIR_TYPES, LABEL_COLUMNS, LIPS,
                                   MST_SRGB, NOSES, REGIONS, SKIN_GROUPS, face_seed,
                                   render_face, render_phantoms, sample_labels, skin_group_of)

SIZE = 96
BASE = {"mst": 5, "eyelid": "other", "nose": "wide", "lips": "big", "hair_type": "straight",
        "hair_colour": "brown"}


def _region_area(mask: np.ndarray, name: str) -> int:
    return int((mask == REGIONS[name]).sum())


def _paired(key: str, a: str, b: str, seeds=range(6), size=SIZE):
    """Masks and images of the same faces differing only in ``labels[key]``."""
    out = []
    for s in seeds:
        ia, ma = render_face({**BASE, key: a}, s, size)
        ib, mb = render_face({**BASE, key: b}, s, size)
        out.append(((ia, ma), (ib, mb)))
    return out


def _skin_ita(image: np.ndarray, mask: np.ndarray) -> float:
    """ITA° of the mean CIELAB colour of the skin-region pixels."""
    lab = srgb_to_lab(image[mask == REGIONS["skin"]].astype(np.float64) / 255).numpy()
    L, _, b = lab.mean(axis=0)
    return float(ita_degrees(L, b))


# --------------------------------------------------------------------------- labels

def test_constants():
    assert REGIONS == {"background": 0, "skin": 1, "lips": 2, "eyes": 3, "hair": 4}
    assert len(MST_SRGB) == 10 and MST_SRGB[0] == "f6ede4" and MST_SRGB[-1] == "292420"


def test_skin_group_of_boundaries():
    assert [skin_group_of(m) for m in (1, 3, 4, 7, 8, 10)] == \
        ["MST1-3", "MST1-3", "MST4-7", "MST4-7", "MST8-10", "MST8-10"]
    with pytest.raises(ValueError):
        skin_group_of(0)
    with pytest.raises(ValueError):
        skin_group_of(11)


def test_labels_within_vocabularies():
    df = sample_labels(60, seed=3)
    assert list(df.columns) == list(LABEL_COLUMNS)
    assert df["image_id"].tolist() == [f"phantom_{i:05d}" for i in range(60)]
    assert df["mst"].between(1, 10).all()
    assert set(df["skin_group"]) <= set(SKIN_GROUPS)
    assert (df["skin_group"] == df["mst"].map(skin_group_of)).all()
    assert (df["fitzpatrick"].to_numpy() == ita_to_fitzpatrick(df["ita"].to_numpy())).all()
    for col, vocab in [("eyelid", EYELIDS), ("nose", NOSES), ("lips", LIPS),
                       ("hair_type", HAIR_TYPES), ("hair_colour", HAIR_COLOURS)]:
        assert set(df[col]) <= set(vocab), col
        assert df[col].nunique() >= 2, col          # not stuck on one value
    # Lighter MST swatches have larger ITA.
    ita_by_mst = df.groupby("mst")["ita"].first()
    assert ita_by_mst.is_monotonic_decreasing


def test_balanced_counts_and_uniform_option():
    df = sample_labels(30, seed=1, balance="skin_group")
    assert df["skin_group"].value_counts().to_dict() == {g: 10 for g in SKIN_GROUPS}
    assert df["skin_group"].tolist()[:3] == list(SKIN_GROUPS)
    free = sample_labels(400, seed=1, balance=None)
    counts = free["mst"].value_counts()
    assert set(counts.index) == set(range(1, 11)) and counts.min() > 20
    # Uniform MST puts 3:4:3 of the faces in the three groups, not 1:1:1.
    share = free["skin_group"].value_counts(normalize=True)
    assert share["MST4-7"] > 0.33
    with pytest.raises(ValueError):
        sample_labels(3, balance="hair")


def test_labels_deterministic_and_prefix_stable():
    pd.testing.assert_frame_equal(sample_labels(12, seed=5), sample_labels(12, seed=5))
    assert not sample_labels(12, seed=5).equals(sample_labels(12, seed=6))
    pd.testing.assert_frame_equal(sample_labels(3, seed=5), sample_labels(5, seed=5).iloc[:3])
    assert face_seed(5, 2) == face_seed(5, 2) != face_seed(5, 3)


# --------------------------------------------------------------------------- rendering

def test_render_deterministic_and_seed_dependent():
    a_img, a_mask = render_face(BASE, 11, SIZE)
    b_img, b_mask = render_face(BASE, 11, SIZE)
    c_img, _ = render_face(BASE, 12, SIZE)
    assert a_img.shape == (SIZE, SIZE, 3) and a_img.dtype == np.uint8
    assert a_mask.shape == (SIZE, SIZE) and a_mask.dtype == np.uint8
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, c_img)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError):
        render_face({**BASE, "hair_type": "mohawk"}, 0, SIZE)
    with pytest.raises(ValueError):
        render_face({**BASE, "mst": 11}, 0, SIZE)
    with pytest.raises(ValueError):
        render_face(BASE, 0, 16)


def test_images_have_texture():
    """Not flat cartoons: the skin region carries fine detail a codec must spend bits on."""
    img, mask = render_face(BASE, 4, 256)
    grey = img.astype(np.float64).mean(axis=2)
    detail = grey - ndimage.gaussian_filter(grey, 2.0)
    inner = ndimage.binary_erosion(mask == REGIONS["skin"], iterations=3)
    assert detail[inner].std() > 1.0


@pytest.mark.parametrize("size", [64, 160, 512])
def test_sizes_scale_geometry(size):
    img, mask = render_face(BASE, 7, size)
    ref_img, ref_mask = render_face(BASE, 7, 128)
    assert img.shape == (size, size, 3) and mask.shape == (size, size)
    for name in REGIONS:
        frac, ref = (mask == REGIONS[name]).mean(), (ref_mask == REGIONS[name]).mean()
        assert abs(frac - ref) < 0.01 + 0.15 * ref, name


def test_masks_have_all_regions_and_bald_has_only_brows():
    df = sample_labels(24, seed=2)
    hair = {}
    for i, row in df.iterrows():
        _, mask = render_face(row, face_seed(2, i), SIZE)
        assert set(np.unique(mask)) <= set(REGIONS.values())
        present = {name for name, code in REGIONS.items() if (mask == code).any()}
        assert present == set(REGIONS), (i, row["hair_type"], present)   # brows are hair
        hair.setdefault(row["hair_type"] == "bald", []).append(_region_area(mask, "hair"))
    assert hair[True] and hair[False]
    assert max(hair[True]) < 0.15 * min(hair[False])
    assert max(hair[True]) < 0.01 * SIZE * SIZE


def test_bald_removes_scalp_hair_only():
    for (img_h, m_h), (img_b, m_b) in _paired("hair_type", "curly", "bald", seeds=range(3)):
        assert _region_area(m_b, "hair") < 0.1 * _region_area(m_h, "hair")
        assert _region_area(m_b, "skin") > _region_area(m_h, "skin")


def test_lips_big_larger_than_small():
    ratios = [_region_area(mb, "lips") / _region_area(ms, "lips")
              for (_, mb), (_, ms) in _paired("lips", "big", "small")]
    assert min(ratios) > 1.4


def test_nose_wide_has_wider_nostril_spacing():
    """Nostrils are holes (region 0) inside the face; their spacing follows the nose label."""
    def spacing(mask):
        holes = ndimage.binary_fill_holes(mask != 0) & (mask == 0)
        lab, n = ndimage.label(holes)
        assert n >= 2
        sizes = ndimage.sum(holes, lab, range(1, n + 1))
        biggest = np.argsort(sizes)[-2:] + 1
        (y0, x0), (y1, x1) = ndimage.center_of_mass(holes, lab, biggest)
        return float(np.hypot(y1 - y0, x1 - x0))

    for (_, mw), (_, mn) in _paired("nose", "wide", "narrow", seeds=range(4), size=192):
        assert spacing(mw) > 1.3 * spacing(mn)


def test_monolid_eyes_are_narrower():
    ratios = [_region_area(mo, "eyes") / _region_area(mm, "eyes")
              for (_, mo), (_, mm) in _paired("eyelid", "other", "monolid")]
    assert min(ratios) > 1.0 and np.mean(ratios) > 1.1


def test_hair_colour_changes_hair_pixels():
    for (ib, mb), (ik, mk) in _paired("hair_colour", "blonde", "black", seeds=range(3)):
        assert np.array_equal(mb, mk)                          # colour only, same shapes
        hair = mb == REGIONS["hair"]
        assert ib[hair].mean() > ik[hair].mean() + 60


def test_skin_ita_tracks_label():
    df = sample_labels(30, seed=0)
    measured = []
    for i, row in df.iterrows():
        img, mask = render_face(row, face_seed(0, i), SIZE)
        measured.append(_skin_ita(img, mask))
    err = np.abs(np.array(measured) - df["ita"].to_numpy())
    assert np.mean(err < 8.0) >= 0.9, err.round(1)
    df["measured"] = measured
    by_group = df.groupby("skin_group")["measured"].mean()
    assert by_group["MST1-3"] > by_group["MST4-7"] > by_group["MST8-10"]
    by_mst = df.groupby("mst")["measured"].mean()
    rank = np.corrcoef(np.argsort(np.argsort(by_mst.index)),
                       np.argsort(np.argsort(-by_mst.to_numpy())))[0, 1]
    assert rank > 0.9


# --------------------------------------------------------------------------- files

def test_render_phantoms_writes_files_and_reuses(tmp_path):
    out = tmp_path / "ph"
    csv = render_phantoms(6, out, seed=4, size=64)
    assert csv == out / "labels.csv"
    df = pd.read_csv(csv)
    assert list(df.columns[:3]) == ["path", "mask_path", "image_id"]
    assert set(LABEL_COLUMNS) <= set(df.columns) and len(df) == 6
    for rel, mrel in zip(df["path"], df["mask_path"]):
        assert not os.path.isabs(rel) and (out / rel).is_file() and (out / mrel).is_file()
    assert json.loads((out / "phantom.json").read_text()) == \
        {"n": 6, "seed": 4, "size": 64, "balance": "skin_group", "version": 1}
    row = df.iloc[2]
    img, mask = render_face(row, face_seed(4, 2), 64)
    assert np.array_equal(np.asarray(Image.open(out / row["path"])), img)
    assert np.array_equal(np.asarray(Image.open(out / row["mask_path"])), mask)
    assert not [p for p in out.rglob(".*")]                    # no temporary leftovers

    files = [csv, out / "phantom.json", *(out / p for p in df["path"])]
    before = {p: p.stat().st_mtime_ns for p in files}
    assert render_phantoms(6, out, seed=4, size=64) == csv
    assert {p: p.stat().st_mtime_ns for p in files} == before

    (out / df["path"][0]).unlink()                              # an incomplete set is redone
    render_phantoms(6, out, seed=4, size=64)
    assert (out / df["path"][0]).is_file()


def test_render_phantoms_prefix_stable_and_param_change(tmp_path):
    small = render_phantoms(3, tmp_path / "a", seed=9, size=64)
    big = render_phantoms(5, tmp_path / "b", seed=9, size=64)
    da, db = pd.read_csv(small), pd.read_csv(big)
    pd.testing.assert_frame_equal(da, db.iloc[:3])
    for rel in da["path"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    render_phantoms(5, tmp_path / "a", seed=9, size=64)       # new parameters: re-rendered
    assert json.loads((tmp_path / "a" / "phantom.json").read_text())["n"] == 5
    assert len(pd.read_csv(small)) == 5


def test_parallel_render_gives_the_same_files(tmp_path):
    serial = render_phantoms(4, tmp_path / "s", seed=5, size=64)
    parallel = render_phantoms(4, tmp_path / "p", seed=5, size=64, processes=2)
    for name in ("phantom_00000", "phantom_00003"):
        for sub in ("images", "masks"):
            a = (serial.parent / sub / f"{name}.png").read_bytes()
            assert a == (parallel.parent / sub / f"{name}.png").read_bytes()
    assert serial.read_text() == parallel.read_text()
