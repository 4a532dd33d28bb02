"""The audit spec: a YAML file validated into models before any work starts.

Minimal form (paths are relative to the spec file's folder)::

    dataset:
      reader: csv            # csv | folder | fairface | utkface | celeba | rfw
      path: labels.csv
      path_column: path      # any other key is passed to the reader
    groups: [grp]            # or {grp: [a, b]} to choose and order the groups
    codecs:
      - name: jpeg
        quality: [10, 50]    # settings to run, or:
      - name: webp
        target_bpp: [0.1, 0.25]   # per-image rate search to the nearest setting
    measures: [psnr, ms_ssim]
    seed: 0

See ``examples/audit.yaml`` for every option with comments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fairbits.errors import SpecError

_STRICT = ConfigDict(extra="forbid")


class DatasetSpec(BaseModel):
    """Where the images and labels are, and which of them to use.

    Keys other than the ones below are passed to the reader (e.g. ``path_column``).
    """

    model_config = ConfigDict(extra="allow")

    reader: str
    path: Path
    split: str | None = None
    limit_per_group: int | None = Field(default=None, gt=0)
    balance_by: str | list[str] | None = None
    size: int | None = Field(default=None, gt=0, description="resize + centre-crop to size x size")
    max_pixels: int = Field(default=40_000_000, gt=0)

    @property
    def reader_options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class CodecSpec(BaseModel):
    """One codec and the settings (or target rates) to run it at.

    ``quality`` are fixed settings (classical qualities; for a learned codec, CompressAI
    zoo qualities ``zoo-q<n>``), ``checkpoint`` names built-in checkpoints or checkpoint
    files of a learned codec (paths relative to the spec file), ``target_bpp`` asks for
    a per-image search of the setting nearest each rate. ``mode`` is how a learned codec
    runs: ``exact`` (real entropy coding) or ``fast`` (batched forward pass, rate
    estimated from likelihoods, checked against exact coding on a sample). ``entry``
    names a Python callable ``package.module:function`` that maps an image to an image
    (a system to audit, e.g. super-resolution); ``name`` is then the label it gets.
    """

    model_config = _STRICT

    name: str
    entry: str | None = None
    quality: list[int] | None = None
    checkpoint: list[str] | None = None
    target_bpp: list[float] | None = None
    mode: Literal["exact", "fast"] | None = None

    @field_validator("target_bpp")
    @classmethod
    def _positive(cls, v):
        if v is not None and any(t <= 0 for t in v):
            raise ValueError("target_bpp values must be > 0")
        return v

    @model_validator(mode="after")
    def _one_of(self):
        if self.entry is not None:
            if self.checkpoint or self.target_bpp:
                raise ValueError(f"codec {self.name!r}: a system given by `entry` takes no checkpoint or target_bpp")
            self.quality = self.quality or [1]
            return self
        if not self.quality and not self.target_bpp and not self.checkpoint:
            raise ValueError(f"codec {self.name!r}: give `quality: [...]`, `checkpoint: [...]` "
                             "or `target_bpp: [...]`")
        return self


class AuditSpec(BaseModel):
    """A whole audit: dataset, groups, codecs, measures and run options."""

    model_config = _STRICT

    name: str | None = None
    dataset: DatasetSpec
    groups: list[str] | dict[str, list[str]]
    codecs: list[CodecSpec] = Field(min_length=1)
    measures: list[str] = Field(default_factory=lambda: ["psnr", "ms_ssim"])
    realism_features: str = Field(default="sface", description="feature space of the realism measure")
    phenotype_models: list[Path] = Field(default_factory=list,
                                         description="classifier files (fairbits train-phenotype) for `phenotype`")
    identity_fmr: float = Field(default=1e-3, gt=0, lt=1,
                                description="false-match rate on originals that sets the verification threshold")
    seed: int = 0
    batch_size: int = Field(default=32, gt=0)
    workers: int = Field(default=2, gt=0, description="threads for decoding and coding images")
    processes: int = Field(default=1, gt=0, description="worker processes for exact coding of learned codecs")
    device: str = "auto"
    n_boot: int = Field(default=1000, ge=100)
    n_perm: int = Field(default=1000, ge=100)

    @property
    def group_columns(self) -> list[str]:
        return list(self.groups)

    @property
    def group_values(self) -> dict[str, list[str]]:
        return dict(self.groups) if isinstance(self.groups, dict) else {}


def _format_validation(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling; see examples/audit.yaml)"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def parse_spec(data: dict, base_dir: Path | str = ".") -> AuditSpec:
    """Validate a spec given as a dict; relative dataset paths are resolved against ``base_dir``."""
    if not isinstance(data, dict):
        raise SpecError("the spec must be a YAML mapping with keys dataset, groups, codecs, measures")
    try:
        spec = AuditSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError("invalid spec:\n" + _format_validation(e)) from None
    if not spec.dataset.path.is_absolute():
        spec.dataset.path = (Path(base_dir) / spec.dataset.path).resolve()
    for c in spec.codecs:
        c.checkpoint = [_resolve_checkpoint(k, base_dir) for k in c.checkpoint or []] or None
    spec.phenotype_models = [p if p.is_absolute() else (Path(base_dir) / p).resolve() for p in spec.phenotype_models]
    return spec


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".pth.tar", ".tar")


def is_checkpoint_path(setting: str) -> bool:
    """Whether a learned codec's setting names a file (a path separator or a checkpoint
    suffix) rather than a built-in key or ``zoo-q<n>``."""
    return "/" in setting or "\\" in setting or setting.lower().endswith(CHECKPOINT_SUFFIXES)


def _resolve_checkpoint(key: str, base_dir: Path | str) -> str:
    """A checkpoint that looks like a path is made absolute (relative to the spec's folder)."""
    if is_checkpoint_path(key) and not Path(key).is_absolute():
        return str((Path(base_dir) / key).resolve())
    return key


def read_yaml(path: str | Path, what: str = "spec file"):
    """``yaml.safe_load`` of a file; a missing file or bad YAML raises :class:`SpecError`."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{what} not found: {p}")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"{p} is not valid YAML: {e}") from None


def load_spec(path: str | Path) -> AuditSpec:
    """Read and validate a spec file."""
    return parse_spec(read_yaml(path), Path(path).parent)
