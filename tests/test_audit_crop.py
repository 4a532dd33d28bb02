"""`crop: face` in an audit: small faces in large frames are coded as their face crops, the
box is recorded per row, a faceless image is an error row counted in its group."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("mediapipe")

import fairbits  # noqa: E402
from fairbits.audit.runner import run_audit  # noqa: E402
from fairbits.spec import parse_spec  # noqa: E402

from test_face_crop import FOUND, FRAME, _scene  # noqa: E402


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    rows = []
    for i in FOUND:
        scene, _ = _scene(i)
        Image.fromarray(scene).save(root / f"face{i}.png")
        rows.append({"path": f"face{i}.png", "grp": "a" if i % 2 == 0 else "b"})
    Image.fromarray(np.full((FRAME, FRAME, 3), 128, np.uint8)).save(root / "grey.png")
    rows.append({"path": "grey.png", "grp": "b"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def _spec(csv, **dataset):
    return parse_spec({"dataset": {"reader": "csv", "path": str(csv), **dataset}, "groups": ["grp"],
                       "codecs": [{"name": "jpeg", "quality": [50]}], "measures": ["psnr"], "min_group_n": 1})


def test_crop_face_codes_the_face_and_records_the_box(scenes, tmp_path):
    cropped = fairbits.load_results(run_audit(_spec(scenes, crop="face", size=96), tmp_path / "c", progress=False))
    whole = fairbits.load_results(run_audit(_spec(scenes), tmp_path / "w", progress=False, report=False))
    grey = cropped[cropped.image_id == "grey"].iloc[0]
    assert grey["error"].startswith("no face for crop: face") and np.isnan(grey["crop_w"])
    faces = cropped[cropped.image_id != "grey"].set_index("image_id")
    assert faces["error"].isna().all() and (faces[["height", "width"]] == 96).all().all()
    assert ((faces.crop_w > 40) & (faces.crop_w < 200) & (faces.crop_w == faces.crop_h)).all()
    assert ((faces.crop_x >= 0) & (faces.crop_x + faces.crop_w <= FRAME)).all()
    # the rate is over the crop's pixels: bytes of a 96x96 image, far below the whole frame's
    np.testing.assert_allclose(faces.bpp, 8 * faces.num_bytes / (96 * 96))
    assert (faces.num_bytes < whole.set_index("image_id").loc[faces.index, "num_bytes"] / 5).all()
    assert "crop_x" not in whole.columns and whole["error"].isna().all()


def test_crop_changes_the_configuration(scenes, tmp_path):
    run_audit(_spec(scenes), tmp_path / "r", progress=False, report=False)
    with pytest.raises(fairbits.errors.FairbitsError, match="crop"):
        run_audit(_spec(scenes, crop="face"), tmp_path / "r", progress=False, report=False)
