"""Attacks on the run directory: user files, lost or damaged parts, changed labels and
images, a second writer, Ctrl-C and a full disk. Each test reproduces one attack."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import fairbits
from fairbits.audit.lock import RunLock, RunLocked
from fairbits.audit.runner import run_audit
from fairbits.audit.store import RunStore
from fairbits.cli import app
from fairbits.errors import FairbitsError, FairbitsWarning
from fairbits.spec import parse_spec

from conftest import write_csv_dataset

N_PER_GROUP = 4


def _spec(csv: Path, **extra) -> dict:
    spec = {"dataset": {"reader": "csv", "path": str(csv)}, "groups": ["grp"],
            "codecs": [{"name": "jpeg", "quality": [10, 40]}], "measures": ["psnr"], "seed": 0,
            "batch_size": 2, "n_boot": 100, "n_perm": 100}
    spec.update(extra)
    return spec


def _write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    return write_csv_dataset(tmp_path / "d", n_per_group=N_PER_GROUP)


def _audit(spec: dict, out: Path, **kw) -> Path:
    return run_audit(parse_spec(spec), out, progress=False, report=kw.pop("report", False), **kw)


# -- item 2: never touch files fairbits did not write --------------------------------

def test_a_folder_that_is_not_a_run_is_refused_and_left_alone(data, tmp_path):
    thesis = tmp_path / "thesis"
    (thesis / "deep").mkdir(parents=True)
    draft = thesis / "deep" / ".draft.tmp"
    draft.write_text("my draft")
    spec = _write_spec(tmp_path / "spec.yaml", _spec(data))
    r = CliRunner().invoke(app, ["audit", str(spec), "--out", str(thesis), "--no-progress"])
    assert r.exit_code == 2, r.output
    assert "not a fairbits run" in r.output
    assert draft.read_text() == "my draft"
    assert sorted(p.name for p in thesis.iterdir()) == ["deep"]  # not even a lock file


def test_out_that_is_a_file_exits_2(data, tmp_path):
    f = tmp_path / "results.txt"
    f.write_text("keep me")
    spec = _write_spec(tmp_path / "spec.yaml", _spec(data))
    r = CliRunner().invoke(app, ["audit", str(spec), "--out", str(f), "--no-progress"])
    assert r.exit_code == 2 and "is a file" in r.output
    assert f.read_text() == "keep me"


def test_an_empty_folder_is_accepted(data, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    run = _audit(_spec(data), out)
    assert len(fairbits.load_results(run)) == 2 * 2 * N_PER_GROUP


def test_only_temporaries_in_the_run_layout_are_removed(data, tmp_path):
    run = _audit(_spec(data), tmp_path / "run", stop_after_batches=1)
    cell = next((run / "cells").iterdir())
    ours = cell / ".part-000009.parquet.x1y2.tmp"
    ours.write_bytes(b"half")
    (run / "notes").mkdir()
    theirs = run / "notes" / ".draft.tmp"
    theirs.write_text("user file inside the run folder")
    _audit(_spec(data), run)
    assert not ours.exists()
    assert theirs.read_text() == "user file inside the run folder"


# -- item 3: a lost or corrupt part is noticed and recomputed -------------------------

def _lose_rows(cell: Path, n: int) -> None:
    """Drop the first ``n`` rows of a finished (compacted: one part) cell, as a lost part would."""
    (part,) = sorted(cell.glob("part-*.parquet"))
    pd.read_parquet(part).iloc[n:].to_parquet(part, index=False)


def test_a_deleted_part_of_a_finished_cell_is_recomputed(data, tmp_path):
    run = _audit(_spec(data), tmp_path / "run")
    full = fairbits.load_results(run)
    _lose_rows(run / "cells" / "jpeg__q10", 2)
    assert len(fairbits.load_results(run)) < len(full)
    with pytest.warns(FairbitsWarning, match=r"jpeg__q10 was finished but lacks 2 of 8 rows"):
        _audit(_spec(data), run)
    pd.testing.assert_frame_equal(fairbits.load_results(run), full)


def test_a_truncated_part_is_named_then_set_aside_and_recomputed(data, tmp_path):
    run = _audit(_spec(data), tmp_path / "run", report=True)
    full = fairbits.load_results(run)
    part = sorted((run / "cells" / "jpeg__q40").glob("part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:40])
    with pytest.raises(FairbitsError, match=rf"{part.name} is unreadable .*run the same"):
        fairbits.load_results(run)
    r = CliRunner().invoke(app, ["report", str(run)])
    assert r.exit_code == 2 and part.name in r.output and "Traceback" not in r.output
    with pytest.warns(FairbitsWarning, match="unreadable"):
        _audit(_spec(data), run)
    assert part.with_name(part.name + ".corrupt").is_file()
    pd.testing.assert_frame_equal(fairbits.load_results(run), full)


def test_the_report_says_when_rows_are_missing(data, tmp_path):
    run = _audit(_spec(data), tmp_path / "run", report=True)
    _lose_rows(run / "cells" / "jpeg__q10", 2)
    with pytest.warns(FairbitsWarning, match=r"rows are missing .*jpeg__q10 2 of 8"):
        r = CliRunner().invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    html = (run / "report.html").read_text()
    assert "missing" in html and "jpeg__q10" in html


def test_an_unreadable_face_part_is_analysed_again(data, tmp_path):
    pytest.importorskip("mediapipe")
    spec = _spec(data, measures=["psnr", "skin_tone"])
    run = _audit(spec, tmp_path / "run")
    full = fairbits.load_results(run)
    face_part = sorted((run / "faces").glob("part-*.parquet"))[0]
    face_part.write_bytes(b"PAR1 broken")
    for p in (run / "cells" / "jpeg__q10").glob("part-*.parquet"):
        p.unlink()
    with pytest.warns(FairbitsWarning):
        _audit(spec, run)
    pd.testing.assert_frame_equal(fairbits.load_results(run), full)


# -- item 4: labels are part of the run -----------------------------------------------

def test_changed_labels_update_the_manifest_and_the_statistics(data, tmp_path):
    run = _audit(_spec(data), tmp_path / "run", report=True)
    labels = pd.read_csv(data)
    moved = labels.index[labels["grp"] == "a"][0]
    labels.loc[moved, "grp"] = "b"
    labels.to_csv(data, index=False)
    with pytest.warns(FairbitsWarning, match=r"img/a_000: grp a → b"):
        _audit(_spec(data), run, report=True)
    df = fairbits.load_results(run)
    assert (df[df.image_id == "img/a_000"]["grp"] == "b").all()
    summary = pd.read_csv(run / "summary.csv", dtype={"group": str})
    n = summary[(summary.setting == "q10") & (summary.measure == "psnr")].set_index("group")["n"]
    assert n["a"] == N_PER_GROUP - 1 and n["b"] == N_PER_GROUP + 1


def test_changed_image_bytes_are_refused_naming_the_image(data, tmp_path):
    run = _audit(_spec(data), tmp_path / "run")
    img = data.parent / "img" / "b_002.png"
    from PIL import Image

    Image.open(img).rotate(90).save(img)
    with pytest.raises(FairbitsError, match=r"1 image\(s\) changed their bytes: img/b_002"):
        _audit(_spec(data), run)


# -- item 5: bad configuration is never stored as bad data ----------------------------

def test_cuda_without_cuda_exits_2_before_any_work(data, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    spec = _write_spec(tmp_path / "spec.yaml", _spec(data, device="cuda"))
    r = CliRunner().invoke(app, ["audit", str(spec), "--out", str(tmp_path / "run"), "--no-progress"])
    assert r.exit_code == 2 and "CUDA is not available" in r.output
    assert not (tmp_path / "run").exists()


class _Boom:
    def __reduce__(self):
        return (os.mkdir, (str(Path(os.environ["FAIRBITS_ATTACK_MARKER"])),))


@pytest.mark.parametrize("payload", ["pickle", "junk"])
def test_a_bad_checkpoint_exits_2_before_any_work(data, tmp_path, monkeypatch, payload):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("FAIRBITS_ATTACK_MARKER", str(marker))
    ck = tmp_path / "evil.pt"
    ck.write_bytes(pickle.dumps({"state_dict": _Boom()}) if payload == "pickle" else os.urandom(3000))
    spec = _spec(data, codecs=[{"name": "bmshj2018-hyperprior", "checkpoint": [str(ck)]}])
    spec_path = _write_spec(tmp_path / "spec.yaml", spec)
    r = CliRunner().invoke(app, ["audit", str(spec_path), "--out", str(tmp_path / "run"), "--no-progress"])
    assert r.exit_code == 2, r.output
    assert "evil.pt" in r.output
    assert not marker.exists()
    assert not (tmp_path / "run").exists()


def test_a_batch_that_fails_whole_stops_and_a_fixed_rerun_has_no_error_rows(data, tmp_path, monkeypatch):
    from fairbits.audit import work

    original = work._measure

    def broken(*args, **kwargs):  # what every measure does with `device: cuda` and no driver
        raise RuntimeError("Found no NVIDIA driver on your system")

    monkeypatch.setattr(work, "_measure", broken)
    with pytest.raises(FairbitsError, match=r"all 2 decodable image\(s\) of a batch failed .*NVIDIA"):
        _audit(_spec(data), tmp_path / "run")
    assert not list((tmp_path / "run").glob("cells/*/part-*.parquet"))
    monkeypatch.setattr(work, "_measure", original)
    df = fairbits.load_results(_audit(_spec(data), tmp_path / "run"))
    assert df["error"].isna().all() and len(df) == 2 * 2 * N_PER_GROUP


# -- item 7: one writer per run ----------------------------------------------------------

def test_a_second_writer_is_refused(data, tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        with pytest.raises(RunLocked, match=rf"pid {os.getpid()}"):
            _audit(_spec(data), run)
    _audit(_spec(data), run)  # released: the run goes ahead


_HOLD = """
import sys, time
from fairbits.audit.lock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_stale_lock_of_a_killed_run_is_recognised(data, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(RunLocked):
        _audit(_spec(data), run)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / ".fairbits.lock").is_file()  # the file stays, the lock went with its process
    assert len(fairbits.load_results(_audit(_spec(data), run))) == 2 * 2 * N_PER_GROUP


def test_two_concurrent_audits_leave_no_duplicate_rows(tmp_path):
    csv = write_csv_dataset(tmp_path / "d", n_per_group=60, size=(96, 96))
    spec = _write_spec(tmp_path / "spec.yaml", _spec(csv, batch_size=2, measures=["psnr", "ssim"]))
    cmd = [sys.executable, "-c", "from fairbits.cli import app; app()", "audit", str(spec),
           "--out", str(tmp_path / "run"), "--no-progress", "--no-report"]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in outs)
    assert codes == [0, 2], outs
    assert "another fairbits process is writing" in next(e for c, e in outs if c == 2)
    df = fairbits.load_results(tmp_path / "run")
    raw = pd.concat([pd.read_parquet(p) for p in (tmp_path / "run").glob("cells/*/part-*.parquet")])
    assert len(raw) == len(df) == 2 * 120


# -- item 9: Ctrl-C and a full disk -------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_says_how_to_resume(tmp_path):
    csv = write_csv_dataset(tmp_path / "d", n_per_group=60, size=(64, 64))
    spec = _write_spec(tmp_path / "spec.yaml", _spec(csv, batch_size=2))
    run = tmp_path / "run"
    cmd = [sys.executable, "-c", "from fairbits.cli import app; app()", "audit", str(spec), "--out", str(run),
           "--no-progress"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(run.glob("cells/*/part-*.parquet"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err and "Traceback" not in err
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(fairbits.load_results(run)) == 2 * 120


def test_disk_full_is_a_message_not_a_traceback(data, tmp_path, monkeypatch):
    import errno

    from fairbits import fileio

    real = fileio.tempfile.mkstemp
    calls = {"n": 0}

    def full(*a, **k):
        calls["n"] += 1
        if calls["n"] > 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(fileio.tempfile, "mkstemp", full)
    spec = _write_spec(tmp_path / "spec.yaml", _spec(data))
    r = CliRunner().invoke(app, ["audit", str(spec), "--out", str(tmp_path / "run"), "--no-progress"])
    assert r.exit_code == 2, r.output
    assert "no space left on device while writing" in r.output and "free space" in r.output


@pytest.fixture
def small_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


@pytest.mark.slow
def test_a_real_full_disk_loses_nothing_and_resumes(tmp_path, small_tmpfs):
    csv = write_csv_dataset(tmp_path / "d", n_per_group=30, size=(64, 64))
    spec = _write_spec(tmp_path / "spec.yaml", _spec(csv, batch_size=4))
    run = small_tmpfs / "run"
    cmd = [sys.executable, "-c", "from fairbits.cli import app; app()", "audit", str(spec), "--out", str(run),
           "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "no space left on device while writing" in r.stderr and "Traceback" not in r.stderr
    assert not list(run.rglob("*.tmp"))
    # move the run to a roomy disk and resume there: every row, none twice
    roomy = tmp_path / "roomy"
    subprocess.run(["cp", "-a", str(run), str(roomy)], check=True)
    cmd[-2] = str(roomy)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    df = fairbits.load_results(roomy)
    assert len(df) == 2 * 60 and not df.duplicated(["image_id", "codec", "setting"]).any()


def test_a_cell_id_in_run_json_cannot_leave_the_run(data, tmp_path):
    run = _audit(_spec(data), tmp_path / "run")
    outside = tmp_path / "outside"
    outside.mkdir()
    fairbits.load_results(run).to_parquet(outside / "part-000000.parquet")
    info = json.loads((run / "run.json").read_text())
    info["cells"].append({"id": "../../outside", "codec": "x", "setting": "y"})
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(FairbitsError, match="not a cell id"):
        fairbits.load_results(run)


def test_an_npz_that_unpacks_to_gigabytes_is_refused_before_decompressing(tmp_path):
    import numpy as np

    from fairbits.fileio import read_npz

    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, format=np.array("fairbits-phenotype/1"), big=np.zeros(40_000_000, np.uint8))
    assert path.stat().st_size < 200_000
    with pytest.raises(FairbitsError, match="would unpack to"):
        read_npz(path, "fairbits-phenotype/1", "phenotype model", max_bytes=10_000_000)
