"""Learned-codec checkpoint files: fairbits checkpoints, CompressAI state dicts, the zoo.

* :func:`save_checkpoint` / :func:`load_checkpoint`: ``{"format": FORMAT, "arch", "N", "M",
  "state_dict", "meta"}`` (fp16 weights allowed, entropy-model tables float32); a CompressAI
  state dict loads too, widths read from the tensor shapes. Always ``weights_only=True``.
* built-in checkpoints shipped under ``src/fairbits/weights/<arch>/<key>.pt`` (a ``<key>.json``
  beside it gives the measured ``bpp`` that orders them);
* CompressAI's zoo weights (``zoo-qK``): from the torch hub cache, downloaded there on
  first use (:func:`fetch_zoo_weights`, hash-checked, never with ``FAIRBITS_OFFLINE=1``;
  see :mod:`fairbits.download`). :data:`ZOO_URL_OVERRIDES` replaces CompressAI's URL table
  per architecture (a mirror, or a local server in tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from torch import nn

from fairbits.codecs.architectures import architecture, build_model
from fairbits.download import fetch, file_name, hub_checkpoints, offline
from fairbits.errors import CodecUnavailable, SpecError

FORMAT = "fairbits-codec/1"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
ZOO_PREFIX = "zoo-q"
# {architecture: {quality: url}}: used instead of CompressAI's table for these architectures
ZOO_URL_OVERRIDES: dict[str, dict[int, str]] = {}


# ---------------------------------------------------------------- checkpoints

def _entropy_key(key: str, model: nn.Module) -> bool:
    """True for state-dict entries of entropy models (kept float32: they define the CDFs)."""
    prefixes = [n + "." for n, m in model.named_modules()
                if isinstance(m, (EntropyBottleneck, GaussianConditional))]
    return any(key.startswith(p) for p in prefixes)


def save_checkpoint(model: nn.Module, arch: str, path: str | Path, meta: dict | None = None,
                    fp16: bool = True) -> Path:
    """Write ``model`` as a fairbits checkpoint.

    Calls ``model.update(force=True)`` first so the integer CDF tables are stored (they
    depend on the device that computed them, so they are stored rather than recomputed:
    a bitstream decodes on any machine). With ``fp16``, floating tensors are stored as
    float16 except those of the entropy models (``EntropyBottleneck``/``GaussianConditional``),
    which stay float32 so the stored CDFs match their parameters exactly. A
    ``GaussianConditional``'s CDF table is stored packed (:func:`pack_cdf`: its rows
    without their zero padding, about a seventh of the table for a small model).
    ``meta`` must hold only plain values (str, int, float, bool, lists, dicts): it is read
    back with ``weights_only=True``.

    File content: ``{"format": "fairbits-codec/1", "arch", "N", "M", "state_dict", "meta"}``.
    """
    architecture(arch)  # unknown name -> SpecError
    model.update(force=True)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if fp16 and v.is_floating_point() and not _entropy_key(k, model):
            v = v.half()
        state[k] = v.clone()
    for name in _gaussian_conditionals(model):
        key = f"{name}._quantized_cdf"
        state[key] = pack_cdf(state[key], state[f"{name}._cdf_length"])
    N = int(model.N)
    obj = {"format": FORMAT, "arch": arch, "N": N, "M": int(getattr(model, "M", N)),
           "state_dict": state, "meta": dict(meta or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def _gaussian_conditionals(model: nn.Module) -> list[str]:
    """State-dict prefixes of the model's ``GaussianConditional`` modules."""
    return [n for n, m in model.named_modules() if isinstance(m, GaussianConditional)]


def pack_cdf(cdf: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """CDF table ``(R, C)`` int32 whose row ``i`` is zero past ``lengths[i]`` → its rows'
    first ``lengths[i]`` values concatenated, ``(sum(lengths),)`` int32."""
    return torch.cat([cdf[i, : int(n)] for i, n in enumerate(lengths)]) if len(lengths) else cdf.reshape(-1)


def unpack_cdf(packed: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_cdf`: ``(R, max(lengths))`` int32, rows padded with zeros."""
    if int(lengths.sum()) != packed.numel():
        raise SpecError(f"packed CDF table holds {packed.numel()} values, its lengths say {int(lengths.sum())}")
    out = torch.zeros((len(lengths), int(lengths.max()) if len(lengths) else 0), dtype=packed.dtype)
    start = 0
    for i, n in enumerate(lengths.tolist()):
        out[i, :n] = packed[start:start + n]
        start += n
    return out


def _model_class(arch: str) -> type:
    return type(build_model(arch, 16, 16))


def _needs_update(model: nn.Module) -> bool:
    for m in model.modules():
        if isinstance(m, (EntropyBottleneck, GaussianConditional)) and m._quantized_cdf.numel() == 0:
            return True
        if isinstance(m, GaussianConditional) and m.scale_table.numel() == 0:
            return True
    return False


MAX_WIDTH = 1024  # channel widths a checkpoint may ask for (CompressAI's largest models use 320)


def load_checkpoint(path: str | Path, arch: str | None = None) -> tuple[nn.Module, dict]:
    """Load a fairbits checkpoint or a CompressAI state dict → ``(model in eval mode, meta)``.

    Floating tensors are cast to float32; integer buffers (CDF tables) keep their type.
    ``arch`` is required for a CompressAI state dict (it does not name its architecture)
    and, if given, must match a fairbits checkpoint's. CDF tables are computed
    (``update(force=True)``) only when the file lacks them.

    Raises:
        SpecError: missing file, wrong architecture, or not a checkpoint.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise SpecError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for disallowed objects, or a corrupt file
        raise SpecError(f"cannot read checkpoint {path} (only tensors and plain values are "
                        f"accepted): {e}") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if arch is not None and obj["arch"] != arch:
            raise SpecError(f"checkpoint {path} is for {obj['arch']!r}, not {arch!r}")
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in obj["state_dict"].items()}
        widths = obj.get("N"), obj.get("M")
        if not all(isinstance(w, int) and 1 <= w <= MAX_WIDTH for w in widths):
            raise SpecError(f"checkpoint {path} gives channel widths N, M = {widths}; fairbits builds "
                            f"models only with whole widths from 1 to {MAX_WIDTH}")
        model = build_model(obj["arch"], *widths)
        for name in _gaussian_conditionals(model):
            key = f"{name}._quantized_cdf"
            if key in state and state[key].dim() == 1 and state[key].numel():
                state[key] = unpack_cdf(state[key], state[f"{name}._cdf_length"])
        model.load_state_dict(state)
        meta = dict(obj.get("meta") or {})
        meta.setdefault("arch", obj["arch"])
    else:
        if arch is None:
            raise SpecError(f"{path} is not a fairbits checkpoint; a CompressAI state dict needs "
                            "its architecture name")
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise SpecError(f"{path} is neither a fairbits checkpoint nor a state dict of tensors")
        from compressai.zoo.pretrained import load_pretrained  # renames old/DataParallel keys

        state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_pretrained(obj).items()}
        cls = _model_class(arch)
        if not hasattr(cls, "from_state_dict"):
            raise SpecError(f"cannot infer the widths of a {arch} state dict")
        try:
            model = cls.from_state_dict(state)
        except (KeyError, RuntimeError) as e:
            raise SpecError(f"{path} is not a {arch} state dict: {e}") from None
        meta = {"arch": arch, "format": "compressai"}
    if _needs_update(model):
        model.update(force=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, meta


# ---------------------------------------------------------------- settings

def _zoo_urls(arch: str) -> dict[int, str]:
    """CompressAI's MSE weight URLs for ``arch`` by quality (empty if it has none).

    :data:`ZOO_URL_OVERRIDES` ``[arch]``, when present, is used instead.
    """
    if arch in ZOO_URL_OVERRIDES:
        return {int(q): str(u) for q, u in ZOO_URL_OVERRIDES[arch].items()}
    zoo_name = architecture(arch).zoo_name
    if zoo_name is None:
        return {}
    from compressai.zoo.image import model_urls

    return dict(model_urls.get(zoo_name, {}).get("mse", {}))


def zoo_file(arch: str, quality: int) -> tuple[Path, str]:
    """``(path in the torch hub cache, URL)`` of a zoo checkpoint (the file keeps the URL's name)."""
    url = _zoo_urls(arch)[quality]
    return hub_checkpoints() / file_name(url), url


def fetch_zoo_weights(arch: str, quality: int, progress: bool = True) -> Path:
    """The cached zoo checkpoint of ``arch`` at ``quality``, downloaded first if missing.

    Raises:
        CodecUnavailable: not cached and downloads are off (``FAIRBITS_OFFLINE=1``) or fail
            (unreachable, time-out, hash mismatch); the message names the URL and the path.
    """
    path, url = zoo_file(arch, quality)
    return fetch(url, path, what=f"{arch} {ZOO_PREFIX}{quality} (CompressAI pretrained weights)",
                 progress=progress, error=CodecUnavailable,
                 hint="or pass the downloaded file's path as the setting")


def read_card(path: str | Path) -> dict:
    """The model card (``<checkpoint>.json`` beside it) as a dict; ``{}`` when missing or unreadable."""
    side = Path(path).with_suffix(".json")
    try:
        card = json.loads(side.read_text()) if side.is_file() else {}
    except (ValueError, OSError):
        return {}
    return card if isinstance(card, dict) else {}


def card_variant(card: dict) -> str:
    """The training variant a card names (``natural`` when it names none: the plain recipe)."""
    return str(card.get("variant") or "natural")


def builtin_checkpoints(arch: str, weights_dir: str | Path | None = None,
                        ) -> list[tuple[str, Path, float | None]]:
    """``(key, path, bpp or None)`` of the shipped checkpoints, ascending bpp (unknown last)."""
    d = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR / arch
    found = []
    for p in sorted(d.glob("*.pt")) if d.is_dir() else []:
        try:
            value = read_card(p).get("bpp")
            bpp = float(value) if value is not None else None
        except (ValueError, TypeError):
            bpp = None
        found.append((p.stem, p, bpp))
    return sorted(found, key=lambda t: (t[2] is None, t[2] or 0.0, t[0]))


def learned_settings_summary(name: str) -> str:
    """Which settings of codec ``name`` exist here, e.g. ``"built-in: 2, zoo: none of 8 cached"``."""
    builtin = builtin_checkpoints(name)
    urls = _zoo_urls(name)
    cached = [q for q in urls if zoo_file(name, q)[0].is_file()]
    later = " (downloads off)" if offline() else \
        f" ({'the rest ' if cached else ''}downloaded on first use)"
    if not urls:
        zoo = "zoo: no CompressAI weights"
    else:
        zoo = f"zoo: {len(cached) or 'none'} of {len(urls)} cached" + (later if len(cached) < len(urls) else "")
    return f"built-in: {len(builtin)}, {zoo}; any checkpoint path"
