"""Bootstrap draws and confidence intervals of means.

Group means get an interval that holds on skewed measures (ΔE, bpp, landmark error) and
on rates (flips, accuracy):

* values that are all 0 or 1 (a rate): the **Wilson score interval**, which has close to
  nominal coverage and, unlike a bootstrap, a non-zero width at 0 % or 100 %;
* other values: the **studentized (bootstrap-t) interval** at Hesterberg's expanded
  level: each resample's mean is standardised by that resample's own standard error,
  ``t* = (m* − m) / (s*/√n)``, and the interval is ``[m − t*_(1−α′)·s/√n, m − t*_(α′)·s/√n]``
  with the tail ``α′`` of :func:`expanded_tail` (a little below α/2 in small groups). It
  follows the skew of the data (a long right tail gives a longer upper arm), and in a seeded
  simulation of lognormal data it covers far better than the percentile or the BCa interval
  (see ``docs/statistics.md``);
* values that are all equal (up to round-off): that value, ``[m, m]``;
* where a bootstrap-t bound is not finite (a resample with no spread, e.g. a group of
  nearly constant values) the percentile interval of the resampled means is used;
  fewer than two values give no interval (NaN).

Every interval says which method made it (:data:`METHODS`).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri, stdtrit

_CHUNK_ELEMENTS = 4_000_000  # bound on resample matrix size (rows x images) held at once

METHODS = ("wilson", "bootstrap-t", "percentile", "constant", "none")


def _chunks(n_rows: int, width: int) -> list[slice]:
    """Row slices of ``range(n_rows)`` so that each block has at most ~:data:`_CHUNK_ELEMENTS` entries."""
    step = max(1, _CHUNK_ELEMENTS // max(1, width))
    return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


def bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of the rows of ``values``.

    ``values`` ``(n,)`` → ``(n_boot,)``; ``(n, c)`` → ``(n_boot, c)`` (rows resampled
    together, so paired columns stay paired). Drawn in memory-bounded chunks.
    """
    v = np.asarray(values, dtype=float)
    out = np.empty((n_boot, *v.shape[1:]))
    for rows in _chunks(n_boot, len(v)):
        idx = rng.integers(0, len(v), size=(rows.stop - rows.start, len(v)))
        out[rows] = v[idx].mean(axis=1)
    return out


def bootstrap_mean_sd(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Means and standard deviations (``ddof=1``) of ``n_boot`` resamples of ``values`` ``(n,)``.

    Draws the same resamples as :func:`bootstrap_means` for the same generator state, so
    the means are identical to its. Returns two ``(n_boot,)`` arrays (SD NaN when n < 2).
    """
    v = np.asarray(values, dtype=float)
    n = len(v)
    centre = v.mean() if n else 0.0
    dev = v - centre  # centred first: sums of squares without cancellation
    means, sds = np.empty(n_boot), np.empty(n_boot)
    for rows in _chunks(n_boot, n):
        d = dev[rng.integers(0, n, size=(rows.stop - rows.start, n))]
        s1 = d.sum(axis=1)
        means[rows] = centre + s1 / n
        with np.errstate(invalid="ignore", divide="ignore"):
            var = (np.einsum("ij,ij->i", d, d) - s1 * s1 / n) / (n - 1)
        sds[rows] = np.sqrt(np.clip(var, 0.0, None))
    return means, sds


def percentile_interval(draws: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of ``draws`` along axis 0 (NaN when there are no draws)."""
    if draws.shape[0] == 0:
        nan = np.full(draws.shape[1:], np.nan)
        return nan, nan
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def wilson_interval(successes: float, n: int, ci: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (NaN for ``n == 0``)."""
    if n <= 0:
        return float("nan"), float("nan")
    z = float(ndtri(1.0 - (1.0 - ci) / 2.0))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def is_binary(values: np.ndarray) -> bool:
    """Whether every value is 0 or 1 (a rate)."""
    v = np.asarray(values)
    return bool(len(v)) and bool(np.isin(v, (0.0, 1.0)).all())


def expanded_tail(n: int, ci: float) -> float:
    """Hesterberg's expanded tail probability ``α′ = Φ(√(n/(n−1))·t_{n−1}(α/2))`` for a
    group of ``n ≥ 2`` values at level ``ci`` (``α = 1 − ci``): the normal tail whose quantile
    is the Student-t quantile widened by √(n/(n−1)) (the ratio of the ``ddof=1`` SD to the
    plug-in SD a resample sees). Below α/2, approaching it as n grows (0.0086 at n = 10,
    0.0188 at 30, 0.0231 at 100 for ci = 0.95)."""
    return float(ndtr(np.sqrt(n / (n - 1)) * stdtrit(n - 1, (1.0 - ci) / 2.0)))


def studentized_interval(values: np.ndarray, boot_means: np.ndarray, boot_sds: np.ndarray,
                         ci: float) -> tuple[float, float]:
    """Bootstrap-t interval of the mean of ``values`` ``(n,)`` at Hesterberg's expanded level,
    from resampled means and SDs ``(n_boot,)`` (as from :func:`bootstrap_mean_sd`);
    non-finite where the resampled t has infinite quantiles, NaN for n < 2.

    The t* quantiles are read at the tail :func:`expanded_tail` ``α′`` instead of α/2: a
    slightly higher nominal level in small groups that shrinks to ``ci`` as n grows. Why:
    the bootstrap-t at α/2 undercovers very skewed means in small groups (lognormal(0, 1),
    n = 30: 0.924 for a nominal 0.95); at α′ it covers 0.938 (n = 100: 0.935;
    ``benchmarks/coverage.py``). Cost: on symmetric data, where the plain bootstrap-t is
    already right, it over-covers and is wider: normal data 0.958 and 7 % wider at n = 30,
    0.980 and 31 % wider at n = 10, 2 % wider at n = 100."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n < 2:
        return float("nan"), float("nan")
    m, s = float(v.mean()), float(v.std(ddof=1))
    se = s / np.sqrt(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (boot_means - m) / (boot_sds / np.sqrt(n))
    t = t[~np.isnan(t)]  # 0/0: a resample with no spread and the same mean tells nothing
    if not len(t):
        return float("nan"), float("nan")
    tail = expanded_tail(n, ci)
    with np.errstate(invalid="ignore"):
        t_hi, t_lo = np.quantile(t, [1.0 - tail, tail])
        return float(m - t_hi * se), float(m - t_lo * se)


def mean_interval(values: np.ndarray, boot_means: np.ndarray, boot_sds: np.ndarray,
                  ci: float = 0.95) -> tuple[float, float, str]:
    """``(low, high, method)``: the confidence interval of the mean of ``values`` ``(n,)``
    by the rules of this module; ``boot_means``/``boot_sds`` ``(n_boot,)`` are the
    resamples of ``values`` (from :func:`bootstrap_mean_sd`; may be empty)."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n < 2:
        return float("nan"), float("nan"), "none"
    if is_binary(v):
        lo, hi = wilson_interval(float(v.sum()), n, ci)
        return lo, hi, "wilson"
    if float(v.std()) <= 1e-12 * max(1.0, float(np.abs(v).max())):  # equal up to round-off
        m = float(v.mean())
        return m, m, "constant"
    lo, hi = studentized_interval(v, boot_means, boot_sds, ci)
    if np.isfinite(lo) and np.isfinite(hi):
        return lo, hi, "bootstrap-t"
    plo, phi = percentile_interval(np.asarray(boot_means, dtype=float)[:, None], ci)
    return float(plo[0]), float(phi[0]), "percentile"
