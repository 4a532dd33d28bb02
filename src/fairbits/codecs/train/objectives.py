"""How the per-image losses of a batch become the one number a training step minimises.

``objective(loss, rows) -> (total, metrics)``: ``loss`` is the per-image loss ``(B,)`` of
:class:`~fairbits.codecs.train.losses.RateDistortionLoss`, ``rows`` the manifest row
positions of the batch's images ``int64 (B,)``, ``total`` a scalar tensor and ``metrics``
plain values for the loss log.

* ``mean`` (:class:`MeanObjective`): the batch mean (empirical risk: every drawn image
  counts the same, so the groups weigh what the sampler makes them weigh).
* ``group-dro:<column>`` (:class:`GroupDRO`): online group distributionally robust
  optimisation (Sagawa et al., 2020, "Distributionally Robust Neural Networks",
  Algorithm 1). Each value ``g`` of ``column`` is a group with weight ``q_g`` (uniform at
  the start). Every step, ``L_g`` is the mean loss of the batch's images of group ``g``;
  the weights take an exponentiated-gradient step ``q_g ← q_g·exp(η·L_g)`` and are
  renormalised to sum to 1 (a group absent from the batch gets the factor 1, i.e. keeps
  its weight before renormalisation); the step then minimises ``Σ_g q_g·L_g`` over the
  groups present. Weights drift toward the groups whose loss stays highest, so training
  minimises (a smooth version of) the worst group's loss rather than the average. The
  weights are kept as float64 logarithms (no overflow for any ``η·L``) and are part of
  the training state.

  The step ``η·L_g`` depends on the scale of the loss, which falls by orders of magnitude
  in the first hundreds of steps (untrained codecs have losses in the tens or hundreds,
  trained ones about 0.1 at λ ≈ 0.0003), so the weights chosen during that transient can
  dominate for the rest of training; and a batch holding one group only raises that
  group's weight whatever its loss. With ``relative=True`` (``--dro-relative``) the step
  uses the *relative excess loss* ``(L_g − L̄)/L̄`` of each present group instead, ``L̄``
  being the mean of the present groups' losses: scale-free, and a batch of one group
  moves no weight. When every group is present the two differ only in the step size
  (renormalisation cancels the common term ``L̄``): the direction is Sagawa et al.'s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from fairbits.codecs.train.config import DEFAULT_DRO_STEP, parse_objective
from fairbits.errors import DatasetError, SpecError


class MeanObjective:
    """The batch mean of the per-image losses (no state)."""

    kind = "mean"

    def __call__(self, loss: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, dict]:
        return loss.mean(), {}

    def state_dict(self) -> dict:
        return {"kind": self.kind}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind", self.kind) != self.kind:
            raise SpecError(f"objective state is for {state.get('kind')!r}, not {self.kind!r}")

    def summary(self) -> dict:
        """What the loss log and the checkpoint meta record of the objective (nothing here)."""
        return {}


class GroupDRO:
    """Online group DRO over the values of one label column (module docstring).

    Args:
        column: the label column whose values are the groups.
        groups: the group names, in a fixed order (sorted values of the column).
        codes: ``int64 (n_rows,)``: the group index of each manifest row.
        step: η, the step size of the exponentiated-gradient update (> 0).
        relative: step on the relative excess loss (module docstring) instead of the loss.
    """

    kind = "group-dro"

    def __init__(self, column: str, groups: list[str], codes: np.ndarray, step: float,
                 relative: bool = False):
        if not (np.isfinite(step) and step > 0):
            raise SpecError(f"group-DRO step size must be > 0, got {step!r}")
        codes = np.asarray(codes, dtype=np.int64)
        if codes.size and (codes.min() < 0 or codes.max() >= len(groups)):
            raise ValueError("group codes must index `groups`")
        self.column, self.groups, self.step = column, list(groups), float(step)
        self.relative = bool(relative)
        self.codes = codes
        self.log_q = torch.full((len(groups),), -float(np.log(len(groups))), dtype=torch.float64)
        self.updates = 0

    @classmethod
    def from_manifest(cls, column: str, manifest: pd.DataFrame, step: float,
                      relative: bool = False) -> GroupDRO:
        """Groups = the sorted values of ``manifest[column]``.

        Raises:
            DatasetError: the column is missing, has fewer than two values, or some rows
                have no value (group-DRO needs a group for every image).
        """
        if column not in manifest.columns:
            labels = [c for c in manifest.columns if c not in ("image_id", "path", "checksum")]
            raise DatasetError(f"group-dro column {column!r} is not in the data; columns are {labels}")
        values = manifest[column]
        if values.isna().any():
            raise DatasetError(f"group-dro:{column}: {int(values.isna().sum())} training image(s) have no "
                               f"{column!r}; drop them or weigh another column")
        labels = values.astype(str).to_numpy()
        groups = sorted(set(labels))
        if len(groups) < 2:
            raise DatasetError(f"group-dro:{column} needs at least two groups, the data have {groups}")
        index = {g: i for i, g in enumerate(groups)}
        return cls(column, groups, np.array([index[v] for v in labels], dtype=np.int64), step, relative)

    @property
    def q(self) -> torch.Tensor:
        """The group weights, float64 ``(G,)`` summing to 1."""
        return torch.softmax(self.log_q, 0)

    @property
    def weights(self) -> dict[str, float]:
        """``{group: q_g}``."""
        return dict(zip(self.groups, self.q.tolist()))

    def group_losses(self, loss: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss per group in the batch ``(G,)`` (0 where absent) and image counts ``(G,)``."""
        g = torch.as_tensor(self.codes[np.asarray(rows, dtype=np.int64)], device=loss.device)
        n = len(self.groups)
        counts = torch.bincount(g, minlength=n)
        sums = torch.zeros(n, dtype=loss.dtype, device=loss.device).index_add(0, g, loss)
        return sums / counts.clamp_min(1).to(loss.dtype), counts

    def update(self, group_loss: torch.Tensor, present: torch.Tensor) -> None:
        """One exponentiated-gradient step: ``q_g ← q_g·exp(η·L_g)`` for present groups
        (``L_g`` → ``(L_g − L̄)/L̄`` when ``relative``), renormalised.

        ``group_loss`` ``(G,)`` (values of absent groups are ignored), ``present`` bool ``(G,)``.
        """
        gl = group_loss.detach().to("cpu", torch.float64)
        present = present.cpu()
        if self.relative:
            mean = gl[present].mean()
            gl = (gl - mean) / mean.abs().clamp_min(1e-12)
        step = torch.where(present, self.step * gl, torch.zeros_like(gl))
        log_q = self.log_q + step
        self.log_q = log_q - torch.logsumexp(log_q, 0)
        self.updates += 1

    def __call__(self, loss: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, dict]:
        means, counts = self.group_losses(loss, rows)
        present = counts > 0
        self.update(means, present)
        total = (self.q.to(device=loss.device, dtype=loss.dtype) * means).sum()
        seen = present.cpu().tolist()
        return total, {"group_loss": {g: float(m) for g, m, s in zip(self.groups, means.detach().cpu().tolist(), seen)
                                      if s}}

    def state_dict(self) -> dict:
        return {"kind": self.kind, "column": self.column, "groups": list(self.groups), "relative": self.relative,
                "log_q": self.log_q.clone(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore the weights exactly (same column and groups required)."""
        if (state.get("kind"), state.get("column"), list(state.get("groups", []))) != \
                (self.kind, self.column, self.groups):
            raise SpecError(f"objective state is for {state.get('kind')}:{state.get('column')} over "
                            f"{state.get('groups')}, not {self.kind}:{self.column} over {self.groups}")
        self.log_q = state["log_q"].to(torch.float64).clone()
        self.updates = int(state["updates"])

    def summary(self) -> dict:
        """``{"group_weight": {group: q_g}}`` for the log and the checkpoint meta."""
        return {"group_weight": self.weights}


Objective = MeanObjective | GroupDRO


def make_objective(spec: str, manifest: pd.DataFrame, step: float | None,
                   relative: bool = False) -> Objective:
    """The objective named by ``spec`` (``mean`` or ``group-dro:<column>``) over ``manifest``."""
    kind, column = parse_objective(spec)
    if kind == "mean":
        return MeanObjective()
    return GroupDRO.from_manifest(column, manifest, DEFAULT_DRO_STEP if step is None else step, relative)


__all__ = ["MeanObjective", "GroupDRO", "Objective", "make_objective"]
