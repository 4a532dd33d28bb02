"""Seeded samplers over a manifest: which training image to draw next.

A sampler draws row positions (``0 .. len(manifest) - 1``, not index labels) with
replacement from its own ``numpy`` generator, so a run is reproducible from its seed and
resumable exactly from :meth:`Sampler.state_dict`. Three kinds, named by a spec string
(:func:`make_sampler`):

``natural``
    every image equally likely per draw; the groups come in the data's own mix.
``balanced:<column>``
    each value of ``column`` equally likely per draw, images uniform within a value.
``mix:<column>=<weights>``
    a deliberate imbalance: value ``g`` is drawn with probability ``w_g / sum(w)``,
    images uniform within it. ``<weights>`` is either ``80/15/5`` (one weight per value
    of the column, values in sorted order, e.g. ``MST1-3/MST4-7/MST8-10``) or
    ``MST1-3:80,MST4-7:15,MST8-10:5``. The ``mix=`` argument of :func:`make_sampler`
    (a string of either form or a ``{value: weight}`` dict) may replace ``=<weights>``.

Rows with no value in the column are never drawn by ``balanced``/``mix`` samplers.

:func:`subsample_with_mix` instead *builds* a fixed training set with a given group mix
(e.g. 80/15/5 by skin group): fewer distinct images of the minority groups, as in a
naturally imbalanced collection, rather than the same images drawn more often.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd

from fairbits.errors import DatasetError, SpecError

Mix = str | Mapping[str, float]


def _group_values(manifest: pd.DataFrame, column: str) -> list[str]:
    """The column's values present in the manifest, as strings, sorted."""
    if column not in manifest.columns:
        labels = [c for c in manifest.columns if c not in ("image_id", "path", "checksum")]
        raise DatasetError(f"sampler column {column!r} is not in the data; columns are {labels}")
    return sorted(manifest[column].dropna().astype(str).unique())


def parse_mix(mix: Mix, values: list[str]) -> dict[str, float]:
    """Normalised group weights ``{value: p}`` (summing to 1) from a mix spec.

    Args:
        mix: ``"80/15/5"`` (weights for ``values`` in order), ``"a:80,b:20"`` or a dict.
        values: the column's values, sorted; the order of the ``/`` form.
    Raises:
        SpecError: wrong number of weights, unknown value, negative or all-zero weights.
    """
    if isinstance(mix, str):
        text = mix.strip()
        try:
            if ":" in text:
                pairs = [p.rsplit(":", 1) for p in text.split(",") if p.strip()]
                weights = {k.strip(): float(v) for k, v in pairs}
            else:
                parts = [float(p) for p in text.split("/")]
                if len(parts) != len(values):
                    raise SpecError(f"mix {mix!r} has {len(parts)} weight(s) but the column has "
                                    f"{len(values)} values {values} (in this order)")
                weights = dict(zip(values, parts))
        except ValueError:
            raise SpecError(f"cannot read mix {mix!r}: use 80/15/5 or value:weight,value:weight") from None
    elif isinstance(mix, Mapping):
        weights = {str(k): float(v) for k, v in mix.items()}
    else:
        raise SpecError(f"mix must be a string or a mapping, got {type(mix).__name__}")
    unknown = [k for k in weights if k not in values]
    if unknown:
        raise SpecError(f"mix names value(s) {unknown} not present in the data; values are {values}")
    if any(not np.isfinite(w) or w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise SpecError(f"mix weights must be finite, >= 0 and not all zero: {mix!r}")
    total = sum(weights.values())
    return {v: weights.get(v, 0.0) / total for v in values}


class Sampler:
    """Draws row positions of a manifest with replacement.

    ``groups`` maps each value to its row positions; ``probs`` the probability of drawing
    each value. ``natural`` is the single-group case with every row in it.
    """

    def __init__(self, kind: str, n_rows: int, groups: dict[str, np.ndarray],
                 probs: dict[str, float], seed: int, column: str | None = None):
        self.kind, self.column, self.n_rows, self.seed = kind, column, int(n_rows), int(seed)
        self.names = [g for g in groups if probs.get(g, 0.0) > 0]
        for g in self.names:
            if len(groups[g]) == 0:
                raise DatasetError(f"group {g!r} of {column!r} has no images")
        sizes = np.array([len(groups[g]) for g in self.names], dtype=np.int64)
        self._sizes = sizes
        self._starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._rows = np.concatenate([np.asarray(groups[g], dtype=np.int64) for g in self.names])
        p = np.array([probs[g] for g in self.names], dtype=np.float64)
        self.probs = p / p.sum()
        self._cdf = np.cumsum(self.probs)
        self._cdf[-1] = 1.0
        self._rng = np.random.default_rng(seed)
        self.drawn = 0

    @property
    def group_probabilities(self) -> dict[str, float]:
        """``{value: probability per draw}`` (``{"*": 1.0}`` for natural)."""
        return dict(zip(self.names, map(float, self.probs)))

    def indices(self, n: int) -> np.ndarray:
        """The next ``n`` draws: ``int64 (n,)`` row positions."""
        u = self._rng.random((2, int(n)))
        g = np.searchsorted(self._cdf, u[0], side="right").clip(0, len(self.names) - 1)
        within = np.minimum((u[1] * self._sizes[g]).astype(np.int64), self._sizes[g] - 1)
        self.drawn += int(n)
        return self._rows[self._starts[g] + within]

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Endless iterator of ``int64 (batch_size,)`` draws."""
        while True:
            yield self.indices(batch_size)

    def __iter__(self) -> Iterator[int]:
        while True:
            yield int(self.indices(1)[0])

    def state_dict(self) -> dict:
        """JSON-safe state: the generator's state and the number of draws so far."""
        return {"kind": self.kind, "column": self.column, "n_rows": self.n_rows,
                "drawn": self.drawn, "rng": json.dumps(self._rng.bit_generator.state)}

    def load_state_dict(self, state: Mapping) -> None:
        """Continue exactly where :meth:`state_dict` was taken (same manifest and spec)."""
        if (state["kind"], state["column"], int(state["n_rows"])) != (self.kind, self.column, self.n_rows):
            raise SpecError(f"sampler state is for {state['kind']}:{state['column']} over "
                            f"{state['n_rows']} rows, not {self.kind}:{self.column} over {self.n_rows}")
        self._rng.bit_generator.state = json.loads(state["rng"])
        self.drawn = int(state["drawn"])

    def __repr__(self) -> str:
        mix = ", ".join(f"{k}={v:.3f}" for k, v in self.group_probabilities.items())
        return f"Sampler({self.kind}{':' + self.column if self.column else ''}; {mix})"


def make_sampler(spec: str, manifest: pd.DataFrame, seed: int = 0, mix: Mix | None = None) -> Sampler:
    """A sampler from its spec string (module docstring): ``natural``, ``balanced:<col>``,
    ``mix:<col>=<weights>`` or ``mix:<col>`` with ``mix=...``.

    Raises:
        SpecError: an unknown spec, a mix with a natural/balanced sampler, bad weights.
        DatasetError: unknown column, empty manifest.
    """
    if len(manifest) == 0:
        raise DatasetError("cannot sample from an empty manifest")
    s = str(spec).strip()
    if s == "natural":
        if mix is not None:
            raise SpecError("a group mix needs a column: use sampler 'mix:<column>' (e.g. mix:skin_group)")
        return Sampler("natural", len(manifest), {"*": np.arange(len(manifest))}, {"*": 1.0}, seed)
    kind, _, rest = s.partition(":")
    column, _, inline = rest.partition("=")
    column = column.strip()
    if kind not in ("balanced", "mix") or not column:
        raise SpecError(f"unknown sampler {spec!r}: use natural, balanced:<column> or "
                        "mix:<column>=80/15/5")
    values = _group_values(manifest, column)
    if not values:
        raise DatasetError(f"column {column!r} has no values to sample by")
    if kind == "balanced":
        if mix is not None or inline:
            raise SpecError(f"sampler {spec!r} is balanced; use mix:{column} for a weighted mix")
        probs = {v: 1.0 / len(values) for v in values}
    else:
        if bool(inline) == (mix is not None):
            raise SpecError(f"sampler {spec!r}: give the weights once, as mix:{column}=80/15/5 or mix=...")
        probs = parse_mix(inline or mix, values)
    labels = manifest[column].astype(str).where(manifest[column].notna(), None).to_numpy()
    groups = {v: np.flatnonzero(labels == v) for v in values}
    return Sampler(kind, len(manifest), groups, probs, seed, column)


def _largest_remainder(probs: np.ndarray, n: int) -> np.ndarray:
    """Integer counts summing to ``n`` closest to ``probs * n``."""
    raw = probs * n
    counts = np.floor(raw).astype(np.int64)
    extra = n - int(counts.sum())
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[:extra]] += 1
    return counts


def subsample_with_mix(manifest: pd.DataFrame, column: str, mix: Mix, n: int | None = None,
                       seed: int = 0) -> pd.DataFrame:
    """A fixed subset of ``manifest`` whose ``column`` follows ``mix``.

    Args:
        manifest: rows to choose from.
        column: group column (e.g. ``skin_group``).
        mix: weights as in :func:`parse_mix` (``"80/15/5"`` in sorted value order).
        n: total rows wanted; default the largest total the scarcest group allows.
        seed: seed of the (per group, without replacement) choice.
    Returns:
        The chosen rows, sorted by ``image_id`` if present, index reset; group counts are
        ``n * w_g`` rounded by largest remainder. ``attrs["mix"]`` holds ``{value: count}``.
    Raises:
        DatasetError: a group has fewer images than its share of ``n``.
    """
    values = _group_values(manifest, column)
    probs = parse_mix(mix, values)
    p = np.array([probs[v] for v in values])
    labels = manifest[column].astype(str).where(manifest[column].notna(), None).to_numpy()
    avail = np.array([(labels == v).sum() for v in values])
    if n is None:
        n = int(min(np.floor(avail[i] / p[i] + 1e-9) for i in range(len(values)) if p[i] > 0))
    if n < 1:
        raise DatasetError(f"mix {mix!r} over {column!r} leaves no images")
    counts = _largest_remainder(p, int(n))
    short = {v: (int(c), int(a)) for v, c, a in zip(values, counts, avail) if c > a}
    if short:
        raise DatasetError(f"not enough images for mix {mix!r} of {n} rows: "
                           + ", ".join(f"{v} needs {c}, has {a}" for v, (c, a) in short.items()))
    rng = np.random.default_rng(seed)
    keep = []
    for v, c in zip(values, counts):
        rows = np.flatnonzero(labels == v)
        keep.append(rows[rng.permutation(len(rows))[:c]])
    out = manifest.iloc[np.sort(np.concatenate(keep))]
    if "image_id" in out.columns:
        out = out.sort_values("image_id", kind="stable")
    out = out.reset_index(drop=True)
    out.attrs = {**manifest.attrs, "mix": {v: int(c) for v, c in zip(values, counts)},
                 "mix_column": column}
    return out


__all__ = ["Sampler", "make_sampler", "parse_mix", "subsample_with_mix"]
