"""How one cell codes a batch of originals: exact bytes, rate search, or fast forward pass.

Every image ends as an :class:`Outcome` (a reconstruction and its rate) or an error string.
In fast mode (learned codecs) the rate is estimated from the model's likelihoods; the
images in the cell's *check sample* are also coded exactly, and the outcome records the
relative rate error and the largest reconstruction difference.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fairbits.audit.plan import Cell
from fairbits.codecs.base import Codec, Coded
from fairbits.codecs.ratesearch import search_rate
from fairbits.data.images import to_tensor, to_uint8
from fairbits.seeding import keyed_seed

CHECK_COLUMNS = ("exact_bpp", "rate_rel_error", "recon_max_diff")  # per-image results of the check
CHECK_SAMPLE = 32          # images per fast cell that are also coded exactly
FAST_RATE_TOL = 0.05       # |estimated − real| above this share of the real bytes ...
FAST_RATE_SLACK_BYTES = 16  # ... plus this many bytes (stream header, coder flush) is flagged
FAST_RECON_TOL = 3.0       # largest fast-vs-exact pixel difference (8-bit levels) before a flag
CPU_FORWARD_CHUNK = 8      # images per forward pass on CPU (activations of big decoders)


@dataclass
class Outcome:
    """One coded image.

    Attributes:
        recon: ``uint8 (H, W, 3)`` reconstruction.
        bpp: bits per pixel (real bytes in exact mode, estimated in fast mode).
        num_bytes: bitstream length, NaN when the rate is estimated.
        setting: the codec setting used (the chosen quality under a rate search).
        check: fast mode only, for sampled images: ``exact_bpp``, ``rate_rel_error``,
            ``recon_max_diff`` (8-bit levels).
    """

    recon: np.ndarray
    bpp: float
    num_bytes: float
    setting: Any
    check: dict | None = None

    @classmethod
    def from_coded(cls, c: Coded) -> "Outcome":
        return cls(c.recon, c.bpp, float(c.num_bytes), c.setting)


def check_sample(image_ids: list[str], cell_id: str, seed: int, k: int = CHECK_SAMPLE) -> set[str]:
    """A seeded choice of ``k`` image ids for a cell's exact-coding check."""
    ids = sorted(image_ids)
    pick = np.random.default_rng(keyed_seed(seed, cell_id)).permutation(len(ids))[: min(k, len(ids))]
    return {ids[i] for i in pick}


def _exact(codec: Codec, cell: Cell, image: np.ndarray, cache: dict, key: str) -> Outcome | str:
    try:
        if cell.target_bpp is not None:
            return Outcome.from_coded(search_rate(codec, image, cell.target_bpp, cache=cache, key=key))
        return Outcome.from_coded(codec.code(image, cell.value))
    except Exception as e:  # one image must never kill the run
        return f"coding failed: {type(e).__name__}: {e}"


def _fast(codec, cell: Cell, images: list[np.ndarray], device: torch.device) -> list[Outcome]:
    """Batched forward pass; on CPU a few images at a time to bound activation memory."""
    step = CPU_FORWARD_CHUNK if device.type == "cpu" else len(images)
    out = []
    for k in range(0, len(images), step):
        with torch.no_grad():
            recon, bpp = codec.forward_batch(to_tensor(images[k:k + step], device), cell.value, device)
        bpp = torch.as_tensor(bpp).double().cpu().numpy()
        out += [Outcome(r, float(b), np.nan, cell.value) for r, b in zip(to_uint8(recon), bpp)]
    return out


def _attach_check(out: Outcome, exact: Outcome | str) -> None:
    if isinstance(exact, str):
        out.check = dict.fromkeys(CHECK_COLUMNS, np.nan)
        return
    diff = np.abs(out.recon.astype(np.int16) - exact.recon.astype(np.int16)).max()
    out.check = dict(zip(CHECK_COLUMNS, (exact.bpp, (out.bpp - exact.bpp) / exact.bpp, float(diff))))


def code_exact(cell: Cell, codec: Codec, ids: list[str], originals: dict, keys: dict,
               *, pool: ThreadPoolExecutor, cache: dict, processes=None) -> dict[str, Outcome | str]:
    """Real bytes for the usable originals among ``ids`` (a rate search when the cell has a
    target); unreadable originals keep their error string.

    ``cache`` (one dict per batch) shares a rate search's probes across a codec's cells;
    ``processes`` (an :class:`~fairbits.codecs.learned.ExactPool` for this cell) spreads
    exact coding of a learned codec over worker processes; without it, ``pool``'s threads do it.
    """
    usable = [i for i in ids if not isinstance(originals[i], str)]
    out: dict[str, Outcome | str] = {i: originals[i] for i in ids if i not in usable}
    if processes is not None and usable:
        try:
            coded = processes.code([originals[i] for i in usable])
            out.update({i: Outcome.from_coded(c) for i, c in zip(usable, coded)})
            return out
        except Exception:  # find the image that failed, one at a time, below
            pass
    jobs = {i: pool.submit(_exact, codec, cell, originals[i], cache, keys[i]) for i in usable}
    out.update({i: j.result() for i, j in jobs.items()})
    return out


def code_fast(cell: Cell, codec: Codec, ids: list[str], originals: dict, device: torch.device,
              checks: dict[str, Outcome | str]) -> dict[str, Outcome | str]:
    """Batched forward passes (estimated rate) for the usable originals among ``ids``, one
    pass per image size; ``checks`` holds the exact coding of the cell's check sample
    (:func:`code_exact`), attached to the matching outcomes."""
    usable = [i for i in ids if not isinstance(originals[i], str)]
    out: dict[str, Outcome | str] = {i: originals[i] for i in ids if i not in usable}
    by_size: dict[tuple, list[str]] = {}
    for i in usable:
        by_size.setdefault(originals[i].shape, []).append(i)
    for group in by_size.values():
        try:
            out.update(zip(group, _fast(codec, cell, [originals[i] for i in group], device)))
        except Exception as e:
            out.update({i: f"coding failed: {type(e).__name__}: {e}" for i in group})
    for i, exact in checks.items():
        if isinstance(out.get(i), Outcome):
            _attach_check(out[i], exact)
    return out
