"""The Generator protocol, the TorchGenerator adapter and the built-in phantom-face VAE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fairbits.errors import FairbitsError
from fairbits.generative import vae as vae_module
from fairbits.generative.generator import Generator, TorchGenerator, generate
from fairbits.generative.vae import builtin_generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Central-colour rule for "dark skin" on 64x64 faces: BT.601 luma of the mean sRGB colour of the
# central 16x16 patch (nose and cheeks) below DARK_LUMA. Checked on phantoms in test_dark_rule.
DARK_LUMA = 0.335
PATCH = (slice(28, 44), slice(24, 40))


def central_luma(images: torch.Tensor) -> np.ndarray:
    """``(n,)`` luma in [0, 1] of the mean colour of the central patch of ``(n, 3, 64, 64)`` images."""
    c = images[:, :, PATCH[0], PATCH[1]].mean((2, 3))
    return (0.299 * c[:, 0] + 0.587 * c[:, 1] + 0.114 * c[:, 2]).numpy()


class Tiny(nn.Module):
    """w ``(b, 4)`` → images ``(b, 3, 8, 8)`` in [-1, 1]; dropout shows whether eval mode is on."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 3 * 8 * 8)
        self.drop = nn.Dropout(0.5)

    def forward(self, w):
        return torch.tanh(self.drop(self.lin(w))).view(-1, 3, 8, 8)


@pytest.fixture(scope="module")
def builtin():
    return builtin_generator()


# ------------------------------------------------------------------ protocol and adapter

def test_protocol_conformance(builtin):
    tiny = TorchGenerator(Tiny(), 4, image_size=8)
    mapped = TorchGenerator(Tiny(), 5, mapping=nn.Linear(5, 4), w_dim=4, image_size=8)
    for gen in (tiny, mapped, builtin):
        assert isinstance(gen, Generator)
    assert not isinstance(object(), Generator)
    assert builtin.w_dim is None and builtin.latent_dim == 64 and builtin.image_size == 64


def test_output_range_conversion():
    """Values in output_range map linearly to [0, 1]; values outside are clamped."""
    def const(w):  # (b, 1) -> (b, 3, 2, 2) filled with w
        return w[:, :, None, None].expand(-1, 3, 2, 2)

    w = np.array([[-1.0], [0.0], [1.0], [3.0], [-2.0]], np.float32)
    out = TorchGenerator(const, 1, image_size=2).synthesize(w)
    np.testing.assert_allclose(out[:, 0, 0, 0].numpy(), [0.0, 0.5, 1.0, 1.0, 0.0])
    w255 = np.array([[0.0], [51.0], [255.0]], np.float32)
    out = TorchGenerator(const, 1, image_size=2, output_range=(0, 255)).synthesize(w255)
    np.testing.assert_allclose(out[:, 1, 1, 1].numpy(), [0.0, 0.2, 1.0], atol=1e-6)
    assert out.dtype == torch.float32 and out.device.type == "cpu" and not out.requires_grad


def test_shapes_eval_mode_and_mapping():
    net = Tiny()
    net.train()
    gen = TorchGenerator(net, 4, image_size=8)
    assert not net.training  # put in eval mode: dropout off, repeated calls agree
    z = gen.sample_latents(10, seed=1)
    assert z.shape == (10, 4) and z.dtype == np.float32
    a, b = gen.synthesize(z), gen.synthesize(z)
    assert a.shape == (10, 3, 8, 8) and torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    np.testing.assert_array_equal(gen.mapping(z), z)  # no mapping network: w = z

    mapping = nn.Linear(5, 4)
    gen = TorchGenerator(Tiny(), 5, mapping=mapping, w_dim=4, image_size=8, prior="uniform")
    zs, images = generate(gen, 7, seed=3, space="z")
    ws, images_w = generate(gen, 7, seed=3, space="w")
    assert zs.shape == (7, 5) and ws.shape == (7, 4) and images.shape == (7, 3, 8, 8)
    assert np.abs(zs).max() <= 1
    with torch.no_grad():
        np.testing.assert_allclose(ws, mapping(torch.from_numpy(zs)).numpy(), rtol=1e-6)
    assert torch.equal(images, images_w)


def test_adapter_errors():
    with pytest.raises(ValueError, match="mapping and w_dim"):
        TorchGenerator(Tiny(), 4, mapping=nn.Linear(4, 4), image_size=8)
    with pytest.raises(ValueError, match="output_range"):
        TorchGenerator(Tiny(), 4, image_size=8, output_range=(1, 1))
    gen = TorchGenerator(Tiny(), 4, image_size=16)
    with pytest.raises(ValueError, match="expected"):  # network makes 8x8, not 16x16
        gen.synthesize(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="shape"):
        gen.synthesize(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="space"):
        generate(gen, 2, seed=0, space="x")
    empty = TorchGenerator(Tiny(), 4, image_size=8).synthesize(np.zeros((0, 4), np.float32))
    assert empty.shape == (0, 3, 8, 8)


# ------------------------------------------------------------------ built-in generator

def test_builtin_shapes_range_determinism(builtin):
    z, images = generate(builtin, 12, seed=5)
    assert z.shape == (12, 64) and z.dtype == np.float32
    assert images.shape == (12, 3, 64, 64) and images.dtype == torch.float32
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    assert float(images.std()) > 0.05  # not a constant image
    z2, images2 = generate(builtin, 12, seed=5)
    np.testing.assert_array_equal(z, z2)
    assert torch.equal(images, images2)
    assert not np.array_equal(builtin.sample_latents(12, seed=6), z)
    assert builtin.sample_latents(20, seed=5)[:12].tolist() == z.tolist()  # prefix-stable


def test_builtin_batching_invariance(builtin):
    w = builtin.mapping(builtin.sample_latents(10, seed=2))
    a = builtin.synthesize(w, batch_size=64)
    b = builtin.synthesize(w, batch_size=3)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def _phantoms_64(msts, seed=11) -> torch.Tensor:
    """Phantom faces with the given MST values, rendered at 128 px and box-downscaled to 64 px
    like the training data: ``(n, 3, 64, 64)`` in [0, 1]."""
    from fairbits.data.phantom import face_seed, render_face, sample_labels

    rows = sample_labels(len(msts), seed, balance=None).to_dict("records")
    out = []
    for i, (row, mst) in enumerate(zip(rows, msts)):
        img, _ = render_face({**row, "mst": int(mst)}, face_seed(seed, i), 128)
        out.append(np.asarray(Image.fromarray(img).reduce(2)))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255


def test_dark_rule_and_builtin_skew(builtin):
    """The colour rule separates MST8-10 phantoms from the rest; the built-in generator, trained
    on 5 % MST8-10 faces, makes few dark faces from its prior (a balanced one: about a third),
    although it can make them: dark phantoms come back dark through its encoder and decoder."""
    light, mid, dark = (_phantoms_64(m * 6, seed=s) for m, s in
                        (([1, 2, 3], 11), ([4, 5, 6, 7], 12), ([8, 9, 10], 13)))
    assert (central_luma(light) >= DARK_LUMA).all() and (central_luma(mid) >= DARK_LUMA).all()
    assert (central_luma(dark) < DARK_LUMA).all()
    _, images = generate(builtin, 600, seed=0)
    share = float((central_luma(images) < DARK_LUMA).mean())
    assert share < 0.10, share
    with torch.no_grad():
        recon = builtin.synthesize(builtin.vae.encode(dark)[0].numpy())
    assert (central_luma(recon) < DARK_LUMA).mean() >= 0.8


def test_builtin_encoder_roundtrip(builtin):
    faces = _phantoms_64([2, 5, 9])
    with torch.no_grad():
        mean, logvar = builtin.vae.encode(faces)
        recon = builtin.synthesize(mean.numpy())
    assert mean.shape == logvar.shape == (3, 64)
    assert float(((recon - faces) ** 2).mean()) < 0.02


def test_missing_or_bad_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(vae_module, "WEIGHTS_DIR", tmp_path / "absent")
    with pytest.raises(FairbitsError, match="weights not found"):
        builtin_generator()
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save({"x": torch.zeros(2)}, bad / "model.pt")
    with pytest.raises(FairbitsError, match="not a PhantomVAE"):
        builtin_generator(bad)
