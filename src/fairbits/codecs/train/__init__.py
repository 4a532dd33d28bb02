"""The parts of codec training; :mod:`fairbits.codecs.training` puts them together.

* :mod:`~fairbits.codecs.train.config` — :class:`TrainConfig`, the one description of a run;
* :mod:`~fairbits.codecs.train.data` — the manifest, image crops and skin masks;
* :mod:`~fairbits.codecs.train.losses` — the per-image rate–distortion loss and its extra
  terms (perceptual, adversarial, skin colour);
* :mod:`~fairbits.codecs.train.objectives` — batch mean or group DRO over the per-image losses;
* :mod:`~fairbits.codecs.train.state` — the training state that is saved and resumed whole.
"""

from fairbits.codecs.train.config import TrainConfig

__all__ = ["TrainConfig"]
