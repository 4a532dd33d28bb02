"""Running an audit: the run directory, the driver, and the local engine.

The manifest is cut into batches; each batch with work left becomes a
:class:`~fairbits.audit.work.BatchJob`, which a worker turns into rows (decode the
originals once, code them in every cell that lacks them, measure). The :class:`Driver`
plans the jobs and stores every result, one Parquet part per (batch, cell), so a killed run
resumes where it stopped and a finished cell is skipped. The local engine runs the jobs in
this process (threads decode the next batch meanwhile); the Ray engine
(:mod:`fairbits.audit.ray_engine`) runs the same jobs on a cluster.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fairbits import __version__
from fairbits.audit.lock import RunLock
from fairbits.audit.plan import AuditPlan, Cell, plan_audit
from fairbits.audit.resume import (check_same_config, config_fingerprint, missing_rows, reconcile_manifest,
                                   verify_cells)
from fairbits.audit.store import RunStore
from fairbits.audit.coding import check_sample
from fairbits.audit.faces import FaceStore
from fairbits.audit.work import AuditWorker, BatchJob, BatchResult, PendingCell, measure_columns
from fairbits.errors import FairbitsError, FairbitsWarning, SpecError
from fairbits.measures.realism import FeatureStore
from fairbits.spec import AuditSpec


def _config(plan: AuditPlan) -> dict:
    """What a run's rows depend on besides the images: dataset options, measures, seed."""
    dataset = plan.spec.dataset.model_dump(mode="json")
    if dataset.get("crop") == "none":  # runs made before `crop` existed keep their fingerprint
        dataset.pop("crop"), dataset.pop("crop_margin", None)
    padding = {c.name: c.padding for c in plan.spec.codecs if c.padding}  # only when set: old runs keep theirs
    return {"dataset": dataset, "measures": plan.measures, **({"padding": padding} if padding else {}),
            "seed": plan.spec.seed}


def _checkpoint_meta(plan: AuditPlan, cell: Cell) -> dict:
    """``{"checkpoint_meta": meta}`` of a learned cell whose checkpoint is a fairbits checkpoint
    (its training recipe, :class:`fairbits.codecs.train.config.TrainConfig` fields, and card
    values), so the run's statistics read how each checkpoint was trained from the run, not from
    the weights installed later (:mod:`fairbits.bias.mitigation`); ``{}`` for any other cell."""
    from fairbits.codecs.checkpoints import FORMAT, ZOO_PREFIX

    codec = plan.codecs.get(cell.codec)
    if cell.checkpoint is None or cell.checkpoint.startswith(ZOO_PREFIX) or not hasattr(codec, "checkpoint_path"):
        return {}  # CompressAI's zoo weights carry no recipe
    obj = torch.load(codec.checkpoint_path(cell.checkpoint), map_location="cpu", weights_only=True)
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        return {}
    return {"checkpoint_meta": {"arch": obj.get("arch"), **(obj.get("meta") or {})}}  # as load_checkpoint reads it


def run_info(plan: AuditPlan) -> dict:
    """The ``run.json`` record of a plan; ``column_kinds`` records every column's kind
    (and direction) so ``fairbits report`` works from the stored rows alone."""
    from fairbits.measures.base import measure_kinds

    config = _config(plan)
    return {
        "fairbits_version": __version__,
        "name": plan.spec.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": config_fingerprint(config),
        "config": config,
        "dataset": str(plan.spec.dataset.path),
        "n_images": len(plan.manifest),
        "groups": plan.spec.group_columns,
        "measure_names": plan.measures,
        "realism": plan.realism,
        "measures": measure_columns(plan.measure_set),
        "column_kinds": {c: k.to_dict() for c, k in measure_kinds(plan.measure_set).items()},
        "face_columns": [c for c in measure_columns(plan.measure_set)
                         if c == "face_found" or any(c in m.columns for m in plan.measure_set if m.needs_faces)],
        "seed": plan.spec.seed,
        "n_boot": plan.spec.n_boot,
        "n_perm": plan.spec.n_perm,
        "cells": [{"id": c.id, **c.to_dict(), **_checkpoint_meta(plan, c)} for c in plan.cells],
        "spec": plan.spec.model_dump(mode="json"),
    }


def _prepare_store(store: RunStore, plan: AuditPlan) -> None:
    """Start or resume the run in ``store`` (whose lock the caller holds).

    A new run stores ``run.json`` first, then the manifest. A resumed run must have the same
    configuration and images (else FairbitsError); changed labels update its manifest.
    """
    store.remove_partial_writes()  # a killed run may have left half-written temporaries
    info = run_info(plan)
    if store.info_path.is_file():
        old = store.read_info()
        check_same_config(old, info, store.root)
        info["created"] = old.get("created", info["created"])
        known = {c["id"] for c in info["cells"]}
        info["cells"] += [c for c in old["cells"] if c["id"] not in known]
        reconcile_manifest(store, plan.manifest)
        store.write_info(info)
    else:
        store.write_info(info)
        store.write_manifest(plan.manifest)


class BatchFailed(FairbitsError):
    """Every usable image of a batch failed in a cell: the cause is the configuration."""


def pending_batches(ids: pd.Series, has_row: dict[str, np.ndarray], batch_size: int,
                    checked: dict[str, set[str]]):
    """Yield ``(index, rows, pending)`` for each batch of ``batch_size`` manifest rows that some
    cell lacks: ``rows`` a slice of the manifest, ``pending`` a :class:`PendingCell` per cell
    with missing rows there. ``has_row`` holds, per unfinished cell, a bool mask over the
    manifest; the cost is linear in manifest length × cells."""
    values = ids.to_numpy()
    for index, start in enumerate(range(0, len(values), batch_size)):
        rows = slice(start, start + batch_size)
        pending = []
        for cell_id, has in has_row.items():
            missing = values[rows][~has[rows]]
            if len(missing):
                checks = checked.get(cell_id, ())
                pending.append(PendingCell(cell_id, tuple(missing), tuple(i for i in missing if i in checks)))
        if pending:
            yield index, rows, pending


class Driver:
    """The engine-independent half of a run, in the process that owns the run directory:
    which work is left (:meth:`jobs`) and storing what workers return (:meth:`commit`).

    Memory stays flat in dataset size: per cell a boolean mask over the manifest of the rows
    stored; stored face analyses are read per batch.
    """

    def __init__(self, plan: AuditPlan, store: RunStore, lookup_faces: bool = True):
        self.plan, self.store = plan, store
        manifest = plan.manifest
        ids = manifest["image_id"]
        self.done = verify_cells(store, [c.id for c in plan.cells], set(ids))  # ids stored, unfinished cells
        self.has_row = {c: ids.isin(d).to_numpy() for c, d in self.done.items()}
        self.total = int(sum((~m).sum() for m in self.has_row.values()))
        self.checked = {c.id: check_sample(list(ids), c.id, plan.spec.seed) for c in plan.cells if c.mode == "fast"}
        self.faces = FaceStore(store.root) if plan.needs_faces else None
        self.lookup_faces = lookup_faces
        self.features = FeatureStore(store.root, plan.realism) if plan.realism else None
        self.original_feats: set[str] = set()
        if self.features is not None and "originals" in self.features.keys():
            self.original_feats = set(self.features.load("originals")[0])
        self.parts_written = 0

    def jobs(self):
        """Yield a :class:`BatchJob` per ``batch_size`` manifest rows that some cell still lacks."""
        manifest = self.plan.manifest
        for index, rows, pending in pending_batches(manifest["image_id"], self.has_row, self.plan.spec.batch_size,
                                                    self.checked):
            need = set().union(*(p.ids for p in pending))
            images = manifest.iloc[rows]
            images = images[images["image_id"].isin(need)].reset_index(drop=True)
            job = BatchJob(index, images, pending,
                           original_features=tuple(i for i in images["image_id"] if i not in self.original_feats)
                           if self.features is not None else ())
            if self.faces is not None and self.lookup_faces:
                job.stored_faces = self.faces.rows(job.keys().values())
            yield job

    def commit(self, result: BatchResult, progress=None) -> None:
        """Store a job's result: faces, then realism features, then one part per cell (a part
        is visible only once the features of its rows exist).

        Raises:
            BatchFailed: every decodable image of a cell failed; nothing of the batch is stored.
        """
        if result.failed:
            raise BatchFailed(
                f"{result.failed}. That points to the configuration (device, checkpoint, model files, a codec "
                "plugin), not to the images, so nothing was stored for this batch. Fix the cause and run the "
                "same command again to resume.")
        if self.faces is not None:
            self.faces.add(result.faces)
        if "originals" in result.features:
            self.features.save("originals", *result.features["originals"])
            self.original_feats.update(result.features["originals"][0])
        for cell_id, rows in result.rows.items():
            if cell_id in result.features:
                self.features.save(cell_id, *result.features[cell_id])
            self.store.append(cell_id, rows)
            self.done[cell_id].update(rows["image_id"])
            self.parts_written += 1
            if progress is not None:
                progress(len(rows))

    def finish(self) -> None:
        """Mark every cell that now has a row for each image as done."""
        ids = set(self.plan.manifest["image_id"])
        for cell in self.plan.cells:
            if cell.id in self.done and ids <= self.done[cell.id]:
                self.store.mark_done(cell.id)


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), disable=not enabled, transient=False)


def run_audit(spec: AuditSpec, out: str | Path, *, progress: bool = True, report: bool = True,
              stop_after_batches: int | None = None, engine: str | None = None,
              address: str | None = None) -> Path:
    """Run (or resume) an audit into ``out``; returns the run directory.

    ``engine`` (default: the spec's, ``local``) picks who does the work: ``local`` (this
    process) or ``ray`` (a Ray cluster at ``address``, or a private local one); both store
    the same rows in the same layout, so either can resume the other's run.
    ``stop_after_batches`` stops after that many written parts (for tests of resume).
    """
    out = Path(out)
    engine = engine or spec.engine
    if engine not in ("local", "ray"):
        raise SpecError(f"engine {engine!r} is not known: use local or ray")
    if address and engine != "ray":
        raise SpecError("--address names a Ray cluster: add --engine ray (or engine: ray in the spec)")
    if engine == "ray":
        from fairbits.audit.ray_engine import import_ray

        import_ray()  # missing extra → SpecError before any work
    plan = plan_audit(spec)
    store = RunStore(out)
    store.check_target()
    with RunLock(out):
        _prepare_store(store, plan)
        if engine == "ray":
            from fairbits.audit.ray_engine import run_cells_ray

            finished = run_cells_ray(plan, store, progress=progress, address=address,
                                     stop_after_batches=stop_after_batches)
        else:
            finished = _run_cells(plan, store, progress, stop_after_batches)
        if finished and report:
            finish_report(out)
    return out


def _exact_pools(plan: AuditPlan, driver: Driver) -> dict:
    """Worker-process pools for the exact learned cells still to run (local engine)."""
    pools = {}
    if plan.spec.processes > 1:
        from fairbits.codecs.learned import ExactPool

        for c in plan.cells:
            if c.mode == "exact" and c.checkpoint is not None and c.id in driver.has_row:
                pools[c.id] = ExactPool(plan.codecs[c.codec], c.checkpoint, processes=plan.spec.processes)
    return pools


def _run_cells(plan: AuditPlan, store: RunStore, progress: bool, stop_after_batches: int | None) -> bool:
    """The local engine: every job in this process, the next batch's originals decoding on
    the worker's threads while this one is coded. True when every cell is finished."""
    driver = Driver(plan, store)
    worker = AuditWorker.from_plan(plan, threads=plan.spec.workers)
    torch_threads = torch.get_num_threads()
    if plan.spec.torch_threads:
        torch.set_num_threads(plan.spec.torch_threads)
    worker.exact_pools = _exact_pools(plan, driver)
    try:
        with _progress(progress) as bar:
            task = bar.add_task("auditing", total=driver.total)
            jobs = driver.jobs()
            job = next(jobs, None)
            loading = worker.load(job) if job is not None else None
            while job is not None:
                nxt = next(jobs, None)
                next_loading = worker.load(nxt) if nxt is not None else None
                driver.commit(worker.run(job, loading), progress=lambda n: bar.advance(task, n))
                if stop_after_batches is not None and driver.parts_written >= stop_after_batches:
                    return False
                job, loading = nxt, next_loading
    finally:
        worker.close()
        torch.set_num_threads(torch_threads)
    driver.finish()
    return True


def rebuild_report(run_dir: str | Path) -> Path:
    """``fairbits report``: :func:`finish_report` while holding the run's lock (no audit writes
    to it meanwhile)."""
    store = RunStore(run_dir)
    store.read_info()  # not a run → FairbitsError before a lock file is made
    with RunLock(run_dir):
        return finish_report(run_dir)


def finish_report(run_dir: str | Path) -> Path:
    """Bias statistics and the HTML report from the stored rows (``fairbits report``)."""
    from fairbits.audit.store import load_results
    from fairbits.bias.stats import run_min_group_n, write_stats
    from fairbits.measures.realism import write_realism
    from fairbits.report.html import render_report

    store = RunStore(run_dir)
    info, results = store.read_info(), load_results(run_dir)  # read the rows once for all three
    manifest = store.read_manifest()
    info["missing_rows"] = missing_rows(results, manifest, [c["id"] for c in info["cells"]])
    if info["missing_rows"]:
        warnings.warn("rows are missing (lost part files?): " + ", ".join(
            f"{c} {n} of {len(manifest)}" for c, n in info["missing_rows"].items())
            + "; the statistics cover the rows present. Run the audit again to compute them",
            FairbitsWarning, stacklevel=2)
    measures = list(info.get("measures", []))
    if "identity_cos" in results.columns:
        from fairbits.bias.verification import add_identity_nonmatch

        results = add_identity_nonmatch(run_dir, results, manifest, seed=info.get("seed", 0),
                                        fmr=info.get("spec", {}).get("identity_fmr", 1e-3))
        measures.append("identity_nonmatch")
    # summary, bias, pairwise, findings and (with pairs) paired, q-values over all tests
    min_group_n = run_min_group_n(info)
    write_stats(run_dir, results, measures=measures, min_group_n=min_group_n)
    from fairbits.bias.attribution import write_attribution

    write_attribution(run_dir, results, info["groups"], n_boot=info.get("n_boot", 1000), seed=info.get("seed", 0),
                      min_group_n=min_group_n)
    from fairbits.bias.accuracy import write_accuracy_bias
    from fairbits.bias.equal_rate import DEFAULT_RATES, write_equal_rate
    from fairbits.bias.kinds import resolve_kinds
    from fairbits.bias.stats import measure_columns as result_columns

    n_boot, seed = info.get("n_boot", 1000), info.get("seed", 0)
    write_accuracy_bias(run_dir, results, info["groups"], n_boot=n_boot, seed=seed, min_group_n=min_group_n)
    from fairbits.bias.mitigation import write_mitigation

    kinds = resolve_kinds(result_columns(results, measures), run_info=info)
    rates = info.get("spec", {}).get("equal_rates") or DEFAULT_RATES
    for write in (write_equal_rate, write_mitigation):
        write(run_dir, results, info["groups"], kinds, rates=rates, n_boot=n_boot, seed=seed, min_group_n=min_group_n)
    if info.get("realism"):
        write_realism(run_dir, results, info["groups"], info["realism"], seed=seed, n_boot=n_boot)
    return render_report(run_dir, results, manifest, info)
