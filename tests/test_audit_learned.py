"""Learned codecs in the audit: built-in checkpoints, fast and exact modes, the exact check."""

from __future__ import annotations

import numpy as np
import pytest

import fairbits
from fairbits.audit.plan import plan_audit
from fairbits.audit.runner import run_audit
from fairbits.errors import FairbitsError
from fairbits.report.checks import fast_check_table
from fairbits.spec import parse_spec

from conftest import write_csv_dataset


def _spec(csv, codecs, **extra):
    spec = {"dataset": {"reader": "csv", "path": str(csv)}, "groups": ["grp"], "codecs": codecs,
            "measures": ["psnr"], "seed": 0, "batch_size": 4}
    spec.update(extra)
    return parse_spec(spec)


def test_builtin_checkpoint_fast_and_exact(tmp_path):
    csv = write_csv_dataset(tmp_path / "d", n_per_group=3, size=(64, 64))
    spec = _spec(csv, [{"name": "bmshj2018-hyperprior", "checkpoint": ["phantom-l0.002"], "mode": "fast"},
                       {"name": "mbt2018-mean", "checkpoint": ["phantom-l0.0003"], "mode": "exact"}])
    df = fairbits.load_results(run_audit(spec, tmp_path / "r", progress=False))
    fast = df[df["mode"] == "fast"]
    exact = df[df["mode"] == "exact"]
    assert len(fast) == len(exact) == 6 and df["error"].isna().all()
    assert fast["num_bytes"].isna().all()  # estimated rate: no bitstream length
    assert fast["exact_bpp"].notna().all()  # 6 images < the 32-image check sample: all checked
    assert (fast["recon_max_diff"] <= 3).all()
    # the estimate leaves out the stream header and coder flush: within 5% + 16 bytes
    slack = (0.05 * fast["exact_bpp"] + 8 * 16 / (64 * 64))
    assert ((fast["bpp"] - fast["exact_bpp"]).abs() <= slack).all()
    np.testing.assert_allclose(exact["bpp"], 8 * exact["num_bytes"] / (64 * 64))
    assert (fast_check_table(df)["flag"] == "ok").all()
    assert "Fast-mode checks" in (tmp_path / "r" / "report.html").read_text()


@pytest.mark.parametrize("codecs,message", [
    ([{"name": "jpeg", "quality": [10], "mode": "fast"}], "no fast mode"),
    ([{"name": "jpeg", "checkpoint": ["x.pt"]}], "takes `quality`"),
    ([{"name": "bmshj2018-hyperprior", "checkpoint": ["nope.pt"]}], "checkpoint file not found"),
    ([{"name": "bmshj2018-hyperprior", "checkpoint": ["phantom-l9"]}], "unknown setting"),
    ([{"name": "bmshj2018-hyperprior", "quality": [1]}], "downloads are off"),
])
def test_learned_spec_errors(tmp_path, codecs, message):
    csv = write_csv_dataset(tmp_path / "d", n_per_group=1)
    with pytest.raises(FairbitsError, match=message):
        plan_audit(_spec(csv, codecs))


@pytest.mark.slow
def test_exact_coding_in_worker_processes_matches_threads(tmp_path):
    csv = write_csv_dataset(tmp_path / "d", n_per_group=2, size=(64, 64))
    codecs = [{"name": "bmshj2018-hyperprior", "checkpoint": ["phantom-l0.0003"], "mode": "exact"}]
    one = fairbits.load_results(run_audit(_spec(csv, codecs), tmp_path / "a", progress=False, report=False))
    two = fairbits.load_results(run_audit(_spec(csv, codecs, processes=2), tmp_path / "b", progress=False,
                                          report=False))
    assert one["num_bytes"].notna().all()
    assert list(one["num_bytes"]) == list(two["num_bytes"])
    # the same bitstreams; decoding with 1 vs 2 torch threads may round a pixel differently
    np.testing.assert_allclose(one["psnr"], two["psnr"], rtol=1e-4)
