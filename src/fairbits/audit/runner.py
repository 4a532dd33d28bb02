"""The local audit engine: stream the manifest in batches through every cell.

For each batch of images the originals are decoded once, then every cell that still
lacks rows for them codes the images (threads: Pillow's coders release the GIL),
measures the batch on one device, and appends one Parquet part to the store. A killed
run resumes where it stopped; a finished cell is skipped.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
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
from fairbits.audit.coding import CHECK_COLUMNS, check_sample, code_images
from fairbits.audit.faces import FaceBatch, FaceCache, FaceRecord
from fairbits.codecs.base import Codec
from fairbits.data.images import load_original, to_tensor
from fairbits.errors import FairbitsError, FairbitsWarning, ImageError
from fairbits.measures.base import Measure
from fairbits.measures.features import get_extractor
from fairbits.measures.realism import FeatureStore
from fairbits.spec import AuditSpec


# On CPU, measures run on a few images at a time: peak memory stays small (SSIM and
# CIEDE2000 make many full-size intermediates) and it is faster than one big batch.
CPU_MEASURE_CHUNK = 4


def measure_columns(measures: list[Measure]) -> list[str]:
    """Result columns written for the given measures (``bpp`` first, then ``face_found``
    when some measure needs faces)."""
    cols = ["bpp"] + (["face_found"] if any(m.needs_faces for m in measures) else [])
    for m in measures:
        cols += [c for c in m.columns if c not in cols]
    return cols


def _config(plan: AuditPlan) -> dict:
    """What a run's rows depend on besides the images: dataset options, measures, seed."""
    return {"dataset": plan.spec.dataset.model_dump(mode="json"), "measures": plan.measures,
            "seed": plan.spec.seed}


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
        "cells": [{"id": c.id, **c.to_dict()} for c in plan.cells],
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


def _load_original(path: str, max_pixels: int, size: int | None) -> np.ndarray | str:
    """The original as ``uint8 (H, W, 3)`` (:func:`fairbits.data.images.load_original`),
    or the reason it cannot be audited (the image's error row)."""
    try:
        return load_original(path, max_pixels=max_pixels, size=size)
    except ImageError as e:
        return str(e)
    except Exception as e:  # an image must never kill the run
        return f"{type(e).__name__}: {e}"


def _measure(measures: list[Measure], originals: list[np.ndarray], recons: list[np.ndarray],
             device: torch.device, faces: list[FaceRecord] | None = None,
             labels: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
    """Every measure column for images of one size, as float64 arrays of length N.

    ``faces`` (the originals' analyses, same order) is required when a measure needs faces;
    ``labels`` (their manifest rows, same order) reach measures as ``context["labels"]``.
    """
    step = CPU_MEASURE_CHUNK if device.type == "cpu" else len(originals)
    batch = FaceBatch.stack(faces, device) if faces is not None else None
    parts: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for k in range(0, len(originals), step):
            x = to_tensor(originals[k:k + step], device)
            y = to_tensor(recons[k:k + step], device)
            context = {"faces": batch.take(slice(k, k + step))} if batch is not None else {}
            if labels is not None:
                context["labels"] = labels.iloc[k:k + step]
            for m in measures:
                for col, v in m.fn(x, y, context).items():
                    parts.setdefault(col, []).append(torch.as_tensor(v).detach().double().cpu().numpy())
    return {col: np.concatenate(v) for col, v in parts.items()}


class BatchFailed(FairbitsError):
    """Every usable image of a batch failed in a cell: the cause is the configuration."""


def _check_not_all_failed(cell: Cell, rows: list[dict]) -> None:
    """Stop instead of storing a batch in which every decodable image failed to code or measure.

    One image failing is that image's problem and becomes its error row; all of them failing
    points to the configuration (device, checkpoint, model files, a codec plugin), and rows
    written then would be kept by every later resume.
    """
    if rows and all(r["error"] for r in rows):
        raise BatchFailed(
            f"{cell.id}: all {len(rows)} decodable image(s) of a batch failed (first: {rows[0]['error']}). "
            "That points to the configuration (device, checkpoint, model files, a codec plugin), not to "
            "the images, so nothing was stored for this batch. Fix the cause and run the same command "
            "again to resume.")


def code_batch(cell: Cell, codec: Codec, batch: pd.DataFrame, originals: dict, measures: list[Measure],
               columns: list[str], device: torch.device, pool: ThreadPoolExecutor,
               cache: dict, checked: set[str] = frozenset(),
               processes=None, faces: dict[str, FaceRecord] | None = None,
               ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Per-image rows of one cell for one batch of manifest rows (errors included), and
    the reconstructions that were measured (``uint8 (H, W, 3)`` by image id).

    ``faces`` holds the originals' face analyses by image id when a measure needs them;
    it also fills the ``face_found`` column (1/0)."""
    ids = list(batch["image_id"])
    keys = {i: (k if isinstance(k, str) else i) for i, k in zip(ids, batch["checksum"])}
    outcomes = code_images(cell, codec, ids, originals, keys, pool=pool, cache=cache,
                           device=device, checked=checked, processes=processes)
    rows = []
    for i in ids:
        res = outcomes[i]
        row = {"image_id": i, "codec": cell.codec, "setting": cell.setting, "mode": cell.mode,
               "target_bpp": cell.target_bpp, "quality": np.nan, "checkpoint": cell.checkpoint,
               "num_bytes": np.nan, "height": np.nan, "width": np.nan,
               **{c: np.nan for c in columns}, **{c: np.nan for c in CHECK_COLUMNS}, "error": None}
        if faces is not None and i in faces:
            row["face_found"] = float(faces[i].face_found)
        if isinstance(res, str):
            row["error"] = res
        else:
            h, w = res.recon.shape[:2]
            quality = float(res.setting) if isinstance(res.setting, (int, float)) else np.nan
            row.update(quality=quality, num_bytes=res.num_bytes, height=h, width=w, bpp=res.bpp,
                       **(res.check or {}))
        rows.append(row)
    good = {i: o for i, o in outcomes.items() if not isinstance(o, str)}
    by_size: dict[tuple, list[str]] = {}
    for i, o in good.items():
        by_size.setdefault(o.recon.shape, []).append(i)
    index = {r["image_id"]: r for r in rows}
    for group in by_size.values():
        try:
            vals = _measure(measures, [originals[i] for i in group], [good[i].recon for i in group], device,
                            None if faces is None else [faces[i] for i in group],
                            batch.set_index("image_id").loc[group].reset_index())
        except Exception as e:
            for i in group:
                index[i]["error"] = f"measure failed: {type(e).__name__}: {e}"
            continue
        for k, i in enumerate(group):
            index[i].update({c: float(v[k]) for c, v in vals.items()})
    _check_not_all_failed(cell, [index[i] for i in ids if not isinstance(originals[i], str)])
    df = pd.DataFrame(rows)
    for c in ("target_bpp", "quality", "num_bytes", "height", "width", *CHECK_COLUMNS):
        df[c] = df[c].astype("float64")
    for c in ("error", "checkpoint"):
        df[c] = df[c].astype("object")
    return df, {i: o.recon for i, o in good.items() if index[i]["error"] is None}


def _save_features(features, extractor, key: str, images: dict[str, np.ndarray]) -> None:
    """Realism features of ``images`` (by id), stored under ``key``, one call per image size."""
    by_size: dict[tuple, list[str]] = {}
    for i, im in images.items():
        by_size.setdefault(im.shape, []).append(i)
    for ids in by_size.values():
        features.save(key, ids, extractor(to_tensor([images[i] for i in ids])))


class _ExactPools(dict):
    """Worker-process pools for exact learned cells (a context manager that closes them)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in self.values():
            p.close()


def _exact_pools(plan: AuditPlan, todo: dict, processes: int) -> _ExactPools:
    pools = _ExactPools()
    if processes > 1:
        from fairbits.codecs.learned import ExactPool

        for c in plan.cells:
            if c.id in todo and c.mode == "exact" and c.checkpoint is not None:
                pools[c] = ExactPool(c.codec, c.checkpoint, processes=processes)
    return pools


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), disable=not enabled, transient=False)


def _pending_batches(manifest: pd.DataFrame, cells: list[Cell], todo: dict, bs: int):
    """Yield ``(pending, need)`` per batch of ``bs`` manifest rows that some cell still lacks:
    ``pending`` pairs each such cell with its missing rows, ``need`` is their union."""
    for start in range(0, len(manifest), bs):
        batch = manifest.iloc[start:start + bs]
        pending = [(c, batch[~batch["image_id"].isin(todo[c.id])]) for c in cells if c.id in todo]
        pending = [(c, b) for c, b in pending if len(b)]
        if pending:
            yield pending, pd.concat([b for _, b in pending]).drop_duplicates("image_id")


def run_audit(spec: AuditSpec, out: str | Path, *, progress: bool = True, report: bool = True,
              stop_after_batches: int | None = None) -> Path:
    """Run (or resume) an audit into ``out``; returns the run directory.

    ``stop_after_batches`` stops early after that many written batches (for tests of resume).
    """
    out = Path(out)
    plan = plan_audit(spec)
    store = RunStore(out)
    store.check_target()
    with RunLock(out):
        _prepare_store(store, plan)
        if _run_cells(plan, store, progress, stop_after_batches) and report:
            finish_report(out)
    return out


def _run_cells(plan: AuditPlan, store: RunStore, progress: bool, stop_after_batches: int | None) -> bool:
    """Code and measure every missing (image, cell) pair; True when every cell is finished."""
    spec, out = plan.spec, store.root
    device, codecs = plan.device, plan.codecs
    columns = measure_columns(plan.measure_set)
    manifest = plan.manifest
    todo = verify_cells(store, [c.id for c in plan.cells], set(manifest["image_id"]))
    total = sum(len(manifest) - len(done) for done in todo.values())
    all_ids = list(manifest["image_id"])
    extractor = features = None
    orig_feats: set[str] = set()
    if plan.realism:
        extractor, features = get_extractor(plan.realism), FeatureStore(out, plan.realism)
        if "originals" in features.keys():
            orig_feats = set(features.load("originals")[0])
    face_cache = FaceCache(out, embed="identity" in plan.measures) if plan.needs_faces else None
    checked = {c.id: check_sample(all_ids, c.id, spec.seed) for c in plan.cells if c.mode == "fast"}
    written = 0
    bs, ds = spec.batch_size, spec.dataset
    exact_pools = _exact_pools(plan, todo, spec.processes)
    with ThreadPoolExecutor(spec.workers) as pool, _progress(progress) as bar, exact_pools:
        task = bar.add_task("auditing", total=total)

        def load(item):  # decode a batch's originals in the pool (returns futures)
            return None if item is None else [pool.submit(_load_original, p, ds.max_pixels, ds.size)
                                              for p in item[1]["path"]]

        batches = _pending_batches(manifest, plan.cells, todo, bs)
        item = next(batches, None)
        loading = load(item)
        while item is not None:
            pending, need = item
            originals = dict(zip(need["image_id"], [f.result() for f in loading]))
            item = next(batches, None)
            loading = load(item)  # the next batch decodes while this one is coded
            if extractor is not None:
                new = {i: im for i, im in originals.items() if not isinstance(im, str) and i not in orig_feats}
                _save_features(features, extractor, "originals", new)
                orig_feats.update(new)
            faces = None
            if face_cache is not None:
                keys = {i: (k if isinstance(k, str) else i) for i, k in zip(need["image_id"], need["checksum"])}
                faces = {i: r.with_masks() for i, r in face_cache.records(originals, keys).items()}
            cache: dict = {}
            for cell, b in pending:
                rows, recons = code_batch(cell, codecs[cell.codec], b, originals, plan.measure_set, columns,
                                          device, pool, cache, checked.get(cell.id, frozenset()),
                                          exact_pools.get(cell), faces)
                if extractor is not None:  # features first: a part is only visible once they exist
                    _save_features(features, extractor, cell.id, recons)
                store.append(cell.id, rows)
                todo[cell.id].update(rows["image_id"])
                bar.advance(task, len(rows))
                written += 1
                if stop_after_batches is not None and written >= stop_after_batches:
                    return False
    ids = set(manifest["image_id"])
    for cell in plan.cells:
        if cell.id in todo and ids <= todo[cell.id]:
            store.mark_done(cell.id)
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
    if info.get("realism"):
        write_realism(run_dir, results, info["groups"], info["realism"], seed=info.get("seed", 0))
    from fairbits.report.integrity import missing_rows_section

    return render_report(run_dir, results, manifest, info, extra_sections=[missing_rows_section])
