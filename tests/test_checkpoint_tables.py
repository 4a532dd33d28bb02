"""Checkpoints store the GaussianConditional's CDF table packed, and load it back exactly."""

from __future__ import annotations

import pytest
import torch

from fairbits.codecs.architectures import build_model
from fairbits.codecs.checkpoints import WEIGHTS_DIR, load_checkpoint, pack_cdf, save_checkpoint, unpack_cdf
from fairbits.errors import SpecError


def test_packed_table_round_trip(tmp_path):
    model = build_model("bmshj2018-hyperprior", 16, 24)
    path = save_checkpoint(model, "bmshj2018-hyperprior", tmp_path / "m.pt")  # computes the tables
    stored = torch.load(path, weights_only=True)["state_dict"]
    lengths = stored["gaussian_conditional._cdf_length"]
    packed = stored["gaussian_conditional._quantized_cdf"]
    assert packed.dim() == 1 and packed.numel() == int(lengths.sum())
    full = model.state_dict()["gaussian_conditional._quantized_cdf"]
    assert packed.numel() < full.numel() and int(full.count_nonzero()) <= packed.numel()
    loaded, _ = load_checkpoint(path)
    for key, value in model.state_dict().items():       # every table and weight as computed
        expect = value.half().float() if value.is_floating_point() and "entropy" not in key \
            and "gaussian" not in key else value
        assert torch.equal(loaded.state_dict()[key], expect), key


def test_unpack_is_the_inverse_and_checks_lengths():
    lengths = torch.tensor([3, 1, 4], dtype=torch.int32)
    table = torch.tensor([[1, 2, 3, 0], [7, 0, 0, 0], [4, 5, 6, 8]], dtype=torch.int32)
    packed = pack_cdf(table, lengths)
    assert packed.tolist() == [1, 2, 3, 7, 4, 5, 6, 8]
    assert torch.equal(unpack_cdf(packed, lengths), table)
    with pytest.raises(SpecError, match="packed CDF table"):
        unpack_cdf(packed[:-1], lengths)


def test_builtin_checkpoints_are_packed():
    for path in sorted(WEIGHTS_DIR.glob("*/phantom-*.pt")):
        stored = torch.load(path, weights_only=True)["state_dict"]
        assert stored["gaussian_conditional._quantized_cdf"].dim() == 1, path.name
        model, _ = load_checkpoint(path)
        assert model.gaussian_conditional._quantized_cdf.dim() == 2
