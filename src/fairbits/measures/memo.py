"""What the measures of one batch of originals share, computed once: :class:`BatchMemo`.

The audit engine makes one ``BatchMemo()`` per batch of originals, passes it to every
measure call of that batch's cells as ``context["memo"]`` together with ``context["ids"]``
(the image ids of the call's N images, in order) and ``context["cell"]`` (the cell id of
the reconstructions), and drops it after the batch. A measure called without them
(tests, other callers) computes directly. With or without a memo the values are the
same bits.

What is shared:

* **CIELAB** (:func:`cielab`): ``ciede2000`` and ``skin_tone`` convert the originals once
  per batch (shared by every cell) and a reconstruction once per cell (shared by the two
  measures).
* **Image features** (:func:`tensor_features`, :func:`image_features`): an extractor
  with a ``memo_key`` (SFace, the pixel thumbnail) computes an image once per batch for
  originals and once per cell for reconstructions, so the phenotype classifiers' ``sface``
  component and the realism extractor ``sface`` (the same network, crop and
  preprocessing) are one computation, and several classifiers share their originals'.

Two kinds of entries, because not every computation is independent of its batch:

``per_image``
    for work whose result for an image does not depend on the other images of the call
    (an SFace embedding: the network sees one image at a time). Only ids not yet held are
    computed.
``per_chunk``
    for work whose last bits may depend on the batch: :func:`~fairbits.colour.srgb_to_lab`
    of an image can differ in the last bit with the chunk it is converted in (seen at
    250×250 and 37×53 px, not at 256×256: torch's elementwise kernels split a tensor into
    vectorised and scalar parts by its size and the thread count). A value is reused only
    for the same ordered ids.

Lifetime and memory: originals' entries live as long as the memo (one batch). Entries
of reconstructions are kept for one cell at a time (asking for another cell drops them),
and their per-chunk entries for the latest chunk only. CIELAB in float64 costs 24 bytes
per pixel, so a batch's originals take ``batch_size × H × W × 24`` bytes on the measure
device (32 images of 256² px: 50 MB; of 400² px: 123 MB), plus one chunk of
reconstructions; a 128-d float32 embedding is 512 bytes per image and key.

Values are keyed by image id: the tensors a measure receives must be ``to_tensor`` of the
same ``uint8`` images the engine passes to :func:`image_features` (true of the engine).
Feature entries are also keyed by the device the measure's tensor was on (a CUDA
``to_tensor`` need not give the CPU's last bits), so the realism features, computed from
CPU tensors, are shared with measures that run on CPU. Values are shared: read only.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from fairbits.colour import srgb_to_lab


class BatchMemo:
    """Values of one batch of originals, by ``(name, image id)`` or ``(name, ids)``.

    ``name`` is any hashable naming the computation (e.g. ``("cielab", "torch.float64",
    "cpu")``); ``cell`` is None for originals and the cell id for reconstructions.
    """

    def __init__(self):
        self._originals: dict[tuple, Any] = {}      # (name, id) and (name, ids) → value
        self._cell: str | None = None               # the cell whose reconstructions are held
        self._recons: dict[tuple, Any] = {}         # (name, id) → value, for self._cell
        self._recon_chunks: dict[Any, tuple] = {}   # name → (ids, value), the latest chunk

    def _recon_scope(self, cell: str) -> None:
        if cell != self._cell:
            self._cell = cell
            self._recons.clear()
            self._recon_chunks.clear()

    def per_image(self, name, ids: Sequence[str], compute: Callable[[list[int]], Sequence],
                  cell: str | None = None) -> list:
        """The values of ``ids``, in order; ``compute(positions)`` returns the values of the
        images at those positions of ``ids`` (in that order) and is called only for ids
        not yet held (not at all when every one is)."""
        if cell is not None:
            self._recon_scope(cell)
        store = self._originals if cell is None else self._recons
        missing = [k for k, i in enumerate(ids) if (name, i) not in store]
        if missing:
            fresh = compute(missing)
            if len(fresh) != len(missing):
                raise ValueError(f"compute returned {len(fresh)} values for {len(missing)} images")
            for k, v in zip(missing, fresh):
                store[(name, ids[k])] = v
        return [store[(name, i)] for i in ids]

    def per_chunk(self, name, ids: Sequence[str], compute: Callable[[], Any], cell: str | None = None):
        """The value of the images ``ids`` taken together (same ids in the same order);
        ``compute()`` makes it when it is not held."""
        ids = tuple(ids)
        if cell is None:
            key = (name, ids)
            if key not in self._originals:
                self._originals[key] = compute()
            return self._originals[key]
        self._recon_scope(cell)
        held = self._recon_chunks.get(name)
        if held is None or held[0] != ids:
            held = self._recon_chunks[name] = (ids, compute())
        return held[1]

    @property
    def nbytes(self) -> int:
        """Bytes held by tensor and array values."""
        values = [*self._originals.values(), *self._recons.values(), *(v for _, v in self._recon_chunks.values())]
        return sum(v.numel() * v.element_size() if isinstance(v, torch.Tensor) else getattr(v, "nbytes", 0)
                   for v in values)


def _scope(context: dict | None, n: int, recon: bool) -> tuple[BatchMemo, list[str], str | None] | None:
    """``(memo, ids, cell)`` of a measure call on ``n`` images, or None when the context has
    no memo to use (no memo or ids; no cell for reconstructions)."""
    memo = (context or {}).get("memo")
    ids = (context or {}).get("ids")
    cell = (context or {}).get("cell") if recon else None
    if not isinstance(memo, BatchMemo) or ids is None or (recon and cell is None):
        return None
    ids = [str(i) for i in ids]
    if len(ids) != n:
        raise ValueError(f"context['ids'] names {len(ids)} images for a batch of {n}")
    return memo, ids, cell


def cielab(images: torch.Tensor, context: dict | None, *, recon: bool,
           dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``srgb_to_lab(images.to(dtype))`` for ``(N, 3, H, W)`` sRGB in [0, 1], from the memo
    when it holds this chunk (``recon``: the images are the cell's reconstructions)."""
    scope = _scope(context, len(images), recon)
    if scope is None:
        return srgb_to_lab(images.to(dtype))
    memo, ids, cell = scope
    name = ("cielab", str(dtype), str(images.device))
    return memo.per_chunk(name, ids, lambda: srgb_to_lab(images.to(dtype)), cell)


def feature_key(extractor) -> str | None:
    """What an extractor computes (``memo_key``, e.g. ``"sface(crop=0.8)"``), when its
    result for an image is independent of the batch; None when it must not be shared."""
    return getattr(extractor, "memo_key", None)


def _empty(extractor) -> np.ndarray:
    return np.zeros((0, extractor.dim), np.float32)


def tensor_features(extractor, images: torch.Tensor, context: dict | None, *, recon: bool) -> np.ndarray:
    """``extractor(images)`` (``float32 (N, d)``) for a measure's ``(N, 3, H, W)`` images,
    per image from the memo where it holds them (``recon``: the cell's reconstructions)."""
    key = feature_key(extractor)
    scope = _scope(context, len(images), recon)
    if key is None or scope is None or len(images) == 0:
        return extractor(images)
    memo, ids, cell = scope
    every = list(range(len(images)))

    def compute(pos: list[int]) -> np.ndarray:
        return extractor(images if pos == every else images[torch.tensor(pos, device=images.device)])

    return np.stack(memo.per_image((key, images.device.type), ids, compute, cell))


def image_features(memo: BatchMemo | None, extractor, ids: Sequence[str], images: Sequence[np.ndarray],
                   cell: str | None = None) -> np.ndarray:
    """Features ``float32 (N, d)`` of ``uint8 (H, W, 3)`` images (sizes may differ), in the
    order of ``ids``: the engine's realism features of originals (``cell`` None) or of one
    cell's reconstructions. The extractor runs once per image size on CPU tensors
    (``to_tensor``), on the images the memo does not hold, and what it computes is kept for
    measures that run later in the batch. ``memo`` None computes every image."""
    from fairbits.data.images import to_tensor

    if len(ids) != len(images):
        raise ValueError(f"{len(ids)} ids for {len(images)} images")

    def compute(pos: Sequence[int]) -> list[np.ndarray]:
        out: list = [None] * len(pos)
        by_shape: dict[tuple, list[int]] = {}
        for j, k in enumerate(pos):
            by_shape.setdefault(images[k].shape, []).append(j)
        for js in by_shape.values():
            feats = np.asarray(extractor(to_tensor([images[pos[j]] for j in js])), dtype=np.float32)
            for j, row in zip(js, feats):
                out[j] = row
        return out

    if not len(images):
        return _empty(extractor)
    key = feature_key(extractor)
    if memo is None or key is None:
        return np.stack(compute(range(len(images))))
    return np.stack(memo.per_image((key, "cpu"), [str(i) for i in ids], compute, cell))
