"""Attribute scorers: what FairGen rebalances, measured on generated face images.

A *scorer* is a callable ``images → scores`` with a ``name``: ``images`` is a float
tensor (or array) ``(N, 3, H, W)`` of sRGB values in [0, 1], ``scores`` a float64 array
``(N,)`` whose sign is the label (``> 0``: attribute present, 0 is the decision
threshold) and whose magnitude is a confidence. NaN means "could not be scored" (no face
found where a face is required). Any callable with a ``name`` works;
the scorers below also have ``score_details(images) → (scores, details)``, where
``details`` maps a key to an ``(N,)`` array kept beside the scores (for example which
skin region was measured), and ``spec``, the :func:`get_scorer` string that rebuilds
them.

Built-in scorers (:func:`get_scorer` strings in brackets):

* :func:`ita_scorer` (``ita``, ``ita:20``): skin ITA° minus a threshold (default 28°,
  the intermediate/tan boundary), positive = lighter skin. Name ``light_skin``.
* :func:`phenotype_scorer` (``phenotype:MODEL.npz:CLASS``): the log-odds of one class of
  a :class:`~fairbits.face.phenotype.PhenotypeModel`. Name: the class.
* :func:`gender_scorer` (``gender``): the logit of P(male) of
  :class:`~fairbits.face.attributes.AgeGender`. Name ``male``.

Any spec can be given a column name with a ``NAME=`` prefix (``dark_hair=phenotype:hair.npz:black``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fairbits.data.images import to_uint8
from fairbits.errors import SpecError

DETECT_SIZE = 256        # shorter side (pixels) images are upsampled to before face detection
MIN_SKIN_PIXELS = 50     # a face-mesh skin mask smaller than this falls back to the central region
# Fallback skin region when no face is found, as fractions of the image (top, bottom, left,
# right): a band across cheeks and nose of a centred frontal portrait (eyes above, mouth
# below), the framing of fairbits' phantom faces and of aligned face crops.
CENTRAL_REGION = (0.45, 0.55, 0.32, 0.68)
LOGIT_CLIP = 1e-6        # probabilities are clipped to [c, 1 - c] before a logit
BATCH = 64
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Column names the exported label files use themselves; a scorer may not take them.
RESERVED_NAMES = ("image_id", "path", "checksum", "split", "subgroup", "sampled_subgroup", "pair_id", "side",
                  "distance")
SPEC_FORMS = "ita, ita:<threshold degrees>, phenotype:<model.npz>:<class>, gender (optionally NAME=<spec>)"


# --------------------------------------------------------------------------- helpers

def as_images(images) -> torch.Tensor:
    """``images`` as a float32 CPU tensor ``(N, 3, H, W)`` in [0, 1].

    Accepts a tensor or array ``(N, 3, H, W)`` (float in [0, 1]) or a uint8 array
    ``(N, H, W, 3)``. Values outside [0, 1] are clipped.
    """
    if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3:
        from fairbits.data.images import to_tensor

        return to_tensor(images)
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) in [0, 1] (or uint8 (N, H, W, 3)), got {tuple(x.shape)}")
    return x.detach().to("cpu", torch.float32).clamp(0.0, 1.0)


def check_name(name: str) -> str:
    """A scorer name usable as a CSV column; raises :class:`SpecError` otherwise."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise SpecError(f"scorer name {name!r} must start with a letter and hold only letters, digits and '_'")
    if name in RESERVED_NAMES:
        raise SpecError(f"scorer name {name!r} is reserved for a column of the label files; choose another")
    return name


def check_scorers(scorers: Sequence[Callable]) -> list[str]:
    """Names of ``scorers``, checked: each callable, named, valid and unique."""
    if not scorers:
        raise SpecError("at least one scorer is needed")
    names = []
    for s in scorers:
        if not callable(s) or not hasattr(s, "name"):
            raise SpecError(f"a scorer must be a callable with a `name`, got {type(s).__name__}")
        names.append(check_name(s.name))
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecError(f"scorer names must be unique; repeated: {dup} (rename with NAME=<spec>)")
    return names


def _upsample(x: torch.Tensor, size: int = DETECT_SIZE) -> torch.Tensor:
    """Bilinear upsampling of ``(N, 3, H, W)`` so the shorter side is ``size`` (never shrinks)."""
    h, w = x.shape[-2:]
    if min(h, w) >= size:
        return x
    scale = size / min(h, w)
    out = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", align_corners=False)
    return out.clamp(0.0, 1.0)


def _uint8_hwc(x: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` in [0, 1] → contiguous uint8 ``(H, W, 3)``."""
    return np.ascontiguousarray(to_uint8(x[None])[0])


def central_mask(h: int, w: int) -> torch.Tensor:
    """Bool ``(h, w)`` mask of :data:`CENTRAL_REGION` (at least one pixel each way)."""
    top, bottom, left, right = CENTRAL_REGION
    r0, c0 = int(np.floor(top * h)), int(np.floor(left * w))
    r1, c1 = max(int(np.ceil(bottom * h)), r0 + 1), max(int(np.ceil(right * w)), c0 + 1)
    m = torch.zeros(h, w, dtype=torch.bool)
    m[r0:r1, c0:c1] = True
    return m


class Scorer:
    """Base class of the built-in scorers: ``__call__`` returns the scores of :meth:`score_details`."""

    name: str = ""
    spec: str = ""

    def score_details(self, images) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, images) -> np.ndarray:
        """Scores ``(N,)`` float64 of ``images`` ``(N, 3, H, W)`` in [0, 1]."""
        return self.score_details(images)[0]

    def close(self) -> None:
        """Release models held by the scorer (safe to call twice)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, spec={self.spec!r})"


class _FaceFinder:
    """A lazily created :class:`~fairbits.face.analysis.FaceAnalyzer` run on upsampled images."""

    def __init__(self, detect_size: int = DETECT_SIZE):
        self.detect_size = int(detect_size)
        self._analyzer = None

    def analyse(self, x: torch.Tensor):
        """``(3, H, W)`` in [0, 1] → ``(upsampled (3, H', W'), FaceAnalysis)``."""
        if self._analyzer is None:
            from fairbits.face.analysis import FaceAnalyzer

            self._analyzer = FaceAnalyzer()
        up = _upsample(x[None], self.detect_size)[0]
        return up, self._analyzer.analyze(_uint8_hwc(up))

    def close(self) -> None:
        if self._analyzer is not None:
            self._analyzer.close()
            self._analyzer = None


# --------------------------------------------------------------------------- ITA

class ItaScorer(Scorer):
    """Skin ITA° minus ``threshold``: positive = lighter than the threshold. See :func:`ita_scorer`."""

    def __init__(self, threshold: float = 28.0, *, use_face_mesh: bool = True, name: str = "light_skin",
                 detect_size: int = DETECT_SIZE):
        if not np.isfinite(threshold):
            raise SpecError(f"ITA threshold must be a finite number of degrees, got {threshold!r}")
        self.threshold, self.use_face_mesh = float(threshold), bool(use_face_mesh)
        self.name = check_name(name)
        self.spec = f"{name}=ita:{self.threshold:g}"
        self._faces = _FaceFinder(detect_size)

    def score_details(self, images) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(scores, {"ita": ITA° (N,), "region": "face_mesh" | "central" (N,)})``."""
        from fairbits.face.tone import skin_tone

        x = as_images(images)
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        ita = np.full(n, np.nan)
        region = np.full(n, "central", dtype=object)
        if self.use_face_mesh:
            for i in range(n):
                up, fa = self._faces.analyse(x[i])
                skin = fa.masks.get("skin") if fa.face_found else None
                if skin is not None and int(skin.sum()) >= MIN_SKIN_PIXELS:
                    ita[i] = float(skin_tone(up[None], torch.from_numpy(skin)[None])["ita"][0])
                    region[i] = "face_mesh"
        rest = np.flatnonzero(np.isnan(ita))
        if len(rest):
            mask = central_mask(h, w)
            r, c = np.flatnonzero(mask.any(1).numpy()), np.flatnonzero(mask.any(0).numpy())
            crop = x[:, :, r[0]:r[-1] + 1, c[0]:c[-1] + 1]
            for s in range(0, len(rest), BATCH):
                rows = torch.from_numpy(rest[s:s + BATCH])
                part = crop[rows]
                full = torch.ones(part.shape[0], part.shape[2], part.shape[3], dtype=torch.bool)
                ita[rest[s:s + BATCH]] = skin_tone(part, full)["ita"].numpy()
        return ita - self.threshold, {"ita": ita, "region": region}

    def close(self) -> None:
        self._faces.close()


def ita_scorer(threshold: float = 28.0, *, use_face_mesh: bool = True, name: str = "light_skin") -> ItaScorer:
    """Score skin lightness: ITA° of the skin minus ``threshold`` (degrees; > 0 = lighter).

    ITA° comes from :func:`fairbits.face.tone.skin_tone` (mean CIELAB over a mask, then
    ``atan2(L* − 50, b*)``). The mask is the face analyser's ``skin`` mask when a face
    is found (images whose shorter side is under :data:`DETECT_SIZE` px are upsampled
    bilinearly first, and ITA is measured on the upsampled image) and has at least
    :data:`MIN_SKIN_PIXELS` pixels; otherwise, or with ``use_face_mesh=False``, the
    rectangle :data:`CENTRAL_REGION` of the image. ``score_details`` reports which one
    was used per image (``region``: ``face_mesh`` or ``central``) and the ITA° itself.
    Default threshold 28° separates ITA categories "intermediate" and "tan".
    """
    return ItaScorer(threshold, use_face_mesh=use_face_mesh, name=name)


# --------------------------------------------------------------------------- phenotype

class PhenotypeScorer(Scorer):
    """Log-odds of one class of a phenotype classifier. See :func:`phenotype_scorer`."""

    def __init__(self, model_path: str | Path, positive_class: str, *, name: str | None = None):
        from fairbits.face.phenotype import PhenotypeModel, label_str

        self.model_path = Path(model_path).resolve()
        self.model = PhenotypeModel.load(self.model_path)
        pos = label_str(positive_class)
        if pos not in self.model.classes:
            raise SpecError(f"class {positive_class!r} is not one of the classes of {self.model_path.name} "
                            f"(target {self.model.target!r}): {self.model.classes}")
        self.positive_class, self.index = pos, self.model.classes.index(pos)
        if name is None:
            name = pos if NAME_PATTERN.match(pos) and pos not in RESERVED_NAMES else f"{self.model.target}_{pos}"
            name = re.sub(r"[^A-Za-z0-9_]", "_", name)
        self.name = check_name(name)
        self.spec = f"{self.name}=phenotype:{self.model_path}:{pos}"

    def score_details(self, images) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(log p(class) − log(1 − p(class)) (N,), {"p": p(class) (N,)})``."""
        x = as_images(images)
        out = np.empty(len(x))
        for s in range(0, len(x), BATCH):
            logp = self.model.predict_log_proba(x[s:s + BATCH])
            others = np.delete(logp, self.index, axis=1)
            out[s:s + BATCH] = logp[:, self.index] - np.logaddexp.reduce(others, axis=1)
        return out, {"p": 1.0 / (1.0 + np.exp(-out))}


def phenotype_scorer(model_path: str | Path, positive_class: str, *, name: str | None = None) -> PhenotypeScorer:
    """Score one class of a saved :class:`~fairbits.face.phenotype.PhenotypeModel`.

    ``score = log p(c) − log(1 − p(c))`` (natural log-odds, computed from the model's
    log-probabilities, ``1 − p(c)`` as the sum over the other classes), so ``> 0`` means
    ``p(c) > 1/2``. The model is loaded now: a missing file or unknown class raises
    :class:`~fairbits.errors.FairbitsError`. Default name: the class (or
    ``<target>_<class>`` when the class is not a valid column name, e.g. ``3``).
    """
    return PhenotypeScorer(model_path, positive_class, name=name)


# --------------------------------------------------------------------------- gender

class GenderScorer(Scorer):
    """Logit of P(male) from face-mesh landmarks. See :func:`gender_scorer`."""

    def __init__(self, *, name: str = "male", model_dir: str | Path | None = None,
                 detect_size: int = DETECT_SIZE):
        from fairbits.face.attributes import AgeGender

        self.model = AgeGender(model_dir)
        self.name = check_name(name)
        self.spec = f"{self.name}=gender"
        self._faces = _FaceFinder(detect_size)

    def score_details(self, images) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(logit P(male) (N,) NaN without a face, {"p_male", "region": face_mesh | none})``."""
        x = as_images(images)
        p = np.full(len(x), np.nan)
        region = np.full(len(x), "none", dtype=object)
        for i in range(len(x)):
            up, fa = self._faces.analyse(x[i])
            if fa.face_found:
                p[i] = float(self.model.predict(_uint8_hwc(up)[None], fa.landmarks[None])["gender_p_male"][0])
                region[i] = "face_mesh"
        q = np.clip(p, LOGIT_CLIP, 1.0 - LOGIT_CLIP)
        return np.log(q) - np.log1p(-q), {"p_male": p, "region": region}

    def close(self) -> None:
        self._faces.close()


def gender_scorer(*, name: str = "male", model_dir: str | Path | None = None) -> GenderScorer:
    """Score apparent gender: ``log(p / (1 − p))`` with ``p`` = P(male) (> 0 = male).

    Needs the age and gender model files (:func:`fairbits.face.attributes.find_model_dir`;
    loaded now, a missing install raises :class:`~fairbits.errors.FairbitsError` with the
    install command) and the face analyser's landmarks: images are upsampled to
    :data:`DETECT_SIZE` px for detection, and an image without a detected face scores
    NaN (``region`` ``none``). ``p`` is clipped to ``[1e-6, 1 − 1e-6]``.
    """
    return GenderScorer(name=name, model_dir=model_dir)


# --------------------------------------------------------------------------- specs

def get_scorer(spec: str) -> Scorer:
    """Build a scorer from a string: ``ita``, ``ita:20``, ``phenotype:PATH:CLASS``, ``gender``.

    A ``NAME=`` prefix sets the scorer's name (its column in label files), e.g.
    ``curly=phenotype:models/hair.npz:curly``. ``PATH`` may itself contain ``:``; the
    class is what follows the last one.

    Raises:
        SpecError: unknown kind, malformed arguments, or an invalid name.
        FairbitsError: the scorer's model cannot be loaded (missing file or install).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"empty scorer spec; use one of: {SPEC_FORMS}")
    text, name = spec.strip(), None
    head, eq, rest = text.partition("=")
    if eq and ":" not in head:
        name, text = check_name(head.strip()), rest.strip()
    kind, _, args = text.partition(":")
    kind = kind.strip().lower()
    named = {} if name is None else {"name": name}
    if kind == "ita":
        if not args:
            return ita_scorer(**named)
        try:
            threshold = float(args)
        except ValueError:
            raise SpecError(f"scorer {spec!r}: the ITA threshold must be a number of degrees, e.g. ita:20") from None
        if not np.isfinite(threshold):
            raise SpecError(f"scorer {spec!r}: the ITA threshold must be finite")
        return ita_scorer(threshold, **named)
    if kind == "phenotype":
        path, sep, cls = args.rpartition(":")
        if not sep or not path.strip() or not cls.strip():
            raise SpecError(f"scorer {spec!r}: expected phenotype:<model.npz>:<class>, "
                            "e.g. phenotype:models/hair_type.npz:curly")
        return phenotype_scorer(path.strip(), cls.strip(), name=name)
    if kind == "gender":
        if args:
            raise SpecError(f"scorer {spec!r}: `gender` takes no arguments")
        return gender_scorer(**named)
    raise SpecError(f"unknown scorer {spec!r}; use one of: {SPEC_FORMS}")


def scorer_spec(scorer) -> str | None:
    """The :func:`get_scorer` string of a built-in scorer, ``None`` for a custom callable."""
    spec = getattr(scorer, "spec", None)
    return spec if isinstance(spec, str) and spec else None


__all__ = ["CENTRAL_REGION", "DETECT_SIZE", "GenderScorer", "ItaScorer", "PhenotypeScorer", "Scorer", "as_images",
           "central_mask", "check_name", "check_scorers", "gender_scorer", "get_scorer", "ita_scorer",
           "phenotype_scorer", "scorer_spec"]
