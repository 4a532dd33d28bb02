"""Realism per demographic group: how far reconstructions are, *as a distribution*, from
the originals, in a feature space (see :mod:`fairbits.measures.features`).

Two distances between a set of original features ``A`` ``(n, d)`` and reconstruction
features ``B`` ``(m, d)``, both in squared feature units, lower is better, 0 for equal
distributions:

* **FD** (Fréchet distance of Gaussians fitted to A and B):
  ``‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½)``.
* **KID** (kernel inception distance): unbiased estimate of the squared MMD with the
  cubic polynomial kernel ``k(x, y) = (x·y / d + 1)³``, averaged over random subsets.
  Per-group tables use the paired variant (see :func:`realism_by_group`).

Both are biased by sample size in different ways (FD strongly, upwards, when ``n`` is
not ≫ ``d``; KID is unbiased but noisier for small ``n``): compare groups of similar
size, and read KID with its interval.

These are not per-image measures and are not in the per-image registry.

Storage. The runner saves features with :class:`FeatureStore`::

    RUN_DIR/features/<extractor>/originals/part-000000.npz     ids (N,) + feats (N, d)
    RUN_DIR/features/<extractor>/<cell_id>/part-000000.npz     one part per saved batch

and at statistics time :func:`write_realism` writes ``RUN_DIR/realism.csv`` from
:func:`realism_table`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from fairbits.errors import FairbitsError
from fairbits.fileio import atomic_write, next_part
from fairbits.seeding import keyed_seed

REALISM_COLUMNS = ("fd", "kid")
HIGHER_IS_BETTER = {"fd": False, "kid": False}
ALL_GROUP = "all"  # group label of the row over every image
BY_GROUP_COLUMNS = ["group", "n", "fd", "kid", "kid_std", "kid_ci_low", "kid_ci_high"]
TABLE_COLUMNS = ["codec", "setting", "extractor", "attribute", *BY_GROUP_COLUMNS]
ORIGINALS = "originals"


def _as_2d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {a.shape}")
    return a


# --------------------------------------------------------------------------- FD
def _trace_sqrt_product(cov_a: np.ndarray, cov_b: np.ndarray) -> float:
    """``Tr((Σa Σb)^½)`` for symmetric PSD ``(d, d)`` matrices.

    Uses ``Tr((Σa Σb)^½) = Σ √λ(Σa^½ Σb Σa^½)``, where the middle matrix is symmetric
    PSD, so two symmetric eigendecompositions suffice (tiny negative eigenvalues from
    round-off are clipped to 0). This is exact, real, and ~40× faster than a general
    ``scipy.linalg.sqrtm`` of ``Σa Σb`` at ``d = 2048``.
    """
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    m = root_a @ cov_b @ root_a
    ev = np.linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sqrt(np.clip(ev, 0.0, None)).sum())


def frechet_distance(feat_a, feat_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets.

    ``FD = ‖μa − μb‖² + Tr(Σa) + Tr(Σb) − 2 Tr((Σa Σb)^½)``.

    Args:
        feat_a: ``(n, d)`` features; feat_b: ``(m, d)`` features; ``n, m ≥ 2``.
    Returns:
        FD in squared feature units (≥ 0; round-off below 0 is clipped).

    Covariances use ``ddof=1``. The matrix square root goes through symmetric
    eigendecompositions (:func:`_trace_sqrt_product`), which stay finite and real for
    singular covariances, so no ``eps·I`` ridge is needed. With fewer samples than
    dimensions (``n < d``) the covariances are singular; FD is still computed but is
    strongly biased upwards (the bias shrinks roughly like ``1/n``), so compare FDs only
    between sets of similar size — small groups look worse.
    """
    a, b = _as_2d(feat_a, "feat_a"), _as_2d(feat_b, "feat_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dims differ: {a.shape[1]} vs {b.shape[1]}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("frechet_distance needs at least 2 samples in each set")
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    diff = a.mean(0) - b.mean(0)
    fd = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * _trace_sqrt_product(cov_a, cov_b)
    return float(max(fd, 0.0))


# --------------------------------------------------------------------------- KID
def _kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cubic polynomial kernel matrix ``(x·y/d + 1)³``: ``(n, d), (m, d) → (n, m)``."""
    t = x @ y.T
    t /= x.shape[1]
    t += 1.0
    return t * t * t


def _mmd2_counts(kxx, kyy, kxy, ca: np.ndarray, cb: np.ndarray, paired: bool) -> np.ndarray:
    """Unbiased MMD² for many resamples at once.

    Args:
        kxx, kyy, kxy: kernel matrices ``(n, n)``, ``(m, m)``, ``(n, m)``.
        ca, cb: ``(r, n)``, ``(r, m)`` how often each row is drawn in each of ``r``
            resamples (0/1 for subsets, counts for a bootstrap).
        paired: draw ``p`` of ``ca`` and of ``cb`` is the same image (``n == m``).
    Returns:
        ``(r,)`` estimates. Within a set, pairs of copies of the same row are left out
        like the diagonal; when ``paired``, cross pairs ``(a_i, b_i)`` of the same image
        are left out too, so neither duplicates nor an image's similarity to its own
        reconstruction bias the estimate. With all counts 1 and ``paired=False`` this
        is the usual unbiased estimator (cross term over all ``n·m`` pairs).
    """
    def within(k, c):
        same = (c * c) @ np.diag(k)
        return (np.einsum("rn,rn->r", c @ k, c) - same) / (c.sum(1) ** 2 - (c * c).sum(1))

    cross = np.einsum("rn,rn->r", ca @ kxy, cb)
    pairs = ca.sum(1) * cb.sum(1)
    if paired:
        cross = cross - (ca * cb) @ np.diag(kxy)
        pairs = pairs - (ca * cb).sum(1)
    return within(kxx, ca) + within(kyy, cb) - 2.0 * cross / pairs


def _check_pair(a: np.ndarray, b: np.ndarray, paired: bool) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dims differ: {a.shape[1]} vs {b.shape[1]}")
    if paired and len(a) != len(b):
        raise ValueError(f"paired sets need equal sizes, got {len(a)} and {len(b)}")


def mmd2_unbiased(feat_a, feat_b, paired: bool = False) -> float:
    """Unbiased MMD² (cubic kernel) over the whole sets: ``(n, d), (m, d) → float``.

    ``paired=True`` (``n == m``, row ``i`` of both sets from one image) leaves the
    ``n`` same-image cross pairs out of the cross term.
    """
    a, b = _as_2d(feat_a, "feat_a"), _as_2d(feat_b, "feat_b")
    _check_pair(a, b, paired)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("MMD² needs at least 2 samples in each set")
    ones_a, ones_b = np.ones((1, len(a))), np.ones((1, len(b)))
    return float(_mmd2_counts(_kernel(a, a), _kernel(b, b), _kernel(a, b), ones_a, ones_b, paired)[0])


def _subset_size(n: int, m: int, subset_size: int | None) -> int:
    s = min(subset_size or 1000, n, m)
    if s < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    return s


def _indicators(rng: np.random.Generator, n: int, s: int, r: int) -> np.ndarray:
    """``(r, n)`` 0/1 rows, each with ``s`` ones at random places (draws without replacement)."""
    out = np.zeros((r, n))
    for i in range(r):
        out[i, rng.choice(n, s, replace=False)] = 1.0
    return out


def kid(feat_a, feat_b, subset_size: int | None = None, n_subsets: int = 100, seed: int = 0, *,
        paired: bool = False, max_n: int = 4000) -> tuple[float, float]:
    """Kernel inception distance between ``feat_a (n, d)`` and ``feat_b (m, d)``.

    Each of ``n_subsets`` rounds draws ``s = min(subset_size or 1000, n, m)`` rows of
    each set without replacement and computes the unbiased MMD² (cubic kernel). When
    ``s`` equals both ``n`` and ``m`` every round is the whole sets, so one exact value
    is returned with std 0. ``paired=True`` (``n == m``, row ``i`` of both sets from
    one image) draws the same rows from both sets and leaves same-image cross pairs
    out (see :func:`_mmd2_counts`); otherwise this is the standard KID. Sets up to
    ``max_n`` rows use precomputed kernel matrices; larger ones are done subset by subset.

    Returns:
        ``(mean, std)`` over subsets (std with ``ddof=1``), in squared feature units;
        the mean can be slightly negative when the distributions are equal.
    """
    a, b = _as_2d(feat_a, "feat_a"), _as_2d(feat_b, "feat_b")
    _check_pair(a, b, paired)
    n, m = len(a), len(b)
    s = _subset_size(n, m, subset_size)
    if s == n == m:
        return mmd2_unbiased(a, b, paired=paired), 0.0
    rng = np.random.default_rng(seed)
    if max(n, m) <= max_n:
        ca = _indicators(rng, n, s, n_subsets)
        cb = ca if paired else _indicators(rng, m, s, n_subsets)
        est = _mmd2_counts(_kernel(a, a), _kernel(b, b), _kernel(a, b), ca, cb, paired)
    else:
        est = np.empty(n_subsets)
        for r in range(n_subsets):
            ia = rng.choice(n, s, replace=False)
            ib = ia if paired else rng.choice(m, s, replace=False)
            est[r] = mmd2_unbiased(a[ia], b[ib], paired=paired)
    return float(est.mean()), float(est.std(ddof=1) if len(est) > 1 else 0.0)


def kid_ci(feat_a, feat_b, *, ci: float = 0.95, n_boot: int = 200, paired: bool = False, seed: int = 0,
           max_n: int = 4000) -> tuple[float, float]:
    """Percentile **bootstrap** interval for the whole-set unbiased MMD² (cubic kernel).

    Rows of ``feat_a (n, d)`` and ``feat_b (m, d)`` are resampled with replacement,
    independently, or with the same indices when ``paired`` (``n == m``, originals and
    their own reconstructions). In each replicate, pairs formed by two copies of the
    same row are excluded like the diagonal, so duplicates add no self-similarity bias
    (see :func:`_mmd2_counts`). Sets larger than ``max_n`` are first subsampled
    (without replacement) to ``max_n`` rows to bound memory (``max_n²`` kernel matrices).

    Returns:
        ``(low, high)`` percentiles of the replicates; NaN if ``n_boot == 0`` or a set
        has fewer than 2 rows.
    """
    a, b = _as_2d(feat_a, "feat_a"), _as_2d(feat_b, "feat_b")
    _check_pair(a, b, paired)
    if n_boot <= 0 or len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if max(len(a), len(b)) > max_n:
        ia = rng.choice(len(a), min(len(a), max_n), replace=False)
        ib = ia if paired else rng.choice(len(b), min(len(b), max_n), replace=False)
        a, b = a[ia], b[ib]
    n, m = len(a), len(b)

    def counts(size: int) -> np.ndarray:
        idx = rng.integers(0, size, (n_boot, size))
        return np.stack([np.bincount(row, minlength=size) for row in idx]).astype(np.float64)

    ca = counts(n)
    cb = ca if paired else counts(m)
    ok = ((ca > 0).sum(1) >= 2) & ((cb > 0).sum(1) >= 2)  # needs 2 distinct rows per set
    draws = _mmd2_counts(_kernel(a, a), _kernel(b, b), _kernel(a, b), ca[ok], cb[ok], paired)
    if not len(draws):
        return float("nan"), float("nan")
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return float(low), float(high)


# --------------------------------------------------------------------------- per group
def _seed_for(seed: int, *key) -> int:
    """A stable integer seed per key (see :func:`fairbits.seeding.keyed_seed`)."""
    return int(keyed_seed(seed, *key).generate_state(1)[0])


def _row(group, a: np.ndarray, b: np.ndarray, *, seed: int, n_boot: int, ci: float,
         subset_size: int | None, n_subsets: int) -> dict:
    n = len(a)
    if n < 2:
        return {"group": group, "n": n, "fd": np.nan, "kid": np.nan, "kid_std": np.nan,
                "kid_ci_low": np.nan, "kid_ci_high": np.nan}
    s = _seed_for(seed, group)
    k_mean, k_std = kid(a, b, subset_size=subset_size, n_subsets=n_subsets, seed=s, paired=True)
    low, high = kid_ci(a, b, ci=ci, n_boot=n_boot, paired=True, seed=s + 1)
    return {"group": group, "n": n, "fd": frechet_distance(a, b), "kid": k_mean, "kid_std": k_std,
            "kid_ci_low": low, "kid_ci_high": high}


def realism_by_group(orig_feats, recon_feats, groups, *, seed: int = 0, n_boot: int = 200, ci: float = 0.95,
                     subset_size: int | None = None, n_subsets: int = 100) -> pd.DataFrame:
    """FD and KID between originals and reconstructions, per group and overall.

    Args:
        orig_feats: ``(n, d)`` features of the originals; recon_feats: ``(n, d)``
            features of their reconstructions, row ``i`` from the same image as row ``i``.
        groups: ``(n,)`` group label of each image; missing labels (None/NaN) count only
            in the ``"all"`` row.
        n_boot: bootstrap replicates for the KID interval (paired over images; 0 → NaN).

    KID here is the *paired* estimator (``kid(..., paired=True)``): subsets take the
    same images from both sets and an image's original is never compared with its own
    reconstruction in the cross term. With the standard estimator those ``n`` own-pairs
    pull KID down by roughly ``1/n`` of their excess similarity, which would favour
    small groups.
    Returns:
        DataFrame with columns ``group, n, fd, kid, kid_std, kid_ci_low, kid_ci_high``:
        first the ``"all"`` row, then one row per group in sorted order. Groups with
        fewer than 2 images get NaN values.
    """
    a, b = _as_2d(orig_feats, "orig_feats"), _as_2d(recon_feats, "recon_feats")
    g = pd.Series(np.asarray(groups, dtype=object))
    if a.shape != b.shape or len(g) != len(a):
        raise ValueError(f"shapes differ: orig {a.shape}, recon {b.shape}, groups ({len(g)},)")
    kw = dict(seed=seed, n_boot=n_boot, ci=ci, subset_size=subset_size, n_subsets=n_subsets)
    rows = [_row(ALL_GROUP, a, b, **kw)]
    valid = g.notna().to_numpy()
    for label in sorted(g[valid].unique(), key=str):
        mask = valid & (g == label).to_numpy()
        rows.append(_row(label, a[mask], b[mask], **kw))
    return pd.DataFrame(rows, columns=BY_GROUP_COLUMNS)


# --------------------------------------------------------------------------- storage
class FeatureStore:
    """Features of one run and one extractor, appended batch by batch.

    Layout: ``RUN_DIR/features/<extractor>/<key>/part-NNNNNN.npz`` where ``key`` is
    ``"originals"`` or a cell id (``<codec>__<setting>``); each part holds ``ids``
    (``(k,)`` str) and ``feats`` (``(k, d)`` float32). A part becomes visible only
    through ``os.replace`` of a finished temporary file, so a killed run leaves whole
    parts or nothing.
    """

    def __init__(self, run_dir: str | Path, extractor_name: str):
        self.root = Path(run_dir) / "features" / extractor_name
        self.extractor = extractor_name

    def key_dir(self, key: str) -> Path:
        if not key or "/" in key or "\\" in key or key.startswith("."):
            raise ValueError(f"bad feature key {key!r}")
        return self.root / key

    def parts(self, key: str) -> list[Path]:
        d = self.key_dir(key)
        return sorted(d.glob("part-*.npz")) if d.is_dir() else []

    def keys(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def save(self, key: str, image_ids: Sequence[str], feats) -> Path:
        """Append one part: ``image_ids (k,)`` and ``feats (k, d)``. Returns its path."""
        ids = np.asarray([str(i) for i in image_ids], dtype=str)
        f = np.asarray(feats, dtype=np.float32)
        if f.ndim != 2 or len(f) != len(ids):
            raise ValueError(f"feats must be (len(image_ids), d); got {f.shape} for {len(ids)} ids")
        path = next_part(self.key_dir(key), ".npz")

        def write(tmp):
            with open(tmp, "wb") as fh:  # a file object: np.savez would add ".npz" to a name
                np.savez(fh, ids=ids, feats=f)

        return atomic_write(path, write)

    def load(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """All parts of ``key`` in order: ``(ids (N,) str, feats (N, d) float32)``.

        An id saved twice (a resumed batch) keeps its last features.
        Raises FairbitsError if nothing was saved under ``key``.
        """
        parts = self.parts(key)
        if not parts:
            raise FairbitsError(f"no {self.extractor!r} features for {key!r} under {self.root}")
        ids, feats = [], []
        for p in parts:
            with np.load(p, allow_pickle=False) as z:
                ids.append(z["ids"].astype(str))
                feats.append(z["feats"].astype(np.float32))
        ids_all, feats_all = np.concatenate(ids), np.concatenate(feats)
        _, last = np.unique(ids_all[::-1], return_index=True)
        if len(last) < len(ids_all):  # keep the last copy of each id (ordered by that copy)
            keep = np.sort(len(ids_all) - 1 - last)
            ids_all, feats_all = ids_all[keep], feats_all[keep]
        return ids_all, feats_all


# --------------------------------------------------------------------------- run tables
def _lookup(features, key: str):
    if isinstance(features, FeatureStore):
        return features.load(key) if features.parts(key) else None
    return features.get(key)


def realism_table(results: pd.DataFrame, features: Mapping[str, tuple] | FeatureStore, group_cols: Sequence[str],
                  *, extractor: str = "", seed: int = 0, n_boot: int = 200, ci: float = 0.95,
                  subset_size: int | None = None, n_subsets: int = 100) -> pd.DataFrame:
    """Realism rows for every cell and attribute of a run.

    Args:
        results: per-image rows with ``image_id, codec, setting``, the ``group_cols``
            and optionally ``error`` (rows with an error are left out).
        features: ``{"originals": (ids, feats), "<codec>__<setting>": (ids, feats), ...}``
            (``ids (N,)``, ``feats (N, d)``) or a :class:`FeatureStore`.
        group_cols: attribute columns, e.g. ``["race", "gender"]``.
    Returns:
        DataFrame with columns :data:`TABLE_COLUMNS` (``codec, setting, extractor,
        attribute, group, n, fd, kid, kid_std, kid_ci_low, kid_ci_high``), one row per
        (cell, attribute, group) plus an ``"all"`` row per (cell, attribute). Images
        are those of the cell with original and reconstruction features and no error.
        Cells without stored features are skipped.
    """
    missing = [c for c in ("image_id", "codec", "setting", *group_cols) if c not in results.columns]
    if missing:
        raise FairbitsError(f"results have no column(s) {missing}")
    orig = _lookup(features, ORIGINALS)
    if orig is None:
        raise FairbitsError("no features of the originals (key 'originals')")
    orig_index = pd.Series(np.arange(len(orig[0])), index=pd.Index(np.asarray(orig[0]).astype(str)))
    orig_index = orig_index[~orig_index.index.duplicated(keep="last")]
    ok = results
    if "error" in ok.columns:
        err = ok["error"]
        ok = ok[~(err.notna() & (err.astype(str).str.strip() != ""))]
    frames = []
    for (codec, setting), cell in ok.groupby(["codec", "setting"], sort=False):
        rec = _lookup(features, f"{codec}__{setting}")
        if rec is None:
            continue
        rec_index = pd.Series(np.arange(len(rec[0])), index=pd.Index(np.asarray(rec[0]).astype(str)))
        rec_index = rec_index[~rec_index.index.duplicated(keep="last")]
        ids = cell["image_id"].astype(str)
        keep = ids.isin(orig_index.index) & ids.isin(rec_index.index)
        cell, ids = cell[keep.to_numpy()], ids[keep]
        a = np.asarray(orig[1])[orig_index[ids].to_numpy()]
        b = np.asarray(rec[1])[rec_index[ids].to_numpy()]
        for col in group_cols:
            t = realism_by_group(a, b, cell[col].to_numpy(), seed=_seed_for(seed, codec, setting, col),
                                 n_boot=n_boot, ci=ci, subset_size=subset_size, n_subsets=n_subsets)
            t.insert(0, "attribute", col)
            t.insert(0, "extractor", extractor)
            t.insert(0, "setting", setting)
            t.insert(0, "codec", codec)
            frames.append(t)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TABLE_COLUMNS)


def write_realism(run_dir: str | Path, results_df: pd.DataFrame, group_cols: Sequence[str], extractor_name: str,
                  seed: int = 0, n_boot: int = 200, ci: float = 0.95) -> Path:
    """Compute :func:`realism_table` from ``RUN_DIR/features/<extractor_name>`` and write
    ``RUN_DIR/realism.csv`` atomically. Returns the path."""
    run_dir = Path(run_dir)
    table = realism_table(results_df, FeatureStore(run_dir, extractor_name), group_cols,
                          extractor=extractor_name, seed=seed, n_boot=n_boot, ci=ci)
    return atomic_write(run_dir / "realism.csv", lambda tmp: table.to_csv(tmp, index=False))
