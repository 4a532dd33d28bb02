"""The Ray engine gives the local engine's table, on a two-node cluster, through a kill.

One cluster is shared by this module: a head with 1 CPU and a second node with 1 CPU on
this machine (``ray.cluster_utils.Cluster``). The command-line tests start their own
private local cluster (``--engine ray`` without ``--address``) or join the shared one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

ray = pytest.importorskip("ray")

import fairbits  # noqa: E402
from fairbits.audit.runner import run_audit  # noqa: E402
from fairbits.audit.store import RunStore  # noqa: E402
from fairbits.spec import parse_spec  # noqa: E402

from conftest import write_csv_dataset  # noqa: E402

os.environ["RAY_AUTH_MODE"] = "disabled"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """Two nodes of 1 CPU each; the driver (this process) joins them."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, runtime_env={"env_vars": {"FAIRBITS_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}},
             log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """12 images in 2 groups, one of them a broken file (an error row)."""
    root = tmp_path_factory.mktemp("d")
    csv = write_csv_dataset(root, n_per_group=6, size=(64, 64))
    (root / "img" / "a_001.png").write_bytes(b"not an image")
    return csv


def _spec(csv, **extra) -> dict:
    spec = {"dataset": {"reader": "csv", "path": str(csv)}, "groups": ["grp"],
            "codecs": [{"name": "jpeg", "quality": [10]}, {"name": "webp", "target_bpp": [0.6]},
                       {"name": "bmshj2018-hyperprior", "checkpoint": ["phantom-l0.0003"]},
                       {"name": "bmshj2018-hyperprior", "checkpoint": ["phantom-l0.002"], "mode": "exact"}],
            "measures": ["psnr", "ms_ssim", "ciede2000", "realism"], "realism_features": "pixels",
            "seed": 0, "batch_size": 4, "torch_threads": 1, "min_group_n": 2, "n_boot": 100, "n_perm": 100}
    spec.update(extra)
    return spec


@pytest.fixture(scope="module")
def local_table(data, tmp_path_factory):
    run = run_audit(parse_spec(_spec(data)), tmp_path_factory.mktemp("local") / "run", progress=False, report=False)
    return fairbits.load_results(run)


def _features(run):
    from fairbits.measures.realism import FeatureStore

    fs = FeatureStore(run, "pixels")
    out = {}
    for key in fs.keys():
        ids, feats = fs.load(key)
        order = np.argsort(ids)
        out[key] = (ids[order], feats[order])
    return out


def test_two_nodes_give_the_local_table(cluster, data, local_table, tmp_path):
    assert len(ray.nodes()) == 2
    run = run_audit(parse_spec(_spec(data)), tmp_path / "run", progress=False, report=False, engine="ray")
    table = fairbits.load_results(run)
    pd.testing.assert_frame_equal(local_table, table, check_exact=True)
    bad = table[table.image_id == "img/a_001"]
    assert len(bad) == 4 and bad["error"].notna().all() and bad["psnr"].isna().all()
    assert table["error"].notna().sum() == 4  # only the broken file, once per cell
    assert all(RunStore(run).is_done(c["id"]) for c in RunStore(run).read_info()["cells"])
    local_run = tmp_path / "again"
    run_audit(parse_spec(_spec(data)), local_run, progress=False, report=False)
    a, b = _features(local_run), _features(run)
    assert a.keys() == b.keys() and "originals" in a
    for k in a:
        np.testing.assert_array_equal(a[k][0], b[k][0])
        np.testing.assert_array_equal(a[k][1], b[k][1])


def test_either_engine_finishes_the_others_run(cluster, data, local_table, tmp_path):
    spec = parse_spec(_spec(data))
    part = run_audit(spec, tmp_path / "l2r", progress=False, report=False, stop_after_batches=3)
    run_audit(spec, part, progress=False, report=False, engine="ray")
    pd.testing.assert_frame_equal(local_table, fairbits.load_results(part), check_exact=True)
    part = run_audit(spec, tmp_path / "r2l", progress=False, report=False, engine="ray", stop_after_batches=3)
    assert 0 < len(list(part.glob("cells/*/part-*.parquet"))) < 12
    run_audit(spec, part, progress=False, report=False)
    pd.testing.assert_frame_equal(local_table, fairbits.load_results(part), check_exact=True)


def test_face_measures_and_phenotype_match(cluster, tmp_path):
    pytest.importorskip("mediapipe")
    from fairbits.data.images import load_rgb, to_tensor
    from fairbits.data.phantom import render_phantoms
    from fairbits.face.phenotype import PhenotypeModel

    labels = render_phantoms(6, tmp_path / "faces", seed=3, size=128, balance="skin_group", progress=False)
    df = pd.read_csv(labels)
    images = to_tensor([load_rgb(labels.parent / p) for p in df["path"]])
    model = PhenotypeModel.fit(images, list(df["skin_group"]), features="colour", target="skin_group")
    model_path = model.save(tmp_path / "skin.npz")
    spec = parse_spec({"dataset": {"reader": "csv", "path": str(labels), "path_column": "path"},
                       "groups": ["skin_group"], "codecs": [{"name": "jpeg", "quality": [5, 60]}],
                       "measures": ["psnr", "skin_tone", "identity", "phenotype"],
                       "phenotype_models": [str(model_path)], "batch_size": 4, "torch_threads": 1})
    local = fairbits.load_results(run_audit(spec, tmp_path / "local", progress=False, report=False))
    # half the rows by Ray, then the rest: stored face analyses are served to the workers
    part = run_audit(spec, tmp_path / "ray", progress=False, report=False, engine="ray", stop_after_batches=2)
    run_audit(spec, part, progress=False, report=False, engine="ray")
    pd.testing.assert_frame_equal(local, fairbits.load_results(part), check_exact=True)
    assert local["identity_cos"].notna().any()
    from fairbits.audit.faces import load_faces

    cols = ["key", "face_found", "height", "width", "landmarks", "person", "embedding"]
    a = load_faces(tmp_path / "local", cols).sort_values("key").reset_index(drop=True)
    b = load_faces(part, cols).sort_values("key").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def _cli(*args):
    return [sys.executable, "-c", "from fairbits.cli import app; app()", *args]


def test_killed_ray_run_resumes_without_duplicates(cluster, data, tmp_path):
    small = _spec(data, batch_size=2)  # 24 jobs: the kill lands mid-run
    local = fairbits.load_results(run_audit(parse_spec(small), tmp_path / "local", progress=False, report=False))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(small))
    run = tmp_path / "run"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    cmd = _cli("audit", str(spec), "--out", str(run), "--no-progress", "--no-report", "--engine", "ray",
               "--address", cluster.address)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and len(list(run.glob("cells/*/part-*.parquet"))) < 3 and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    n_before = sum(len(pd.read_parquet(p)) for p in run.glob("cells/*/part-*.parquet"))
    assert 0 < n_before < len(local)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    table = fairbits.load_results(run)
    assert not table.duplicated(["image_id", "codec", "setting"]).any()
    stored = pd.concat([pd.read_parquet(p) for p in run.glob("cells/*/part-*.parquet")])
    assert len(stored) == len(table)  # nothing written twice
    pd.testing.assert_frame_equal(local, table, check_exact=True)


def test_cli_private_cluster_and_bad_spec(data, tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_spec(data, codecs=[{"name": "jpeg", "quality": [500]}])))
    r = subprocess.run(_cli("audit", str(bad), "--out", str(tmp_path / "bad"), "--engine", "ray"),
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "quality 500" in r.stderr and "Started a local Ray" not in r.stderr
    r = subprocess.run(_cli("audit", str(bad), "--out", str(tmp_path / "bad2"), "--address", "auto"),
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--engine ray" in r.stderr
    good = tmp_path / "good.yaml"
    small = _spec(data, codecs=[{"name": "jpeg", "quality": [10]}], measures=["psnr"], engine="ray")
    good.write_text(yaml.safe_dump(small))
    r = subprocess.run(_cli("audit", str(good), "--out", str(tmp_path / "run"), "--no-progress"),
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    local = run_audit(parse_spec({**small, "engine": "local"}), tmp_path / "local", progress=False, report=False)
    pd.testing.assert_frame_equal(fairbits.load_results(local), fairbits.load_results(tmp_path / "run"),
                                  check_exact=True)
    assert (tmp_path / "run" / "report.html").is_file()


def test_missing_ray_names_the_extra(data, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(fairbits.errors.SpecError, match=r"fairbits\[ray\]"):
        run_audit(parse_spec(_spec(data)), tmp_path / "run", engine="ray")
    assert not (tmp_path / "run").exists()


def test_every_process_reads_the_same_formats():
    """A HEIF original must be readable by a Ray worker exactly when the driver can read it."""
    import subprocess

    from fairbits.data.images import _formats

    code = "from fairbits.data.images import _formats; print(','.join(_formats()))"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert fresh == ",".join(_formats())
    pytest.importorskip("pillow_heif")
    assert "HEIF" in fresh.split(",")  # registered by the reader itself, not by whatever ran before
