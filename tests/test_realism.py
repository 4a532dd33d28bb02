"""Realism measures: FD, KID, per-group tables, feature storage and extractors."""

from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch

from fairbits.errors import FairbitsError
from fairbits.measures import features as feat_mod
from fairbits.measures.features import get_extractor
from fairbits.measures.realism import (
    ALL_GROUP, BY_GROUP_COLUMNS, HIGHER_IS_BETTER, REALISM_COLUMNS, TABLE_COLUMNS, FeatureStore,
    frechet_distance, kid, kid_ci, mmd2_unbiased, realism_by_group, realism_table, write_realism,
)


def _gaussian(rng, mean, cov, n):
    return rng.multivariate_normal(mean, cov, size=n)


def _random_cov(rng, d):
    q = rng.normal(size=(d, d))
    return q @ q.T / d + 0.1 * np.eye(d)


# --------------------------------------------------------------------------- FD
def _fd_closed_form(mu1, s1, mu2, s2):
    """Independent FD: trace of the square root via eigenvalues of the (non-symmetric) product."""
    ev = np.linalg.eigvals(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.abs(ev.real))))


def test_fd_matches_analytic_gaussians():
    rng = np.random.default_rng(0)
    d = 4
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 2.0])
    s1, s2 = np.diag([1.0, 2.0, 0.5, 1.0]), np.diag([2.0, 1.0, 0.5, 3.0])
    # diagonal case by hand: |Δμ|² + Σ (σ1 − σ2)²
    analytic = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(np.diag(s1)) - np.sqrt(np.diag(s2))) ** 2)
    assert _fd_closed_form(mu1, s1, mu2, s2) == pytest.approx(analytic)
    fd = frechet_distance(_gaussian(rng, mu1, s1, 40_000), _gaussian(rng, mu2, s2, 40_000))
    assert fd == pytest.approx(analytic, rel=0.03)


def test_fd_matches_independent_implementations():
    rng = np.random.default_rng(1)
    d = 6
    a = _gaussian(rng, rng.normal(size=d), _random_cov(rng, d), 500)
    b = _gaussian(rng, rng.normal(size=d), _random_cov(rng, d), 300)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref_eig = _fd_closed_form(mu1, s1, mu2, s2)
    ref_sqrtm = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))
    got = frechet_distance(a, b)
    assert got == pytest.approx(ref_eig, rel=1e-8)
    assert got == pytest.approx(ref_sqrtm, rel=1e-8)
    assert frechet_distance(b, a) == pytest.approx(got, rel=1e-8)  # symmetric


def test_fd_identical_sets_is_zero_and_singular_case_finite():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(200, 5))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    small = rng.normal(size=(10, 32))  # n < d: singular covariances, still finite
    fd = frechet_distance(small, small + 1.0)
    assert np.isfinite(fd) and fd == pytest.approx(32.0 + frechet_distance(small, small), rel=1e-6)
    with pytest.raises(ValueError):
        frechet_distance(a[:1], a)


# --------------------------------------------------------------------------- KID
def _mmd2_direct(x, y, paired=False):
    """O(n²) loops over pairs, cubic kernel, unbiased."""
    d = x.shape[1]
    k = lambda u, v: (u @ v / d + 1.0) ** 3  # noqa: E731
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    pairs = [(i, j) for i in range(n) for j in range(m) if not (paired and i == j)]
    xy = sum(k(x[i], y[j]) for i, j in pairs) / len(pairs)
    return xx + yy - 2 * xy


def test_kid_exact_on_whole_set():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(25, 7)), rng.normal(0.3, 1.2, size=(25, 7))
    mean, std = kid(x, y, subset_size=25)
    assert mean == pytest.approx(_mmd2_direct(x, y), rel=1e-10)
    assert std == 0.0
    assert mmd2_unbiased(x, y[:20]) == pytest.approx(_mmd2_direct(x, y[:20]), rel=1e-10)
    pm, _ = kid(x, y, paired=True)
    assert pm == pytest.approx(_mmd2_direct(x, y, paired=True), rel=1e-10)
    assert pm != pytest.approx(mean, rel=1e-6)


def test_kid_near_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(1500, 16)), rng.normal(size=(1500, 16))
    mean, std = kid(a, b, subset_size=500, n_subsets=50)
    assert std > 0 and abs(mean) <= 2 * std
    shifted = rng.normal(0.5, 1.0, size=(1500, 16))
    mean_s, std_s = kid(a, shifted, subset_size=500, n_subsets=50)
    assert mean_s > 10 * std_s and mean_s > 20 * abs(mean)
    lo, hi = kid_ci(a[:400], shifted[:400], n_boot=100)
    assert 0 < lo < mmd2_unbiased(a[:400], shifted[:400]) < hi


def test_kid_ci_paired_bootstrap_covers_estimate():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(300, 8))
    recon = a + 0.05 * rng.normal(size=a.shape)  # near-perfect reconstructions
    point = mmd2_unbiased(a, recon, paired=True)
    lo, hi = kid_ci(a, recon, n_boot=200, paired=True)
    assert lo <= point <= hi
    assert abs(point) < 1e-3  # paired estimator: own pairs do not pull KID below 0
    assert np.isnan(kid_ci(a, recon, n_boot=0)[0])


# --------------------------------------------------------------------------- per group
def _synthetic(rng, n=600, d=8, shifted="b"):
    groups = rng.choice(["a", "b", "c"], size=n)
    orig = rng.normal(size=(n, d))
    recon = orig + 0.1 * rng.normal(size=(n, d))
    recon[groups == shifted] += 0.6
    return orig, recon, groups


def test_realism_by_group_flags_shifted_group():
    rng = np.random.default_rng(6)
    orig, recon, groups = _synthetic(rng)
    t = realism_by_group(orig, recon, groups, seed=0, n_boot=100)
    assert list(t.columns) == BY_GROUP_COLUMNS
    assert list(t["group"]) == [ALL_GROUP, "a", "b", "c"]
    assert t["n"].iloc[0] == len(orig) and t["n"].iloc[1:].sum() == len(orig)
    by = t.set_index("group")
    for other in ("a", "c"):
        assert by.loc["b", "fd"] > 10 * by.loc[other, "fd"]
        assert by.loc["b", "kid_ci_low"] > by.loc[other, "kid_ci_high"]
    assert (t["kid_ci_low"] <= t["kid"]).all() and (t["kid"] <= t["kid_ci_high"]).all()
    again = realism_by_group(orig, recon, groups, seed=0, n_boot=100)
    pd.testing.assert_frame_equal(t, again)  # seeded


def test_realism_by_group_tiny_group_is_nan():
    rng = np.random.default_rng(7)
    orig, recon, groups = _synthetic(rng, n=50)
    groups = groups.astype(object)
    groups[0] = "lonely"
    groups[1] = None
    t = realism_by_group(orig, recon, groups, n_boot=20).set_index("group")
    assert t.loc["lonely", "n"] == 1 and np.isnan(t.loc["lonely", "fd"]) and np.isnan(t.loc["lonely", "kid"])
    assert t.loc[ALL_GROUP, "n"] == 50 and t["n"].drop(ALL_GROUP).sum() == 49


def test_columns_and_directions():
    assert REALISM_COLUMNS == ("fd", "kid")
    assert all(HIGHER_IS_BETTER[c] is False for c in REALISM_COLUMNS)


# --------------------------------------------------------------------------- storage
def test_feature_store_round_trip_in_order(tmp_path):
    store = FeatureStore(tmp_path, "pixels")
    rng = np.random.default_rng(8)
    f1, f2 = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(2, 4)).astype(np.float32)
    p1 = store.save("originals", ["i0", "i1", "i2"], f1)
    p2 = store.save("originals", ["i3", "i4"], f2)
    assert (p1.name, p2.name) == ("part-000000.npz", "part-000001.npz")
    ids, feats = store.load("originals")
    assert list(ids) == ["i0", "i1", "i2", "i3", "i4"]
    np.testing.assert_array_equal(feats, np.concatenate([f1, f2]))
    assert feats.dtype == np.float32
    # a resumed batch saved again keeps its latest features
    store.save("originals", ["i4"], np.ones((1, 4)))
    ids, feats = store.load("originals")
    assert list(ids).count("i4") == 1 and np.all(feats[list(ids).index("i4")] == 1)
    assert store.keys() == ["originals"]
    with pytest.raises(FairbitsError):
        store.load("jpeg__q50")
    with pytest.raises(ValueError):
        store.save("x", ["a", "b"], np.zeros((3, 4)))


def test_feature_store_failed_write_leaves_no_part(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path, "pixels")
    store.save("c", ["a"], np.zeros((1, 2)))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        store.save("c", ["b"], np.ones((1, 2)))
    d = store.key_dir("c")
    assert sorted(p.name for p in d.iterdir()) == ["part-000000.npz"]  # no temp file, no half part
    ids, _ = store.load("c")
    assert list(ids) == ["a"]


def test_realism_table_and_write(tmp_path):
    rng = np.random.default_rng(9)
    orig, recon, groups = _synthetic(rng, n=120)
    ids = [f"img{i:03d}" for i in range(len(orig))]
    store = FeatureStore(tmp_path, "pixels")
    store.save("originals", ids[:60], orig[:60])
    store.save("originals", ids[60:], orig[60:])
    store.save("jpeg__q50", ids[::-1], recon[::-1])  # order of saving does not matter
    store.save("jpeg__q90", ids, orig + 0.01)
    rows = []
    for cell in ("q50", "q90", "q10"):  # q10 has no features: skipped
        rows += [{"image_id": i, "codec": "jpeg", "setting": cell, "grp": g, "error": None}
                 for i, g in zip(ids, groups)]
    results = pd.DataFrame(rows)
    results.loc[0, "error"] = "boom"  # errored rows are left out
    t = realism_table(results, store, ["grp"], extractor="pixels", n_boot=20)
    assert list(t.columns) == TABLE_COLUMNS
    assert set(t["setting"]) == {"q50", "q90"}
    q50 = t[t["setting"] == "q50"].set_index("group")
    assert q50.loc[ALL_GROUP, "n"] == 119
    assert q50.loc["b", "fd"] > q50.loc["a", "fd"]
    q90 = t[t["setting"] == "q90"].set_index("group")
    assert q90.loc[ALL_GROUP, "fd"] == pytest.approx(8 * 0.01 ** 2, rel=1e-3)  # constant shift: |Δμ|² only
    assert q50.loc[ALL_GROUP, "fd"] > 10 * q90.loc[ALL_GROUP, "fd"]
    # same answer from an in-memory mapping
    mapping = {"originals": (ids, orig), "jpeg__q50": (ids, recon), "jpeg__q90": (ids, orig + 0.01)}
    t2 = realism_table(results, mapping, ["grp"], extractor="pixels", n_boot=20)
    pd.testing.assert_frame_equal(t, t2, check_dtype=False, atol=1e-4)  # store keeps float32
    path = write_realism(tmp_path, results, ["grp"], "pixels", n_boot=20)
    assert path == tmp_path / "realism.csv"
    back = pd.read_csv(path, dtype={"group": str})
    assert list(back.columns) == TABLE_COLUMNS and len(back) == len(t)


# --------------------------------------------------------------------------- extractors
def test_pixels_extractor_shape_and_determinism():
    ext = get_extractor("pixels")
    x = torch.rand(5, 3, 40, 30, generator=torch.Generator().manual_seed(0))
    f = ext(x)
    assert f.shape == (5, ext.dim) == (5, 768) and f.dtype == np.float32
    np.testing.assert_array_equal(f, ext(x))
    const = ext(torch.full((1, 3, 64, 64), 0.25))
    np.testing.assert_allclose(const, 0.25, atol=1e-6)
    with pytest.raises(FairbitsError):
        get_extractor("nope")


def _face_images():
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image, ImageFilter

    from fairbits.data.images import fit_size, to_tensor
    face = fit_size(np.ascontiguousarray(skimage_data.astronaut()[0:230, 130:360]), 256)
    rng = np.random.default_rng(0)
    noisy = np.clip(face + rng.normal(0, 8, face.shape), 0, 255).astype(np.uint8)
    blurred = np.asarray(Image.fromarray(face).filter(ImageFilter.GaussianBlur(2)))
    cat = fit_size(skimage_data.chelsea(), 256)
    return to_tensor([face, noisy, blurred, cat])


def test_sface_extractor_features():
    try:
        ext = get_extractor("sface")
    except FairbitsError as e:
        pytest.skip(f"sface not installed: {e}")
    x = _face_images()
    f = ext(x)
    assert f.shape == (4, 128) == (len(x), ext.dim) and f.dtype == np.float32
    assert np.isfinite(f).all() and np.linalg.norm(f, axis=1).min() > 0
    np.testing.assert_array_equal(f, ext(x))  # deterministic
    np.testing.assert_array_equal(ext(x[1:2]), f[1:2])  # independent of batch composition
    n = f / np.linalg.norm(f, axis=1, keepdims=True)
    cos = n @ n.T
    assert cos[0, 1] > cos[0, 2] > cos[0, 3]  # noisy copy > blurred copy > a cat
    assert cos[0, 1] > 0.9 and cos[0, 3] < 0.6


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_inception_without_weights_names_the_file(tmp_path, monkeypatch, no_network):
    monkeypatch.delenv(feat_mod.INCEPTION_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FairbitsError) as err:
        get_extractor("inception")
    msg = str(err.value)
    assert feat_mod.TORCHVISION_INCEPTION_FILE in msg and feat_mod.INCEPTION_ENV in msg
    assert str(tmp_path / "hub" / "checkpoints") in msg
    monkeypatch.setenv(feat_mod.INCEPTION_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(FairbitsError, match="missing.pth"):
        get_extractor("inception")


@pytest.mark.parametrize("fid", [False, True])
def test_inception_loads_local_state_dict(tmp_path, monkeypatch, no_network, fid):
    from torchvision.models import inception_v3
    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=not fid, init_weights=False, num_classes=1008 if fid else 1000)
    path = tmp_path / "weights.pth"
    torch.save(net.state_dict(), path)
    monkeypatch.setenv(feat_mod.INCEPTION_ENV, str(path))
    ext = get_extractor("inception", batch_size=1)
    assert ext.fid_variant is fid and ext.dim == 2048
    f = ext(torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1)))  # one 299² pass: slow on CPU
    assert f.shape == (1, 2048) and np.isfinite(f).all() and (f >= 0).all()  # pool3 after ReLU
    if fid:
        # the FID graph's pooling branches differ from torchvision's blocks (cheap block-level check)
        h = torch.rand(1, 2048, 5, 5, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            assert not torch.allclose(ext.net.Mixed_7c(h), net.eval().Mixed_7c(h))
            assert not torch.allclose(ext.net.Mixed_5b(h[:, :192]), net.Mixed_5b(h[:, :192]))
            assert torch.allclose(ext.net.Mixed_6a(h[:, :288]), net.Mixed_6a(h[:, :288]))  # unchanged block
