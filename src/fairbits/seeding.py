"""Seeds derived from a run's seed and a key, so results do not depend on processing order."""

from __future__ import annotations

import zlib

import numpy as np


def keyed_seed(seed: int, *key) -> np.random.SeedSequence:
    """``SeedSequence([seed, crc32(key)])``: the same for the same ``(seed, key)`` on any
    machine and in any order (unlike Python's salted ``hash``); key parts are joined as text."""
    return np.random.SeedSequence([int(seed), zlib.crc32("\x1f".join(map(str, key)).encode("utf-8"))])
