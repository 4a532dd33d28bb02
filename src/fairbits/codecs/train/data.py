"""The training images: the manifest, its images fitted to one size, crops and skin masks.

* :func:`load_training_data` reads the dataset of a training data YAML (what
  ``fairbits train-codec --data``, ``train-phenotype --data`` and ``fairgen study --train`` take).
* :func:`load_training_set` reads a dataset spec (or takes a manifest DataFrame), drops
  unreadable images, cuts it to a group mix if asked and describes it (counts per group,
  a hash of the image ids) for the checkpoint meta and the resume check.
* :class:`ImageSource` serves random ``patch × patch`` crops, float32 ``(B, 3, P, P)`` in
  [0, 1], of images first fitted with :func:`fairbits.data.images.fit_size`.
* :class:`SkinMasks` serves the skin mask of the same crops, bool ``(B, P, P)``, computed
  once per image and kept in memory (bit-packed). Where the manifest has a ``mask_path``
  column (fairbits phantoms: an 8-bit PNG of region codes, skin = 1, see
  :data:`fairbits.data.phantom.REGIONS`, a path relative to the dataset root), the mask
  is read from it and fitted like its image (nearest neighbour); otherwise it is the
  ``skin`` mask of fairbits' face analysis (:class:`fairbits.face.analysis.FaceAnalyzer`)
  of the fitted image (all False where no face is found).
"""

from __future__ import annotations

import hashlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from pydantic import ValidationError

from fairbits.codecs.train.config import TrainConfig
from fairbits.data.images import fit_size, load_original
from fairbits.errors import CodecUnavailable, DatasetError, ImageError, SpecError
from fairbits.spec import DatasetSpec, read_yaml

SKIN_CODE = 1   # fairbits.data.phantom.REGIONS["skin"]


@dataclass
class TrainingSet:
    """A manifest ready for training: ``size`` (None = images as they are), the
    ``max_pixels`` guard, ``root`` (where relative ``mask_path`` entries are read from)
    and ``desc`` (JSON-safe description for the meta and the resume check)."""

    manifest: pd.DataFrame
    size: int | None
    max_pixels: int
    root: Path | None
    desc: dict[str, Any] = field(default_factory=dict)


def load_training_data(path: str | Path) -> DatasetSpec:
    """The dataset of a training data YAML: its top level is a dataset mapping (``reader``,
    ``path``, reader options, ``size``...) or an audit spec with a ``dataset:`` key. A
    relative ``path`` is read from the YAML file's folder.

    Raises:
        SpecError: missing file, invalid YAML, or an invalid dataset mapping.
    """
    p = Path(path)
    data = read_yaml(p, "data file")
    if isinstance(data, dict) and isinstance(data.get("dataset"), dict):
        data = data["dataset"]
    if not isinstance(data, dict):
        raise SpecError(f"{p}: expected a dataset mapping (reader, path, ...) or a spec with `dataset:`")
    try:
        ds = DatasetSpec.model_validate(data)
    except ValidationError as e:
        where = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(top)'}: {err['msg']}" for err in e.errors())
        raise SpecError(f"{p}: invalid dataset: {where}") from None
    if not ds.path.is_absolute():
        ds.path = (p.parent / ds.path).resolve()
    return ds


def _manifest_from_spec(ds: DatasetSpec, group_columns: list[str], seed: int) -> pd.DataFrame:
    from fairbits.data.manifest import build_manifest

    if not Path(ds.path).exists():
        raise DatasetError(f"dataset path not found: {ds.path}")
    groups = group_columns if ds.limit_per_group is not None and not ds.balance_by else None
    if ds.limit_per_group is not None and not ds.balance_by and not groups:
        raise SpecError("limit_per_group needs balance_by, a balanced/mix sampler or a mix column")
    return build_manifest(ds.reader, ds.path, options=ds.reader_options, split=ds.split,
                          limit_per_group=ds.limit_per_group, balance_by=ds.balance_by,
                          group_columns=groups, seed=seed)


def _spec_root(ds: DatasetSpec) -> Path:
    """The folder relative ``mask_path`` entries are read from (the csv reader's root)."""
    base = Path(ds.path) if Path(ds.path).is_dir() else Path(ds.path).parent
    root = ds.reader_options.get("root")
    return (base / root).resolve() if root is not None else base.resolve()


def load_training_set(data: DatasetSpec | pd.DataFrame, cfg: TrainConfig) -> TrainingSet:
    """The manifest ``cfg`` trains on (module docstring).

    A DataFrame needs a ``path`` column; ``attrs["root"]`` may name the folder of its
    relative ``mask_path`` entries.

    Raises:
        SpecError, DatasetError: unusable data or settings that do not fit them.
    """
    from fairbits.data.samplers import subsample_with_mix

    cols = cfg.group_columns()
    if isinstance(data, DatasetSpec):
        manifest = _manifest_from_spec(data, cols, cfg.seed)
        size = cfg.size if cfg.size is not None else data.size
        max_pixels, root = data.max_pixels, _spec_root(data)
        desc: dict[str, Any] = {"reader": data.reader, "path": str(data.path), "split": data.split}
    elif isinstance(data, pd.DataFrame):
        manifest, size, max_pixels = data, cfg.size, 40_000_000
        root = Path(data.attrs["root"]).resolve() if data.attrs.get("root") else None
        desc = {"reader": data.attrs.get("reader", "manifest")}
    else:
        raise SpecError(f"data must be a DatasetSpec or a manifest DataFrame, not {type(data).__name__}")
    if "path" not in manifest.columns or manifest.empty:
        raise DatasetError("the training manifest needs rows and a `path` column")
    if "checksum" in manifest.columns and manifest["checksum"].isna().any():
        bad = int(manifest["checksum"].isna().sum())
        warnings.warn(f"{bad} unreadable training image(s) left out", stacklevel=3)
        manifest = manifest[manifest["checksum"].notna()]
    manifest = manifest.reset_index(drop=True)
    if cfg.mix is not None:
        manifest = subsample_with_mix(manifest, cfg.mix_column, cfg.mix, n=cfg.train_size, seed=cfg.seed)
    if size is not None and size < cfg.patch:
        raise SpecError(f"patch {cfg.patch} is larger than the image size {size}")
    ids = manifest["image_id"].astype(str) if "image_id" in manifest.columns else manifest["path"].astype(str)
    desc.update(n_images=len(manifest), size=size,
                ids_sha256=hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16])
    for col in cols:
        if col in manifest.columns:
            desc[f"counts_{col}"] = {str(k): int(v) for k, v in
                                     manifest[col].astype(str).value_counts().sort_index().items()}
    return TrainingSet(manifest, size, max_pixels, root, desc)


class ImageSource:
    """Training images of a manifest, fitted to ``size`` and cached as ``uint8 (H, W, 3)``.

    Up to ``cache_bytes`` of decoded images stay in memory; the rest are re-read per batch
    (with ``workers`` threads).
    """

    def __init__(self, manifest: pd.DataFrame, size: int | None, max_pixels: int = 40_000_000,
                 cache_bytes: int = 4 << 30, workers: int = 4):
        self.paths = manifest["path"].astype(str).tolist()
        self.size, self.max_pixels = size, max_pixels
        self.cache: dict[int, np.ndarray] = {}
        self.cache_bytes, self._used = cache_bytes, 0
        self._pool = ThreadPoolExecutor(max_workers=workers)

    def _read(self, i: int) -> np.ndarray:
        try:
            return load_original(self.paths[i], max_pixels=self.max_pixels, size=self.size, min_side=1)
        except ImageError as e:
            raise DatasetError(f"training image {self.paths[i]} cannot be used: {e}") from None

    def images(self, rows) -> list[np.ndarray]:
        rows = [int(r) for r in rows]
        missing = sorted({r for r in rows if r not in self.cache})
        loaded = dict(zip(missing, self._pool.map(self._read, missing)))
        for r, a in loaded.items():
            if self._used + a.nbytes <= self.cache_bytes:
                self.cache[r], self._used = a, self._used + a.nbytes
        return [self.cache.get(r, loaded.get(r)) for r in rows]

    def crop_boxes(self, rows, patch: int, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
        """Random crops ``float32 (B, 3, patch, patch)`` in [0, 1] and their ``(top, left)``
        corners ``int64 (B, 2)``."""
        out, boxes = [], []
        for r, a in zip(rows, self.images(rows)):
            h, w = a.shape[:2]
            if h < patch or w < patch:
                raise DatasetError(f"image {self.paths[int(r)]} is {w}x{h}, smaller than patch "
                                   f"{patch}; lower --patch or raise the dataset size")
            top, left = rng.integers(0, h - patch + 1), rng.integers(0, w - patch + 1)
            out.append(a[top:top + patch, left:left + patch])
            boxes.append((top, left))
        x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div_(255.0)
        return x, np.array(boxes, dtype=np.int64).reshape(-1, 2)

    def crops(self, rows, patch: int, rng: np.random.Generator) -> torch.Tensor:
        """Random ``patch x patch`` crops: float32 ``(len(rows), 3, patch, patch)`` in [0, 1]."""
        return self.crop_boxes(rows, patch, rng)[0]

    def centre_crops(self, rows, patch: int) -> torch.Tensor:
        out = []
        for a in self.images(rows):
            h, w = a.shape[:2]
            top, left = (h - patch) // 2, (w - patch) // 2
            out.append(a[top:top + patch, left:left + patch])
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div_(255.0)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def fit_mask(mask: np.ndarray, size: int | None) -> np.ndarray:
    """:func:`~fairbits.data.images.fit_size` for a label image ``(H, W)``: same resize and
    centre crop, nearest-neighbour so that codes stay codes."""
    return fit_size(mask, size, Image.Resampling.NEAREST)


class SkinMasks:
    """Skin masks of the training images (module docstring), computed once per image.

    Args:
        training_set: the manifest (``mask_path`` used when present), size and root.
        source: the :class:`ImageSource` of the same manifest (for face analysis, and to
            check that a mask has its image's shape).
    """

    def __init__(self, training_set: TrainingSet, source: ImageSource):
        m = training_set.manifest
        self.size, self.root, self.source = training_set.size, training_set.root, source
        self.mask_paths = m["mask_path"].tolist() if "mask_path" in m.columns else None
        self.method = "region masks (mask_path)" if self.mask_paths is not None else "face analysis"
        self._packed: dict[int, tuple[np.ndarray, tuple[int, int]]] = {}
        self._analyzer = None

    def _mask_file(self, row: int) -> Path:
        from fairbits.data.readers import resolve_under

        entry = self.mask_paths[row]
        if not isinstance(entry, str) or not entry.strip():
            raise DatasetError(f"training image {self.source.paths[row]} has no mask_path")
        if self.root is not None:
            return resolve_under(self.root, entry.strip())
        if not Path(entry).is_absolute():
            raise DatasetError(f"mask_path {entry!r} is relative but the manifest names no root "
                               "(set attrs['root'] or use absolute paths)")
        return Path(entry)

    def _compute(self, row: int, image: np.ndarray) -> np.ndarray:
        if self.mask_paths is not None:
            path = self._mask_file(row)
            try:
                with Image.open(path) as im:
                    codes = np.asarray(im.convert("L") if im.mode not in ("L", "P") else im)
            except (OSError, ValueError) as e:
                raise DatasetError(f"skin mask {path} cannot be read: {e}") from None
            skin = fit_mask(codes, self.size) == SKIN_CODE
        else:
            skin = self._analyse(image)
        if skin.shape != image.shape[:2]:
            raise DatasetError(f"skin mask of {self.source.paths[row]} is {skin.shape[::-1]}, "
                               f"its image {image.shape[1::-1]}")
        return skin

    def _analyse(self, image: np.ndarray) -> np.ndarray:
        if self._analyzer is None:
            try:
                from fairbits.face.analysis import FaceAnalyzer

                self._analyzer = FaceAnalyzer()
            except ImportError as e:
                raise CodecUnavailable(f"the colour loss needs skin masks: give the data a mask_path "
                                       f"column or install mediapipe for face analysis ({e})") from None
        return self._analyzer.analyze(image).masks["skin"]

    def masks(self, rows) -> list[np.ndarray]:
        """Whole-image skin masks, bool ``(H, W)``, of ``rows``."""
        rows = [int(r) for r in rows]
        todo = sorted({r for r in rows if r not in self._packed})
        for r, img in zip(todo, self.source.images(todo)):
            skin = self._compute(r, img)
            self._packed[r] = (np.packbits(skin.reshape(-1)), skin.shape)
        return [np.unpackbits(p, count=s[0] * s[1]).reshape(s).astype(bool)
                for p, s in (self._packed[r] for r in rows)]

    def crops(self, rows, boxes: np.ndarray, patch: int) -> torch.Tensor:
        """The skin masks of the crops at ``boxes`` (from :meth:`ImageSource.crop_boxes`):
        bool ``(B, patch, patch)``."""
        out = [m[t:t + patch, l:l + patch] for m, (t, l) in zip(self.masks(rows), boxes)]
        return torch.from_numpy(np.stack(out))

    def close(self) -> None:
        if self._analyzer is not None:
            self._analyzer.close()
            self._analyzer = None


__all__ = ["TrainingSet", "load_training_data", "load_training_set", "ImageSource", "SkinMasks", "fit_mask",
           "SKIN_CODE"]
