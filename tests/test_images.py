"""Image loading: the one documented conversion to 8-bit RGB, and broken files."""

import numpy as np
import pytest
from PIL import Image

from fairbits.data.images import fit_size, load_rgb, to_tensor, to_uint8
from fairbits.errors import ImageError


def test_rgba_is_composited_on_white(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 0] = 200
    a[..., 3] = 128  # half transparent red over white
    Image.fromarray(a, "RGBA").save(tmp_path / "x.png")
    rgb = load_rgb(tmp_path / "x.png")
    alpha = 128 / 255
    expected = np.round([200 * alpha + 255 * (1 - alpha), 255 * (1 - alpha), 255 * (1 - alpha)])
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb[0, 0].astype(int) - expected).max() <= 1


def test_grayscale_16bit_palette_cmyk(tmp_path):
    g = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    assert (load_rgb(tmp_path / "g.png") == g[..., None]).all()

    g16 = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    got = load_rgb(tmp_path / "g16.png")
    assert np.abs(got[..., 0].astype(float) - g16.astype(float) * 255 / 65535).max() <= 0.5 + 1e-9

    p = Image.new("P", (4, 4))
    p.putpalette([10, 20, 30] * 256)
    p.save(tmp_path / "p.png")
    assert (load_rgb(tmp_path / "p.png") == [10, 20, 30]).all()

    Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    assert load_rgb(tmp_path / "c.jpg").min() > 240  # no ink = white


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((2, 6, 3), np.uint8)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    im.save(tmp_path / "r.jpg", exif=exif)
    assert load_rgb(tmp_path / "r.jpg").shape == (6, 2, 3)


@pytest.mark.parametrize("content,reason", [
    (b"", "zero-byte"),
    (b"not an image at all", "not a recognised"),
])
def test_broken_bytes(tmp_path, content, reason):
    f = tmp_path / "bad.png"
    f.write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        load_rgb(f)


def test_truncated_missing_and_too_large(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_rgb(tmp_path / "trunc.png")
    with pytest.raises(ImageError, match="missing"):
        load_rgb(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="too large"):
        load_rgb(tmp_path / "t.png", max_pixels=100)


def test_fit_size_and_tensor_round_trip():
    a = np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    b = fit_size(a, 20)
    assert b.shape == (20, 20, 3)
    t = to_tensor([b, b])
    assert t.shape == (2, 3, 20, 20) and float(t.max()) <= 1.0
    assert (to_uint8(t)[0] == b).all()
