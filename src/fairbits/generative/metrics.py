"""How fair and how good a set of generated samples is.

Subgroups. With ``k`` binary attributes there are ``2^k`` intersectional subgroups,
each a tuple of 0/1 bits ``(b_0, ..., b_{k-1})`` (``b_i = 1``: attribute ``i``
present, i.e. its score is ``> threshold``). Subgroup *index* =
``Σ b_i · 2^(k-1-i)``: attribute 0 is the most significant bit, so indices follow the
lexicographic order of the tuples, ``(0,0), (0,1), (1,0), (1,1)`` for ``k = 2``
(:func:`subgroups`). Every proportion vector of length ``2^k`` in this package, and the
samplers' ``subgroups_``, use this order.

Fairness: :func:`subgroup_proportions`, :func:`proportion_cis`, :func:`kl_divergence`,
:func:`fairness_discrepancy`. Quality: :func:`diversity`, :func:`precision_recall`,
:func:`frechet_distance` (the one in :mod:`fairbits.measures.realism`).
"""

from __future__ import annotations

import itertools
from typing import Mapping

import numpy as np
from scipy import stats
from scipy.spatial.distance import cdist, pdist
from sklearn.neighbors import NearestNeighbors

KL_EPS = 1e-10  # added to every cell of both distributions before KL (see kl_divergence)
MAX_K = 12      # more attributes than this means > 4096 subgroups: almost surely a mistake


def subgroups(k: int) -> list[tuple[int, ...]]:
    """The ``2^k`` subgroup tuples in index order (attribute 0 = most significant bit)."""
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer in [1, {MAX_K}], got {k!r}")
    return list(itertools.product((0, 1), repeat=int(k)))


def _scores_2d(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2 or s.shape[1] == 0:
        raise ValueError(f"scores must be 2-D (n, k), got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    return s


def subgroup_labels(scores, threshold: float = 0.0) -> np.ndarray:
    """Subgroup index per code: ``(n, k)`` scores (or ``(n,)`` for ``k = 1``) → ``(n,)`` int.

    Bit ``i`` is ``scores[:, i] > threshold``; index = ``Σ bit_i · 2^(k-1-i)``.
    """
    s = _scores_2d(scores)
    k = s.shape[1]
    subgroups(k)  # validates k
    weights = 1 << np.arange(k - 1, -1, -1)
    return ((s > threshold).astype(np.int64) * weights).sum(axis=1)


def _labels(labels, k: int) -> np.ndarray:
    subgroups(k)
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
    if lab.min() < 0 or lab.max() >= 2 ** k:
        raise ValueError(f"labels must be in [0, {2 ** k}) for k={k}")
    return lab


def subgroup_proportions(labels, k: int) -> np.ndarray:
    """Fraction of codes in each subgroup: ``(n,)`` indices → ``(2^k,)``, summing to 1."""
    lab = _labels(labels, k)
    return np.bincount(lab, minlength=2 ** k) / len(lab)


def proportion_cis(labels, k: int, alpha: float = 0.05, method: str = "wilson"):
    """Two-sided ``1 − alpha`` confidence intervals of each subgroup's proportion.

    Methods: ``"wilson"`` (score interval: centre ``(p̂ + z²/2n)/(1 + z²/n)``, half-width
    ``z/(1 + z²/n) · √(p̂(1−p̂)/n + z²/4n²)``, ``z`` the ``1 − alpha/2`` normal quantile)
    or ``"clopper-pearson"`` (exact, from beta quantiles).

    Returns:
        ``(low, high)``, two ``(2^k,)`` arrays of proportions in ``[0, 1]``.
    """
    lab = _labels(labels, k)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = len(lab)
    x = np.bincount(lab, minlength=2 ** k).astype(np.float64)
    if method == "wilson":
        z = stats.norm.ppf(1.0 - alpha / 2.0)
        p = x / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
    if method in ("clopper-pearson", "exact"):
        with np.errstate(invalid="ignore"):
            low = np.where(x > 0, stats.beta.ppf(alpha / 2, x, n - x + 1), 0.0)
            high = np.where(x < n, stats.beta.ppf(1 - alpha / 2, x + 1, n - x), 1.0)
        return low, high
    raise ValueError(f"unknown CI method {method!r}; use 'wilson' or 'clopper-pearson'")


def _distribution(p, name: str, length: int | None = None) -> np.ndarray:
    q = np.asarray(p, dtype=np.float64)
    if q.ndim != 1 or len(q) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {q.shape}")
    if length is not None and len(q) != length:
        raise ValueError(f"{name} has length {len(q)}, expected {length}")
    if not np.all(np.isfinite(q)) or (q < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    total = q.sum()
    if total <= 0:
        raise ValueError(f"{name} is all zero")
    return q / total


def target_proportions(target, k: int) -> np.ndarray:
    """Target over the ``2^k`` subgroups as a normalised ``(2^k,)`` vector.

    ``target`` is ``None`` (uniform), an array of length ``2^k`` in subgroup index order,
    or a dict from 0/1 tuples of length ``k`` to proportions (missing subgroups get 0).
    Proportions are normalised to sum to 1; negative, non-finite or all-zero targets,
    wrong lengths and unknown keys raise ``ValueError``.
    """
    groups = subgroups(k)
    if target is None:
        return np.full(len(groups), 1.0 / len(groups))
    if isinstance(target, Mapping):
        index = {g: i for i, g in enumerate(groups)}
        vec = np.zeros(len(groups))
        for key, value in target.items():
            key_t = tuple(int(b) for b in key) if isinstance(key, (tuple, list)) else None
            if key_t is None or key_t not in index or any(b not in (0, 1) for b in key):
                raise ValueError(f"target key {key!r} is not a 0/1 tuple of length {k}")
            vec[index[key_t]] = float(value)
        return _distribution(vec, "target")
    return _distribution(target, "target", len(groups))


def kl_divergence(p_observed, p_target, eps: float = KL_EPS) -> float:
    """``KL(p_observed ‖ p_target) = Σ p log(p / q)`` in nats, ≥ 0, 0 for equal vectors.

    Both inputs (proportions or counts, same length) are normalised; then ``eps`` is
    added to every cell of both and they are renormalised, so empty cells give a large
    but finite value instead of ``inf`` (and cells empty in both contribute ~0).
    """
    p = _distribution(p_observed, "p_observed")
    q = _distribution(p_target, "p_target", len(p))
    p, q = (p + eps) / (1 + eps * len(p)), (q + eps) / (1 + eps * len(q))
    return float(max(np.sum(p * np.log(p / q)), 0.0))


def fairness_discrepancy(p_observed, p_target) -> float:
    """L2 norm ``‖p_observed − p_target‖₂`` of the normalised proportion vectors (0 is fair)."""
    p = _distribution(p_observed, "p_observed")
    q = _distribution(p_target, "p_target", len(p))
    return float(np.linalg.norm(p - q))


def _features(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (n, f), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return a


def diversity(features, max_n: int = 4000, seed: int = 0) -> float:
    """Mean Euclidean distance over all pairs ``i < j`` of ``features`` ``(n, f)``.

    In feature units. Exact for ``n ≤ max_n``; above, computed on ``max_n`` rows drawn
    without replacement with ``seed`` (memory is ``max_n²/2`` floats).
    """
    x = _features(features, "features")
    if len(x) < 2:
        raise ValueError("diversity needs at least 2 samples")
    if len(x) > max_n:
        x = x[np.random.default_rng(seed).choice(len(x), max_n, replace=False)]
    return float(pdist(x).mean())


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row of ``x`` to its ``k``-th nearest other row: ``(n,)``."""
    nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
    dist, _ = nn.kneighbors(x)
    return dist[:, k]  # column 0 is the point itself


def _covered(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """``(m,)`` bool: point lies within ``radii[i]`` of some ``centres[i]``."""
    out = np.empty(len(points), dtype=bool)
    for s in range(0, len(points), chunk):
        d = cdist(points[s:s + chunk], centres)
        out[s:s + chunk] = (d <= radii[None, :]).any(axis=1)
    return out


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall with k-NN manifolds.

    Each real point ``r_i`` ``(n, f)`` gets a ball of radius = distance to its ``k``-th
    nearest other real point; the union of balls approximates the real manifold.
    **Precision** is the fraction of fake points ``(m, f)`` inside some real ball
    (fakes look real); **recall** is the fraction of real points inside some ball built
    the same way on the fakes (the fakes cover the real variety). Both in ``[0, 1]``.
    Cost is ``O(n·m)`` distances, computed in chunks.
    """
    r, g = _features(real, "real"), _features(fake, "fake")
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"feature dims differ: {r.shape[1]} vs {g.shape[1]}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if len(r) <= k or len(g) <= k:
        raise ValueError(f"both sets need more than k={k} points, got {len(r)} and {len(g)}")
    precision = _covered(g, r, _knn_radii(r, k)).mean()
    recall = _covered(r, g, _knn_radii(g, k)).mean()
    return float(precision), float(recall)


def frechet_distance(feat_a, feat_b) -> float:
    """Fréchet distance of Gaussians fitted to ``(n, f)`` and ``(m, f)`` features.

    Delegates to :func:`fairbits.measures.realism.frechet_distance` (imported on first
    call, because :mod:`fairbits.measures` loads torch).
    """
    from fairbits.measures.realism import frechet_distance as _fd

    return _fd(feat_a, feat_b)
