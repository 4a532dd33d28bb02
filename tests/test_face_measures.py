"""Face measures (skin tone, geometry, identity), the face cache, verification and attribution.

Skin tone is checked against independent implementations: derm-ita for ITA and
scikit-image's CIELAB and CIEDE2000 for the region colours.
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from skimage.color import deltaE_ciede2000, rgb2lab

from fairbits.audit.faces import FaceBatch, FaceCache, FaceRecord
from fairbits.bias.attribution import attribute_cell, attribution_table, classifier_targets
from fairbits.bias.verification import calibrate_threshold, impostor_scores, nonmatch
from fairbits.colour import ita_to_fitzpatrick, ita_to_monk, mst_ita
from fairbits.face.tone import skin_tone as tone_of
from fairbits.measures.base import get_measure
from fairbits.measures.face import geometry

SKIN_A, SKIN_B, LIPS, HAIR = (224, 180, 150), (150, 105, 80), (170, 80, 80), (60, 40, 30)


def _patch(rgb, size=16) -> np.ndarray:
    return np.full((size, size, 3), rgb, np.uint8)


def _tensor(*images) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("rgb", [(245, 225, 205), SKIN_A, SKIN_B, (95, 65, 50), (45, 35, 30)])
def test_ita_matches_derm_ita(rgb):
    derm_ita = pytest.importorskip("derm_ita")
    from PIL import Image

    expected = derm_ita.get_ita(Image.fromarray(_patch(rgb, 32)), remove_boarder=False)
    got = tone_of(_tensor(_patch(rgb, 32)), torch.ones(1, 32, 32, dtype=bool))["ita"].item()
    assert got == pytest.approx(expected, abs=0.02)  # white-point constants differ in the 4th digit


def _face_image(skin, lips=LIPS, hair=HAIR) -> np.ndarray:
    """16×16: rows 0–3 hair, rows 4–11 skin, rows 12–15 lips."""
    im = np.zeros((16, 16, 3), np.uint8)
    im[:4], im[4:12], im[12:] = hair, skin, lips
    return im


def _masks() -> dict[str, np.ndarray]:
    m = {k: np.zeros((16, 16), bool) for k in ("skin", "lips", "eyes", "hair", "face")}
    m["hair"][:4], m["skin"][4:12], m["lips"][12:] = True, True, True
    m["face"][4:] = True
    return m


def _batch(found=(True, False)) -> FaceBatch:
    masks = {k: torch.from_numpy(np.stack([v if f else np.zeros_like(v) for f in found]))
             for k, v in _masks().items()}
    lms = np.full((len(found), 478, 2), np.nan, np.float32)
    return FaceBatch(np.array(found), lms, masks, np.full((len(found), 128), np.nan, np.float32))


def _lab(rgb) -> np.ndarray:
    return rgb2lab(np.array([[rgb]], np.uint8))[0, 0]


def _ita(rgb) -> float:
    L, _, b = _lab(rgb)
    return math.degrees(math.atan2(L - 50, b))


def test_skin_tone_against_hand_computed_values():
    orig = _tensor(_face_image(SKIN_A), _face_image(SKIN_A))
    recon = _tensor(_face_image(SKIN_B), _face_image(SKIN_B))
    out = get_measure("skin_tone").fn(orig, recon, {"faces": _batch()})
    assert set(out) == set(get_measure("skin_tone").columns)
    assert out["ita_orig"][0] == pytest.approx(_ita(SKIN_A), abs=0.02)
    assert out["delta_ita"][0] == pytest.approx(_ita(SKIN_B) - _ita(SKIN_A), abs=0.03)
    assert out["delta_L"][0] == pytest.approx(_lab(SKIN_B)[0] - _lab(SKIN_A)[0], abs=0.02)
    expected_de = deltaE_ciede2000(_lab(SKIN_A), _lab(SKIN_B))
    assert out["delta_e_skin"][0] == pytest.approx(expected_de, abs=0.02)
    assert out["delta_e_lips"][0] == pytest.approx(0, abs=1e-9)
    assert out["delta_e_hair"][0] == pytest.approx(0, abs=1e-9)
    fa, fb = ita_to_fitzpatrick(_ita(SKIN_A)), ita_to_fitzpatrick(_ita(SKIN_B))
    assert (out["fitzpatrick_orig"][0], out["fitzpatrick_recon"][0]) == (fa, fb)
    assert out["fitzpatrick_changed"][0] == float(fa != fb) == 1.0
    assert out["monk_changed"][0] == float(ita_to_monk(_ita(SKIN_A)) != ita_to_monk(_ita(SKIN_B)))
    for col, v in out.items():  # the second image has no face: every column is NaN
        assert np.isnan(v[1]), col


def test_monk_category_is_the_nearest_swatch():
    itas = np.array(mst_ita())
    assert np.all(np.diff(itas) < 0)  # light to dark
    assert list(ita_to_monk(itas)) == list(range(1, 11))
    assert ita_to_monk(np.nan) == 0 and ita_to_fitzpatrick(np.nan) == 0
    assert ita_to_fitzpatrick([60, 50, 30, 20, 0, -40]).tolist() == [1, 2, 3, 4, 5, 6]


def test_geometry_ratios_by_hand():
    p = np.zeros((1, 478, 2))
    p[0, 468], p[0, 473] = (40, 50), (80, 50)     # iris centres: 40 px apart
    p[0, 129], p[0, 358] = (50, 70), (70, 70)     # nose wings: 20
    p[0, 234], p[0, 454] = (20, 60), (100, 60)    # cheeks: 80
    p[0, 10], p[0, 152] = (60, 10), (60, 110)     # face height: 100
    p[0, 0], p[0, 17] = (60, 80), (60, 92)        # lips: 12
    p[0, 159], p[0, 145] = (40, 46), (40, 54)     # lid gaps 8 and 6
    p[0, 386], p[0, 374] = (80, 47), (80, 53)
    g = geometry(p)
    assert g["nose_ratio"][0] == pytest.approx(0.25)
    assert g["lip_ratio"][0] == pytest.approx(0.12)
    assert g["eye_aperture"][0] == pytest.approx(7 / 40)
    assert np.isnan(geometry(np.full((1, 478, 2), np.nan))["nose_ratio"][0])


def test_face_record_round_trip_and_batch(tmp_path):
    rng = np.random.default_rng(0)
    rec = FaceRecord(True, 20, 30, rng.random((478, 2)).astype(np.float32) * 20, rng.random((20, 30)) > 0.5,
                     rng.random(128).astype(np.float32))
    back = FaceRecord.from_row(rec.to_row("k", "img"))
    assert back.face_found and (back.height, back.width) == (20, 30)
    np.testing.assert_array_equal(back.landmarks, rec.landmarks)
    np.testing.assert_array_equal(back.person, rec.person)
    np.testing.assert_array_equal(back.embedding, rec.embedding)
    none = FaceRecord.from_row(FaceRecord(False, 20, 30).to_row("k2", "img2"))
    b = FaceBatch.stack([none, none])
    assert not b.found.any() and np.isnan(b.landmarks).all()
    assert b.masks["skin"].shape == (2, 20, 30) and not b.masks["skin"].any()
    assert len(b.take(slice(1, 2))) == 1


def test_face_cache_analyses_once_and_reloads(tmp_path):
    pytest.importorskip("mediapipe")
    grey = np.full((64, 64, 3), 128, np.uint8)
    cache = FaceCache(tmp_path)
    recs = cache.records({"a": grey, "b": grey, "bad": "cannot read"}, {"a": "k1", "b": "k1"})
    assert set(recs) == {"a", "b"} and not recs["a"].face_found
    assert len(list((tmp_path / "faces").glob("part-*.parquet"))) == 1 and len(cache) == 1
    again = FaceCache(tmp_path)
    assert len(again) == 1
    again.records({"a": grey}, {"a": "k1"})
    assert len(list((tmp_path / "faces").glob("part-*.parquet"))) == 1  # nothing new to analyse


# --------------------------------------------------------------------------- verification
def test_impostor_threshold_and_nonmatch():
    e = np.eye(4)[:, :3]  # rows 0-2 orthogonal unit vectors, row 3 zero
    e[3] = e[0]
    s = impostor_scores(e)
    assert sorted(s.round(6).tolist()) == [0, 0, 0, 0, 0, 1]
    assert len(impostor_scores(e, identities=["x", "y", "z", "x"])) == 5  # the same-identity pair is left out
    scores = np.arange(1000) / 1000
    assert calibrate_threshold(scores, fmr=0.01) == pytest.approx(0.99)
    assert np.mean(scores >= calibrate_threshold(scores, 0.01)) == pytest.approx(0.01)
    assert nonmatch([0.2, 0.99, np.nan], 0.5).tolist()[:2] == [1.0, 0.0]
    assert np.isnan(nonmatch([0.2], np.nan)[0])
    with pytest.raises(ValueError):
        calibrate_threshold(scores, fmr=0)


# --------------------------------------------------------------------------- attribution
def _loss_frame() -> pd.DataFrame:
    rows = []
    # group x: loss 1 on originals, 3 on reconstructions; y: 1 → 1.5; z: 0.5 → 1 (flips 2/4, 1/4, 0/4)
    for g, lo, lr, flips in (("x", 1.0, 3.0, 2), ("y", 1.0, 1.5, 1), ("z", 0.5, 1.0, 0)):
        for k in range(4):
            rows.append({"codec": "c", "setting": "s", "bpp": 0.1, "grp": g, "error": None,
                         "T_loss_orig": lo + (0.1 if k % 2 else -0.1), "T_loss_recon": lr,
                         "T_flip": float(k < flips)})
    return pd.DataFrame(rows)


def test_attribution_splits_the_gap_exactly():
    row = attribute_cell(_loss_frame(), "grp", "T", n_boot=200, seed=0)
    assert (row["group_a"], row["group_b"]) == ("x", "z")
    assert row["total_gap"] == pytest.approx(2.0)
    assert row["classifier_gap"] == pytest.approx(0.5)
    assert row["compression_gap"] == pytest.approx(1.5)
    assert row["classifier_gap"] + row["compression_gap"] == pytest.approx(row["total_gap"])
    assert row["flip_gap"] == pytest.approx(0.5) and row["flip_worst_group"] == "x"
    for part in ("total", "classifier", "compression", "flip"):
        assert row[f"{part}_ci_low"] <= row[f"{part}_gap"] + 1e-9 <= row[f"{part}_ci_high"] + 2e-9


def test_attribution_table_finds_targets_and_skips_errors():
    df = _loss_frame()
    assert classifier_targets(df.columns) == ["T"]
    df.loc[df.grp != "x", "error"] = "failed"
    assert attribution_table(df, ["grp"], n_boot=100).empty  # one group left
    table = attribution_table(_loss_frame(), ["grp"], n_boot=100)
    assert len(table) == 1 and table.iloc[0]["target"] == "T"


def test_results_on_originals_are_computed_once_per_image():
    from fairbits.measures.classifiers import PerOriginal

    calls = []

    def compute(images, rows):
        calls.append(list(rows))
        return {"mean": images.mean(dim=(1, 2, 3)).numpy(), "row": np.asarray(rows, float)}

    cache, x = PerOriginal(), torch.rand(3, 3, 4, 4)
    first = cache.get({"labels": pd.DataFrame({"image_id": ["a", "b", "c"]})}, x, compute)
    again = cache.get({"labels": pd.DataFrame({"image_id": ["c", "a", "d"]})}, x[[2, 0, 1]], compute)
    assert calls == [[0, 1, 2], [2]]  # only the new image "d" is computed the second time
    np.testing.assert_allclose(first["mean"], x.mean(dim=(1, 2, 3)).numpy())
    np.testing.assert_allclose(again["mean"], x.mean(dim=(1, 2, 3)).numpy()[[2, 0, 1]])
    assert cache.get({}, x, compute)["row"].tolist() == [0, 1, 2]  # no ids: always computed


def test_with_masks_holds_the_same_masks_and_drops_them_from_storage():
    rng = np.random.default_rng(1)
    lm = np.stack([rng.uniform(8, 56, 478), rng.uniform(8, 56, 478)], axis=1).astype(np.float32)
    pytest.importorskip("mediapipe")
    rec = FaceRecord(True, 64, 64, lm, rng.random((64, 64)) > 0.5)
    held = rec.with_masks()
    assert rec.region is None and held.region is not None
    for k, m in rec.masks().items():
        np.testing.assert_array_equal(held.masks()[k], m)
    assert FaceRecord.from_row(held.to_row("k", "i")).region is None
