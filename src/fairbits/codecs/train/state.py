"""Everything a training run carries from step to step, saved and restored as a whole.

:class:`TrainingState` holds the model, its optimisers (codec, auxiliary, discriminator),
the discriminator, the batch sampler, the crop generator, the objective (group-DRO
weights), the step, the elapsed seconds, the unflushed log window and — when saved — the
torch (and CUDA) RNG states. :meth:`TrainingState.save` writes it atomically to one file
(``torch.save`` of tensors and plain values only, read back with ``weights_only=True``)
whose top level is::

    {"format": "fairbits-train/2", "config": <JSON of the resume key + data description>,
     "step", "elapsed", "window", "model", "opt", "aux_opt", "disc", "disc_opt",
     "sampler", "crop_rng", "objective", "torch_rng", "cuda_rng"}

:meth:`TrainingState.restore` refuses a file made with other settings, so a resumed run
continues exactly where the saved one stopped (bit-identical on CPU).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fairbits.codecs.train.config import TrainConfig, config_diff
from fairbits.codecs.train.objectives import Objective, make_objective
from fairbits.data.samplers import Sampler, make_sampler
from fairbits.errors import SpecError
from fairbits.fileio import atomic_write

STATE_FORMAT = "fairbits-train/2"
LOG_KEYS = ("loss", "bpp", "mse", "psnr", "aux", "d_loss", "g_adv")  # always in a log record


class LogWindow:
    """Sums of the step metrics since the last log record.

    A metric is a float, None (not computed this step) or a ``{name: float}`` dict (one
    level, e.g. the loss of each group present in the batch); each key is averaged over
    the steps that had it.
    """

    def __init__(self, sums: dict | None = None, counts: dict | None = None):
        self.sums: dict[str, float] = dict(sums or {})
        self.counts: dict[str, int] = dict(counts or {})

    def add(self, metrics: dict[str, Any]) -> None:
        for k, v in metrics.items():
            items = [(f"{k}/{g}", x) for g, x in v.items()] if isinstance(v, dict) else [(k, v)]
            for key, x in items:
                if x is not None:
                    self.sums[key] = self.sums.get(key, 0.0) + float(x)
                    self.counts[key] = self.counts.get(key, 0) + 1

    def flush(self) -> dict[str, Any]:
        """Means (nested back into dicts for ``name/group`` keys); resets the window."""
        rec: dict[str, Any] = {k: None for k in LOG_KEYS}
        for key, total in self.sums.items():
            value = total / self.counts[key]
            name, _, group = key.partition("/")
            if group:
                rec.setdefault(name, {})[group] = value
            else:
                rec[name] = value
        self.sums, self.counts = {}, {}
        return rec

    def to_json(self) -> str:
        return json.dumps({"sums": self.sums, "counts": self.counts})

    @classmethod
    def from_json(cls, text: str) -> LogWindow:
        d = json.loads(text)
        return cls(d["sums"], d["counts"])


def _check_patch_fits(model: nn.Module, patch: int, dev: torch.device, arch: str) -> None:
    """A forward pass on a zero patch (eval mode, no RNG use); a shape error becomes SpecError."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, patch, patch, device=dev))
        if out["x_hat"].shape[-2:] != (patch, patch):
            raise RuntimeError("output size differs")
    except (RuntimeError, ValueError) as e:
        raise SpecError(f"{arch} cannot code {patch}x{patch} patches ({str(e).splitlines()[0]}); "
                        "use a multiple of 64") from None
    finally:
        model.train(was)


@dataclass
class TrainingState:
    """The state of one run (module docstring). Build it with :meth:`create`."""

    model: nn.Module
    opt: torch.optim.Optimizer
    aux_opt: torch.optim.Optimizer | None
    disc: nn.Module | None
    disc_opt: torch.optim.Optimizer | None
    sampler: Sampler
    crop_rng: np.random.Generator
    objective: Objective
    device: torch.device
    main_params: list[nn.Parameter]
    step: int = 0
    elapsed: float = 0.0
    window: LogWindow = field(default_factory=LogWindow)

    @classmethod
    def create(cls, cfg: TrainConfig, manifest: pd.DataFrame, device: torch.device) -> tuple[TrainingState, TrainConfig]:
        """A fresh state for resolved ``cfg`` over ``manifest``, and ``cfg`` with the model's
        actual widths ``N``/``M``.

        Seeds torch with ``cfg.seed`` (model and discriminator initialisation, then the
        quantisation noise of training); the sampler is seeded with ``cfg.seed``, the
        crop generator with ``[cfg.seed, 1]``.

        Raises:
            SpecError, DatasetError: a patch the model cannot code, a bad sampler or objective.
        """
        from fairbits.codecs.architectures import architecture, build_discriminator, build_model

        sampler = make_sampler(cfg.sampler, manifest, seed=cfg.seed)
        objective = make_objective(cfg.objective, manifest, cfg.dro_step, cfg.dro_relative)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.arch, N=cfg.N, M=cfg.M, quality=cfg.quality).to(device)
        cfg = dataclasses.replace(cfg, N=getattr(model, "N", cfg.N), M=getattr(model, "M", cfg.M))
        _check_patch_fits(model, cfg.patch, device, cfg.arch)
        main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
        aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
        opt = torch.optim.Adam(main, lr=cfg.lr)
        aux_opt = torch.optim.Adam(aux, lr=cfg.aux_lr) if aux else None
        disc = disc_opt = None
        if architecture(cfg.arch).discriminator is not None and cfg.realism_weight > 0:
            disc = build_discriminator(cfg.arch, cfg.N, cfg.M).to(device)
            disc_opt = torch.optim.Adam(disc.parameters(), lr=cfg.lr)
        state = cls(model, opt, aux_opt, disc, disc_opt, sampler, np.random.default_rng([cfg.seed, 1]),
                    objective, device, main)
        return state, cfg

    # ------------------------------------------------------------------ save / restore

    def state_dict(self, config_key: str) -> dict[str, Any]:
        """The whole state as tensors and plain values (layout in the module docstring)."""
        cuda = self.device.type == "cuda"
        return {
            "format": STATE_FORMAT, "config": config_key, "step": self.step, "elapsed": self.elapsed,
            "window": self.window.to_json(), "model": self.model.state_dict(), "opt": self.opt.state_dict(),
            "aux_opt": self.aux_opt.state_dict() if self.aux_opt is not None else None,
            "disc": self.disc.state_dict() if self.disc is not None else None,
            "disc_opt": self.disc_opt.state_dict() if self.disc_opt is not None else None,
            "sampler": self.sampler.state_dict(), "crop_rng": json.dumps(self.crop_rng.bit_generator.state),
            "objective": self.objective.state_dict(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None,
        }

    def load_state_dict(self, st: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` output (same settings; see :meth:`restore`)."""
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        if self.aux_opt is not None:
            self.aux_opt.load_state_dict(st["aux_opt"])
        if self.disc is not None:
            self.disc.load_state_dict(st["disc"])
            self.disc_opt.load_state_dict(st["disc_opt"])
        self.sampler.load_state_dict(st["sampler"])
        self.crop_rng.bit_generator.state = json.loads(st["crop_rng"])
        self.objective.load_state_dict(st["objective"])
        torch.set_rng_state(st["torch_rng"])
        if self.device.type == "cuda" and st.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(st["cuda_rng"], self.device)
        self.step, self.elapsed = int(st["step"]), float(st["elapsed"])
        self.window = LogWindow.from_json(st["window"])

    def save(self, path: str | Path, config_key: str) -> None:
        """Write the state to ``path`` atomically (temporary file + rename)."""
        atomic_write(path, lambda tmp: torch.save(self.state_dict(config_key), tmp))

    def restore(self, path: str | Path, config_key: str, steps: int) -> None:
        """Load the state saved at ``path`` if it was made with the same settings.

        Raises:
            SpecError: not a (current) fairbits training state, other settings, or a step
                beyond ``steps``.
        """
        st = torch.load(path, map_location="cpu", weights_only=True)  # RNG states must stay on CPU
        if not isinstance(st, dict) or st.get("format") != STATE_FORMAT:
            found = st.get("format") if isinstance(st, dict) else None
            raise SpecError(f"{path} is not a {STATE_FORMAT} training state (found {found!r}); "
                            "delete it or use --no-resume to start over")
        if st["config"] != config_key:
            diff = config_diff(json.loads(st["config"]), json.loads(config_key))
            raise SpecError(f"{path} was made with other settings ({diff}); delete it, use another "
                            "--out, or use --no-resume to start over")
        if st["step"] > steps:
            raise SpecError(f"{path} is at step {st['step']}, beyond steps={steps}")
        self.load_state_dict(st)


__all__ = ["TrainingState", "LogWindow", "STATE_FORMAT", "LOG_KEYS"]
