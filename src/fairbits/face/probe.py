"""Counterfactual skin-tone probe: one real face photo recoloured to a series of ITA° values.

:func:`skin_tone_series` reads a photo, finds the face once with
:class:`~fairbits.face.analysis.FaceAnalyzer` and recolours the face so that the tone
measured on its ``skin`` mask takes each target ITA°, writing PNG files plus a
``labels.csv`` an audit reads with ``dataset: {reader: csv, path: DIR/labels.csv,
path_column: path}`` and ``groups: [tone]`` (a mapping ``groups: {tone: [ITA+55, ...]}``
orders the groups light → dark in the report). Only the colour of the face oval differs
between the images of a series, so a codec's per-group gap measures the effect of skin
tone alone.

Method (:func:`recolour_skin`), in CIELAB (D65):

* **Target colour** (:func:`target_lab`). ITA° is the polar angle of the point
  ``(b*, L* − 50)``. The target keeps the measured skin's polar radius
  ``r = hypot(L* − 50, b*)`` and sets the angle to the target ITA°:
  ``L* = 50 + r·sin(ITA)``, ``b* = r·cos(ITA)``. This arc bends the way measured skin
  colours do: b* is largest at mid tones and falls toward very light and very dark
  skin, instead of a pure L* shift that leaves very dark skin as saturated as mid tones.
  a* is scaled with b* so the hue angle ``atan2(b*, a*)`` is kept. Above about ITA 65
  any arc needs a small b*, so those targets look pale and greyish: that is what such
  an ITA means, not a flaw of the arc.
* **Texture kept**: one constant offset ``(ΔL*, Δa*, Δb*)``, times a per-pixel weight,
  is added to every recoloured pixel, so at full weight each pixel's deviation from the
  mean (pores, shading, highlights) is unchanged except where the sRGB gamut clips it.
* **Which pixels** (:func:`recolour_weights`). The analyser's ``skin`` mask leaves gaps
  (dilated rings around eyes, brows and lips, nostril discs) so that it *measures*
  clean skin; recolouring only it leaves light halos around every feature. So the
  weight is 1 on the whole face oval, eyebrows and nostrils included, 0 on the
  ``eyes`` and on the ``lips`` with the mouth inside them, and it falls linearly to 0
  across a band of :data:`MARGIN_FRAC` × the face width *outside* the oval, which
  softens the seam at jaw, cheeks and hairline. Every pixel of weight 0 is copied from
  the input, so it is bit-identical. Neck, ears and other skin beyond that band keep
  their original tone (a colour-based growth into them was tried and leaked into
  blond hair and pale backgrounds); on far targets a seam below the jaw remains.
* **Aim at the measured quantity**: the tone an audit measures is
  :func:`fairbits.face.tone.skin_tone` (mean CIELAB over the ``skin`` mask, ITA of the
  mean) on the 8-bit image. Each fixed-point step renders the offset, rounds to uint8,
  measures that mean and adds ``(target − measured) / mean(weight over skin)`` to the
  offset, which corrects gamut clipping and rounding. Up to :data:`MAX_STEPS` steps; a
  result further than :data:`ITA_TOLERANCE` from its target raises
  :class:`~fairbits.errors.FairbitsError`.

A photo without colour (greyscale, or a colour file holding grey pixels) has no skin
tone: its skin's a* and b* are 0, so its ITA° is ±90° whatever the skin, and no recolouring
can keep its texture and hue. :func:`check_colour` refuses it with a message saying so
(:data:`GREY_CHROMA`), before any target is tried.

The face is found once, on the input; an audit re-analysing each written image gets a
slightly different ``skin`` mask, so its ITA can differ from the target by about a
degree (see ``tests/test_probe.py``).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from fairbits.colour import ita_degrees, lab_to_srgb, srgb_to_lab
from fairbits.data.images import DEFAULT_MAX_PIXELS, load_rgb
from fairbits.errors import FairbitsError, ImageError
from fairbits.face.tone import skin_tone
from fairbits.fileio import atomic_write, atomic_write_text

ITA_RANGE = (-60.0, 80.0)     # accepted target ITA° (inclusive), about Fitzpatrick VI..I
ITA_TOLERANCE = 0.5           # largest |achieved − target| ITA° accepted, in degrees
MAX_STEPS = 8                 # fixed-point correction steps per target
MARGIN_FRAC = 0.05            # fade band outside the face oval, × face width (pixels)
MIN_SKIN_PIXELS = 50          # fewer skin pixels than this: no usable tone
GREY_CHROMA = 2.0             # skin chroma (below) under this: the photo has no colour
GREY_QUANTILE = 0.99          # skin chroma = this quantile of hypot(a*, b*) over skin pixels (ignores strays)
DEFAULT_ITAS = (55.0, 40.0, 25.0, 10.0, -10.0, -30.0)
ORIGINAL_TONE = "original"    # ``tone`` label of the unrecoloured image
LABEL_COLUMNS = ("image_id", "path", "source", "tone", "ita_target", "ita_achieved")


@dataclass
class Recoloured:
    """Result of :func:`recolour_skin`.

    ``image``: uint8 (H, W, 3); ``ita``: measured skin ITA° (degrees) of ``image`` over
    the skin mask; ``offset``: the CIELAB offset (ΔL*, Δa*, Δb*) applied at weight 1;
    ``steps``: fixed-point steps used.
    """

    image: np.ndarray
    ita: float
    offset: tuple[float, float, float]
    steps: int


def tone_label(ita: float) -> str:
    """Group label of a target ITA°: ``55 → "ITA+55"``, ``-10 → "ITA-10"``, ``12.5 → "ITA+12.5"``."""
    return f"ITA{float(ita):+g}"


def parse_itas(text: str) -> list[float]:
    """Parse ``"55,40,-10"`` into target ITA° values, sorted light → dark (descending).

    Raises:
        FairbitsError: an entry is not a number, is outside :data:`ITA_RANGE`, or repeats.
    """
    values = []
    for part in str(text).split(","):
        try:
            values.append(float(part.strip()))
        except ValueError:
            raise FairbitsError(f"--ita: {part.strip()!r} is not a number "
                                "(expected comma-separated degrees, e.g. 55,40,25,10,-10,-30)") from None
    return check_itas(values)


def check_itas(values) -> list[float]:
    """Validate target ITA° values and sort them light → dark; see :func:`parse_itas`."""
    lo, hi = ITA_RANGE
    values = [float(v) for v in values]
    if not values:
        raise FairbitsError("no target ITA° given")
    bad = [v for v in values if not (lo <= v <= hi)]
    if bad:
        raise FairbitsError(f"target ITA° {bad} outside the accepted range {lo:g}..{hi:g} degrees")
    labels = [tone_label(v) for v in values]
    if len(set(labels)) != len(labels):
        raise FairbitsError(f"target ITA° values repeat: {values}")
    return sorted(values, reverse=True)


def measure_ita(image: np.ndarray, skin: np.ndarray) -> float:
    """Skin ITA° (degrees) of a uint8 (H, W, 3) image over a bool (H, W) mask, via ``skin_tone``."""
    rgb = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].double() / 255.0
    return float(skin_tone(rgb, torch.from_numpy(np.array(skin, dtype=bool))[None])["ita"][0])


def target_lab(lab_mean: np.ndarray, ita: float) -> np.ndarray:
    """Target mean CIELAB (3,) at ``ita`` degrees on the arc through ``lab_mean`` (3,).

    Keeps ``hypot(L* − 50, b*)`` and the hue angle ``atan2(b*, a*)``; see the module docstring.
    """
    L, a, b = (float(x) for x in lab_mean)
    r = math.hypot(L - 50.0, b)
    t = math.radians(ita)
    b_t = r * math.cos(t)
    a_t = a * b_t / b if abs(b) > 1e-6 else a
    return np.array([50.0 + r * math.sin(t), a_t, b_t])


def recolour_weights(masks: dict[str, np.ndarray]) -> np.ndarray:
    """Per-pixel weight of the colour offset, float (H, W) in [0, 1], from analyser masks.

    ``masks``: bool (H, W) ``face``, ``eyes`` and ``lips`` of a
    :class:`~fairbits.face.analysis.FaceAnalysis`. 1 on the face oval; ``1 − d / margin``
    at distance ``d`` pixels outside it, ``margin = max(1, MARGIN_FRAC × face width)``;
    0 on ``eyes`` and on ``lips`` with the mouth they enclose.
    """
    face = np.asarray(masks["face"], dtype=bool)
    cols = np.flatnonzero(face.any(axis=0))
    margin = max(1.0, MARGIN_FRAC * float(cols[-1] - cols[0] + 1)) if cols.size else 1.0
    w = np.clip(1.0 - ndimage.distance_transform_edt(~face) / margin, 0.0, 1.0)
    w[np.asarray(masks["eyes"], dtype=bool) | ndimage.binary_fill_holes(masks["lips"])] = 0.0
    return w


def skin_chroma(image: np.ndarray, skin: np.ndarray) -> float:
    """The :data:`GREY_QUANTILE` quantile of CIELAB chroma ``hypot(a*, b*)`` over ``skin``.

    ``image``: uint8 (H, W, 3) sRGB; ``skin``: bool (H, W). Skin photographed in colour
    has chroma of about 10-30; a grey pixel (R = G = B) has 0.
    """
    pixels = np.asarray(image, dtype=np.uint8)[np.asarray(skin, dtype=bool)]
    lab = srgb_to_lab(torch.from_numpy(pixels).double() / 255.0).numpy()
    return float(np.quantile(np.hypot(lab[:, 1], lab[:, 2]), GREY_QUANTILE)) if len(lab) else 0.0


def check_colour(image: np.ndarray, skin: np.ndarray, name: str = "the image") -> None:
    """Raise if the skin in ``image`` has no colour (a greyscale photo).

    ``image``: uint8 (H, W, 3); ``skin``: bool (H, W); ``name`` labels the message.

    Raises:
        FairbitsError: :func:`skin_chroma` is below :data:`GREY_CHROMA`: the ITA° of grey
            skin is ±90° whatever its shade, so neither it nor a recolouring means anything.
    """
    chroma = skin_chroma(image, skin)
    if chroma < GREY_CHROMA:
        raise FairbitsError(f"{name}: the photo has no colour (greyscale: the skin's CIELAB chroma is "
                            f"{chroma:.2f}, below {GREY_CHROMA:g}), so it has no skin tone to measure or change; "
                            "use a colour photo")


def _render(lab: torch.Tensor, w: torch.Tensor, offset: torch.Tensor) -> np.ndarray:
    """Pixels (K, 3) CIELAB + ``w`` (K,) × ``offset`` (3,) → uint8 sRGB (K, 3)."""
    rgb = lab_to_srgb(lab + w[:, None] * offset)
    return np.rint(rgb.numpy() * 255.0).clip(0, 255).astype(np.uint8)


def _mean_lab(rgb8: np.ndarray) -> torch.Tensor:
    """Mean CIELAB (3,) of uint8 sRGB pixels (K, 3), as ``skin_tone`` computes it."""
    return srgb_to_lab(torch.from_numpy(rgb8).double() / 255.0).mean(dim=0)


def _ita(lab_mean: torch.Tensor) -> float:
    """ITA° (degrees) of a mean CIELAB (3,)."""
    return float(ita_degrees(lab_mean[0], lab_mean[2]))


def recolour_skin(image: np.ndarray, skin: np.ndarray, ita: float,
                  weights: np.ndarray | None = None) -> Recoloured:
    """Recolour a uint8 (H, W, 3) image so the ITA° measured over ``skin`` is ``ita`` degrees.

    ``skin``: bool (H, W) mask the tone is measured on. ``weights``: float (H, W) in
    [0, 1], the share of the offset each pixel gets (e.g. :func:`recolour_weights`);
    default ``skin`` itself. Pixels of weight 0 outside ``skin`` are returned
    bit-identical. Method in the module docstring.

    Raises:
        FairbitsError: ``ita`` outside :data:`ITA_RANGE`, a mask with fewer than
            :data:`MIN_SKIN_PIXELS` pixels, skin without colour (:func:`check_colour`), or
            a target not reached within :data:`ITA_TOLERANCE`.
    """
    check_itas([ita])
    skin = np.asarray(skin, dtype=bool)
    if int(skin.sum()) < MIN_SKIN_PIXELS:
        raise FairbitsError(f"skin mask has {int(skin.sum())} pixels; need at least {MIN_SKIN_PIXELS}")
    check_colour(image, skin)
    weights = skin.astype(np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
    region = (weights > 0) | skin
    on_skin = torch.from_numpy(skin[region])
    lab = srgb_to_lab(torch.from_numpy(image[region]).double() / 255.0)
    w = torch.from_numpy(weights[region])
    gain = float(w[on_skin].mean())
    if gain <= 0:
        raise FairbitsError("the recolour weights are 0 on the whole skin mask")
    target = torch.from_numpy(target_lab(lab[on_skin].mean(dim=0).numpy(), ita))
    offset = (target - lab[on_skin].mean(dim=0)) / gain
    for step in range(1, MAX_STEPS + 1):
        rgb8 = _render(lab, w, offset)
        mean = _mean_lab(rgb8[on_skin.numpy()])
        achieved = _ita(mean)
        if abs(achieved - ita) <= ITA_TOLERANCE / 5:
            break
        offset = offset + (target - mean) / gain
    if abs(achieved - ita) > ITA_TOLERANCE:
        raise FairbitsError(f"could not reach ITA {ita:g}° (got {achieved:.2f}° after {step} steps): "
                            "the sRGB gamut clips this skin too much")
    out = np.array(image, dtype=np.uint8)
    out[region] = rgb8
    return Recoloured(out, achieved, tuple(float(x) for x in offset), step)


def _read_image(path: Path, max_pixels: int) -> np.ndarray:
    """``load_rgb`` with its :class:`ImageError` turned into a :class:`FairbitsError`."""
    try:
        return load_rgb(path, max_pixels)
    except ImageError as e:
        raise FairbitsError(f"cannot read image {path}: {e}") from None


def face_masks(image: np.ndarray, name: str, analyzer=None) -> dict[str, np.ndarray]:
    """Analyser masks, bool (H, W) by name, of the face in a uint8 (H, W, 3) image.

    ``name`` labels error messages; ``analyzer``: an open ``FaceAnalyzer`` to reuse
    (default: one is opened and closed here).

    Raises:
        FairbitsError: no face found, or fewer than :data:`MIN_SKIN_PIXELS` skin pixels.
    """
    from fairbits.face.analysis import FaceAnalyzer

    if analyzer is None:
        with FaceAnalyzer() as fa:
            return face_masks(image, name, fa)
    res = analyzer.analyze(image)
    if not res.face_found:
        raise FairbitsError(f"{name}: no face found")
    n_skin = int(res.masks["skin"].sum())
    if n_skin < MIN_SKIN_PIXELS:
        raise FairbitsError(f"{name}: face found but only {n_skin} skin pixels "
                            f"(need {MIN_SKIN_PIXELS}); use a larger or clearer face")
    return res.masks


def _write_png(path: Path, image: np.ndarray) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def _labels_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(LABEL_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def skin_tone_series(image_path: str | Path, itas, out_dir: str | Path, *, analyzer=None,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> Path:
    """Write the original and one recoloured copy per target ITA° to ``out_dir``.

    ``itas``: target ITA° values (degrees, within :data:`ITA_RANGE`, any order). Files:
    ``<stem>_original.png``, ``<stem>_ita<±value>.png`` and ``labels.csv`` with columns
    :data:`LABEL_COLUMNS`: ``path`` relative to the CSV; rows ``original`` first, then
    ``"ITA+55"``… light → dark in ``tone``; ``ita_target`` the target (for the original:
    its measured ITA°); ``ita_achieved`` the ITA° measured with the input's skin mask.
    ``analyzer``: an open ``FaceAnalyzer`` to reuse. Returns the ``labels.csv`` path.

    Raises:
        FairbitsError: unreadable image, no face, a photo without colour
            (:func:`check_colour`), bad targets, or a target not reached.
    """
    image_path, out_dir = Path(image_path), Path(out_dir)
    targets = check_itas(itas)
    image = _read_image(image_path, max_pixels)
    masks = face_masks(image, str(image_path), analyzer)
    check_colour(image, masks["skin"], str(image_path))
    skin, weights = masks["skin"], recolour_weights(masks)
    stem, src = image_path.stem, image_path.name
    ita0 = round(measure_ita(image, skin), 4)
    files = {f"{stem}_original.png": image}
    rows = [dict(image_id=f"{stem}_original", path=f"{stem}_original.png", source=src,
                 tone=ORIGINAL_TONE, ita_target=ita0, ita_achieved=ita0)]
    for t in targets:  # all targets first: a failure leaves out_dir untouched
        res = recolour_skin(image, skin, t, weights)
        name = f"{stem}_{tone_label(t).lower()}"
        files[f"{name}.png"] = res.image
        rows.append(dict(image_id=name, path=f"{name}.png", source=src, tone=tone_label(t),
                         ita_target=t, ita_achieved=round(res.ita, 4)))
    try:
        for rel, img in files.items():
            _write_png(out_dir / rel, img)
        return atomic_write_text(out_dir / "labels.csv", _labels_text(rows))
    except OSError as e:
        raise FairbitsError(f"cannot write the series to {out_dir}: {e}") from None


__all__ = ["ITA_RANGE", "ITA_TOLERANCE", "DEFAULT_ITAS", "LABEL_COLUMNS", "ORIGINAL_TONE", "GREY_CHROMA",
           "Recoloured", "tone_label", "parse_itas", "check_itas", "measure_ita", "target_lab",
           "skin_chroma", "check_colour",
           "recolour_weights", "recolour_skin", "face_masks", "skin_tone_series"]
