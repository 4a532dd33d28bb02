"""The result store's part numbering and the compaction of a finished cell's parts.

A synthetic run (rows shaped as the runner writes them: float measures, object ``error``
and ``checkpoint`` that are all None in most parts) checks the store on its own; two small
real audits check it through the engine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fairbits
from fairbits.audit import store as store_module
from fairbits.audit.resume import verify_cells
from fairbits.audit.runner import run_audit
from fairbits.audit.store import RunStore, load_results
from fairbits.errors import FairbitsWarning
from fairbits.fileio import atomic_write, next_part
from fairbits.spec import parse_spec

from conftest import write_csv_dataset

N_IMAGES, BATCH = 22, 4  # six parts per cell, the last one short
CLASSICAL, LEARNED = "jpeg__q10", "bmshj2018-hyperprior__q3"
ERROR_ID = "img/005.png"  # the one image whose row has an error (classical cell only)


def _rows(cell_id: str, ids: list[str]) -> pd.DataFrame:
    """Rows as ``code_batch`` builds them: float64 numbers, object ``error``/``checkpoint``."""
    codec, setting = cell_id.split("__")
    rng = np.random.default_rng(len(ids) + sum(map(ord, ids[0])))
    learned = cell_id == LEARNED
    df = pd.DataFrame({
        "image_id": ids, "codec": codec, "setting": setting, "mode": "fast" if learned else "exact",
        "target_bpp": np.nan, "quality": np.nan if learned else 10.0,
        "checkpoint": f"{codec}/{setting}" if learned else None,
        "num_bytes": rng.integers(200, 900, len(ids)).astype(float), "height": 48.0, "width": 48.0,
        "bpp": rng.random(len(ids)), "psnr": 20 + 10 * rng.random(len(ids)), "error": None})
    if not learned and ERROR_ID in ids:
        bad = df["image_id"] == ERROR_ID
        df.loc[bad, ["num_bytes", "height", "width", "bpp", "psnr"]] = np.nan
        df.loc[bad, "error"] = "cannot decode: truncated PNG"
    return df.astype({"error": object, "checkpoint": object})


def _image_ids() -> list[str]:
    return [f"img/{k:03d}.png" for k in range(N_IMAGES)]


def _synthetic_run(root, cells=(CLASSICAL, LEARNED)) -> RunStore:
    """A run directory with ``cells``, each stored as one part per batch of ``BATCH`` images."""
    store = RunStore(root)
    ids = _image_ids()
    store.write_info({"cells": [dict(zip(("codec", "setting"), c.split("__")), id=c) for c in cells]})
    store.write_manifest(pd.DataFrame({"image_id": ids, "path": ids, "checksum": [f"{k:064x}" for k in range(N_IMAGES)],
                                       "grp": ["a", "b"] * (N_IMAGES // 2)}))
    for cell in cells:
        for k in range(0, N_IMAGES, BATCH):
            store.append(cell, _rows(cell, ids[k:k + BATCH]))
    return store


def _kill_after(removals: int):
    """A stand-in for ``RunStore._remove_part`` that removes ``removals`` parts, then is killed."""
    done = []

    def remove(part):
        if len(done) == removals:
            raise KeyboardInterrupt("killed while removing merged parts")
        done.append(part)
        part.unlink()
    return remove


# -- part numbering ----------------------------------------------------------------------

def test_appends_list_the_cell_folder_once_and_number_the_parts_in_order(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "run")
    (store.cell_dir(CLASSICAL)).mkdir(parents=True)
    (store.cell_dir(CLASSICAL) / "part-000004.parquet").write_bytes(b"from an earlier process")
    listings = []
    real = store_module.last_part_number
    monkeypatch.setattr(store_module, "last_part_number", lambda *a: listings.append(a) or real(*a))
    ids = _image_ids()
    paths = [store.append(cell, _rows(cell, ids[k:k + 2])) for k in range(0, 10, 2) for cell in (CLASSICAL, LEARNED)]
    assert len(listings) == 2  # once per cell, not once per part
    assert [p.name for p in paths if p.parent.name == CLASSICAL] == [f"part-{n:06d}.parquet" for n in range(5, 10)]
    assert [p.name for p in paths if p.parent.name == LEARNED] == [f"part-{n:06d}.parquet" for n in range(5)]
    assert (store.cell_dir(CLASSICAL) / "part-000004.parquet").read_bytes() == b"from an earlier process"


def test_a_second_writer_of_the_same_cell_never_replaces_a_part(tmp_path):
    first, second = RunStore(tmp_path / "run"), RunStore(tmp_path / "run")
    ids = _image_ids()
    first.append(CLASSICAL, _rows(CLASSICAL, ids[0:2]))     # first counts from an empty folder
    second.append(CLASSICAL, _rows(CLASSICAL, ids[2:4]))    # second lists and takes part 1
    first.append(CLASSICAL, _rows(CLASSICAL, ids[4:6]))     # first's count says 1: taken, so it lists again
    second.append(CLASSICAL, _rows(CLASSICAL, ids[6:8]))
    assert [p.name for p in first.parts(CLASSICAL)] == [f"part-{n:06d}.parquet" for n in range(4)]
    assert first.read_cell(CLASSICAL)["image_id"].tolist() == ids[0:2] + ids[2:4] + ids[4:6] + ids[6:8]
    assert not list(first.cell_dir(CLASSICAL).glob(".*.tmp"))


def test_next_part_numbers_past_the_highest_part_for_other_writers(tmp_path):
    folder = tmp_path / "faces"
    assert next_part(folder, ".npz") == folder / "part-000000.npz"  # no folder yet
    folder.mkdir()
    for name in ("part-000000.npz", "part-000002.npz", "part-000009.parquet", "part-000005.npz.corrupt", "other.npz"):
        (folder / name).write_bytes(b"")
    assert next_part(folder, ".npz") == folder / "part-000003.npz"
    assert next_part(folder, ".parquet") == folder / "part-000010.parquet"


def test_a_write_that_must_not_replace_leaves_the_existing_file(tmp_path):
    path = tmp_path / "part-000000.parquet"
    path.write_text("rows of another writer")
    with pytest.raises(FileExistsError):
        atomic_write(path, lambda tmp: open(tmp, "w").write("mine"), replace=False)
    assert path.read_text() == "rows of another writer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-000000.parquet"]  # no temporary left
    atomic_write(tmp_path / "new.txt", lambda tmp: open(tmp, "w").write("mine"), replace=False)
    assert (tmp_path / "new.txt").read_text() == "mine"


# -- reading -------------------------------------------------------------------------------

def test_a_cell_reads_as_pandas_reads_its_parts_one_by_one(tmp_path):
    store = _synthetic_run(tmp_path / "run")
    one_by_one = pd.concat([pd.read_parquet(p) for p in store.parts(LEARNED)], ignore_index=True)
    pd.testing.assert_frame_equal(store.read_cell(LEARNED), one_by_one)  # one schema: the very same frame
    # parts whose `error` is all None in some and text in others: the same values, and one
    # type for the column (text) instead of pandas' object mix of None and NaN
    one_by_one = pd.concat([pd.read_parquet(p) for p in store.parts(CLASSICAL)], ignore_index=True)
    cell = store.read_cell(CLASSICAL)
    assert str(one_by_one["error"].dtype) == "object" and str(cell["error"].dtype) == "str"
    assert cell["error"].notna().sum() == 1 and cell.loc[cell["error"].notna(), "image_id"].item() == ERROR_ID
    pd.testing.assert_frame_equal(cell.drop(columns="error"), one_by_one.drop(columns="error"))
    assert cell["checkpoint"].dtype == object and cell["checkpoint"].isna().all()


def test_parts_that_disagree_on_a_column_type_are_read_and_left_unmerged(tmp_path):
    store = RunStore(tmp_path / "run")
    ids = _image_ids()
    store.append(CLASSICAL, _rows(CLASSICAL, ids[:2]))
    text = _rows(CLASSICAL, ids[2:4]).assign(psnr=["n/a", "n/a"])
    store.append(CLASSICAL, text)
    parts = store.parts(CLASSICAL)
    cell = store.read_cell(CLASSICAL)
    assert cell["psnr"].tolist()[2:] == ["n/a", "n/a"] and len(cell) == 4
    with pytest.warns(FairbitsWarning, match="disagree on column types"):
        assert store.compact(CLASSICAL) is None
    assert store.parts(CLASSICAL) == parts


# -- compaction ------------------------------------------------------------------------------

def test_compaction_leaves_one_part_and_the_same_table(tmp_path):
    store = _synthetic_run(tmp_path / "run")
    before = load_results(store.root)
    cells_before = {c: store.read_cell(c) for c in (CLASSICAL, LEARNED)}
    last = store.parts(CLASSICAL)[-1]
    store.mark_done(CLASSICAL)
    merged = store.compact(LEARNED)
    assert store.is_done(CLASSICAL) and not store.is_done(LEARNED)
    for cell in (CLASSICAL, LEARNED):
        assert len(store.parts(cell)) == 1
        pd.testing.assert_frame_equal(store.read_cell(cell), cells_before[cell])
    assert store.parts(CLASSICAL)[0].name > last.name  # numbered after every part it merged
    assert merged == store.parts(LEARNED)[0]
    after = load_results(store.root)
    pd.testing.assert_frame_equal(after, before)
    assert after["checkpoint"].where(after["codec"] == "jpeg").isna().all()
    assert after.loc[after["error"].notna(), "image_id"].tolist() == [ERROR_ID]
    # a fresh store (another process) appends after the merged part, never over it
    extra = RunStore(store.root).append(CLASSICAL, _rows(CLASSICAL, ["img/new.png"]))
    assert extra.name > store.parts(CLASSICAL)[0].name and len(store.parts(CLASSICAL)) == 2


def test_a_cell_with_all_none_object_columns_keeps_them_through_compaction(tmp_path):
    store = RunStore(tmp_path / "run")
    ids = _image_ids()
    for k in range(0, 8, 2):
        store.append(CLASSICAL, _rows(CLASSICAL, ids[k:k + 2]).assign(error=None).astype({"error": object}))
    before = store.read_cell(CLASSICAL)
    assert before["error"].dtype == object and before["error"].map(lambda v: v is None).all()
    store.compact(CLASSICAL)
    after = store.read_cell(CLASSICAL)
    pd.testing.assert_frame_equal(after, before)
    assert after["error"].map(lambda v: v is None).all() and after["checkpoint"].map(lambda v: v is None).all()


def test_compacting_a_cell_of_one_part_or_none_changes_nothing(tmp_path):
    store = RunStore(tmp_path / "run")
    assert store.compact(CLASSICAL) is None
    only = store.append(CLASSICAL, _rows(CLASSICAL, _image_ids()[:3]))
    stamp = only.stat().st_mtime_ns
    assert store.compact(CLASSICAL) == only and only.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("removed_before_kill", [0, 3])
def test_a_kill_between_the_merged_part_and_the_removals_loses_nothing(tmp_path, monkeypatch, removed_before_kill):
    store = _synthetic_run(tmp_path / "run")
    before = load_results(store.root)
    n_parts = len(store.parts(CLASSICAL))
    monkeypatch.setattr(RunStore, "_remove_part", staticmethod(_kill_after(removed_before_kill)))
    with pytest.raises(KeyboardInterrupt):
        store.mark_done(CLASSICAL)
    monkeypatch.undo()
    assert not store.is_done(CLASSICAL)
    assert len(store.parts(CLASSICAL)) == n_parts - removed_before_kill + 1  # merged part + old ones
    assert len(store.read_cell(CLASSICAL)) == 2 * N_IMAGES - removed_before_kill * BATCH  # rows twice
    pd.testing.assert_frame_equal(load_results(store.root), before)
    scan = store.scan_cell(CLASSICAL)
    assert scan.ids == set(_image_ids()) and not scan.unreadable
    todo = verify_cells(RunStore(store.root), [CLASSICAL, LEARNED], set(_image_ids()))
    assert todo[CLASSICAL] == set(_image_ids())  # resume sees every id: nothing is computed again
    RunStore(store.root).mark_done(CLASSICAL)  # the resumed run finishes the cell: merged again
    assert len(store.parts(CLASSICAL)) == 1 and store.is_done(CLASSICAL)
    assert len(store.read_cell(CLASSICAL)) == N_IMAGES
    pd.testing.assert_frame_equal(load_results(store.root), before)


def test_a_cell_with_an_unreadable_part_is_marked_done_uncompacted(tmp_path):
    store = _synthetic_run(tmp_path / "run")
    parts = store.parts(CLASSICAL)
    parts[2].write_bytes(parts[2].read_bytes()[:40])
    contents = {p: p.read_bytes() for p in parts}
    with pytest.warns(FairbitsWarning, match=rf"{CLASSICAL} was not compacted: .*{parts[2].name} is unreadable"):
        store.mark_done(CLASSICAL)
    assert store.is_done(CLASSICAL)
    assert {p: p.read_bytes() for p in store.parts(CLASSICAL)} == contents


# -- through the engine ---------------------------------------------------------------------

def _audit_spec(csv) -> dict:
    return {"dataset": {"reader": "csv", "path": str(csv)}, "groups": ["grp"],
            "codecs": [{"name": "jpeg", "quality": [10, 40]}], "measures": ["psnr"], "seed": 0, "batch_size": 2}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_csv_dataset(tmp_path_factory.mktemp("d"), n_per_group=3)


def test_an_audit_stores_the_same_table_with_and_without_compaction(dataset, tmp_path, monkeypatch):
    spec = parse_spec(_audit_spec(dataset))
    with monkeypatch.context() as m:
        m.setattr(RunStore, "compact", lambda self, cell_id: None)
        loose = run_audit(spec, tmp_path / "loose", progress=False, report=False)
    compacted = run_audit(spec, tmp_path / "compacted", progress=False, report=False)
    for cell in ("jpeg__q10", "jpeg__q40"):
        assert len(RunStore(loose).parts(cell)) == 3 and len(RunStore(compacted).parts(cell)) == 1
        assert RunStore(compacted).is_done(cell)
    pd.testing.assert_frame_equal(fairbits.load_results(compacted), fairbits.load_results(loose))


def test_an_audit_killed_while_compacting_resumes_without_computing_again(dataset, tmp_path, monkeypatch):
    spec = parse_spec(_audit_spec(dataset))
    reference = fairbits.load_results(run_audit(spec, tmp_path / "reference", progress=False, report=False))
    with monkeypatch.context() as m:
        m.setattr(RunStore, "_remove_part", staticmethod(_kill_after(1)))
        with pytest.raises(KeyboardInterrupt):
            run_audit(spec, tmp_path / "run", progress=False, report=False)
    run = tmp_path / "run"
    pd.testing.assert_frame_equal(fairbits.load_results(run), reference)
    with monkeypatch.context() as m:  # every row is stored: the resumed audit writes none
        m.setattr(RunStore, "append", lambda *a: pytest.fail("a stored row was computed again"))
        run_audit(spec, run, progress=False, report=False)
    store = RunStore(run)
    assert all(store.is_done(c) and len(store.parts(c)) == 1 for c in ("jpeg__q10", "jpeg__q40"))
    pd.testing.assert_frame_equal(fairbits.load_results(run), reference)
