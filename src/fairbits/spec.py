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

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from PIL import Image
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, ValidationError, field_validator,
                      model_validator)

from fairbits.data.images import AUDIT_MAX_PIXELS, GIB_PER_MEGAPIXEL, MAX_SIZE, MIN_SIDE
from fairbits.errors import SpecError

_STRICT = ConfigDict(extra="forbid")
# The largest dataset.max_pixels: Pillow's own decompression-bomb threshold.
MAX_PIXELS_LIMIT = Image.MAX_IMAGE_PIXELS
DEVICE_FORMS = "auto, cpu, cuda, cuda:N (N = 0, 1, ...), mps"
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


def _not_bool(v):
    """YAML ``true``/``false`` are not numbers: refuse them where a number goes."""
    if isinstance(v, bool):
        raise ValueError("expected a number, got a boolean (true/false)")
    return v


# A float that refuses booleans (ints such as ``1`` are still accepted as 1.0).
Float = Annotated[float, BeforeValidator(_not_bool)]


def _strict_number(v):
    """A number as written in YAML: an int or a float, never a boolean or a string."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {type(v).__name__} {v!r}")
    return v


class DatasetSpec(BaseModel):
    """Where the images and labels are, and which of them to use.

    Keys other than the ones below are passed to the reader (e.g. ``path_column``);
    the reader's signature checks their names and types.

    Image size and memory (:func:`fairbits.data.images.load_original`):

    * ``size`` (optional, :data:`~fairbits.data.images.MIN_SIDE` to
      :data:`~fairbits.data.images.MAX_SIZE` = 4096): every original is resized and
      centre-cropped to ``size x size``. Large originals (up to
      ``max(max_pixels, 40 MP)``) are decoded at a reduced scale first, so their cost
      is a few bytes per pixel of the file.
    * ``max_pixels`` (default :data:`~fairbits.data.images.AUDIT_MAX_PIXELS` =
      2048 x 2048 = 4,194,304; at most Pillow's decompression-bomb threshold,
      89,478,485): the most pixels of an image the measures see. Without ``size`` an
      original with more pixels becomes an error row; with ``size``, ``size**2`` must
      not exceed it.
    * Worst-case memory per worker: the pixel measures (PSNR, SSIM, MS-SSIM,
      CIEDE2000) add about :data:`~fairbits.data.images.GIB_PER_MEGAPIXEL` = 0.35 GiB
      per megapixel of each image measured on CPU, on top of about 0.9 GiB for the
      process. One image at the default limit: about 2.4 GiB in all (measured
      2.3 GiB); on CPU the runner measures up to 4 images of one size together, and
      four 2048 x 2048 images peaked at 6.1 GiB. ``size: 4096`` (with ``max_pixels``
      raised to 16,777,216) needs about 5.9 GiB per image. With ``size``, decoding a
      large original adds little: a 38-megapixel PNG took 0.15 GiB, a JPEG 0.01 GiB.
    * Images whose short side is below :data:`~fairbits.data.images.MIN_SIDE` = 33
      pixels (after ``size``) become error rows: MS-SSIM is undefined there.

    Face crop (:mod:`fairbits.face.crop`, :func:`fairbits.data.images.load_cropped_original`):

    * ``crop``: ``none`` (default) or ``face``. With ``face``, each original is decoded at
      full resolution and cropped to a square around its most confident detected face
      (mediapipe face detection) **before** ``size`` resizes it, so codecs code, measures
      measure and rates count only the cropped pixels (``bpp = 8 * bytes / crop pixels``,
      after ``size`` when set). Each row records the crop's box in pixels of the decoded
      original; an image without a detected face becomes an error row
      ``no face for crop: face``. Without ``size``, ``max_pixels`` bounds the crop, not the
      original (originals up to 40 MP are decoded).
    * ``crop_margin`` (default 0.25, 0 to 2; only with ``crop: face``): the face box grows
      by this fraction of its width on the left and right and of its height above and
      below, then becomes a square of its larger side, shifted to lie inside the image
      (shrunk to the image's short side only when it cannot fit).
    """

    model_config = ConfigDict(extra="allow")

    reader: str
    path: Path
    split: str | None = None
    limit_per_group: StrictInt | None = Field(default=None, gt=0)
    balance_by: str | list[str] | None = None
    size: StrictInt | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIZE,
                                   description="resize + centre-crop to size x size")
    max_pixels: StrictInt = Field(default=AUDIT_MAX_PIXELS, gt=0, le=MAX_PIXELS_LIMIT,
                                  description="most pixels of an image the measures see")
    crop: Literal["none", "face"] = Field(default="none", description="crop each original to its face "
                                          "before resizing (rates are over the cropped pixels)")
    crop_margin: Annotated[float, BeforeValidator(_strict_number)] = Field(
        default=0.25, description="growth of the face box on each side, x its size (crop: face), 0 to 2")

    @field_validator("crop_margin")
    @classmethod
    def _margin_range(cls, v: float) -> float:
        if not 0 <= v <= 2:  # NaN fails too
            raise ValueError(f"crop_margin must be from 0 to 2 (the fraction of the face box's size added on "
                             f"each side; 0.25 is the default), got {v}")
        return v

    @model_validator(mode="after")
    def _margin_needs_crop(self):
        if "crop_margin" in self.model_fields_set and self.crop != "face":
            raise ValueError(f"crop_margin is set but crop is {self.crop!r}; set `crop: face` to crop "
                             "originals to their faces, or remove crop_margin")
        return self

    @model_validator(mode="after")
    def _size_within_limit(self):
        if self.size is not None and self.size ** 2 > self.max_pixels:
            raise ValueError(
                f"size {self.size} gives {self.size ** 2:,} pixels per image, above max_pixels "
                f"{self.max_pixels:,}; lower size or raise max_pixels to at least {self.size ** 2} "
                f"(the measures need about {GIB_PER_MEGAPIXEL} GiB per megapixel of one image)")
        return self

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
    ``padding`` (learned codecs only) is how an image is padded to the model's multiple:
    ``replicate`` (default: edge pixels, right and bottom) or ``zeros`` (CompressAI's own
    evaluation: zeros, centred, to a multiple of 64; reproduces its published figures);
    see :mod:`fairbits.codecs.learned`.
    """

    model_config = _STRICT

    name: str
    entry: str | None = None
    quality: list[StrictInt] | None = None
    checkpoint: list[str] | None = None
    target_bpp: list[Float] | None = None
    mode: Literal["exact", "fast"] | None = None
    padding: Literal["replicate", "zeros"] | None = Field(
        default=None, description="learned codecs: pad images to the model's multiple by replicating edge "
        "pixels (replicate, the default) or with zeros as CompressAI's evaluation does (zeros)")

    @field_validator("target_bpp")
    @classmethod
    def _positive(cls, v):
        if v is not None and any(t <= 0 for t in v):
            raise ValueError("target_bpp values must be > 0")
        return v

    @model_validator(mode="after")
    def _one_of(self):
        if self.entry is not None:
            if self.checkpoint or self.target_bpp or self.padding:
                raise ValueError(f"codec {self.name!r}: a system given by `entry` takes no checkpoint, "
                                 "target_bpp or padding")
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
    identity_fmr: Float = Field(default=1e-3, gt=0, lt=1,
                                description="false-match rate on originals that sets the verification threshold")
    seed: StrictInt = 0
    batch_size: StrictInt = Field(default=32, gt=0)
    workers: StrictInt = Field(default=2, gt=0, description="threads for decoding and coding images")
    processes: StrictInt = Field(default=1, gt=0, description="worker processes for exact coding of learned codecs")
    equal_rates: list[Annotated[float, Field(gt=0)]] = Field(
        default=[0.05, 0.1, 0.25, 0.5], min_length=1,
        description="bpp at which codecs are compared (equal_rate.csv): each group's rate-measure curve "
        "is interpolated in log bpp between measured settings, never extrapolated")
    torch_threads: StrictInt | None = Field(
        default=None, gt=0, description="torch's intra-op threads in each worker (default: torch's own, "
        "1 per CPU of a Ray actor). Learned codecs' CPU reconstructions can differ by one 8-bit level in "
        "rare pixels between thread counts; set it to compare runs exactly across engines or machines")
    engine: Literal["local", "ray"] = Field(
        default="local", description="who runs the work: this process (local) or a Ray cluster (ray, "
        "needs `pip install fairbits[ray]`; the cluster's address is given on the command line)")
    device: str = Field(default="auto", description=f"torch device: {DEVICE_FORMS}")
    n_boot: StrictInt = Field(default=1000, ge=100)
    n_perm: StrictInt = Field(default=1000, ge=100)
    min_group_n: StrictInt = Field(default=10, ge=1, description="groups with fewer usable images are "
                                   "reported but left out of gaps and tests")

    @field_validator("device")
    @classmethod
    def _device_form(cls, v: str) -> str:
        v = v.strip()
        if not _DEVICE.match(v):
            raise ValueError(f"unknown device {v!r}; use one of: {DEVICE_FORMS}")
        return v

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
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling; see examples/audit.yaml)"
        elif err["type"] == "int_type" and isinstance(err.get("input"), bool):
            msg = "expected a whole number, got a boolean (true/false)"
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
