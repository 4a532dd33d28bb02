"""The audit runner end to end: the issue's spec, resume, realism (attacks: tests/attacks/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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


def test_realism_intervals_use_the_specs_n_boot(tmp_path):
    from fairbits.audit.store import load_results
    from fairbits.measures.realism import FeatureStore, realism_table

    csv = write_csv_dataset(tmp_path / "d", n_per_group=5)
    spec = parse_spec(_spec(csv, measures=["psnr", "realism"], realism_features="pixels", n_boot=150))
    run = run_audit(spec, tmp_path / "r", progress=False)
    stored = pd.read_csv(run / "realism.csv", dtype={"group": str})
    results = load_results(run)
    for n_boot, same in ((150, True), (200, False)):  # 200: the function's own default
        table = realism_table(results, FeatureStore(run, "pixels"), ["grp"], n_boot=n_boot, seed=0)
        ci = [c for c in table.columns if c.endswith("_ci_low")]
        assert ci and np.allclose(table[ci].to_numpy(float), stored[ci].to_numpy(float), equal_nan=True) == same
