"""Pixel measures against independent references (numpy, scikit-image, pytorch_msssim)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pytorch_msssim import ms_ssim as ref_ms_ssim
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity

from fairbits.colour import srgb_to_lab
from fairbits.data.images import to_tensor
from fairbits.measures import get_measure, higher_is_better, measure_names
from fairbits.measures.pixel import ms_ssim_window

NAMES = ("psnr", "psnr_y", "ssim", "ms_ssim", "ciede2000")


def make_pair(h: int, w: int, seed: int = 0, noise: float = 10.0):
    """An 8-bit test image and a noisy copy, both ``uint8 (h, w, 3)``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([30 + 190 * x / w, 50 + 160 * y / h, 200 - 120 * (x + y) / (h + w)], -1)
    base += 25 * np.sin(x / 5.0)[..., None] * np.cos(y / 7.0)[..., None]
    a = np.clip(np.rint(base + rng.normal(0, 3, base.shape)), 0, 255).astype(np.uint8)
    b = np.clip(np.rint(a + rng.normal(0, noise, a.shape)), 0, 255).astype(np.uint8)
    return a, b


def run(name, a, b):
    out = get_measure(name).fn(to_tensor(a), to_tensor(b), {})
    assert set(out) == {name}
    values = out[name]
    assert values.dtype == torch.float64 and values.device.type == "cpu" and values.dim() == 1
    return values.numpy()


def test_registry_and_directions():
    assert set(NAMES) <= set(measure_names())
    for name in NAMES:
        assert get_measure(name).columns == (name,)
        assert higher_is_better(name) is (name != "ciede2000")


def test_psnr_matches_numpy():
    a, b = make_pair(40, 52)
    fa, fb = a / 255.0, b / 255.0
    ref = 10 * np.log10(1.0 / np.mean((fa - fb) ** 2))
    assert run("psnr", a, b)[0] == pytest.approx(ref, abs=1e-4)


def test_psnr_y_matches_numpy():
    a, b = make_pair(40, 52, seed=1)
    w = np.array([0.299, 0.587, 0.114])
    ya, yb = (a / 255.0) @ w, (b / 255.0) @ w
    ref = 10 * np.log10(1.0 / np.mean((ya - yb) ** 2))
    got = run("psnr_y", a, b)[0]
    assert got == pytest.approx(ref, abs=1e-3)
    assert got != pytest.approx(run("psnr", a, b)[0], abs=0.1)


def test_ssim_matches_skimage():
    a, b = make_pair(64, 72, seed=2)
    ref = structural_similarity(a / 255.0, b / 255.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1.0, channel_axis=-1)
    got = run("ssim", a, b)[0]
    assert 0 < got < 1
    assert got == pytest.approx(ref, abs=1e-3)


def test_ssim_nan_below_window():
    a, b = make_pair(10, 30)
    assert math.isnan(run("ssim", a, b)[0])
    assert not math.isnan(run("ssim", *make_pair(11, 30))[0])


def test_ms_ssim_equals_pytorch_msssim_when_large():
    a, b = make_pair(161, 170, seed=3)
    ref = ref_ms_ssim(to_tensor(a), to_tensor(b), data_range=1.0, size_average=False).double()
    got = run("ms_ssim", a, b)
    assert 0 < got[0] < 1
    np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("side, win", [(161, 11), (160, 9), (129, 9), (128, 7), (97, 7),
                                       (96, 5), (65, 5), (64, 3), (33, 3), (32, None), (8, None)])
def test_ms_ssim_window_rule(side, win):
    assert ms_ssim_window(side) == win
    if win is not None:
        assert (win - 1) * 16 < side and (win + 1) * 16 >= side or win == 11


def test_ms_ssim_small_images():
    a, b = make_pair(100, 120, seed=4)
    got = run("ms_ssim", a, b)[0]
    ref = ref_ms_ssim(to_tensor(a), to_tensor(b), data_range=1.0, size_average=False, win_size=7)
    assert 0 < got <= 1 and got == pytest.approx(float(ref[0]), abs=1e-6)
    assert 0 < run("ms_ssim", *make_pair(33, 40))[0] <= 1
    assert math.isnan(run("ms_ssim", *make_pair(32, 40))[0])
    assert run("ms_ssim", a, a)[0] == pytest.approx(1.0, abs=1e-5)


def test_ciede2000_matches_skimage():
    a, b = make_pair(30, 34, seed=5, noise=12)
    ref = deltaE_ciede2000(rgb2lab(a / 255.0), rgb2lab(b / 255.0)).mean()
    got = run("ciede2000", a, b)[0]
    assert got > 0.5
    assert got == pytest.approx(ref, abs=0.02)


def test_identical_images():
    a, _ = make_pair(48, 48)
    assert run("psnr", a, a)[0] == 100.0
    assert run("psnr_y", a, a)[0] == 100.0
    assert run("ciede2000", a, a)[0] == 0.0
    assert run("ssim", a, a)[0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_single(name):
    a1, b1 = make_pair(40, 44, seed=6)
    a2, b2 = make_pair(40, 44, seed=7, noise=20)
    both = get_measure(name).fn(to_tensor([a1, a2]), to_tensor([b1, b2]), {})[name]
    one = torch.cat([get_measure(name).fn(to_tensor(a), to_tensor(b), {})[name]
                     for a, b in ((a1, b1), (a2, b2))])
    assert both.shape == (2,)
    assert not torch.isnan(both).any() and both[0] != both[1]
    torch.testing.assert_close(both, one, rtol=1e-5, atol=1e-6)


def test_colour_lab_matches_skimage():
    rng = np.random.default_rng(8)
    rgb = rng.random((500, 3))
    ours = srgb_to_lab(torch.from_numpy(rgb)).numpy()
    np.testing.assert_allclose(ours, rgb2lab(rgb[None])[0], atol=0.01)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_gpu_agree():
    a, b = make_pair(170, 180, seed=9)
    x, y = to_tensor([a, b]), to_tensor([b, a])
    for name in NAMES:
        cpu = get_measure(name).fn(x, y, {})[name]
        gpu = get_measure(name).fn(x.cuda(), y.cuda(), {})[name]
        assert gpu.device.type == "cpu"
        torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-5)
