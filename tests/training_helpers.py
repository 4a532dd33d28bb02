"""Shared by the codec-training tests (test_training.py, test_objectives.py): tiny CPU
settings, the phantom set they train on and the loss-log reader."""

from __future__ import annotations

import json

import pytest

from fairbits.codecs.training import log_path
from fairbits.data.phantom import render_phantoms

ARCH = "bmshj2018-hyperprior"
TINY = dict(N=16, M=24, patch=64, batch_size=2, lr=1e-3, device="cpu", progress=False)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """12 phantom faces (4 per skin group) at 80 px (so 64 px crops move) with their region
    masks; returns labels.csv."""
    return render_phantoms(12, tmp_path_factory.mktemp("ph") / "ph", seed=0, size=80)


def read_log(out):
    """The records of ``out``'s JSON-lines loss log."""
    return [json.loads(line) for line in log_path(out).read_text().splitlines()]
