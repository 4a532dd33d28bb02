"""Face analysis of the originals, once per image content, stored with the run.

Every face measure (``skin_tone``, ``landmarks``, ``identity``, ``phenotype``,
``attributes``) reads the analysis of the *original*: its landmarks, its region masks
(reused on the reconstruction, which is pixel-aligned with it) and its identity
embedding. :class:`FaceCache` computes these once per content key (the image checksum)
and appends them to ``<run>/faces/part-*.parquet``, so a resumed run, and every cell
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


class FaceCache:
    """Face analyses of a run's originals by content key, computed on first use.

    Args:
        run_dir: the run directory (analyses go to ``run_dir/faces/``).
        embed: also compute identity embeddings (SFace on the aligned face).
    """

    def __init__(self, run_dir: str | Path, embed: bool = False):
        self.dir = Path(run_dir) / "faces"
        self.embed = embed
        self._records: dict[str, FaceRecord] = {}
        self._analyzer = self._embedder = None
        for part in sorted(self.dir.glob("part-*.parquet")):
            try:
                rows = pd.read_parquet(part).to_dict("records")
            except (pa.ArrowException, OSError) as e:  # analysed again when needed
                moved = RunStore.set_aside(part)
                warnings.warn(f"{part} is unreadable ({type(e).__name__}: {e}); moved aside to {moved.name}, "
                              "its faces are analysed again", FairbitsWarning, stacklevel=2)
                continue
            for row in rows:
                self._records[row["key"]] = FaceRecord.from_row(row)  # later parts win

    def __len__(self) -> int:
        return len(self._records)

    def _complete(self, rec: FaceRecord | None) -> bool:
        return rec is not None and (not self.embed or not rec.face_found or rec.embedding is not None)

    def _analyse(self, image: np.ndarray) -> FaceRecord:
        if self._analyzer is None:
            from fairbits.face.analysis import FaceAnalyzer

            self._analyzer = FaceAnalyzer()
        a = self._analyzer.analyze(image)
        h, w = image.shape[:2]
        return FaceRecord(a.face_found, h, w, a.landmarks, a.person)

    def _embed(self, image: np.ndarray, rec: FaceRecord) -> None:
        if self._embedder is None:
            from fairbits.face.identity import IdentityEmbedder

            self._embedder = IdentityEmbedder()
        rec.embedding = self._embedder.embed([image], [rec.landmarks])[0]

    def records(self, originals: dict[str, np.ndarray | str], keys: dict[str, str]) -> dict[str, FaceRecord]:
        """Analyses of ``originals`` (uint8 (H, W, 3) by image id; strings are load errors
        and are skipped), computing and storing the missing ones. ``keys`` maps each id
        to its content key."""
        new: list[dict] = []
        out: dict[str, FaceRecord] = {}
        for i, im in originals.items():
            if isinstance(im, str):
                continue
            key = keys.get(i, i)
            rec = self._records.get(key)
            if rec is not None and rec.height != im.shape[0]:
                rec = None  # same content at another size (dataset resize changed): analyse again
            if not self._complete(rec):
                rec = rec if rec is not None else self._analyse(im)
                if self.embed and rec.face_found and rec.embedding is None:
                    self._embed(im, rec)
                self._records[key] = rec
                new.append(rec.to_row(key, i))
            out[i] = rec
        if new:
            write_parquet(pd.DataFrame(new), next_part(self.dir, ".parquet"))
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
