"""Permutation test of "all groups equal", one set of permutations for every column of a cell.

The statistic of a column is the gap, max − min of its compared groups' means. Its null
distribution comes from ``n_perm`` random permutations of the cell's rows, drawn **once**
per (cell, attribute) and shared by every measure column of that cell: the rows are put in
a random order, and the column's usable rows (finite value, group compared for that column)
fill the groups' slots in that order. Slots are fixed per column (as many per group as the
group has usable rows), so each column's test is the classic one: its group sizes are kept
and, since a uniformly random order of all rows orders any subset uniformly at random, each
of its permutations is uniform over the relabellings of its own rows. Columns with NaN in
different rows or different small groups therefore still get an exact test of their own
rows, from the same draws.

``p = (1 + #{permuted gap ≥ observed gap}) / (1 + n_perm)``, with a round-off tolerance
of ``1e-12 · max(1, |observed|, max |value|)``, so ties (0/1 rates, integer measures)
count as at least as large.

Cost: one permutation of the cell's ``n`` rows per draw, then, per set of columns with the
same usable rows, the group sums of all groups but the largest (its sum is the total minus
the others): one matrix product ``(draws · (G − 1), n) @ (n, columns)`` of slot indicators
with the values, or, for one or two columns, a gather of each column's values into the
slots; in chunks of about :data:`fairbits.bias.intervals._CHUNK_ELEMENTS` entries. Which
of the two sums a chunk is decided by the shapes alone, so the same inputs always take
the same path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fairbits.bias.intervals import _chunks

_SMALL_CELL = 2_000  # below this many rows one call draws a whole chunk of permutations


@dataclass
class _Block:
    """Columns with the same usable rows, and the group slots of those rows."""

    columns: np.ndarray  # (c,) column indices into the values
    usable: np.ndarray  # (n,) bool: rows in the test
    sizes: np.ndarray  # (G,) usable rows per group, ascending (the largest group last)
    values: np.ndarray  # (n, c) values, 0 where not usable
    total: np.ndarray  # (c,) sum of the usable values
    tol: np.ndarray  # (c,) round-off tolerance of the comparison
    observed: np.ndarray  # (c,) observed gaps

    @property
    def bounds(self) -> np.ndarray:
        """Slot boundaries ``(G + 1,)`` of the groups in the ordered usable rows."""
        return np.concatenate([[0], np.cumsum(self.sizes)])


def _blocks(values: np.ndarray, codes: np.ndarray, usable: np.ndarray, observed: np.ndarray) -> list[_Block]:
    """Columns grouped by their usable rows; columns with fewer than two groups are left out."""
    same: dict[bytes, list[int]] = {}
    for j in range(usable.shape[1]):
        same.setdefault(np.packbits(usable[:, j]).tobytes(), []).append(j)
    out = []
    for cols in map(np.array, same.values()):
        rows = usable[:, cols[0]]
        sizes = np.bincount(codes[rows])
        sizes = np.sort(sizes[sizes > 0])
        if len(sizes) < 2:
            continue
        v = np.asfortranarray(np.where(rows[:, None], values[:, cols], 0.0))  # columns contiguous
        scale = np.maximum(np.abs(v).max(axis=0), np.abs(observed[cols]))
        out.append(_Block(cols, rows, sizes, v, v.sum(axis=0), 1e-12 * np.maximum(1.0, scale), observed[cols]))
    return out


def draw_orders(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """``k`` random orders of ``n`` rows, ``(k, n)``, one ``rng.permutation(n)`` after another.

    The same draws for the same generator however the ``k`` are chunked (numpy's
    ``permuted`` along an axis shuffles row after row from the same stream; tested).
    """
    if n < _SMALL_CELL:
        return rng.permuted(np.broadcast_to(np.arange(n), (k, n)), axis=1)
    return np.stack([rng.permutation(n) for _ in range(k)])


def _gather_is_cheaper(columns: int, slots: int, n: int, groups: int) -> bool:
    """Whether gathering each column's values into the slots (cost ∝ columns × slots) beats the
    indicator matrix product (cost ∝ n × groups, plus a little per column); relative costs per
    element measured with numpy 1.26 on a 2-core x86 machine (gather 5, labels 3, indicator
    row 2, product 0.2 per column and indicator row). Only speed depends on it."""
    return 5 * columns * slots < n * (3 + 2 * groups + 0.2 * columns * groups)


def _group_sums(block: _Block, orders: np.ndarray) -> np.ndarray:
    """Sums ``(k, G − 1, c)`` of the values in the slots of all groups but the largest, for
    ``orders`` ``(k, m)``: row indices (into the ``n`` rows) of the block's ``m`` usable rows,
    each in one random order, slot by slot."""
    k, n = len(orders), len(block.values)
    bounds = block.bounds
    filled = orders[:, :bounds[-2]]  # the largest group's slots are not needed
    cols, groups = len(block.columns), len(block.sizes) - 1
    if _gather_is_cheaper(cols, filled.shape[1], n, groups):
        sums = np.empty((k, groups, cols))
        for j in range(cols):
            sums[:, :, j] = np.add.reduceat(block.values[:, j][filled], bounds[:-2], axis=1)
        return sums
    label = np.full((k, n), groups, dtype=np.min_scalar_type(groups))  # rows outside the slots: none
    np.put_along_axis(label, filled, np.repeat(np.arange(groups), block.sizes[:-1]).astype(label.dtype)[None],
                      axis=1)
    slots = np.empty((k, groups, n))
    for g in range(groups):
        np.equal(label, g, out=slots[:, g], casting="unsafe")  # 1.0 where the row fills a slot of g
    return (slots.reshape(k * groups, n) @ block.values).reshape(k, groups, cols)


def _exceed(block: _Block, orders: np.ndarray) -> np.ndarray:
    """Per column of ``block``, how many of the ``orders`` ``(k, n)`` give a gap ≥ the observed one."""
    k = len(orders)
    if not block.usable.all():  # the usable rows, in each order: a random order of just them
        orders = orders[block.usable[orders]].reshape(k, -1)
    sums = _group_sums(block, orders)
    sums = np.concatenate([sums, (block.total - sums.sum(axis=1))[:, None]], axis=1)
    means = sums / block.sizes[None, :, None]
    gaps = means.max(axis=1) - means.min(axis=1)
    return np.count_nonzero(gaps >= block.observed - block.tol, axis=0)


def permutation_p_values(values: np.ndarray, codes: np.ndarray, usable: np.ndarray, observed: np.ndarray,
                         n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """p-values of "all groups equal" for every column of one cell, from shared permutations.

    ``values`` ``(n, c)``: the columns of the cell's labelled rows (anything where not
    usable); ``codes`` ``(n,)`` int: each row's group; ``usable`` ``(n, c)`` bool: the rows in
    column ``j``'s test (finite value, group compared for that column); ``observed`` ``(c,)``:
    each column's gap over those rows. Returns ``(c,)`` p-values, NaN for a column whose
    usable rows hold fewer than two groups, and all NaN when ``n_perm <= 0``. ``rng`` is
    used only when some column is tested.
    """
    values = np.asarray(values, dtype=float)
    codes = np.asarray(codes, dtype=np.intp)
    usable = np.asarray(usable, dtype=bool)
    observed = np.asarray(observed, dtype=float)
    p = np.full(values.shape[1], np.nan)
    blocks = _blocks(values, codes, usable, observed) if n_perm > 0 and len(values) else []
    if not blocks:
        return p
    n = len(values)
    widest = max(len(b.sizes) - 1 for b in blocks)
    counts = [np.zeros(len(b.columns), dtype=np.int64) for b in blocks]
    for rows in _chunks(n_perm, n * widest):
        orders = draw_orders(rng, rows.stop - rows.start, n)
        for b, c in zip(blocks, counts):
            c += _exceed(b, orders)
    for b, c in zip(blocks, counts):
        p[b.columns] = (1 + c) / (1 + n_perm)
    return p
