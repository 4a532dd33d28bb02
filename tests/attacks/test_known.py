"""Attacks that fairbits already withstood when the attack pass tried them; kept here so
none comes back: YAML tags and alias bombs, paths escaping the dataset, pickled object
arrays in .npz files, broken images, and SIGKILL at several moments of a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

import fairbits
from fairbits.audit.runner import run_audit
from fairbits.audit.store import RunStore
from fairbits.cli import app
from fairbits.spec import parse_spec

from conftest import write_csv_dataset


def _spec(csv: Path, **extra) -> dict:
    spec = {"dataset": {"reader": "csv", "path": str(csv)}, "groups": ["grp"],
            "codecs": [{"name": "jpeg", "quality": [5, 40]}, {"name": "webp", "target_bpp": [0.5]}],
            "measures": ["psnr", "ssim"], "seed": 0, "batch_size": 4, "n_boot": 100, "n_perm": 100}
    spec.update(extra)
    return spec


def _audit_cli(spec_text: str, tmp_path: Path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text)
    return CliRunner().invoke(app, ["audit", str(spec), "--out", str(tmp_path / "run"), "--no-progress"])


# -- specs ---------------------------------------------------------------------------

def test_yaml_python_tags_run_nothing(csv_dataset, tmp_path):
    marker = tmp_path / "pwned"
    r = _audit_cli(f"dataset: !!python/object/apply:os.mkdir ['{marker}']\ngroups: [grp]\n"
                   "codecs: [{name: jpeg, quality: [10]}]\n", tmp_path)
    assert r.exit_code == 2 and "not valid YAML" in r.output
    assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.timeout(60)
def test_a_yaml_alias_bomb_is_refused_quickly(csv_dataset, tmp_path):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 9)}]" for k in range(1, 9)]
    text = "\n".join(lines) + f"\ndataset: {{reader: csv, path: {csv_dataset}}}\ngroups: [grp]\n" \
        "codecs: [{name: jpeg, quality: [10]}]\nname: *a8\n"
    t = time.perf_counter()
    r = _audit_cli(text, tmp_path)
    assert r.exit_code == 2 and time.perf_counter() - t < 30
    assert not (tmp_path / "run").exists()


# -- data files ----------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["../outside.png", "img/../../outside.png", "ABS", "LINK"])
def test_paths_escaping_the_dataset_are_refused(tmp_path, entry):
    root = tmp_path / "root"
    (root / "img").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "outside.png")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "img" / "ok.png")
    if entry == "LINK":
        os.symlink(tmp_path / "outside.png", root / "img" / "link.png")
        entry = "img/link.png"
    elif entry == "ABS":
        entry = str(tmp_path / "outside.png")
    pd.DataFrame({"path": ["img/ok.png", entry], "grp": ["a", "b"]}).to_csv(root / "labels.csv", index=False)
    r = _audit_cli(f"dataset: {{reader: csv, path: {root / 'labels.csv'}}}\ngroups: [grp]\n"
                   "codecs: [{name: jpeg, quality: [10]}]\n", tmp_path)
    assert r.exit_code == 2 and "outside the dataset root" in r.output


@pytest.mark.parametrize("kind", ["phenotype", "sampler"])
def test_object_arrays_in_npz_files_are_never_unpickled(tmp_path, kind):
    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    path = tmp_path / f"evil-{kind}.npz"
    fmt = "fairbits-phenotype/1" if kind == "phenotype" else "fairbits-fairgen-sampler/1"
    np.savez(path, format=np.array(fmt), payload=np.array([Boom()], dtype=object))
    if kind == "phenotype":
        from fairbits.face.phenotype import PhenotypeModel

        load = PhenotypeModel.load
    else:
        from fairbits.generative.export import load_sampler as load
    with pytest.raises(fairbits.FairbitsError):
        load(path)
    assert not marker.exists()


def test_broken_images_become_error_rows(tmp_path):
    csv = write_csv_dataset(tmp_path / "d", n_per_group=3)
    root = csv.parent
    (root / "img" / "zero.png").write_bytes(b"")
    (root / "img" / "junk.png").write_bytes(b"garbage")
    good = (root / "img" / "a_000.png").read_bytes()
    (root / "img" / "trunc.png").write_bytes(good[: len(good) // 3])
    big = np.zeros((300, 300, 3), np.uint8)
    Image.fromarray(big).save(root / "img" / "big.png")
    Image.fromarray(np.full((48, 48), 90, np.uint8), "L").save(root / "img" / "gray.png")
    extra = pd.DataFrame({"path": ["img/zero.png", "img/junk.png", "img/trunc.png", "img/missing.png",
                                   "img/big.png", "img/gray.png"],
                          "grp": ["a", "b", "a", "b", "a", "b"]})
    labels = pd.concat([pd.read_csv(csv), extra])
    labels.to_csv(csv, index=False)
    spec = parse_spec(_spec(csv, dataset={"reader": "csv", "path": str(csv), "max_pixels": 50_000}))
    run = run_audit(spec, tmp_path / "r", progress=False)
    df = fairbits.load_results(run)
    per_image = df[(df.codec == "jpeg") & (df.setting == "q40")].set_index("image_id")
    errors = per_image["error"]
    assert errors["img/zero"].startswith("zero-byte")
    assert "recognised" in errors["img/junk"]
    assert "truncated" in errors["img/trunc"]
    assert "missing" in errors["img/missing"]
    assert "too large" in errors["img/big"]
    assert pd.isna(errors["img/gray"]) and per_image.loc["img/gray", "psnr"] > 20
    assert per_image.loc["img/zero", ["bpp", "psnr"]].isna().all()
    assert len(df) == 3 * (6 + 6)  # every image has a row in every cell
    report = (run / "report.html").read_text()
    assert "zero-byte" in report


# -- SIGKILL at several moments ------------------------------------------------------------

_KILL_SCRIPT = """
import sys
from fairbits.audit.runner import run_audit
from fairbits.spec import parse_spec
import json
run_audit(parse_spec(json.loads(sys.argv[1])), sys.argv[2], progress=False, report=True)
"""


def _kill_when(run: Path, moment: str, proc: subprocess.Popen) -> None:
    """Wait for ``moment`` of the run in ``run``, then SIGKILL the process."""
    ready = {
        "start": lambda: (run / "run.json").exists(),
        "first part": lambda: len(list(run.glob("cells/*/part-*.parquet"))) >= 1,
        "mid run": lambda: len(list(run.glob("cells/*/part-*.parquet"))) >= 9,
        "report": lambda: len(list(run.glob("cells/*/DONE"))) >= 3,
    }[moment]
    deadline = time.time() + 120
    while time.time() < deadline and not ready() and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def kill_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kill")
    csv = write_csv_dataset(tmp / "d", n_per_group=24, size=(64, 64))
    spec = _spec(csv, batch_size=2)
    full = fairbits.load_results(run_audit(parse_spec(spec), tmp / "full", progress=False, report=False))
    return spec, full


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["start", "first part", "mid run", "report"])
def test_sigkill_at_any_moment_resumes_to_the_same_table(kill_data, tmp_path, moment):
    spec, full = kill_data
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, json.dumps(spec), str(run)])
    _kill_when(run, moment, proc)
    run_audit(parse_spec(spec), run, progress=False, report=True)
    resumed = fairbits.load_results(run)
    assert not any(p.name.endswith(".tmp") for p in run.rglob("*"))
    raw = pd.concat([pd.read_parquet(p) for p in run.glob("cells/*/part-*.parquet")])
    assert len(raw) == len(resumed)  # no row written twice
    pd.testing.assert_frame_equal(full, resumed)
    assert (run / "report.html").is_file()
    assert all(RunStore(run).is_done(c["id"]) for c in RunStore(run).read_info()["cells"])
