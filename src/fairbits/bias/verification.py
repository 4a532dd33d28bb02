"""Face verification after coding: a threshold calibrated on the originals, and false non-matches.

A verification system accepts two faces as the same person when the cosine similarity
of their embeddings is at least a threshold. The threshold is calibrated on the
originals alone: over *impostor* pairs (two different originals, assumed to be
different people unless the manifest has an ``identity`` column saying otherwise) it is
the ``1 − fmr`` quantile of similarity, so that a fraction ``fmr`` of impostor pairs
would be (falsely) matched. A reconstruction is then a **false non-match** when its
similarity to its own original (``identity_cos``) falls below the threshold; the
per-group mean of ``identity_nonmatch`` is the false non-match rate (FNMR) and goes
through the same bias statistics as every other column.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fairbits.fileio import atomic_write_text
from fairbits.seeding import keyed_seed

DEFAULT_FMR = 1e-3
MAX_PAIRS = 500_000


def impostor_scores(embeddings: np.ndarray, identities=None, *, max_pairs: int = MAX_PAIRS,
                    seed: int = 0) -> np.ndarray:
    """Cosine similarities of impostor pairs of unit embeddings ``(n, d)`` → ``(m,)``.

    All pairs ``i < j`` when there are at most ``max_pairs``, else a seeded sample of
    that many; pairs with equal ``identities`` (when given) are left out.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    n = len(e)
    if n < 2:
        return np.zeros(0)
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(keyed_seed(seed, "impostors"))
        i, j = rng.integers(0, n, max_pairs), rng.integers(0, n, max_pairs)
        keep = i != j
        i, j = i[keep], j[keep]
    if identities is not None:
        ids = np.asarray(identities, dtype=object)
        keep = ids[i] != ids[j]
        i, j = i[keep], j[keep]
    return np.einsum("kd,kd->k", e[i], e[j])


def calibrate_threshold(impostors: np.ndarray, fmr: float = DEFAULT_FMR) -> float:
    """The similarity threshold at which a fraction ``fmr`` of ``impostors`` would match."""
    if not 0 < fmr < 1:
        raise ValueError(f"fmr must be in (0, 1), got {fmr}")
    if len(impostors) == 0:
        return float("nan")
    return float(np.quantile(impostors, 1.0 - fmr, method="higher"))


def nonmatch(identity_cos, threshold: float) -> np.ndarray:
    """1.0 where a similarity is below ``threshold``, 0.0 where not, NaN where unknown."""
    c = np.asarray(identity_cos, dtype=np.float64)
    return np.where(np.isnan(c) | np.isnan(threshold), np.nan, (c < threshold).astype(np.float64))


def original_embeddings(run_dir: str | Path, manifest: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The stored identity embeddings of a run's originals, ``(n, 128)``, and their image ids."""
    from fairbits.audit.faces import load_faces

    stored = load_faces(run_dir, ["embedding"]).set_index("key")["embedding"].to_dict()
    embs, ids = [], []
    for i, k in zip(manifest["image_id"], manifest["checksum"]):
        blob = stored.get(k if isinstance(k, str) else i)
        e = None if blob is None else np.frombuffer(blob, np.float32)
        if e is not None and np.isfinite(e).all():
            embs.append(e)
            ids.append(i)
    return (np.stack(embs) if embs else np.zeros((0, 128), np.float32)), np.array(ids, dtype=object)


def add_identity_nonmatch(run_dir: str | Path, results: pd.DataFrame, manifest: pd.DataFrame, *,
                          fmr: float = DEFAULT_FMR, seed: int = 0) -> pd.DataFrame:
    """Calibrate on the run's originals, add ``identity_nonmatch`` to ``results`` (a copy)
    and write ``identity.json`` (threshold, fmr, number of impostor pairs)."""
    emb, ids = original_embeddings(run_dir, manifest)
    identities = None
    if "identity" in manifest.columns:
        identities = manifest.set_index("image_id").loc[ids, "identity"].to_numpy()
    scores = impostor_scores(emb, identities, seed=seed)
    thr = calibrate_threshold(scores, fmr)
    out = results.copy()
    out["identity_nonmatch"] = nonmatch(out["identity_cos"], thr)
    info = {"threshold": thr, "fmr": fmr, "n_originals": int(len(emb)), "n_impostor_pairs": int(len(scores)),
            "impostor_mean": float(scores.mean()) if len(scores) else None}
    atomic_write_text(Path(run_dir) / "identity.json", json.dumps(info, indent=2))
    return out
