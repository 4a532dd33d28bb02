"""Learned codecs: architectures, checkpoints, exact vs fast inference, worker processes.

All on CPU with tiny widths (N=32, M=48 or smaller) and 48..80 px images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairbits.codecs import Codec, bitstream, get_codec
from fairbits.codecs.architectures import architecture, architecture_names, build_model
from fairbits.codecs.base import available_codecs
from fairbits.codecs.generative import GENERATIVE, build_discriminator
from fairbits.codecs.checkpoints import learned_settings_summary, load_checkpoint, save_checkpoint, zoo_file
from fairbits.codecs.learned import ExactPool, LearnedCodec, _ar_forward, code_many
from fairbits.data.images import to_tensor, to_uint8
from fairbits.errors import CodecUnavailable, SpecError

ARCHS = architecture_names()
N, M = 32, 48
SIZES = [(64, 64), (48, 80), (50, 70)]  # (H, W); the last two need padding


def smooth_image(seed: int, size=(64, 64)) -> np.ndarray:
    """A smooth colour field (random low-frequency cosines) with a little noise: uint8 (H, W, 3)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / 64.0
    img = np.full((h, w, 3), 0.5)
    for _ in range(3):
        fx, fy, ph = rng.uniform(0.5, 2.5), rng.uniform(0.5, 2.5), rng.uniform(0, 6.3)
        img += rng.uniform(-0.2, 0.2, 3) * np.cos(fx * xx + fy * yy + ph)[..., None]
    img += rng.normal(0, 0.01, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def train(model, images: list[np.ndarray], steps: int, lmbda: float = 0.01, seed: int = 0):
    """A few Adam steps of rate + lmbda * 255^2 * MSE, with CompressAI's aux loss."""
    torch.manual_seed(seed)
    x = to_tensor(images)
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt, aux_opt = torch.optim.Adam(main, lr=2e-3), torch.optim.Adam(aux, lr=1e-2)
    model.train()
    for _ in range(steps):
        out = model(x)
        bits = sum(-torch.log2(lik).sum() for lik in out["likelihoods"].values())
        loss = bits / x.numel() * 3 + lmbda * 255 ** 2 * torch.mean((out["x_hat"] - x) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        aux_opt.zero_grad()
        model.aux_loss().backward()
        aux_opt.step()
    model.eval()
    return model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory) -> dict[str, str]:
    """One untrained (but updated) tiny checkpoint per architecture, as fairbits files."""
    d = tmp_path_factory.mktemp("ckpt")
    out = {}
    for arch in ARCHS:
        torch.manual_seed(1)
        out[arch] = str(save_checkpoint(build_model(arch, N, M), arch, d / f"{arch}.pt", {"note": "tiny"}))
    return out


# ---------------------------------------------------------------- registry and generative models

def test_every_architecture_is_a_registered_codec():
    assert set(GENERATIVE) <= set(ARCHS) and len(ARCHS) == 9
    kinds = {name: kind for name, kind, reason in available_codecs()}
    for arch in ARCHS:
        assert kinds[arch] == architecture(arch).kind
        codec = get_codec(arch)
        assert isinstance(codec, LearnedCodec) and isinstance(codec, Codec) and codec.name == arch
        assert isinstance(codec.settings, tuple)
        assert "built-in:" in learned_settings_summary(arch)
    assert kinds["hific"] == kinds["mbt2018-mean-gan"] == "generative"
    assert kinds["mbt2018"] == "learned"


@pytest.mark.parametrize("arch", GENERATIVE)
def test_generative_model_and_discriminator(arch):
    torch.manual_seed(0)
    model = build_model(arch, N, M)
    x = to_tensor([smooth_image(0), smooth_image(1)])
    model.train()
    out = model(x)
    assert out["x_hat"].shape == x.shape
    assert out["y_hat"].shape == (2, M, 4, 4)
    assert set(out["likelihoods"]) == {"y", "z"}
    # straight-through decoder input: integer offsets from the means, gradient reaches g_a
    out["x_hat"].mean().backward()
    assert model.g_a[0].weight.grad is not None and model.g_a[0].weight.grad.abs().sum() > 0
    assert model.aux_loss().item() > 0
    disc = build_discriminator(arch, N, M).eval()  # eval: no power-iteration step per call
    logits = disc(x, out["y_hat"].detach())
    assert logits.ndim == 2 and logits.shape[0] == 2 and logits.shape[1] > 1
    other = disc(x, out["y_hat"].detach() + 3.0)
    if arch == "hific":  # conditioned on the latent
        assert not torch.allclose(logits, other)
    else:  # unconditional, multi-scale: 8x8 + 4x4 + 2x2 patches for a 64 px image
        assert torch.equal(logits, other) and logits.shape[1] == 64 + 16 + 4
    with pytest.raises(SpecError):
        build_discriminator("mbt2018", N, M)


def test_hific_size_budget():
    """The built-in-checkpoint widths stay well under ~6 MB in fp16 (incl. CDF tables)."""
    n = sum(p.numel() for p in build_model("hific", 64, 96).parameters())
    assert 2 * n < 5.5e6
    big = sum(p.numel() for p in build_model("hific", quality=5).parameters())
    assert big > 4 * n  # zoo-like default widths at high quality


# ---------------------------------------------------------------- exact vs fast

@pytest.mark.parametrize("arch", ARCHS)
def test_exact_bytes_match_fast_path(arch, tiny_checkpoints):
    codec = get_codec(arch)
    path = tiny_checkpoints[arch]
    for i, (h, w) in enumerate(SIZES):
        img = smooth_image(i, (h, w))
        coded = codec.code(img, path)
        assert coded.recon.shape == (h, w, 3) and coded.recon.dtype == np.uint8
        assert len(coded.data) > 4 and coded.bpp == pytest.approx(8 * len(coded.data) / (h * w))
        assert bitstream.unpack(coded.data, 1)[:2] == (h, w)
        assert np.array_equal(codec.decode(coded.data, path), coded.recon)
        recon, bpp = codec.forward_batch(to_tensor(img), path)
        assert recon.shape == (1, 3, h, w) and recon.dtype == torch.float32
        assert bpp.dtype == torch.float64 and bpp.shape == (1,) and float(bpp[0]) > 0
        diff = np.abs(to_uint8(recon)[0].astype(int) - coded.recon.astype(int))
        # Rounded to 8 bits both paths agree up to float noise (autoregressive models
        # included: the fast path iterates to the serial decoder's latents).
        assert diff.mean() / 255 < 1e-3 and diff.max() <= 2, (arch, h, w, diff.mean(), diff.max())


def test_padding_is_cropped_not_stretched(tiny_checkpoints):
    """A 50x70 image codes like the top-left corner of its replicate-padded 64x128 version."""
    codec = get_codec("mbt2018-mean")
    path = tiny_checkpoints["mbt2018-mean"]
    img = smooth_image(3, (50, 70))
    padded = np.pad(img, ((0, 14), (0, 58), (0, 0)), mode="edge")
    assert np.array_equal(codec.code(img, path).recon, codec.code(padded, path).recon[:50, :70])


def test_autoregressive_fast_path_follows_serial_decoder(tmp_path):
    """With a strong context model, CompressAI's forward (round(y)) decodes something else
    than the entropy decoder; the fixed-point fast path reproduces the decoder."""
    torch.manual_seed(0)
    model = build_model("mbt2018", N, M)
    with torch.no_grad():
        model.context_prediction.weight.mul_(40.0)
        model.g_a[-1].weight.mul_(6.0)
    path = save_checkpoint(model, "mbt2018", tmp_path / "ar.pt", fp16=False)
    codec = get_codec("mbt2018")
    img = smooth_image(5, (64, 64))
    exact = codec.code(img, str(path)).recon.astype(int)
    fast, _ = codec.forward_batch(to_tensor(img), str(path))
    loaded = codec.model(str(path))
    with torch.no_grad():
        plain = loaded(to_tensor(img))["x_hat"]
    err_fast = np.abs(to_uint8(fast)[0] - exact).mean()
    err_plain = np.abs(to_uint8(plain)[0] - exact).mean()
    assert err_fast / 255 < 1e-3 < err_plain / 255
    one_pass = _ar_forward(loaded, to_tensor(img), max_passes=1)["x_hat"]  # not yet converged
    assert np.abs(to_uint8(one_pass)[0] - exact).mean() > err_fast


@pytest.mark.parametrize("arch", ["bmshj2018-hyperprior", "mbt2018-mean", "mbt2018", "hific"])
def test_real_bytes_close_to_likelihood_estimate(arch, tmp_path):
    """After a little training the rANS bytes are within 10% of -log2(likelihood) bits, plus
    the header and a few bytes of coder flush per stream."""
    torch.manual_seed(0)
    model = train(build_model(arch, N, M), [smooth_image(s) for s in range(4)], steps=40)
    path = str(save_checkpoint(model, arch, tmp_path / "m.pt", fp16=False))
    codec = get_codec(arch)
    for seed in (10, 11):
        img = smooth_image(seed, (128, 128))
        coded = codec.code(img, path)
        _, bpp_est = codec.forward_batch(to_tensor(img), path)
        est_bytes = float(bpp_est[0]) * 128 * 128 / 8
        header = len(bitstream.write_varint(128)) * 2 + 1
        assert est_bytes > 20
        assert abs(len(coded.data) - header - est_bytes) <= 0.10 * est_bytes + 8, (len(coded.data), est_bytes)


def test_batched_fast_path_equals_single_images(tiny_checkpoints):
    codec = get_codec("hific")
    path = tiny_checkpoints["hific"]
    imgs = [smooth_image(s, (48, 80)) for s in range(3)]
    recon, bpp = codec.forward_batch(to_tensor(imgs), path)
    for i, img in enumerate(imgs):
        r1, b1 = codec.forward_batch(to_tensor(img), path)
        assert torch.allclose(recon[i], r1[0], atol=1e-5)
        assert float(bpp[i]) == pytest.approx(float(b1[0]), rel=1e-6)
    assert len({round(float(b), 6) for b in bpp}) == 3  # a per-image rate, not a batch mean


# ---------------------------------------------------------------- checkpoints

def test_fp16_checkpoint_round_trip(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = train(build_model("mbt2018-mean", N, M), [smooth_image(0)], steps=5)
    path = save_checkpoint(model, "mbt2018-mean", tmp_path / "a.pt", meta={"bpp": 0.3, "steps": 5})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "fairbits-codec/1" and (raw["N"], raw["M"]) == (N, M)
    assert raw["state_dict"]["g_a.0.weight"].dtype == torch.float16
    assert raw["state_dict"]["entropy_bottleneck.quantiles"].dtype == torch.float32
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    loaded, meta = load_checkpoint(path)
    assert calls == [True] and meta["bpp"] == 0.3 and meta["arch"] == "mbt2018-mean"
    assert not loaded.training and loaded.g_a[0].weight.dtype == torch.float32
    for name in ("_quantized_cdf", "_offset", "_cdf_length"):
        for mod in ("entropy_bottleneck", "gaussian_conditional"):
            a, b = getattr(getattr(model, mod), name), getattr(getattr(loaded, mod), name)
            assert b.dtype == torch.int32 and torch.equal(a, b)
    x = to_tensor(smooth_image(1))
    with torch.no_grad():
        ref, got = model(x)["x_hat"], loaded(x)["x_hat"]
    assert 0 < (ref - got).abs().max() < 2e-2  # really went through fp16, and only that
    with pytest.raises(SpecError, match="is for 'mbt2018-mean'"):
        load_checkpoint(path, arch="hific")


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Evil()}, path)
    with pytest.raises(SpecError, match="cannot read checkpoint"):
        load_checkpoint(path, arch="mbt2018-mean")


@pytest.mark.parametrize("arch,wrapped", [("mbt2018-mean", False), ("bmshj2018-factorized", True),
                                          ("cheng2020-anchor", False), ("hific", True)])
def test_compressai_state_dict_loads(arch, wrapped, tmp_path):
    torch.manual_seed(0)
    model = build_model(arch, 24, 40)
    model.update(force=True)
    model.eval()
    state = model.state_dict()
    if wrapped:  # as CompressAI's training script saves, after DataParallel
        obj = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    else:
        obj = state
    path = tmp_path / f"{arch}.pth.tar"
    torch.save(obj, path)
    codec = get_codec(arch)
    loaded = codec.model(str(path))
    assert type(loaded) is type(model) and loaded.N == 24
    x = to_tensor(smooth_image(2))
    with torch.no_grad():
        assert torch.equal(model(x)["x_hat"], loaded(x)["x_hat"])
    assert codec.code(smooth_image(2), str(path)).recon.shape == (64, 64, 3)


def test_state_dict_without_cdfs_gets_updated(tmp_path):
    torch.manual_seed(0)
    model = build_model("bmshj2018-hyperprior", 24, 40)  # never updated: empty CDF buffers
    torch.save(model.state_dict(), tmp_path / "raw.pth")
    loaded, _ = load_checkpoint(tmp_path / "raw.pth", arch="bmshj2018-hyperprior")
    assert loaded.gaussian_conditional._quantized_cdf.numel() > 0
    assert loaded.entropy_bottleneck._quantized_cdf.numel() > 0
    with pytest.raises(SpecError, match="needs its architecture"):
        load_checkpoint(tmp_path / "raw.pth")


# ---------------------------------------------------------------- settings

def test_builtin_checkpoints_are_discovered_and_ordered(tmp_path):
    for key, bpp in [("high", 0.9), ("low", 0.2), ("mid", 0.5)]:
        torch.manual_seed(0)
        save_checkpoint(build_model("mbt2018-mean", N, M), "mbt2018-mean", tmp_path / f"{key}.pt")
        (tmp_path / f"{key}.json").write_text(f'{{"bpp": {bpp}}}')
    codec = LearnedCodec("mbt2018-mean", weights_dir=tmp_path)
    assert codec.builtin_settings == ("low", "mid", "high")
    assert codec.settings[:3] == ("low", "mid", "high")
    assert codec.code(smooth_image(0), "mid").num_bytes > 0
    with pytest.raises(SpecError, match="unknown setting"):
        codec.code(smooth_image(0), "nonsense")
    with pytest.raises(SpecError, match="not found"):
        codec.code(smooth_image(0), str(tmp_path / "missing.pt"))


def test_zoo_weights_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    codec = get_codec("bmshj2018-hyperprior")
    assert not any(s.startswith("zoo-") for s in codec.settings)
    file, url = zoo_file("bmshj2018-hyperprior", 1)
    assert file.name == url.rsplit("/", 1)[1] and file.parent == tmp_path / "hub" / "checkpoints"
    with pytest.raises(CodecUnavailable) as err:
        codec.code(smooth_image(0), "zoo-q1")
    assert file.name in str(err.value) and url in str(err.value) and str(file.parent) in str(err.value)
    assert "none of 8 cached" in learned_settings_summary("bmshj2018-hyperprior")
    with pytest.raises(SpecError):  # CompressAI has no weights for this one at all
        get_codec("bmshj2018-factorized-relu").code(smooth_image(0), "zoo-q1")
    with pytest.raises(SpecError):
        get_codec("cheng2020-anchor").code(smooth_image(0), "zoo-q7")
    # a cached file (CompressAI format) becomes a setting
    file.parent.mkdir(parents=True)
    model = build_model("bmshj2018-hyperprior", 24, 40)
    model.update(force=True)
    torch.save(model.state_dict(), file)
    codec = get_codec("bmshj2018-hyperprior")
    assert codec.zoo_settings == ("zoo-q1",) and "zoo-q1" in codec.settings
    assert codec.code(smooth_image(0), "zoo-q1").num_bytes > 0
    assert "1 of 8 cached" in learned_settings_summary("bmshj2018-hyperprior")


# ---------------------------------------------------------------- bitstream and processes

def test_bitstream_pack_unpack():
    for n in (0, 1, 127, 128, 300, 2 ** 35):
        enc = bitstream.write_varint(n)
        assert bitstream.read_varint(enc + b"x", 0) == (n, len(enc))
    streams = [b"abc", b"", b"\x00" * 200]
    data = bitstream.pack(70, 50, streams)
    assert len(data) == 1 + 1 + 1 + 1 + 203
    assert bitstream.unpack(data, 3) == (70, 50, streams)
    with pytest.raises(ValueError):
        bitstream.unpack(bitstream.pack(5, 5, [b"abcdef", b"x"])[:5], 2)


def test_process_pool_gives_identical_bytes(tiny_checkpoints, tmp_path, monkeypatch):
    codec = get_codec("bmshj2018-hyperprior")
    path = tiny_checkpoints["bmshj2018-hyperprior"]
    imgs = [smooth_image(s, SIZES[s % 3]) for s in range(5)]
    local = [codec.code(im, path) for im in imgs]
    with ExactPool("bmshj2018-hyperprior", path, processes=2) as pool:
        remote = pool.code(imgs)
    assert [c.data for c in remote] == [c.data for c in local]
    assert all(np.array_equal(a.recon, b.recon) for a, b in zip(local, remote))
    assert [c.data for c in code_many(codec, imgs[:2], path, processes=1)] == [c.data for c in local[:2]]
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(CodecUnavailable):  # checked before any worker starts
        ExactPool("bmshj2018-hyperprior", "zoo-q3", processes=2)

