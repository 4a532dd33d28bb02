"""Sampling latent codes whose attributes follow a target over intersectional subgroups.

:class:`FairLatentSampler` rebalances any latent model without retraining it: it needs
latent codes ``(n, d)`` and real-valued attribute scores ``(n, k)`` (positive =
attribute present, 0 = decision threshold), and returns new codes ``(m, d)``; it never
sees images. Baselines with the same ``fit`` / ``sample`` shape: :class:`PlainSampler`
(the prior, no rebalancing), :class:`RejectionSampler` (filter prior draws with an
attribute predictor) and :class:`ImportanceReweighter` (resample the fitted codes).

Subgroups are ordered as in :mod:`fairbits.generative.metrics` (attribute 0 is the most
significant bit). A ``target`` is ``None`` (uniform), an array of ``2^k`` proportions in
that order, or a dict from 0/1 tuples to proportions; it is normalised. Counts per
subgroup are exact and deterministic: **largest-remainder rounding** of ``n · target``
(:func:`allocate_counts`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.mixture import GaussianMixture

from fairbits.errors import FairbitsError
from fairbits.generative.boundaries import (Boundary, conditional_directions, edit_many, fit_boundary,
                                            stack_normals)
from fairbits.generative.metrics import subgroup_labels, subgroup_proportions, subgroups, target_proportions
from fairbits.seeding import keyed_seed

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


class SamplingError(FairbitsError):
    """A sampler cannot produce what was asked (not fitted, or a draw cap was reached)."""


def allocate_counts(n: int, proportions) -> np.ndarray:
    """Split ``n`` into integer counts ``(len(p),)`` following ``proportions`` (normalised).

    Largest-remainder (Hamilton) rounding: every cell gets ``floor(n·p)``, and the
    leftover units go to the largest fractional parts, ties to the lower index. Counts
    sum to ``n`` exactly and never differ from ``n·p`` by 1 or more.
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    p = np.asarray(proportions, dtype=np.float64)
    if p.ndim != 1 or not np.all(np.isfinite(p)) or (p < 0).any() or p.sum() <= 0:
        raise ValueError("proportions must be a 1-D, non-negative, not all-zero vector")
    exact = n * p / p.sum()
    counts = np.floor(exact).astype(np.int64)
    left = int(n - counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:left]] += 1
    return counts


def _check_fit(latents, scores) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(latents, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2 or z.shape[1] == 0:
        raise ValueError(f"latents must be 2-D (n, d) with n >= 2, got shape {z.shape}")
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2 or s.shape[0] != z.shape[0] or s.shape[1] == 0:
        raise ValueError(f"scores must be 2-D (n, k) with n={z.shape[0]} rows to match latents, "
                         f"got shape {s.shape}")
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(s))):
        raise ValueError("latents or scores contain NaN or infinite values")
    subgroups(s.shape[1])  # validates k
    return z, s


def _rng(seed: int, *key) -> np.random.Generator:
    return np.random.default_rng(keyed_seed(seed, *key))


def _int_seed(seed: int, *key) -> int:
    return int(keyed_seed(seed, *key).generate_state(1)[0])


def _gaussian_draw(mean: np.ndarray, cov: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, d)`` draws of ``N(mean, cov)`` through a symmetric square root (PSD-safe)."""
    w, v = np.linalg.eigh(cov)
    root = v * np.sqrt(np.clip(w, 0.0, None))
    return mean + rng.standard_normal((n, len(mean))) @ root.T


def _mixture_draw(gm: GaussianMixture, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, d)`` draws from a fitted mixture with our own generator (sklearn's ``sample``
    always reuses the mixture's ``random_state``)."""
    d = gm.means_.shape[1]
    comp = rng.choice(len(gm.weights_), size=n, p=gm.weights_ / gm.weights_.sum())
    out = np.empty((n, d))
    for c in np.unique(comp):
        idx = np.flatnonzero(comp == c)
        noise = rng.standard_normal((len(idx), d))
        if gm.covariance_type == "full":
            noise = noise @ np.linalg.cholesky(gm.covariances_[c]).T
        elif gm.covariance_type == "tied":
            noise = noise @ np.linalg.cholesky(gm.covariances_).T
        else:  # diag (K, d) or spherical (K,)
            noise = noise * np.sqrt(gm.covariances_[c])
        out[idx] = gm.means_[c] + noise
    return out


class _Fitted:
    """Shared bookkeeping: fitted state checks and target handling."""

    k_: int

    def _check_fitted(self) -> None:
        if not hasattr(self, "k_"):
            raise SamplingError(f"{type(self).__name__} is not fitted; call fit(latents, scores) first")

    def _counts(self, n: int, target) -> np.ndarray:
        self._check_fitted()
        return allocate_counts(n, target_proportions(target, self.k_))


class FairLatentSampler(_Fitted):
    """Sample latent codes whose subgroups follow a target, from per-subgroup mixtures.

    ``fit(latents, scores)``:

    1. per attribute, a :func:`~fairbits.generative.boundaries.fit_boundary` on its score
       column (SVM on the ``ratio`` most confident codes each side, offset recalibrated
       to the score threshold 0);
    2. edit directions ``directions_`` = the normals made orthogonal to the *other*
       normals (:func:`~fairbits.generative.boundaries.conditional_directions`), so an
       edit along one moves only that attribute;
    3. for each of the ``2^k`` subgroups, every fitted code is moved to that subgroup's
       side of each boundary at signed distance ``±(|d_i| + edit_distance·σ_i)`` where
       ``d_i`` is its current distance and ``σ_i`` the std of the ``d_i`` over the fitted
       codes (``keep_spread=False``: exactly ``±edit_distance·σ_i``). The components of a
       code outside the span of the normals are untouched, so the diversity of the
       other factors is kept;
    4. one ``GaussianMixture`` per subgroup on its edited set (``n_components`` and
       ``covariance_type``; with ``select_by_bic`` the number of components in
       ``1..n_components`` with the lowest BIC).

    ``sample(n, target)`` draws the largest-remainder counts from each subgroup's
    mixture. With ``truncate=True`` draws that fall on the wrong side of a fitted
    boundary (the mixture's tails) are redrawn, so every returned code is in its
    subgroup according to the fitted boundaries.

    Attributes after fit: ``boundaries_`` (k :class:`Boundary`), ``directions_``
    ``(k, d)``, ``distance_scale_`` ``(k,)`` (the ``σ_i``, latent units),
    ``subgroups_`` (``2^k`` 0/1 tuples), ``mixtures_`` (``2^k`` fitted mixtures, same
    order), ``n_components_`` (chosen per subgroup), ``k_``, ``d_``.
    """

    def __init__(self, n_components: int = 3, covariance_type: str = "full", select_by_bic: bool = False,
                 edit_distance: float = 0.5, *, keep_spread: bool = True, truncate: bool = True,
                 ratio: float = 0.02, C: float = 1.0, reg_covar: float = 1e-6, max_iter: int = 200,
                 max_rounds: int = 50, seed: int = 0):
        if not isinstance(n_components, (int, np.integer)) or n_components < 1:
            raise ValueError(f"n_components must be a positive integer, got {n_components!r}")
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}")
        if not np.isfinite(edit_distance) or edit_distance < 0 or (edit_distance == 0 and not keep_spread):
            raise ValueError("edit_distance must be >= 0 (and > 0 when keep_spread=False)")
        self.n_components, self.covariance_type, self.select_by_bic = n_components, covariance_type, select_by_bic
        self.edit_distance, self.keep_spread, self.truncate = float(edit_distance), keep_spread, truncate
        self.ratio, self.C, self.reg_covar, self.max_iter = ratio, C, reg_covar, max_iter
        self.max_rounds, self.seed = max_rounds, seed

    # ------------------------------------------------------------------ fit
    def fit(self, latents, scores) -> "FairLatentSampler":
        """Fit on ``latents`` ``(n, d)`` and ``scores`` ``(n, k)`` (``(n,)`` means k = 1)."""
        z, s = _check_fit(latents, scores)
        k = s.shape[1]
        self.boundaries_: list[Boundary] = [
            fit_boundary(z, s[:, i], ratio=self.ratio, seed=_int_seed(self.seed, "boundary", i),
                         C=self.C, threshold=0.0) for i in range(k)]
        normals, offsets = stack_normals(self.boundaries_)
        self.directions_ = conditional_directions(normals)
        dist = z @ normals.T + offsets
        self.distance_scale_ = dist.std(axis=0)
        margin = self.edit_distance * self.distance_scale_
        size = np.abs(dist) + margin if self.keep_spread else np.broadcast_to(margin, dist.shape)
        self.subgroups_ = subgroups(k)
        self.mixtures_, self.n_components_ = [], []
        for g in self.subgroups_:
            edited = edit_many(z, normals, size * (2 * np.array(g) - 1), offsets=offsets,
                               directions=self.directions_)
            gm = self._fit_mixture(edited, g)
            self.mixtures_.append(gm)
            self.n_components_.append(gm.n_components)
        self.k_, self.d_ = k, z.shape[1]
        return self

    def _fit_mixture(self, x: np.ndarray, group: tuple[int, ...]) -> GaussianMixture:
        choices = range(1, self.n_components + 1) if self.select_by_bic else [self.n_components]
        best, best_bic = None, np.inf
        for c in choices:
            gm = GaussianMixture(n_components=c, covariance_type=self.covariance_type, reg_covar=self.reg_covar,
                                 max_iter=self.max_iter, random_state=_int_seed(self.seed, "gmm", group, c))
            gm.fit(x)
            bic = gm.bic(x) if self.select_by_bic else 0.0
            if best is None or bic < best_bic:
                best, best_bic = gm, bic
        return best

    # ------------------------------------------------------------------ sample
    def _on_side(self, x: np.ndarray, group: tuple[int, ...]) -> np.ndarray:
        normals, offsets = stack_normals(self.boundaries_)
        return ((x @ normals.T + offsets > 0) == np.array(group, dtype=bool)).all(axis=1)

    def _draw_group(self, gi: int, m: int, rng: np.random.Generator) -> np.ndarray:
        gm, group = self.mixtures_[gi], self.subgroups_[gi]
        if not self.truncate:
            return _mixture_draw(gm, m, rng)
        kept, have = [], 0
        for _ in range(self.max_rounds):
            x = _mixture_draw(gm, max(2 * (m - have), 64), rng)
            x = x[self._on_side(x, group)][: m - have]
            kept.append(x)
            have += len(x)
            if have == m:
                return np.concatenate(kept)
        raise SamplingError(f"subgroup {group}: the mixture rarely lands on its side of the boundaries "
                            f"({have}/{m} after {self.max_rounds} rounds); use truncate=False or a larger "
                            "edit_distance")

    def sample(self, n: int, target=None, seed: int | None = None, return_subgroups: bool = False):
        """Draw ``n`` codes ``(n, d)`` following ``target`` (uniform when ``None``).

        Counts per subgroup: :func:`allocate_counts`. The rows are shuffled, so any
        prefix is roughly on target too. ``seed`` (default: the constructor's) makes
        the result reproducible; the same seed gives the same codes.
        With ``return_subgroups``, also returns ``(n,)`` subgroup indices of the rows.
        """
        counts = self._counts(n, target)
        seed = self.seed if seed is None else seed
        parts, labels = [], []
        for gi, m in enumerate(counts):
            if m:
                parts.append(self._draw_group(gi, int(m), _rng(seed, "fairgen-sample", gi)))
                labels.append(np.full(m, gi, dtype=np.int64))
        if not parts:
            return (np.empty((0, self.d_)), np.empty(0, np.int64)) if return_subgroups else np.empty((0, self.d_))
        order = _rng(seed, "fairgen-shuffle").permutation(n)
        x, lab = np.concatenate(parts)[order], np.concatenate(labels)[order]
        return (x, lab) if return_subgroups else x


class PlainSampler(_Fitted):
    """The unbalanced baseline: draws from the latent prior, ignoring any target.

    ``prior``: ``"standard"`` (``N(0, I_d)``), ``"gaussian"`` (a Gaussian fitted to the
    given latents: mean and ``ddof=1`` covariance) or ``"empirical"`` (resampling the
    given latents with replacement).
    """

    PRIORS = ("standard", "gaussian", "empirical")

    def __init__(self, prior: str = "gaussian", seed: int = 0):
        if prior not in self.PRIORS:
            raise ValueError(f"prior must be one of {self.PRIORS}, got {prior!r}")
        self.prior, self.seed = prior, seed

    def fit(self, latents, scores=None) -> "PlainSampler":
        """``latents`` ``(n, d)``; ``scores`` ``(n, k)`` only fix ``k`` (default 1)."""
        z, s = _check_fit(latents, np.zeros(len(np.asarray(latents))) if scores is None else scores)
        self.k_, self.d_ = s.shape[1], z.shape[1]
        self.latents_ = z
        self.mean_ = z.mean(axis=0) if self.prior == "gaussian" else np.zeros(self.d_)
        self.cov_ = np.atleast_2d(np.cov(z, rowvar=False)) if self.prior == "gaussian" else np.eye(self.d_)
        return self

    def sample(self, n: int, target=None, seed: int | None = None) -> np.ndarray:
        """``(n, d)`` prior draws; ``target`` is validated and otherwise ignored."""
        self._counts(n, target)
        rng = _rng(self.seed if seed is None else seed, "plain-sample")
        if self.prior == "empirical":
            return self.latents_[rng.integers(0, len(self.latents_), n)]
        return _gaussian_draw(self.mean_, self.cov_, n, rng)


class RejectionSampler(_Fitted):
    """Draw from a prior and keep codes that fall in subgroups still short of their count.

    Args:
        predict: callable ``latents (b, d) → scores (b, k)`` (positive = present).
        prior: as in :class:`PlainSampler`, fitted on the latents given to ``fit``.
        batch_size: prior draws per round.
        max_draws: cap on prior draws per ``sample`` call; reaching it raises
            :class:`SamplingError` naming the short subgroups.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], prior: str = "gaussian",
                 batch_size: int = 4096, max_draws: int = 2_000_000, seed: int = 0):
        if not callable(predict):
            raise ValueError("predict must be a callable latents (b, d) -> scores (b, k)")
        self.predict, self.batch_size, self.max_draws, self.seed = predict, batch_size, max_draws, seed
        self.prior_ = PlainSampler(prior, seed)

    def fit(self, latents, scores) -> "RejectionSampler":
        """``latents`` ``(n, d)`` fit the prior; ``scores`` ``(n, k)`` fix ``k``."""
        z, s = _check_fit(latents, scores)
        self.prior_.fit(z, s)
        self.k_, self.d_ = s.shape[1], z.shape[1]
        return self

    def sample(self, n: int, target=None, seed: int | None = None, return_subgroups: bool = False):
        """``(n, d)`` accepted codes in draw order (and their subgroup indices if asked)."""
        need = self._counts(n, target)
        seed = self.seed if seed is None else seed
        kept, labels, draws, rnd = [], [], 0, 0
        while need.any():
            if draws >= self.max_draws:
                short = {subgroups(self.k_)[g]: int(c) for g, c in enumerate(need) if c}
                raise SamplingError(f"rejection sampling hit max_draws={self.max_draws} with subgroups still "
                                    f"short (subgroup: missing codes) {short}; raise max_draws or lower "
                                    "their target")
            x = self.prior_.sample(self.batch_size, seed=_int_seed(seed, "rejection", rnd))
            scores = np.asarray(self.predict(x), dtype=np.float64)
            if scores.ndim == 1 and self.k_ == 1:
                scores = scores[:, None]
            if scores.shape != (len(x), self.k_):
                raise ValueError(f"predict returned shape {scores.shape}, expected ({len(x)}, {self.k_})")
            lab = subgroup_labels(scores)
            for g in np.flatnonzero(need):
                idx = np.flatnonzero(lab == g)[: need[g]]
                kept.append(x[idx])
                labels.append(np.full(len(idx), g, dtype=np.int64))
                need[g] -= len(idx)
            draws, rnd = draws + len(x), rnd + 1
        self.draws_ = draws
        x = np.concatenate(kept) if kept else np.empty((0, self.d_))
        lab = np.concatenate(labels) if labels else np.empty(0, np.int64)
        return (x, lab) if return_subgroups else x


class ImportanceReweighter(_Fitted):
    """Resample the fitted codes with weights ``target[g] / observed[g]`` of their subgroup.

    Subgroups come from the fitted scores (``> 0`` = present). The output contains only
    codes seen in ``fit`` (with repeats), so it cannot add diversity; a subgroup with a
    positive target and no fitted code raises ``ValueError``.
    """

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, latents, scores) -> "ImportanceReweighter":
        z, s = _check_fit(latents, scores)
        self.k_, self.d_ = s.shape[1], z.shape[1]
        self.latents_, self.labels_ = z, subgroup_labels(s)
        self.observed_ = subgroup_proportions(self.labels_, self.k_)
        return self

    def weights(self, target=None) -> np.ndarray:
        """``(n,)`` importance weight of each fitted code (mean weight is 1)."""
        self._check_fitted()
        p = target_proportions(target, self.k_)
        missing = (p > 0) & (self.observed_ == 0)
        if missing.any():
            names = [subgroups(self.k_)[g] for g in np.flatnonzero(missing)]
            raise ValueError(f"target puts mass on subgroups with no fitted code: {names}")
        ratio = np.divide(p, self.observed_, out=np.zeros_like(p), where=self.observed_ > 0)
        return ratio[self.labels_]

    def sample(self, n: int, target=None, seed: int | None = None, return_subgroups: bool = False):
        """``n`` codes drawn with replacement, probability ∝ weight (sampling-importance-resampling)."""
        self._counts(n, target)
        w = self.weights(target)
        rng = _rng(self.seed if seed is None else seed, "reweight-sample")
        idx = rng.choice(len(w), size=n, replace=True, p=w / w.sum())
        return (self.latents_[idx], self.labels_[idx]) if return_subgroups else self.latents_[idx]
