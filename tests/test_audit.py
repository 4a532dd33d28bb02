"""The audit runner end to end: the issue's spec, resume after a kill, bad input rows."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import fairbits
from fairbits.audit.runner import run_audit
from fairbits.audit.store import RunStore
from fairbits.spec import load_spec, parse_spec

from conftest import ISSUE_SPEC, write_csv_dataset


def test_issue_spec_runs_as_written(tmp_path):
    data = tmp_path / "data"
    write_csv_dataset(data)
    (data / "spec.yaml").write_text(ISSUE_SPEC)
    run = run_audit(load_spec(data / "spec.yaml"), tmp_path / "run", progress=False)
    df = fairbits.load_results(run)
    for col in ("image_id", "codec", "setting", "bpp", "psnr", "ms_ssim", "grp", "error"):
        assert col in df.columns
    assert len(df) == 12 * 3
    assert set(zip(df.codec, df.setting)) == {("jpeg", "q10"), ("jpeg", "q50"), ("jpeg444", "q10")}
    assert df["error"].isna().all()
    # real bytes: bpp from the stored byte count of the unpadded image
    np.testing.assert_allclose(df.bpp, 8 * df.num_bytes / (df.height * df.width))
    # more quality, more bits and better PSNR
    m = df.groupby("setting")[["bpp", "psnr"]].mean()
    assert m.loc["q50", "bpp"] > m.loc["q10", "bpp"] and m.loc["q50", "psnr"] > m.loc["q10", "psnr"]
    for name in ("summary.csv", "bias.csv", "report.html"):
        assert (run / name).is_file()


def _spec(csv: Path, **extra) -> dict:
    spec = {"dataset": {"reader": "csv", "path": str(csv)}, "groups": ["grp"],
            "codecs": [{"name": "jpeg", "quality": [5, 40]}, {"name": "webp", "target_bpp": [0.5]}],
            "measures": ["psnr", "ssim"], "seed": 0, "batch_size": 4}
    spec.update(extra)
    return spec


def test_resume_after_stop_gives_the_same_table(tmp_path):
    csv = write_csv_dataset(tmp_path / "d", n_per_group=7)
    spec = parse_spec(_spec(csv))
    full = fairbits.load_results(run_audit(spec, tmp_path / "full", progress=False, report=False))
    part = run_audit(spec, tmp_path / "part", progress=False, report=False, stop_after_batches=5)
    store = RunStore(part)
    assert not all(store.is_done(c["id"]) for c in store.read_info()["cells"])
    run_audit(spec, part, progress=False, report=False)
    again = fairbits.load_results(part)
    assert not again.duplicated(["image_id", "codec", "setting"]).any()
    pd.testing.assert_frame_equal(full, again)


def test_finished_cells_are_skipped(tmp_path):
    csv = write_csv_dataset(tmp_path / "d", n_per_group=2)
    spec = parse_spec(_spec(csv))
    run = run_audit(spec, tmp_path / "r", progress=False, report=False)
    parts = sorted((run / "cells").rglob("part-*.parquet"))
    mtimes = [p.stat().st_mtime_ns for p in parts]
    run_audit(spec, run, progress=False, report=False)
    assert sorted((run / "cells").rglob("part-*.parquet")) == parts
    assert [p.stat().st_mtime_ns for p in parts] == mtimes


_KILL_SCRIPT = """
import sys
from fairbits.audit.runner import run_audit
from fairbits.spec import parse_spec
import json
run_audit(parse_spec(json.loads(sys.argv[1])), sys.argv[2], progress=False, report=False)
"""


@pytest.mark.slow
def test_killed_subprocess_resumes_without_duplicates_or_gaps(tmp_path):
    import json

    csv = write_csv_dataset(tmp_path / "d", n_per_group=40, size=(64, 64))
    spec_dict = _spec(csv, batch_size=2)
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, json.dumps(spec_dict), str(run)])
    deadline = time.time() + 120
    while time.time() < deadline and len(list(run.glob("cells/*/part-*.parquet"))) < 4:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = RunStore(run)
    cells = [c["id"] for c in store.read_info()["cells"]]
    assert not all(store.is_done(c) for c in cells), "the run finished before it could be killed"
    spec = parse_spec(spec_dict)
    run_audit(spec, run, progress=False, report=False)
    resumed = fairbits.load_results(run)
    full = fairbits.load_results(run_audit(spec, tmp_path / "full", progress=False, report=False))
    assert not any(p.name.endswith(".tmp") for p in run.rglob("*"))
    pd.testing.assert_frame_equal(full, resumed)


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


def test_other_run_in_same_dir_is_refused(tmp_path):
    csv = write_csv_dataset(tmp_path / "d", n_per_group=2)
    run_audit(parse_spec(_spec(csv)), tmp_path / "r", progress=False, report=False)
    with pytest.raises(fairbits.FairbitsError, match=r"another configuration \(seed: 0 → 1\)"):
        run_audit(parse_spec(_spec(csv, seed=1)), tmp_path / "r", progress=False, report=False)


def test_realism_measure_writes_features_and_table(tmp_path):
    csv = write_csv_dataset(tmp_path / "d", n_per_group=5)
    spec = parse_spec(_spec(csv, measures=["psnr", "realism"], realism_features="pixels"))
    part = run_audit(spec, tmp_path / "r", progress=False, report=False, stop_after_batches=2)
    run = run_audit(spec, part, progress=False)
    realism = pd.read_csv(run / "realism.csv", dtype={"group": str})
    assert set(realism["group"]) == {"a", "b", "all"}
    assert set(realism["setting"]) == {"q5", "q40", "bpp0.5"}
    fd = realism[realism.group == "all"].set_index("setting")["fd"]
    assert fd["q5"] > fd["q40"]  # coarser quantisation, further from the originals
    from fairbits.measures.realism import FeatureStore
    ids, feats = FeatureStore(run, "pixels").load("originals")
    assert len(ids) == len(set(ids)) == 10 and feats.shape == (10, 768)
    assert "Realism per group" in (run / "report.html").read_text()


def test_resume_removes_temporaries_of_a_killed_write(tmp_path):
    csv = write_csv_dataset(tmp_path / "d", n_per_group=2)
    spec = parse_spec(_spec(csv))
    run = tmp_path / "run"
    run_audit(spec, run, progress=False, report=False, stop_after_batches=1)
    cell = next((run / "cells").iterdir())
    stale = cell / ".part-000001.parquet.abc123.tmp"
    stale.write_bytes(b"half a parquet file")
    kept = sorted(cell.glob("part-*.parquet"))
    run_audit(spec, run, progress=False, report=False)
    assert not stale.exists() and set(kept) <= set(cell.glob("part-*.parquet"))
