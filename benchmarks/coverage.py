"""Coverage of nominal 95 % intervals on skewed data: the source of the tables in docs/statistics.md.

**Group means.** Each replication draws one group of ``n`` values, resamples it ``--n-boot`` times
with :func:`fairbits.bias.intervals.bootstrap_mean_sd` (one seeded generator per condition, as
``group_summary`` does per cell) and computes, from those same resamples:

* ``fairbits``: :func:`fairbits.bias.intervals.mean_interval`, the interval ``summary.csv`` reports:
  the bootstrap-t read at Hesterberg's expanded level
  ``α' = Φ(√(n/(n−1))·t_{n−1}(α/2))`` (:func:`fairbits.bias.intervals.expanded_tail`: 0.0188
  instead of 0.025 per tail at n = 30, 0.0086 at n = 10), his small-sample fix of the percentile
  interval applied to the t* quantiles;
* ``bootstrap-t``: the plain bootstrap-t at the nominal level α/2 (fairbits before issue #11);
* ``percentile``; ``BCa`` (as ``scipy.stats.bootstrap(method="BCa")`` computes it: bias correction
  from the share of resampled means below the mean, acceleration from the jackknife); both also
  at the expanded level ``α'`` (``expanded percentile``, ``expanded BCa``);
* ``Hall-t``: Hall's (1992) cubic transformation of the studentized mean,
  ``g(S) = S + γS²/3 + γ²S³/27 + γ/(6n)`` with ``S = (x̄ − μ)/s`` and the adjusted sample skewness
  ``γ = G1``, inverted at Student-t quantiles (no resampling);
* ``symmetric-t``: ``m ± q·se`` with ``q`` the 95 % quantile of ``|t*|``;
* ``log-t``: the bootstrap-t of ``log x̄`` with delta-method SE, back-transformed (positive data).

Reported: coverage with its Monte-Carlo SE, the share of intervals wholly above / below the true
mean, and the median width relative to the plain bootstrap-t on the same draws.

**Gaps.** ``--gaps`` also runs ``bias_table`` on cells of two or three lognormal groups with
different means (group ``k`` is ``(k + 1)·lognormal(0, σ)``) and reports how often the gap
interval in ``bias.csv`` (percentile interval of max − min over stratified resamples) covers the
true max − min of the group means.

``--extra`` adds methods that need their own resamples, at fewer replications: the per-tail
calibrated (double) bootstrap-t (``--inner`` resamples per resample), and the bootknife-t
(each resample drawn from the group less one value).

    python benchmarks/coverage.py                       # the table (about 2 min on 2 cores)
    python benchmarks/coverage.py --gaps --reps 2000
    python benchmarks/coverage.py --extra --only lognormal:1:30 --reps 1000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri
from scipy.stats import t as student

from fairbits.bias.intervals import bootstrap_mean_sd, expanded_tail, mean_interval, percentile_interval
from fairbits.bias.stats import bias_table

ALPHA = 0.025  # per tail
CONDITIONS = [("lognormal", 0.5, 30), ("lognormal", 0.5, 100), ("lognormal", 0.75, 30), ("lognormal", 0.75, 100),
              ("lognormal", 1.0, 30), ("lognormal", 1.0, 100), ("lognormal", 1.0, 10),
              ("normal", 1.0, 10), ("normal", 1.0, 30), ("normal", 1.0, 100)]


def draw(dist: str, sigma: float, n: int, reps: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """``(reps, n)`` values and their true mean."""
    if dist == "lognormal":
        return rng.lognormal(0.0, sigma, (reps, n)), float(np.exp(sigma ** 2 / 2))
    return rng.normal(5.0, sigma, (reps, n)), 5.0


def bca(v: np.ndarray, bm: np.ndarray, alpha: float = ALPHA) -> tuple[float, float]:
    """BCa interval of the mean from resampled means ``bm``, as scipy computes it, at tail ``alpha``."""
    m, n = v.mean(), len(v)
    z0 = ndtri(((bm < m).sum() + (bm <= m).sum()) / (2.0 * len(bm)))
    u = (v.sum() - v) / (n - 1)  # jackknife means
    d = u.mean() - u
    acc = (d ** 3).sum() / (6.0 * (d ** 2).sum() ** 1.5)
    z = ndtri(np.array([alpha, 1 - alpha]))
    levels = ndtr(z0 + (z0 + z) / (1 - acc * (z0 + z)))
    lo, hi = np.quantile(bm, levels)
    return float(lo), float(hi)


def hall_t(v: np.ndarray) -> tuple[float, float]:
    """Hall's (1992) transformation interval with the adjusted skewness G1 and t quantiles."""
    n, m, s = len(v), v.mean(), v.std(ddof=1)
    d = v - m
    g = (d ** 3).mean() / (d ** 2).mean() ** 1.5 * np.sqrt(n * (n - 1)) / (n - 2)
    q = student.ppf(1 - ALPHA, n - 1)

    def s_of(t: float) -> float:  # inverse of sqrt(n)·g(S)
        u = t / np.sqrt(n) - g / (6 * n)
        return u if abs(g) < 1e-12 else 3 / g * (np.cbrt(1 + g * u) - 1)

    return float(m - s * s_of(q)), float(m - s * s_of(-q))


def t_star(v: np.ndarray, bm: np.ndarray, bs: np.ndarray) -> np.ndarray:
    n = len(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (bm - v.mean()) / (bs / np.sqrt(n))
    return t[~np.isnan(t)]


def intervals(v: np.ndarray, bm: np.ndarray, bs: np.ndarray) -> dict[str, tuple[float, float]]:
    """Every method's interval for one group ``v`` from its resamples."""
    n, m = len(v), v.mean()
    se = v.std(ddof=1) / np.sqrt(n)
    t = t_star(v, bm, bs)
    a2 = expanded_tail(n, 1 - 2 * ALPHA)
    lo, hi, _ = mean_interval(v, bm, bs, 2 * (0.5 - ALPHA))
    out = {"fairbits": (lo, hi)}
    p = percentile_interval(bm[:, None], 1 - 2 * ALPHA)
    out["percentile"] = (float(p[0][0]), float(p[1][0]))
    out["BCa"] = bca(v, bm)
    out["expanded percentile"] = tuple(np.quantile(bm, [a2, 1 - a2]))
    out["expanded BCa"] = bca(v, bm, a2)
    with np.errstate(invalid="ignore"):
        t_lo, t_hi = np.quantile(t, [ALPHA, 1 - ALPHA])
        out["bootstrap-t"] = (m - t_hi * se, m - t_lo * se)
        q = np.quantile(np.abs(t), 1 - 2 * ALPHA)
        out["symmetric-t"] = (m - q * se, m + q * se)
    out["Hall-t"] = hall_t(v)
    if (v > 0).all():
        with np.errstate(invalid="ignore", divide="ignore"):
            tl = (np.log(bm) - np.log(m)) / (bs / np.sqrt(n) / bm)
        tl = tl[np.isfinite(tl)]
        l_lo, l_hi = np.quantile(tl, [ALPHA, 1 - ALPHA])
        out["log-t"] = (m * np.exp(-l_hi * se / m), m * np.exp(-l_lo * se / m))
    return out


def extra_intervals(v: np.ndarray, n_boot: int, inner: int, rng: np.random.Generator) -> dict[str, tuple]:
    """Calibrated (double) bootstrap-t (widening only, and free) and bootknife-t of one group."""
    n, m = len(v), v.mean()
    se = v.std(ddof=1) / np.sqrt(n)
    xb = v[rng.integers(0, n, (n_boot, n))]
    mb, sb = xb.mean(1), xb.std(1, ddof=1)
    t = (mb - m) / (sb / np.sqrt(n))
    ok = np.isfinite(t)
    xbb = np.take_along_axis(xb[:, None, :], rng.integers(0, n, (n_boot, inner, n)), 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        tbb = (xbb.mean(2) - mb[:, None]) / (xbb.std(2, ddof=1) / np.sqrt(n))
        u = np.nanmean(tbb <= t[:, None], axis=1)[ok]  # where each resample's t sits among its own t**
    u = u[np.isfinite(u)]
    p_lo, p_hi = np.quantile(u, [ALPHA, 1 - ALPHA])
    out = {}
    d_lo, d_hi = np.quantile(t[ok], [p_lo, p_hi])
    out["double-t"] = (m - d_hi * se, m - d_lo * se)
    w_lo, w_hi = np.quantile(t[ok], [min(p_lo, ALPHA), max(p_hi, 1 - ALPHA)])
    out["double-t, widen only"] = (m - w_hi * se, m - w_lo * se)
    omit = np.arange(n_boot) % n
    j = rng.integers(0, n - 1, (n_boot, n))
    xk = v[j + (j >= omit[:, None])]
    with np.errstate(invalid="ignore", divide="ignore"):
        tk = (xk.mean(1) - m) / (xk.std(1, ddof=1) / np.sqrt(n))
    k_lo, k_hi = np.quantile(tk[np.isfinite(tk)], [ALPHA, 1 - ALPHA])
    out["bootknife-t"] = (m - k_hi * se, m - k_lo * se)
    return out


def summarise(rows: dict[str, list], truth: float) -> pd.DataFrame:
    ref = None
    table = []
    for name, iv in rows.items():
        iv = np.asarray(iv, dtype=float)
        cover = (iv[:, 0] <= truth) & (truth <= iv[:, 1])
        width = float(np.median(iv[:, 1] - iv[:, 0]))
        ref = width if name == "bootstrap-t" else ref
        c = float(cover.mean())
        table.append({"method": name, "coverage": c, "mc_se": np.sqrt(c * (1 - c) / len(iv)),
                      "above": float((iv[:, 0] > truth).mean()), "below": float((iv[:, 1] < truth).mean()),
                      "width": width})
    out = pd.DataFrame(table)
    if ref is not None:
        out["width"] /= ref
    return out


def group_means(conditions, reps: int, n_boot: int, seed: int, extra: bool, inner: int) -> None:
    for k, (dist, sigma, n) in enumerate(conditions):
        t0 = time.process_time()
        rng = np.random.default_rng([seed, k])
        values, truth = draw(dist, sigma, n, reps, rng)
        rows: dict[str, list] = {}
        for v in values:
            for name, iv in intervals(v, *bootstrap_mean_sd(v, n_boot, rng)).items():
                rows.setdefault(name, []).append(iv)
            if extra:
                for name, iv in extra_intervals(v, n_boot, inner, rng).items():
                    rows.setdefault(name, []).append(iv)
        print(f"\n{dist} sigma={sigma} n={n}: {reps} replications, {n_boot} resamples "
              f"({time.process_time() - t0:.0f} s CPU); width relative to the plain bootstrap-t")
        print(summarise(rows, truth).to_string(index=False, float_format=lambda x: f"{x:.3f}"))


def gaps(reps: int, n_boot: int, seed: int) -> None:
    for k, (sigma, n, groups) in enumerate([(1.0, 30, 2), (1.0, 30, 3), (1.0, 100, 2), (0.5, 30, 2)]):
        t0 = time.process_time()
        rng = np.random.default_rng([seed, 100 + k])
        scale = np.arange(1, groups + 1, dtype=float)
        vals = rng.lognormal(0.0, sigma, (reps, groups, n)) * scale[None, :, None]
        truth = float(np.exp(sigma ** 2 / 2) * (scale.max() - scale.min()))
        df = pd.DataFrame({"codec": np.repeat([f"r{i:05d}" for i in range(reps)], groups * n), "setting": "s",
                           "grp": np.tile(np.repeat([f"g{j}" for j in range(groups)], n), reps),
                           "x": vals.ravel()})
        b = bias_table(df, "grp", ["x"], n_boot=n_boot, n_perm=0, seed=seed, directions={"x": False},
                       min_group_n=1)
        cover = float(((b.gap_ci_low <= truth) & (truth <= b.gap_ci_high)).mean())
        print(f"gap, {groups} lognormal groups sigma={sigma} n={n} each: coverage {cover:.3f} ± "
              f"{np.sqrt(cover * (1 - cover) / reps):.3f}; interval above the true gap "
              f"{(b.gap_ci_low > truth).mean():.3f}, below {(b.gap_ci_high < truth).mean():.3f} "
              f"({time.process_time() - t0:.0f} s CPU)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=4000)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--only", help="one condition, dist:sigma:n (e.g. lognormal:1:30)")
    ap.add_argument("--gaps", action="store_true", help="also the gap interval of bias.csv")
    ap.add_argument("--extra", action="store_true", help="also the double bootstrap-t and the bootknife-t")
    ap.add_argument("--inner", type=int, default=100, help="inner resamples of the double bootstrap")
    args = ap.parse_args()
    conditions = CONDITIONS
    if args.only:
        dist, sigma, n = args.only.split(":")
        conditions = [(dist, float(sigma), int(n))]
    group_means(conditions, args.reps, args.n_boot, args.seed, args.extra, args.inner)
    if args.gaps:
        print()
        gaps(args.reps, args.n_boot, args.seed)


if __name__ == "__main__":
    main()
