"""Linear attribute boundaries in a generator's latent space, and edits along them.

A boundary is a hyperplane ``{z : z·n + b = 0}`` with unit normal ``n`` ``(d,)`` and
offset ``b``. The *signed distance* of a code ``z`` is ``z·n + b`` in latent units
(Euclidean, because ``‖n‖ = 1``); positive means "attribute present".

* :func:`fit_boundary` finds one from latents and real-valued attribute scores with a
  linear SVM trained on the most confident codes.
* :func:`orthogonalize` turns ``k`` normals into an orthonormal set spanning the same
  space; :func:`conditional_normal` / :func:`conditional_directions` give, per
  attribute, the direction that changes that attribute's signed distance and leaves the
  others' unchanged.
* :func:`edit` / :func:`edit_many` move codes so their signed distances reach targets.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.svm import LinearSVC

_TINY = 1e-10  # a normal shorter than this after projection is "in the span" of the others


@dataclass(eq=False)
class Boundary:
    """One fitted hyperplane.

    Attributes:
        normal: ``(d,)`` unit normal, pointing towards the attribute being present.
        offset: ``b`` so that the signed distance is ``latents @ normal + offset``.
        val_accuracy: accuracy of the SVM on held-out confident codes (NaN when no
            validation split was made).
        n_train: codes the SVM was trained on (both classes).
        n_val: held-out codes the accuracy was measured on.
        threshold: the score threshold the offset was calibrated to, or ``None`` when
            the offset is the SVM's own (see :func:`fit_boundary`).
    """

    normal: np.ndarray
    offset: float
    val_accuracy: float
    n_train: int
    n_val: int = 0
    threshold: float | None = None


def _as_latents(latents) -> np.ndarray:
    z = np.asarray(latents, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"latents must be a non-empty 2-D array (n, d), got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("latents contain NaN or infinite values")
    return z


def _unit(v, name: str = "normal") -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D (d,), got shape {v.shape}")
    norm = np.linalg.norm(v)
    if not np.isfinite(norm) or norm < _TINY:
        raise ValueError(f"{name} has zero (or non-finite) length")
    return v / norm


def _calibrated_offset(proj: np.ndarray, positive: np.ndarray) -> float:
    """Offset ``b`` putting the cut on ``proj`` that misclassifies fewest codes.

    ``proj`` ``(n,)`` are projections on the normal, ``positive`` ``(n,)`` booleans.
    Every cut between consecutive sorted projections is scored by
    ``#positives below + #negatives above``; the median of the best cuts is taken.
    With label noise that is symmetric around the true threshold, this finds the place
    where a code is equally likely to be positive or negative, whatever the class
    balance.
    """
    order = np.argsort(proj, kind="stable")
    p, pos = proj[order], positive[order]
    below_pos = np.concatenate([[0], np.cumsum(pos)])           # positives among the first i
    below_neg = np.concatenate([[0], np.cumsum(~pos)])
    errors = below_pos + (below_neg[-1] - below_neg)
    best = np.flatnonzero(errors == errors.min())
    edges = np.concatenate([[p[0] - 1.0], (p[:-1] + p[1:]) / 2.0, [p[-1] + 1.0]])
    return -float(np.median(edges[best]))


def _confident_split(scores: np.ndarray, ratio: float, val_fraction: float, seed: int,
                     min_per_class: int):
    """Indices ``(train, val)`` and labels of the top/bottom ``ratio`` codes by score."""
    n = len(scores)
    m = min(max(int(round(ratio * n)), min_per_class), n // 2)
    if m < 2:
        raise ValueError(f"need at least 4 codes to fit a boundary, got {n}")
    order = np.argsort(scores, kind="stable")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for idx, label in ((order[-m:], 1), (order[:m], 0)):
        idx = rng.permutation(idx)
        n_val = int(np.floor(val_fraction * m))
        if m - n_val < 1:
            raise ValueError("val_fraction leaves no codes to train on")
        val.append((idx[:n_val], label))
        train.append((idx[n_val:], label))

    def stack(parts):
        ids = np.concatenate([p[0] for p in parts])
        return ids, np.concatenate([np.full(len(p[0]), p[1]) for p in parts])

    return stack(train), stack(val)


def fit_boundary(latents, scores, ratio: float = 0.02, val_fraction: float = 0.3, seed: int = 0,
                 C: float = 1.0, *, threshold: float | None = None, min_per_class: int = 10) -> Boundary:
    """Fit a linear attribute boundary in latent space.

    The ``ratio`` fraction of codes with the highest scores are positives and the same
    number with the lowest scores negatives (at least ``min_per_class`` each, at most
    half the codes each). Each class is split at random (``seed``) into
    ``val_fraction`` validation and the rest training; a ``LinearSVC(C=C)`` trained on
    the training part gives the normal, and its accuracy on the validation part is
    reported.

    Args:
        latents: ``(n, d)`` latent codes.
        scores: ``(n,)`` real-valued attribute scores, larger = more of the attribute.
        ratio: fraction of codes per class, in ``(0, 0.5]``.
        val_fraction: fraction of each class held out, in ``[0, 1)``.
        seed: seed of the split and of the SVM.
        C: inverse regularisation strength of the SVM.
        threshold: ``None`` keeps the SVM's own offset (half-way between the confident
            extremes). A number recalibrates the offset on *all* ``n`` codes so that the
            hyperplane separates ``scores > threshold`` from the rest with fewest errors
            along the fitted normal — use this when the score has a meaningful decision
            threshold and the data are skewed (the extremes' midpoint is then biased).
        min_per_class: floor on the number of codes per class.
    Returns:
        A :class:`Boundary`; its ``normal`` points towards high scores.
    """
    z = _as_latents(latents)
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (len(z),):
        raise ValueError(f"scores must have shape ({len(z)},) to match latents, got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    if not 0.0 < ratio <= 0.5:
        raise ValueError(f"ratio must be in (0, 0.5], got {ratio}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    (tr, y_tr), (va, y_va) = _confident_split(s, ratio, val_fraction, seed, min_per_class)
    # LinearSVC penalises its intercept, which would tilt the normal towards the origin
    # when the codes are not centred; fit on centred codes and shift the offset back.
    centre = z[tr].mean(axis=0)
    svm = LinearSVC(C=C, dual="auto", max_iter=20000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        svm.fit(z[tr] - centre, y_tr)
    w = svm.coef_[0]
    b = float(svm.intercept_[0]) - float(w @ centre)
    norm = np.linalg.norm(w)
    if norm < _TINY:
        raise ValueError("the SVM found no direction: scores do not depend on the latents")
    normal, offset = w / norm, b / norm
    val_acc = float(svm.score(z[va] - centre, y_va)) if len(va) else float("nan")
    used = None
    if threshold is not None:
        positive = s > threshold
        if positive.all() or not positive.any():
            warnings.warn(f"all scores are on one side of threshold {threshold}; "
                          "keeping the SVM's offset", stacklevel=2)
        else:
            offset, used = _calibrated_offset(z @ normal, positive), float(threshold)
    return Boundary(normal=normal, offset=float(offset), val_accuracy=val_acc,
                    n_train=len(tr), n_val=len(va), threshold=used)


def _normals(normals) -> np.ndarray:
    """``(k, d)`` array from an array or a sequence of :class:`Boundary`/vectors."""
    if isinstance(normals, Boundary):
        normals = [normals]
    if isinstance(normals, (list, tuple)):
        normals = [b.normal if isinstance(b, Boundary) else b for b in normals]
    n = np.asarray(normals, dtype=np.float64)
    if n.ndim == 1:
        n = n[None, :]
    if n.ndim != 2 or n.shape[0] == 0 or n.shape[1] == 0:
        raise ValueError(f"normals must be a non-empty 2-D array (k, d), got shape {n.shape}")
    if not np.all(np.isfinite(n)):
        raise ValueError("normals contain NaN or infinite values")
    return n


def conditional_normal(primary, conditions) -> np.ndarray:
    """Unit direction that moves ``primary``'s attribute without moving the conditions'.

    Projects ``primary`` ``(d,)`` onto the orthogonal complement of the span of
    ``conditions`` ``(m, d)`` (an orthonormal basis of the span comes from a QR
    decomposition, rank-deficient conditions allowed) and renormalises.

    Returns:
        ``(d,)`` unit vector orthogonal to every condition normal.
    Raises:
        ValueError: when ``primary`` lies in the span of the conditions.
    """
    p = _unit(primary.normal if isinstance(primary, Boundary) else primary, "primary")
    c = _normals(conditions)
    if c.shape[1] != p.shape[0]:
        raise ValueError(f"dimension mismatch: primary has d={p.shape[0]}, conditions d={c.shape[1]}")
    q, r = np.linalg.qr(c.T)                       # (d, m), (m, m)
    keep = np.abs(np.diag(r)) > _TINY * max(1.0, np.abs(r).max())
    q = q[:, keep]
    out = p - q @ (q.T @ p)
    norm = np.linalg.norm(out)
    if norm < 1e-8:
        raise ValueError("primary normal lies in the span of the condition normals")
    return out / norm


def conditional_directions(normals) -> np.ndarray:
    """``(k, d)``: row ``i`` is :func:`conditional_normal` of normal ``i`` given the others.

    Row ``i`` is orthogonal to every *other input* normal, so moving a code along it
    changes signed distance ``i`` only. Rows are unit length but not orthogonal to each
    other when the input normals are correlated (use :func:`orthogonalize` for that).
    """
    n = _normals(normals)
    if len(n) == 1:
        return n / np.linalg.norm(n)
    return np.stack([conditional_normal(n[i], np.delete(n, i, axis=0)) for i in range(len(n))])


def orthogonalize(normals, method: str = "lowdin") -> np.ndarray:
    """Orthonormal version of ``k`` linearly independent normals ``(k, d)`` → ``(k, d)``.

    Methods (both return rows with unit norm and pairwise dot products 0, spanning the
    same subspace as the input):

    * ``"lowdin"`` (default, symmetric): ``(N Nᵀ)^(-1/2) N``, the orthonormal set closest
      to the input in the least-squares sense. No attribute is privileged and the
      result does not depend on the order of the rows (permuting the input permutes the
      output); each row keeps a positive cosine with its input row.
    * ``"gram-schmidt"`` (sequential): row 0 is kept, row ``i`` is made orthogonal to
      rows ``0..i-1``; so the span of the first ``j`` rows is preserved for every ``j``,
      and the first attribute is edited along its own normal.

    Raises:
        ValueError: for linearly dependent normals or an unknown method.
    """
    n = _normals(normals)
    n = n / np.linalg.norm(n, axis=1, keepdims=True)
    k = len(n)
    if k > n.shape[1] or np.linalg.matrix_rank(n, tol=1e-8) < k:
        raise ValueError("normals are linearly dependent; they cannot be orthogonalised")
    if method == "lowdin":
        w, v = np.linalg.eigh(n @ n.T)
        return (v / np.sqrt(w)) @ v.T @ n
    if method in ("gram-schmidt", "gram_schmidt", "gs"):
        q, r = np.linalg.qr(n.T)                   # columns of q: Gram-Schmidt of the rows
        return (q * np.sign(np.diag(r))).T
    raise ValueError(f"unknown orthogonalisation method {method!r}; use 'lowdin' or 'gram-schmidt'")


def _plane(boundary, offset):
    if isinstance(boundary, Boundary):
        if offset is not None:
            raise ValueError("give either a Boundary or a normal with an offset, not both")
        return _unit(boundary.normal), float(boundary.offset)
    return _unit(boundary), float(0.0 if offset is None else offset)


def signed_distance(latents, boundary, offset: float | None = None) -> np.ndarray:
    """Signed distances ``(n,)`` of ``latents`` ``(n, d)`` to a hyperplane, in latent units.

    ``boundary`` is a :class:`Boundary` or a normal ``(d,)`` (normalised here) with
    ``offset`` (default 0).
    """
    z = _as_latents(latents)
    normal, b = _plane(boundary, offset)
    if normal.shape[0] != z.shape[1]:
        raise ValueError(f"dimension mismatch: latents d={z.shape[1]}, normal d={normal.shape[0]}")
    return z @ normal + b


def edit(latents, boundary, distance, offset: float | None = None) -> np.ndarray:
    """Move codes along the normal so their signed distances equal ``distance``.

    Args:
        latents: ``(n, d)`` codes.
        boundary: a :class:`Boundary`, or a normal ``(d,)`` together with ``offset``.
        distance: target signed distance, a scalar or ``(n,)``, in latent units.
    Returns:
        ``(n, d)`` edited codes; ``code' − code`` is a multiple of the normal.
    """
    z = _as_latents(latents)
    normal, b = _plane(boundary, offset)
    t = np.asarray(distance, dtype=np.float64)
    if t.ndim > 1 or (t.ndim == 1 and t.shape != (len(z),)):
        raise ValueError(f"distance must be a scalar or shape ({len(z)},), got {t.shape}")
    current = signed_distance(z, normal, b)
    return z + (t - current)[:, None] * normal


def edit_many(latents, boundaries, distances, offsets=None, directions=None) -> np.ndarray:
    """Move codes so that their signed distance to each of ``k`` hyperplanes hits a target.

    Args:
        latents: ``(n, d)`` codes.
        boundaries: ``k`` :class:`Boundary` objects, or normals ``(k, d)`` (each
            normalised here) with ``offsets`` ``(k,)`` (default zeros).
        distances: targets, ``(k,)`` for every code or ``(n, k)`` per code.
        directions: ``(k, d)`` directions to move along; default the normals. The
            displacement is ``a @ directions`` with ``a`` solving
            ``(N Dᵀ) aᵀ = targets − current`` exactly.
    Returns:
        ``(n, d)`` edited codes whose signed distances equal the targets (to round-off).

    Any ``directions`` spanning the same subspace as the normals give the *same* result:
    the unique displacement inside that span, which is also the shortest one. With
    orthonormal normals this is the sum of independent single-boundary edits, and with
    :func:`conditional_directions` each attribute moves along its own direction.
    """
    z = _as_latents(latents)
    if isinstance(boundaries, (list, tuple)) and boundaries and isinstance(boundaries[0], Boundary):
        if offsets is not None:
            raise ValueError("give either Boundary objects or normals with offsets, not both")
        offsets = [b.offset for b in boundaries]
    n = _normals(boundaries)
    n = n / np.linalg.norm(n, axis=1, keepdims=True)
    k, d = n.shape
    if d != z.shape[1]:
        raise ValueError(f"dimension mismatch: latents d={z.shape[1]}, normals d={d}")
    b = np.zeros(k) if offsets is None else np.asarray(offsets, dtype=np.float64).reshape(-1)
    if b.shape != (k,):
        raise ValueError(f"offsets must have shape ({k},), got {b.shape}")
    t = np.asarray(distances, dtype=np.float64)
    if t.shape not in ((k,), (len(z), k)):
        raise ValueError(f"distances must have shape ({k},) or ({len(z)}, {k}), got {t.shape}")
    m = n if directions is None else _normals(directions)
    if m.shape != n.shape:
        raise ValueError(f"directions must have shape {n.shape}, got {m.shape}")
    gram = n @ m.T                                 # (k, k): effect of each direction on each distance
    if np.linalg.cond(gram) > 1e10:
        raise ValueError("the boundaries cannot be edited independently (dependent normals or directions)")
    residual = np.broadcast_to(t, (len(z), k)) - (z @ n.T + b)
    coeffs = np.linalg.solve(gram, residual.T).T   # (n, k)
    return z + coeffs @ m


def stack_normals(boundaries: Sequence[Boundary]) -> tuple[np.ndarray, np.ndarray]:
    """``(normals (k, d), offsets (k,))`` of a sequence of boundaries."""
    return (np.stack([b.normal for b in boundaries]),
            np.array([b.offset for b in boundaries], dtype=np.float64))
