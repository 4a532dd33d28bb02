"""examples/gone_with_the_bits.yaml: valid as written, and what runs offline runs on a
miniature copy of RFW's published layout (faces in 400x400 frames, published labels)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

pytest.importorskip("mediapipe")

import fairbits  # noqa: E402
from fairbits.audit.runner import run_audit  # noqa: E402
from fairbits.codecs.base import codec_info  # noqa: E402
from fairbits.spec import load_spec, parse_spec  # noqa: E402

from published_layouts import random_published_rows, write_rfw_metadata  # noqa: E402
from test_face_crop import _scene  # noqa: E402

EXAMPLE = Path(__file__).parents[1] / "examples" / "gone_with_the_bits.yaml"
IDENTITIES = {"African": ["m.0a1", "m.0a2"], "Asian": ["m.0b1", "m.0b2"],
              "Caucasian": ["m.0c1", "m.0c2"], "Indian": ["m.0d1", "m.0d2"]}


def test_the_example_is_a_valid_spec():
    spec = load_spec(EXAMPLE)
    assert spec.dataset.reader == "rfw" and spec.dataset.crop == "face"
    for c in spec.codecs:
        codec_info(c.name)  # every codec is one fairbits knows
    assert {"phenotype", "skin_tone", "identity", "realism"} <= set(spec.measures)


@pytest.fixture(scope="module")
def rfw(tmp_path_factory):
    root = tmp_path_factory.mktemp("RFW") / "test"
    k = 0
    for race, idents in IDENTITIES.items():
        for ident in idents:
            for n in (1, 2):
                scene, _ = _scene(k % 8, frame=400, face_px=220, at=(90, 80))
                path = root / "data" / race / ident / f"{ident}_{n:04d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(scene).save(path, quality=95)
                k += 1
    rows = random_published_rows(IDENTITIES, seed=1)
    rows.append({**rows[0], "Class_ID": "African/m.0zz"})  # an identity without images
    write_rfw_metadata(root / "RFW_metadata_FDA.csv", rows)
    return root


def test_the_study_runs_on_a_miniature_rfw(rfw, tmp_path):
    from fairbits.face.phenotype_training import train_phenotype

    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["dataset"].update(path=str(rfw), phenotypes="RFW_metadata_FDA.csv", size=128)
    data = parse_spec({**raw, "codecs": [{"name": "jpeg", "quality": [50]}], "measures": ["psnr"]}).dataset
    model, card = train_phenotype(data, "eyelid", tmp_path / "eyelid.npz", features="colour", progress=False,
                                  test_fraction=0.25)
    assert card["split"]["column"] == "identity"  # split by person, not by image
    raw.update(
        groups=["race", "eyelid"], min_group_n=1, n_boot=100, n_perm=100,
        # offline stand-ins: built-in checkpoints for the zoo's (downloaded on first use), pixel
        # features for Inception's
        codecs=[{"name": "bmshj2018-hyperprior", "checkpoint": ["phantom-l0.0003", "phantom-l0.002"],
                 "mode": "fast"}, *[c for c in raw["codecs"] if c["name"] in ("jpeg", "jpeg444", "heic")]],
        phenotype_models=[str(tmp_path / "eyelid.npz")], realism_features="pixels",
        measures=[m for m in raw["measures"] if m != "identity"])
    run = run_audit(parse_spec(raw), tmp_path / "run", progress=False)
    df = fairbits.load_results(run)
    assert len(df) == 16 * 11
    ok = df[df.error.isna()]
    assert len(ok) >= 0.75 * len(df), df.error.value_counts()
    assert (ok[["height", "width"]] == 128).all().all() and (ok.crop_w < 400).all()
    assert set(df.race.unique()) == set(IDENTITIES) and df.eyelid.notna().all()
    for name in ("findings.csv", "equal_rate.csv", "accuracy_bias.csv", "report.html"):
        assert (run / name).is_file(), name
    eq = pd.read_csv(run / "equal_rate.csv")
    assert "jpeg" in set(eq.codec) and np.isfinite(eq.gap).any()
    acc = pd.read_csv(run / "accuracy_bias.csv")
    assert set(acc.target) == {"eyelid"}
