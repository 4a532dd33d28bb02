"""From a validated spec to an audit plan: the manifest and the list of cells.

Every check that can fail on configuration happens here, before any image is coded:
unknown codec or measure, a codec that cannot run here, a quality outside a codec's
grid, a checkpoint that cannot be loaded, a device that is not here, a missing dataset
path, an unknown group column, an empty group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from fairbits.codecs.base import Codec, codec_info, get_codec
from fairbits.codecs.ratesearch import rate_grid
from fairbits.data.manifest import build_manifest
from fairbits.errors import FairbitsError, SpecError
from fairbits.measures.base import Measure, resolve_measure
from fairbits.spec import AuditSpec, CodecSpec, is_checkpoint_path


@dataclass(frozen=True)
class Cell:
    """One system at one setting, run one way.

    Exactly one of ``quality`` (a classical quality), ``checkpoint`` (a learned codec's
    built-in key, ``zoo-q<n>`` or a checkpoint path) and ``target_bpp`` (a per-image
    search for the setting nearest that rate) is set. ``mode`` is ``exact`` (real bytes)
    or ``fast`` (learned codecs: batched forward pass, estimated rate).
    """

    codec: str
    quality: int | None = None
    checkpoint: str | None = None
    target_bpp: float | None = None
    mode: str = "exact"

    @property
    def value(self):
        """What the codec is called with: the quality or the checkpoint."""
        return self.quality if self.quality is not None else self.checkpoint

    @property
    def setting(self) -> str:
        if self.target_bpp is not None:
            return f"bpp{self.target_bpp:g}"
        if self.quality is not None:
            return f"q{self.quality}"
        ck = self.checkpoint
        return Path(ck).stem if is_checkpoint_path(ck) else ck

    @property
    def id(self) -> str:
        return f"{self.codec}__{self.setting}"

    def to_dict(self) -> dict:
        return {"codec": self.codec, "setting": self.setting, "quality": self.quality,
                "checkpoint": self.checkpoint, "target_bpp": self.target_bpp, "mode": self.mode}


@dataclass
class AuditPlan:
    spec: AuditSpec
    cells: list[Cell]
    manifest: pd.DataFrame
    measures: list[str]  # per-image measure names, without "bpp" (always recorded)
    realism: str | None = None  # feature extractor of the realism measure, if asked for
    measure_set: list[Measure] = field(default_factory=list)  # the measures, resolved for the spec
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where measures run
    codecs: dict[str, Codec] = field(default_factory=dict)  # by name, settings checked (models loaded)

    @property
    def needs_faces(self) -> bool:
        """Whether some measure needs the face analysis of the originals."""
        return any(m.needs_faces for m in self.measure_set)


def _check_setting(codec, name: str, value) -> None:
    check = getattr(codec, "check_setting", None)
    if check is not None:
        check(value)  # raises a FairbitsError naming what is missing
    elif value not in codec.settings:
        lo, hi = min(codec.settings), max(codec.settings)
        raise SpecError(f"codec {name!r}: quality {value} is outside its settings ({lo}..{hi})")


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; otherwise the named torch device (its form
    already checked by the spec), which must be present here.

    Raises:
        SpecError: a CUDA or MPS device this machine does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise SpecError(f"device: {name!r} asked for, but CUDA is not available here "
                            "(no NVIDIA driver or a CPU-only torch); use device: auto or cpu")
        if dev.index is not None and dev.index >= n:
            raise SpecError(f"device: {name!r} asked for, but this machine has {n} CUDA device(s) (0..{n - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise SpecError(f"device: {name!r} asked for, but MPS is not available here; use device: auto or cpu")
    return dev


def _codec(codecs: dict[str, Codec], c: CodecSpec) -> Codec:
    """The codec of spec entry ``c``, built once per name into ``codecs`` with the entry's
    options (a learned codec's ``padding``); entries of one name must agree on them."""
    codec = codecs.get(c.name)
    if codec is None:
        codec = get_codec(c.name)
        if c.padding is not None:
            if not hasattr(codec, "with_padding"):
                raise SpecError(f"codec {c.name!r}: `padding` applies to learned codecs only; remove it")
            codec = codec.with_padding(c.padding)
        codecs[c.name] = codec
    else:
        have = getattr(codec, "padding", None)
        if c.padding is not None and have is None:
            raise SpecError(f"codec {c.name!r}: `padding` applies to learned codecs only; remove it")
        if have is not None and (c.padding or "replicate") != have:
            raise SpecError(f"codec {c.name!r} is listed with padding {have!r} and {c.padding or 'replicate'!r}; "
                            "one audit runs a codec with one padding: give its entries the same `padding`")
    return codec


def _check_rate_grid(codec: Codec, name: str) -> None:
    """A rate search (``target_bpp``) needs settings ordered by rate that run here; for a
    learned codec they are its ``rate_settings``, each loaded now (zoo weights downloaded)."""
    grid = rate_grid(codec)
    if not grid:
        raise SpecError(f"codec {name!r}: `target_bpp` needs settings ordered by rate, and it has none "
                        "(no built-in checkpoints and no CompressAI zoo weights); run your checkpoints with "
                        "`checkpoint: [...]` instead")
    if getattr(codec, "rate_settings", None) is None:
        return
    for v in grid:
        try:
            _check_setting(codec, name, v)
        except FairbitsError as e:
            raise type(e)(f"codec {name!r}: `target_bpp` searches {', '.join(map(str, grid))}: {e}") from None


def plan_cells(spec: AuditSpec, codecs: dict[str, Codec] | None = None) -> list[Cell]:
    """The cells a spec asks for, in spec order; checks codecs, settings and modes.

    ``codecs``, when given, receives the codec instances by name (with their checked
    settings' models already loaded), for the run to reuse.
    """
    cells: list[Cell] = []
    codecs = {} if codecs is None else codecs
    for c in spec.codecs:
        if c.entry is not None:
            from fairbits.codecs.systems import register_entry_system

            register_entry_system(c.name, c.entry)  # bad entry → SpecError
        info = codec_info(c.name)  # unknown name → SpecError
        codec = _codec(codecs, c)  # cannot run here → CodecUnavailable
        learned = info.kind not in ("classical", "system")
        mode = c.mode or ("fast" if learned else "exact")
        if mode == "fast" and not hasattr(codec, "forward_batch"):
            raise SpecError(f"codec {c.name!r} has no fast mode (only learned codecs do): use mode: exact")
        if info.kind == "system" and c.target_bpp:
            raise SpecError(f"codec {c.name!r} is an image-to-image system with no bit rate: "
                            "use `quality: [...]` (its settings), not `target_bpp`")
        if c.checkpoint and not learned:
            raise SpecError(f"codec {c.name!r} takes `quality`, not `checkpoint`")
        values = [f"zoo-q{q}" if learned else q for q in c.quality or []] + list(c.checkpoint or [])
        for v in values:
            _check_setting(codec, c.name, v)
            cells.append(Cell(c.name, quality=v, mode=mode) if isinstance(v, int)
                         else Cell(c.name, checkpoint=v, mode=mode))
        if c.target_bpp:
            _check_rate_grid(codec, c.name)
        cells += [Cell(c.name, target_bpp=float(t), mode="exact") for t in c.target_bpp or []]
    ids = [c.id for c in cells]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise SpecError(f"cells listed twice: {', '.join(dupes)}")
    return cells


REALISM = "realism"  # the distribution measure: Fréchet distance and KID per group


def plan_realism(spec: AuditSpec) -> str | None:
    """The realism feature extractor's name when ``realism`` is among the measures."""
    if REALISM not in spec.measures:
        return None
    from fairbits.measures.features import get_extractor

    get_extractor(spec.realism_features)  # unknown or unavailable here → FairbitsError
    return spec.realism_features


def plan_measures(spec: AuditSpec) -> list[Measure]:
    """Per-image measures to compute (``bpp`` is always recorded and needs no entry).

    Raises SpecError for an unknown measure or a bad measure option (e.g. a missing
    phenotype classifier file).
    """
    names = [m for m in dict.fromkeys(spec.measures) if m not in ("bpp", REALISM)]
    return [resolve_measure(m, spec) for m in names]


def _check_groups(spec: AuditSpec, manifest: pd.DataFrame) -> pd.DataFrame:
    label_columns = [c for c in manifest.columns if c not in ("image_id", "path", "checksum")]
    for col in spec.group_columns:
        if col not in manifest.columns:
            raise SpecError(f"group column {col!r} is not in the dataset; its columns are: "
                            f"{', '.join(label_columns) or '(none)'}")
        if manifest[col].notna().sum() == 0:
            raise SpecError(f"group column {col!r} has no values: every image's {col} is empty")
    for col, wanted in spec.group_values.items():
        present = set(manifest[col].dropna().astype(str))
        empty = [g for g in wanted if g not in present]
        if empty:
            raise SpecError(f"group(s) {', '.join(map(repr, empty))} of column {col!r} have no images; "
                            f"values present: {', '.join(sorted(present))}")
        manifest = manifest[manifest[col].astype(str).isin(wanted)]
    return manifest.reset_index(drop=True)


def plan_audit(spec: AuditSpec) -> AuditPlan:
    """Validate everything and build the manifest; raises a FairbitsError on bad config."""
    device = resolve_device(spec.device)
    codecs: dict[str, Codec] = {}
    cells = plan_cells(spec, codecs)
    measure_set = plan_measures(spec)
    realism = plan_realism(spec)
    ds = spec.dataset
    if not ds.path.exists():
        raise SpecError(f"dataset path not found: {ds.path} (relative paths are read from the spec's folder)")
    manifest = build_manifest(ds.reader, ds.path, options=ds.reader_options, split=ds.split,
                              limit_per_group=ds.limit_per_group, balance_by=ds.balance_by,
                              group_columns=spec.group_columns, seed=spec.seed)
    manifest = _check_groups(spec, manifest)
    for col in spec.group_columns:
        manifest[col] = manifest[col].astype("string")
    return AuditPlan(spec, cells, manifest, [m.name for m in measure_set], realism, measure_set, device, codecs)
