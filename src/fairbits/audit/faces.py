"""Face analysis of the originals, once per image content, stored with the run.

Every face measure (``skin_tone``, ``landmarks``, ``identity``, ``phenotype``,
``attributes``) reads the analysis of the *original*: its landmarks, its region masks
(reused on the reconstruction, which is pixel-aligned with it) and its identity
embedding. :class:`FaceAnalysis` computes these once per content key (the image checksum)
where the originals are decoded (a worker of either engine); :class:`FaceStore` appends
them to ``<run>/faces/part-*.parquet`` (the driver), so a resumed run, and every cell
of a run, reuses them. :class:`FaceBatch` is what a measure receives as
``context["faces"]``: the analyses of the images it measures, stacked.

Stored per key: ``face_found``, image ``height``/``width``, ``landmarks`` (478×2
float32 bytes), ``person`` (the selfie-segmentation mask > 0.5, bit-packed) and
``embedding`` (128 float32 bytes, unit norm; only when an identity measure asked for
it). Region masks are recomputed from landmarks and person mask with
:func:`fairbits.face.analysis.region_masks`, a pure function.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from fairbits.audit.store import RunStore, write_parquet
from fairbits.errors import FairbitsWarning
from fairbits.fileio import next_part
from fairbits.face.analysis import MASK_NAMES, N_LANDMARKS, empty_masks, region_masks

EMBED_DIM = 128


@dataclass
class FaceRecord:
    """The analysis of one original: ``landmarks`` float32 (478, 2) pixels or None,
    ``person`` bool (H, W) or None, ``embedding`` float32 (128,) or None."""

    face_found: bool
    height: int
    width: int
    landmarks: np.ndarray | None = None
    person: np.ndarray | None = None
    embedding: np.ndarray | None = None
    region: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)  # see with_masks

    def masks(self) -> dict[str, np.ndarray]:
        """Region masks, bool (H, W) by :data:`~fairbits.face.analysis.MASK_NAMES`."""
        if self.region is not None:
            return self.region
        if not self.face_found:
            return empty_masks((self.height, self.width))
        person = None if self.person is None else self.person.astype(np.float32)
        return region_masks(self.landmarks, (self.height, self.width), person)

    def with_masks(self) -> FaceRecord:
        """A copy holding its region masks, for a batch that every cell measures (the cache
        itself keeps none: five bool masks are 5 bytes per pixel of every image)."""
        return replace(self, region=self.masks())

    def to_row(self, key: str, image_id: str) -> dict:
        h, w = self.height, self.width
        return {"key": key, "image_id": image_id, "face_found": self.face_found, "height": h, "width": w,
                "landmarks": None if self.landmarks is None else self.landmarks.astype(np.float32).tobytes(),
                "person": None if self.person is None else np.packbits(self.person.reshape(-1)).tobytes(),
                "embedding": None if self.embedding is None else self.embedding.astype(np.float32).tobytes()}

    @classmethod
    def from_row(cls, row) -> FaceRecord:
        h, w = int(row["height"]), int(row["width"])
        lm = row["landmarks"]
        person = row["person"]
        emb = row["embedding"]
        return cls(bool(row["face_found"]), h, w,
                   None if lm is None else np.frombuffer(lm, np.float32).reshape(N_LANDMARKS, 2).copy(),
                   None if person is None else
                   np.unpackbits(np.frombuffer(person, np.uint8))[:h * w].reshape(h, w).astype(bool),
                   None if emb is None else np.frombuffer(emb, np.float32).copy())


class FaceStore:
    """The stored face analyses of a run (``run_dir/faces/part-*.parquet``), by content key.

    Memory stays flat in dataset size: only an index from key to part file is held; the
    rows of a batch are read from their parts when asked for (:meth:`rows`).
    """

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir) / "faces"
        self._where: dict[str, Path] = {}
        for part in sorted(self.dir.glob("part-*.parquet")):
            try:
                keys = pq.read_table(part, columns=["key"]).column("key").to_pylist()
            except (pa.ArrowException, OSError, KeyError) as e:  # analysed again when needed
                moved = RunStore.set_aside(part)
                warnings.warn(f"{part} is unreadable ({type(e).__name__}: {e}); moved aside to {moved.name}, "
                              "its faces are analysed again", FairbitsWarning, stacklevel=2)
                continue
            self._where.update(dict.fromkeys(keys, part))  # later parts win

    def __len__(self) -> int:
        return len(self._where)

    def rows(self, keys) -> dict[str, dict]:
        """Stored rows (:meth:`FaceRecord.to_row` form) of those ``keys`` that have one."""
        by_part: dict[Path, set[str]] = {}
        for k in set(keys):
            if k in self._where:
                by_part.setdefault(self._where[k], set()).add(k)
        out: dict[str, dict] = {}
        for part, wanted in by_part.items():
            table = pq.read_table(part, filters=[("key", "in", sorted(wanted))])
            for row in table.to_pylist():
                out[row["key"]] = row  # within a part, the last row of a key wins
        return out

    def add(self, rows: list[dict]) -> None:
        """Store new analyses (rows of :meth:`FaceRecord.to_row`) as one part."""
        if rows:
            part = next_part(self.dir, ".parquet")
            write_parquet(pd.DataFrame(rows), part)
            self._where.update(dict.fromkeys((r["key"] for r in rows), part))


class FaceAnalysis:
    """Analyses originals (mediapipe face mesh and segmentation; SFace embedding when
    ``embed``), completing stored records; the models load on first use."""

    def __init__(self, embed: bool = False):
        self.embed = embed
        self._analyzer = self._embedder = None

    def complete(self, rec: FaceRecord | None, image: np.ndarray) -> bool:
        """Whether ``rec`` is a usable analysis of ``image`` (same size, embedding if asked)."""
        return (rec is not None and rec.height == image.shape[0] and rec.width == image.shape[1]
                and (not self.embed or not rec.face_found or rec.embedding is not None))

    def analyse(self, image: np.ndarray, rec: FaceRecord | None = None) -> FaceRecord:
        """``rec`` completed for ``image`` (analysed from scratch when it does not fit)."""
        if rec is None or rec.height != image.shape[0] or rec.width != image.shape[1]:
            if self._analyzer is None:
                from fairbits.face.analysis import FaceAnalyzer

                self._analyzer = FaceAnalyzer()
            a = self._analyzer.analyze(image)
            rec = FaceRecord(a.face_found, image.shape[0], image.shape[1], a.landmarks, a.person)
        if self.embed and rec.face_found and rec.embedding is None:
            if self._embedder is None:
                from fairbits.face.identity import IdentityEmbedder

                self._embedder = IdentityEmbedder()
            rec.embedding = self._embedder.embed([image], [rec.landmarks])[0]
        return rec

    def records(self, originals: dict[str, np.ndarray | str], keys: dict[str, str],
                stored: dict[str, dict]) -> tuple[dict[str, FaceRecord], list[dict]]:
        """Analyses of ``originals`` (uint8 (H, W, 3) by image id; strings are load errors
        and are skipped) and the rows of those that were computed here (to be stored).

        ``keys`` maps each id to its content key; ``stored`` holds rows already stored by key.
        """
        out: dict[str, FaceRecord] = {}
        new: dict[str, dict] = {}
        done: dict[str, FaceRecord] = {}
        for i, im in originals.items():
            if isinstance(im, str):
                continue
            key = keys.get(i, i)
            rec = done.get(key)
            if not self.complete(rec, im):
                rec = FaceRecord.from_row(stored[key]) if key in stored else None
                if not self.complete(rec, im):
                    rec = self.analyse(im, rec)
                    new[key] = rec.to_row(key, i)
                done[key] = rec
            out[i] = rec
        return out, list(new.values())


class FaceCache:
    """Stored analyses and the analyser together, for one process (tests, benchmarks).

    Args:
        run_dir: the run directory (analyses go to ``run_dir/faces/``).
        embed: also compute identity embeddings (SFace on the aligned face).
    """

    def __init__(self, run_dir: str | Path, embed: bool = False):
        self.store, self.analysis = FaceStore(run_dir), FaceAnalysis(embed)

    def __len__(self) -> int:
        return len(self.store)

    def records(self, originals: dict[str, np.ndarray | str], keys: dict[str, str]) -> dict[str, FaceRecord]:
        """Analyses of ``originals`` by image id, computing and storing the missing ones."""
        stored = self.store.rows(keys.get(i, i) for i, im in originals.items() if not isinstance(im, str))
        out, new = self.analysis.records(originals, keys, stored)
        self.store.add(new)
        return out


def load_faces(run_dir: str | Path, columns=("key", "image_id", "face_found", "height", "width")) -> pd.DataFrame:
    """The stored analyses of a run, one row per content key (the latest), with ``columns``."""
    columns = list(dict.fromkeys(["key", *columns]))
    parts = sorted((Path(run_dir) / "faces").glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame(columns=columns)
    df = pd.concat([pd.read_parquet(p, columns=columns) for p in parts], ignore_index=True)
    return df.drop_duplicates("key", keep="last").reset_index(drop=True)


@dataclass
class FaceBatch:
    """The originals' analyses of N same-size images, as a measure sees them.

    ``found`` bool (N,); ``landmarks`` float32 (N, 478, 2) pixels, NaN rows where no
    face; ``masks`` bool tensors (N, H, W) on the measure's device, by mask name;
    ``embedding`` float32 (N, 128) unit vectors, NaN rows where not computed.
    """

    found: np.ndarray
    landmarks: np.ndarray
    masks: dict[str, torch.Tensor]
    embedding: np.ndarray

    @classmethod
    def stack(cls, records: list[FaceRecord], device: torch.device | str = "cpu") -> FaceBatch:
        n = len(records)
        lms = np.full((n, N_LANDMARKS, 2), np.nan, np.float32)
        emb = np.full((n, EMBED_DIM), np.nan, np.float32)
        masks = {k: [] for k in MASK_NAMES}
        for j, r in enumerate(records):
            if r.landmarks is not None:
                lms[j] = r.landmarks
            if r.embedding is not None:
                emb[j] = r.embedding
            for k, m in r.masks().items():
                masks[k].append(m)
        return cls(np.array([r.face_found for r in records], dtype=bool), lms,
                   {k: torch.from_numpy(np.stack(v)).to(device) for k, v in masks.items()}, emb)

    def __len__(self) -> int:
        return len(self.found)

    def take(self, sl: slice) -> FaceBatch:
        """The rows ``sl`` of every field."""
        return FaceBatch(self.found[sl], self.landmarks[sl], {k: v[sl] for k, v in self.masks.items()},
                         self.embedding[sl])
