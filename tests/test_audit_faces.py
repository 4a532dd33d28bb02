"""An audit with every face measure, on phantom faces plus one image without a face."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("mediapipe")

from fairbits.audit.runner import run_audit  # noqa: E402
from fairbits.audit.store import load_results  # noqa: E402
from fairbits.data.phantom import render_phantoms  # noqa: E402
from fairbits.spec import parse_spec  # noqa: E402

CONTRACT = ["face_found", "ita_orig", "ita_recon", "delta_ita", "delta_e_skin", "identity_cos",
            "gender_pred_orig", "gender_pred_recon", "gender_flip",
            "skin_group_pred_orig", "skin_group_pred_recon", "skin_group_flip"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    labels = render_phantoms(6, root, seed=3, size=192, balance="skin_group", progress=False)
    df = pd.read_csv(labels)
    Image.fromarray(np.full((192, 192, 3), 128, np.uint8)).save(root / "grey.png")
    grey = {c: df.iloc[0][c] for c in df.columns} | {"image_id": "grey", "path": "grey.png"}
    pd.concat([df, pd.DataFrame([grey])]).to_csv(labels, index=False)
    return labels


@pytest.fixture(scope="module")
def phenotype_model(dataset, tmp_path_factory):
    from fairbits.data.images import load_rgb, to_tensor
    from fairbits.face.phenotype import PhenotypeModel

    df = pd.read_csv(dataset)
    images = to_tensor([load_rgb(dataset.parent / p) for p in df["path"]])
    model = PhenotypeModel.fit(images, list(df["skin_group"]), features="colour", target="skin_group")
    return model.save(tmp_path_factory.mktemp("model") / "skin.npz")


@pytest.fixture(scope="module")
def run(dataset, phenotype_model, tmp_path_factory):
    spec = parse_spec({
        "dataset": {"reader": "csv", "path": str(dataset), "path_column": "path"},
        "groups": ["skin_group"],
        "codecs": [{"name": "jpeg", "quality": [5, 60]}],
        "measures": ["psnr", "skin_tone", "landmarks", "identity", "attributes", "phenotype"],
        "phenotype_models": [str(phenotype_model)],
        "n_boot": 100, "n_perm": 100, "min_group_n": 2,
    })
    out = tmp_path_factory.mktemp("run") / "run"
    run_audit(spec, out, progress=False)
    return out


def test_contract_columns_and_faces_not_found(run):
    r = load_results(run)
    assert not [c for c in CONTRACT if c not in r.columns]
    assert r["error"].isna().all()
    grey = r[r.image_id == "grey"]
    faces = r[r.image_id != "grey"]
    assert (grey.face_found == 0).all() and (faces.face_found == 1).all()
    for col in ("ita_orig", "delta_e_skin", "identity_cos", "landmark_nme", "gender_flip"):
        assert grey[col].isna().all() and faces[col].notna().all(), col
    assert grey["psnr"].notna().all()  # pixel measures do not need a face
    # coding at quality 5 moves skin colour and identity more than at quality 60
    by_q = faces.groupby("setting")
    assert by_q.delta_e_skin.mean()["q5"] > by_q.delta_e_skin.mean()["q60"]
    assert by_q.identity_cos.mean()["q5"] < by_q.identity_cos.mean()["q60"]
    assert set(r.skin_group_pred_orig.dropna().unique()) <= {0.0, 1.0, 2.0}


def test_statistics_identity_threshold_attribution_and_report(run):
    bias = pd.read_csv(run / "bias.csv")
    for col in ("face_found", "identity_nonmatch", "delta_ita", "skin_group_flip", "skin_group_loss_recon"):
        assert (bias.measure == col).any(), col
    info = json.loads((run / "identity.json").read_text())
    assert info["n_originals"] == 6 and info["n_impostor_pairs"] == 15
    att = pd.read_csv(run / "attribution.csv")
    assert set(att.target) == {"skin_group", "gender"} or set(att.target) == {"skin_group"}
    np.testing.assert_allclose(att.classifier_gap + att.compression_gap, att.total_gap, atol=1e-9)
    html = (run / "report.html").read_text()
    assert 'id="phenotype"' in html and "Faces found" in html and "attribution" in html.lower()
    run_info = json.loads((run / "run.json").read_text())
    assert "identity_cos" in run_info["face_columns"] and run_info["column_kinds"]["delta_e_skin"] == {"kind": "degradation", "higher_is_better": False}


def test_resume_reuses_the_face_analyses(run, dataset, phenotype_model):
    parts = sorted((run / "faces").glob("part-*.parquet"))
    spec = parse_spec({
        "dataset": {"reader": "csv", "path": str(dataset), "path_column": "path"},
        "groups": ["skin_group"],
        "codecs": [{"name": "jpeg", "quality": [5, 60, 30]}],
        "measures": ["psnr", "skin_tone", "landmarks", "identity", "attributes", "phenotype"],
        "phenotype_models": [str(phenotype_model)],
        "n_boot": 100, "n_perm": 100, "min_group_n": 2,
    })
    run_audit(spec, run, progress=False, report=False)
    assert sorted((run / "faces").glob("part-*.parquet")) == parts
    assert set(load_results(run).setting) == {"q5", "q30", "q60"}


def test_bad_phenotype_spec_stops_before_any_work(dataset, tmp_path):
    from fairbits.errors import SpecError

    base = {"dataset": {"reader": "csv", "path": str(dataset), "path_column": "path"},
            "groups": ["skin_group"], "codecs": [{"name": "jpeg", "quality": [5]}]}
    with pytest.raises(SpecError, match="phenotype_models"):
        run_audit(parse_spec(base | {"measures": ["phenotype"]}), tmp_path / "a", progress=False)
    with pytest.raises(SpecError, match="not found"):
        run_audit(parse_spec(base | {"measures": ["phenotype"], "phenotype_models": [str(tmp_path / "x.npz")]}),
                  tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
