"""One unit of audit work, shared by both engines so that they cannot drift apart.

A :class:`BatchJob` names a batch of originals (their manifest rows) and, for every cell
that still lacks rows for some of them, which ones. An :class:`AuditWorker` turns it into
a :class:`BatchResult` in two steps, which an engine may run in different processes:

* :meth:`AuditWorker.prepare` (CPU): decode the originals, analyse their faces, code every
  exact cell (real bytes, rate search) and the fast cells' check samples → :class:`Prepared`;
* :meth:`AuditWorker.finish` (the measure device): fast-mode forward passes, measures and
  realism features → :class:`BatchResult`.

Nothing here writes to the run directory: the engine's driver stores every result, so a
worker needs the dataset's files but never the run directory.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from fairbits.audit.coding import CHECK_COLUMNS, Outcome, code_exact, code_fast
from fairbits.audit.faces import FaceAnalysis, FaceBatch, FaceRecord
from fairbits.codecs.learned import setting_columns
from fairbits.audit.plan import AuditPlan, Cell, plan_cells, plan_measures, plan_realism, resolve_device
from fairbits.data.images import load_cropped_original, to_tensor
from fairbits.errors import ImageError
from fairbits.measures.base import Measure
from fairbits.measures.memo import BatchMemo, image_features
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


@dataclass(frozen=True)
class PendingCell:
    """The images of a batch that one cell still lacks (``ids``), and those of them in the
    cell's exact-coding check sample (``checks``; fast cells only)."""

    cell: str
    ids: tuple[str, ...]
    checks: tuple[str, ...] = ()


@dataclass
class BatchJob:
    """A batch of originals and the work left on them.

    Attributes:
        index: the batch's position in the manifest (``start // batch_size``).
        images: their manifest rows (``image_id``, ``path``, ``checksum``, labels).
        pending: per cell with missing rows, which ones.
        stored_faces: face analyses already stored, by content key (rows of
            :meth:`FaceRecord.to_row`); None when the engine's worker looks them up itself.
        original_features: ids whose originals still need realism features.
    """

    index: int
    images: pd.DataFrame
    pending: list[PendingCell]
    stored_faces: dict[str, dict] | None = None
    original_features: tuple[str, ...] = ()

    def keys(self) -> dict[str, str]:
        """Content key of every image (its checksum, else its id)."""
        return {i: (k if isinstance(k, str) else i)
                for i, k in zip(self.images["image_id"], self.images["checksum"])}


@dataclass
class Prepared:
    """A job after :meth:`AuditWorker.prepare`: originals (``uint8 (H, W, 3)`` or an error
    string, by id), their crop boxes (``crop: face``), their face analyses, new analyses to store, the exact cells' outcomes
    and the fast cells' check codings (both by cell id, then image id)."""

    job: BatchJob
    originals: dict[str, np.ndarray | str]
    crops: dict[str, tuple | None]
    faces: dict[str, FaceRecord] | None
    new_faces: list[dict]
    coded: dict[str, dict[str, Outcome | str]]
    checks: dict[str, dict[str, Outcome | str]]


@dataclass
class BatchResult:
    """What a job produced, for the driver to store: ``rows`` by cell id (one DataFrame per
    pending cell), ``faces`` (new face-analysis rows), realism ``features`` by key
    (``"originals"`` or a cell id) as ``(ids, float32 (k, d))``, and ``failed``: why the
    whole batch must not be stored (every decodable image failed in a cell), else None."""

    index: int
    rows: dict[str, pd.DataFrame] = field(default_factory=dict)
    faces: list[dict] = field(default_factory=list)
    features: dict[str, tuple[list[str], np.ndarray]] = field(default_factory=dict)
    failed: str | None = None


CROP_COLUMNS = ("crop_x", "crop_y", "crop_w", "crop_h")  # with ``crop: face``: the box, original pixels


def read_original(path: str, max_pixels: int, size: int | None, crop=None) -> tuple[np.ndarray | str, tuple | None]:
    """The original as ``uint8 (H, W, 3)`` (:func:`fairbits.data.images.load_cropped_original`),
    or the reason it cannot be audited (the image's error row); and, with a ``crop``
    (:class:`fairbits.face.crop.FaceCrop`), its box ``(x, y, w, h)`` in the decoded original."""
    try:
        return load_cropped_original(path, max_pixels=max_pixels, size=size, crop=crop)
    except ImageError as e:
        return str(e), None
    except Exception as e:  # an image must never kill the run
        return f"{type(e).__name__}: {e}", None


def _measure(measures: list[Measure], originals: list[np.ndarray], recons: list[np.ndarray],
             device: torch.device, context: dict) -> dict[str, np.ndarray]:
    """Every measure column for N images of one size, as float64 arrays of length N.

    ``context`` holds, for the N images in order: ``ids``, ``cell``, ``memo`` (shared by the
    batch's cells), ``faces`` (their analyses, a list of :class:`FaceRecord`, when a measure
    needs faces) and ``labels`` (their manifest rows); measures see them chunk by chunk.
    """
    step = CPU_MEASURE_CHUNK if device.type == "cpu" else len(originals)
    faces = FaceBatch.stack(context["faces"], device) if context.get("faces") is not None else None
    parts: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for k in range(0, len(originals), step):
            x = to_tensor(originals[k:k + step], device)
            y = to_tensor(recons[k:k + step], device)
            chunk = {"ids": context["ids"][k:k + step], "cell": context["cell"], "memo": context["memo"],
                     "labels": context["labels"].iloc[k:k + step]}
            if faces is not None:
                chunk["faces"] = faces.take(slice(k, k + step))
            for m in measures:
                for col, v in m.fn(x, y, chunk).items():
                    parts.setdefault(col, []).append(torch.as_tensor(v).detach().double().cpu().numpy())
    return {col: np.concatenate(v) for col, v in parts.items()}


def _empty_row(cell: Cell, image_id: str, columns: list[str]) -> dict:
    return {"image_id": image_id, "codec": cell.codec, "setting": cell.setting, "mode": cell.mode,
            "target_bpp": cell.target_bpp, "quality": np.nan, "checkpoint": cell.checkpoint,
            "num_bytes": np.nan, "height": np.nan, "width": np.nan,
            **{c: np.nan for c in columns}, **{c: np.nan for c in CHECK_COLUMNS}, "error": None}


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for c in ("target_bpp", "quality", "num_bytes", "height", "width", *CHECK_COLUMNS):
        df[c] = df[c].astype("float64")
    for c in ("error", "checkpoint"):
        df[c] = df[c].astype("object")
    return df


class AuditWorker:
    """Runs :class:`BatchJob`s for one audit: its cells, codecs, measures and device.

    Build it from a plan (the local engine reuses the plan's loaded codecs and measures)
    with :meth:`from_plan`, or from the spec alone (a Ray actor) with :meth:`from_spec`.
    ``threads`` codes exact cells in parallel (Pillow and the rANS coder release the GIL);
    ``exact_pools`` maps a learned exact cell to worker processes (local engine only).
    """

    def __init__(self, spec: AuditSpec, cells: list[Cell], measures: list[Measure], device: torch.device,
                 codecs: dict, realism: str | None, threads: int = 1):
        self.spec, self.cells = spec, {c.id: c for c in cells}
        self.measures, self.device, self.codecs = measures, device, codecs
        self.columns = measure_columns(measures)
        self.needs_faces = any(m.needs_faces for m in measures)
        self.faces = FaceAnalysis(embed=any(m.name == "identity" for m in measures))
        self.realism = realism
        self.crop = None
        if spec.dataset.crop == "face":
            from fairbits.face.crop import FaceCrop

            self.crop = FaceCrop(spec.dataset.crop_margin)
        self._extractor = None
        self.pool = ThreadPoolExecutor(threads)
        self.exact_pools: dict[str, object] = {}

    @classmethod
    def from_plan(cls, plan: AuditPlan, threads: int = 1) -> AuditWorker:
        return cls(plan.spec, plan.cells, plan.measure_set, plan.device, plan.codecs, plan.realism, threads)

    @classmethod
    def from_spec(cls, spec: AuditSpec, device: str | None = None, threads: int = 1) -> AuditWorker:
        """Everything :func:`~fairbits.audit.plan.plan_audit` loads, except the manifest."""
        codecs: dict = {}
        cells = plan_cells(spec, codecs)
        return cls(spec, cells, plan_measures(spec), resolve_device(device or spec.device), codecs,
                   plan_realism(spec), threads)

    def close(self) -> None:
        self.pool.shutdown()
        for p in self.exact_pools.values():
            p.close()

    @property
    def extractor(self):
        if self._extractor is None:
            from fairbits.measures.features import get_extractor

            self._extractor = get_extractor(self.realism)
        return self._extractor

    # -- step 1: CPU ------------------------------------------------------------------
    def load(self, job: BatchJob) -> list:
        """Futures decoding the job's originals on the worker's threads (in manifest order)."""
        ds = self.spec.dataset
        return [self.pool.submit(read_original, p, ds.max_pixels, ds.size, self.crop) for p in job.images["path"]]

    def prepare(self, job: BatchJob, loading: list | None = None) -> Prepared:
        """Decode (or take the futures of :meth:`load`), analyse faces, code exact cells."""
        loading = self.load(job) if loading is None else loading
        loaded = dict(zip(job.images["image_id"], [f.result() for f in loading]))
        originals = {i: im for i, (im, _) in loaded.items()}
        crops = {i: box for i, (_, box) in loaded.items()}
        keys = job.keys()
        faces, new_faces = None, []
        if self.needs_faces:
            faces, new_faces = self.faces.records(originals, keys, job.stored_faces or {})
            faces = {i: r.with_masks() for i, r in faces.items()}
        cache: dict = {}  # rate-search probes, shared by a codec's cells for this batch
        coded, checks = {}, {}
        for p in job.pending:
            cell = self.cells[p.cell]
            ids = list(p.ids) if cell.mode == "exact" else [i for i in p.checks if not isinstance(originals[i], str)]
            out = code_exact(cell, self.codecs[cell.codec], ids, originals, keys, pool=self.pool, cache=cache,
                             processes=self.exact_pools.get(cell.id) if cell.mode == "exact" else None)
            (coded if cell.mode == "exact" else checks)[cell.id] = out
        return Prepared(job, originals, crops, faces, new_faces, coded, checks)

    # -- step 2: measure device ----------------------------------------------------------
    def finish(self, prep: Prepared) -> BatchResult:
        """Fast cells' forward passes, then every cell's rows and measures, then features."""
        job, originals = prep.job, prep.originals
        result = BatchResult(job.index, faces=prep.new_faces)
        labels = job.images.set_index("image_id")
        memo = BatchMemo()  # shared by the batch's cells: originals' Lab and features once
        for p in job.pending:
            cell = self.cells[p.cell]
            outcomes = prep.coded.get(cell.id)
            if outcomes is None:
                outcomes = code_fast(cell, self.codecs[cell.codec], list(p.ids), originals, self.device,
                                     prep.checks.get(cell.id, {}))
            rows, recons = self._rows(cell, list(p.ids), outcomes, originals, prep.faces, labels, memo)
            if self.crop is not None:
                for i, row in rows.items():
                    row.update(zip(CROP_COLUMNS, prep.crops.get(i) or (np.nan,) * 4))
            failed = [r for i, r in rows.items() if not isinstance(originals[i], str)]
            if failed and all(r["error"] for r in failed):
                result.failed = (f"{cell.id}: all {len(failed)} decodable image(s) of a batch failed "
                                 f"(first: {failed[0]['error']})")
                return result
            result.rows[cell.id] = _frame(list(rows.values()))
            if self.realism and recons:  # before the next cell: the memo holds one cell's reconstructions
                ids = list(recons)
                result.features[cell.id] = (ids, image_features(memo, self.extractor, ids, [recons[i] for i in ids],
                                                                cell.id))
        if self.realism:
            new = {i: originals[i] for i in job.original_features if not isinstance(originals[i], str)}
            if new:
                ids = list(new)
                result.features["originals"] = (ids, image_features(memo, self.extractor, ids, [new[i] for i in ids]))
        return result

    def run(self, job: BatchJob, loading: list | None = None) -> BatchResult:
        """Both steps in this process (the local engine)."""
        return self.finish(self.prepare(job, loading))

    def _rows(self, cell: Cell, ids: list[str], outcomes: dict, originals: dict,
              faces: dict[str, FaceRecord] | None, labels: pd.DataFrame, memo) -> tuple[dict, dict]:
        """Rows by image id (errors included) and the measured reconstructions by id."""
        rows = {i: _empty_row(cell, i, self.columns) for i in ids}
        good: dict[tuple, list[str]] = {}  # ids by image size
        for i in ids:
            res, row = outcomes[i], rows[i]
            if faces is not None and i in faces:
                row["face_found"] = float(faces[i].face_found)
            if isinstance(res, str):
                row["error"] = res
                continue
            h, w = res.recon.shape[:2]
            row.update(**setting_columns(res.setting), num_bytes=res.num_bytes, height=h, width=w, bpp=res.bpp,
                       **(res.check or {}))
            good.setdefault(res.recon.shape, []).append(i)
        for group in good.values():
            context = {"ids": group, "cell": cell.id, "memo": memo,
                       "labels": labels.loc[group].reset_index(),
                       "faces": None if faces is None else [faces[i] for i in group]}
            try:
                vals = _measure(self.measures, [originals[i] for i in group], [outcomes[i].recon for i in group],
                                self.device, context)
            except Exception as e:
                for i in group:
                    rows[i]["error"] = f"measure failed: {type(e).__name__}: {e}"
                continue
            for k, i in enumerate(group):
                rows[i].update({c: float(v[k]) for c, v in vals.items()})
        recons = {i: outcomes[i].recon for g in good.values() for i in g if rows[i]["error"] is None}
        return rows, recons
