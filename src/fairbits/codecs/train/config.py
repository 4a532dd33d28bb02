"""The one description of a codec training run: :class:`TrainConfig`.

The CLI builds it, :func:`fairbits.codecs.training.train` runs it, the resumable state
stores its :meth:`~TrainConfig.resume_key` (a resumed run must match it) and the codec
checkpoint's ``meta`` holds its :meth:`~TrainConfig.to_dict` (so
``TrainConfig.from_dict(meta)`` gives back the recipe of any fairbits checkpoint, the
built-in ones included).

A config as given may leave settings to the architecture (``N``/``M`` widths,
``realism_weight``, ``perceptual_weight``, ``dro_step``); :meth:`TrainConfig.resolved`
fills them in, and that resolved form is what is compared and stored.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from fairbits.errors import SpecError

DISTORTIONS = ("mse", "ms-ssim")
PERCEPTUAL = ("ms-ssim", "lpips")
DEFAULT_REALISM_WEIGHT = 0.15      # β for generative architectures
DEFAULT_PERCEPTUAL_WEIGHT = 1.0    # for generative architectures (0 for the others)
DEFAULT_DRO_STEP = 0.01            # η of Sagawa et al. (2020)

# Settings that may change between a run and its resumption (steps: to train longer).
RUN_FIELDS = ("steps", "device", "log_every", "ckpt_every")
# What two checkpoints of one architecture and λ may differ in to be variants of one recipe.
DATA_FIELDS = ("sampler", "mix", "mix_column", "train_size")
OBJECTIVE_FIELDS = ("objective", "dro_step", "dro_relative", "colour_loss")


def parse_objective(spec: str) -> tuple[str, str | None]:
    """``"mean"`` → ``("mean", None)``; ``"group-dro:<column>"`` → ``("group-dro", column)``.

    Raises:
        SpecError: any other spelling.
    """
    s = str(spec).strip()
    if s == "mean":
        return "mean", None
    kind, _, column = s.partition(":")
    if kind == "group-dro" and column.strip():
        return "group-dro", column.strip()
    raise SpecError(f"unknown objective {spec!r}: use mean or group-dro:<column> "
                    "(e.g. group-dro:skin_group)")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run (units and meanings in :mod:`fairbits.codecs.training`).

    Attributes:
        arch, lmbda, steps: architecture name, λ (weight of the distortion), total steps.
        sampler: ``natural``, ``balanced:<column>`` or ``mix:<column>=80/15/5``.
        mix, mix_column, train_size: cut the training set to this group mix of
            ``mix_column`` first (``train_size`` rows; None = as many as the data allow).
        size: resize + centre-crop side overriding the dataset's ``size``.
        batch_size, patch: images per step and random-crop side (pixels).
        lr, aux_lr: Adam learning rates of the codec (and discriminator) and the aux loss.
        distortion: ``mse`` or ``ms-ssim``.
        N, M, quality: widths (None: the zoo's at ``quality``).
        realism_weight, perceptual_weight, perceptual: GAN weight β, perceptual weight and
            kind (``ms-ssim`` proxy or ``lpips``); None weights = the architecture's default.
        objective: ``mean`` (batch-mean loss) or ``group-dro:<column>``.
        dro_step: η of the group weights' exponentiated-gradient step (group-dro only).
        dro_relative: step on each group's relative excess loss ``(L_g − L̄)/L̄`` instead
            of its loss (scale-free; :mod:`fairbits.codecs.train.objectives`).
        colour_loss: weight of the skin-colour term (0 = off).
        seed, device, amp: seed of everything random; ``auto``/``cpu``/``cuda[:N]``;
            bfloat16 autocast of ``g_a``/``g_s``.
        log_every, ckpt_every: steps between loss-log records / training-state saves.
    """

    arch: str
    lmbda: float
    steps: int
    sampler: str = "natural"
    mix: str | dict | None = None
    mix_column: str | None = "skin_group"
    train_size: int | None = None
    size: int | None = None
    batch_size: int = 8
    patch: int = 256
    lr: float = 1e-4
    aux_lr: float = 1e-3
    distortion: str = "mse"
    N: int | None = None
    M: int | None = None
    quality: int = 1
    realism_weight: float | None = None
    perceptual_weight: float | None = None
    perceptual: str | None = "ms-ssim"
    objective: str = "mean"
    dro_step: float | None = None
    dro_relative: bool = False
    colour_loss: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    log_every: int = 50
    ckpt_every: int = 1000

    def __post_init__(self) -> None:
        if isinstance(self.mix, Mapping):
            object.__setattr__(self, "mix", {str(k): float(v) for k, v in self.mix.items()})
        _positive(lmbda=self.lmbda, steps=self.steps, batch_size=self.batch_size, patch=self.patch,
                  lr=self.lr, aux_lr=self.aux_lr, log_every=self.log_every, ckpt_every=self.ckpt_every)
        for name in ("N", "M", "size", "train_size"):
            if getattr(self, name) is not None:
                _positive(**{name: getattr(self, name)})
        if self.distortion not in DISTORTIONS:
            raise SpecError(f"distortion must be one of {DISTORTIONS}, got {self.distortion!r}")
        if self.perceptual is not None and self.perceptual not in PERCEPTUAL:
            raise SpecError(f"perceptual must be one of {PERCEPTUAL}, got {self.perceptual!r}")
        for name in ("realism_weight", "perceptual_weight", "colour_loss"):
            v = getattr(self, name)
            if v is not None and not (_number(v) and v >= 0):
                raise SpecError(f"{name} must be a number >= 0, got {v!r}")
        kind, _ = parse_objective(self.objective)
        if self.dro_step is not None:
            if kind != "group-dro":
                raise SpecError("dro_step (--dro-step) only applies to objective group-dro:<column>")
            _positive(dro_step=self.dro_step)
        if self.dro_relative and kind != "group-dro":
            raise SpecError("dro_relative (--dro-relative) only applies to objective group-dro:<column>")
        if self.train_size is not None and self.mix is None:
            raise SpecError("train_size is only used with a group mix")
        if self.size is not None and self.size < self.patch:
            raise SpecError(f"patch {self.patch} is larger than the image size {self.size}")
        if self.mix is not None and not self.mix_column:
            raise SpecError("a group mix needs mix_column")

    # ------------------------------------------------------------------ derived

    @property
    def objective_kind(self) -> str:
        """``mean`` or ``group-dro``."""
        return parse_objective(self.objective)[0]

    @property
    def group_column(self) -> str | None:
        """The column group-DRO weighs (None for the mean objective)."""
        return parse_objective(self.objective)[1]

    @property
    def sampler_column(self) -> str | None:
        """The column a balanced/mix sampler draws by (None for natural)."""
        return self.sampler.split(":", 1)[1].split("=", 1)[0].strip() if ":" in self.sampler else None

    def group_columns(self) -> list[str]:
        """Every label column this run groups by (sampler, set mix, group-DRO), in that order."""
        cols = [self.sampler_column, self.mix_column if self.mix is not None else None, self.group_column]
        return list(dict.fromkeys(c for c in cols if c))

    def resolved(self, generative: bool | None = None) -> TrainConfig:
        """Defaults filled in: GAN/perceptual weights of the architecture, ``dro_step``,
        ``perceptual`` None when its weight is 0, ``mix_column`` None without a mix.

        ``generative`` (whether the architecture has a discriminator) is looked up when None.

        Raises:
            SpecError: unknown architecture, or a realism weight for a non-generative one.
        """
        if generative is None:
            from fairbits.codecs.architectures import architecture

            generative = architecture(self.arch).discriminator is not None
        rw = self.realism_weight
        rw = (DEFAULT_REALISM_WEIGHT if generative else 0.0) if rw is None else float(rw)
        if rw > 0 and not generative:
            raise SpecError(f"realism_weight needs a generative architecture (one with a "
                            f"discriminator); {self.arch!r} has none")
        pw = self.perceptual_weight
        pw = (DEFAULT_PERCEPTUAL_WEIGHT if generative else 0.0) if pw is None else float(pw)
        dro = self.dro_step
        if self.objective_kind == "group-dro" and dro is None:
            dro = DEFAULT_DRO_STEP
        return dataclasses.replace(
            self, realism_weight=rw, perceptual_weight=pw,
            perceptual=(self.perceptual or PERCEPTUAL[0]) if pw > 0 else None,
            mix_column=self.mix_column if self.mix is not None else None, dro_step=dro,
            lmbda=float(self.lmbda), lr=float(self.lr), aux_lr=float(self.aux_lr),
            colour_loss=float(self.colour_loss))

    def variant(self) -> str:
        """Short name of the data and objective choices, e.g. ``natural``, ``balanced``,
        ``group-dro``, ``colour`` or ``balanced+colour`` (for model cards and tables)."""
        parts = [] if self.sampler == "natural" else [self.sampler.split(":", 1)[0]]
        if self.objective_kind != "mean":
            parts.append(self.objective_kind)
        if self.colour_loss > 0:
            parts.append("colour")
        return "+".join(parts) or "natural"

    # ------------------------------------------------------------------ plain form

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe values by field name (the inverse of :meth:`from_dict`)."""
        d = dataclasses.asdict(self)
        if isinstance(d["mix"], dict):
            d["mix"] = dict(d["mix"])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """A config from :meth:`to_dict` output or a checkpoint's ``meta``.

        Keys that are not fields (``data``, estimates, version...) are ignored; missing
        fields take their defaults (older checkpoints lack the newer ones).

        Raises:
            SpecError: ``arch``, ``lmbda`` or ``steps`` missing, or an invalid value.
        """
        names = {f.name for f in fields(cls)}
        missing = [k for k in ("arch", "lmbda", "steps") if k not in d]
        if missing:
            raise SpecError(f"a training config needs {missing}; got keys {sorted(d)}")
        return cls(**{k: v for k, v in d.items() if k in names})

    def resume_key(self) -> dict[str, Any]:
        """What a resumed run must share with the saved one: all but :data:`RUN_FIELDS`."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_FIELDS}


def config_diff(old: Mapping, new: Mapping, limit: int = 4) -> str:
    """``"key: old -> new, ..."`` for the first ``limit`` keys that differ."""
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:limit])


def _number(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _positive(**values) -> None:
    """Each value a finite number > 0; whole numbers except learning rates, λ and η."""
    for name, v in values.items():
        if not _number(v) or v <= 0:
            raise SpecError(f"{name} must be a positive number, got {v!r}")
        if name not in ("lmbda", "lr", "aux_lr", "dro_step") and int(v) != v:
            raise SpecError(f"{name} must be a whole number, got {v!r}")


__all__ = ["TrainConfig", "parse_objective", "config_diff", "DISTORTIONS", "PERCEPTUAL",
           "RUN_FIELDS", "DATA_FIELDS", "OBJECTIVE_FIELDS", "DEFAULT_DRO_STEP"]
