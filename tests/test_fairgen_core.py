"""FairGen latent core: boundaries, edits, the fair sampler, its baselines and metrics.

The synthetic "generator" has latents in R^16 and two attributes given analytically by
the sign of two fixed, correlated projections (cosine 0.6). Its training latents are
drawn from a shifted Gaussian, so the subgroups are heavily skewed (about 3/8/4/85 %).
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from fairbits.generative import (Boundary, FairLatentSampler, ImportanceReweighter, PlainSampler, RejectionSampler,
                                 SamplingError, allocate_counts, conditional_directions, conditional_normal,
                                 diversity, edit, edit_many, fairness_discrepancy, fit_boundary, frechet_distance,
                                 kl_divergence, orthogonalize, precision_recall, proportion_cis, signed_distance,
                                 subgroup_labels, subgroup_proportions, subgroups, target_proportions)

D = 16
N_FIT = 4000
N_SAMPLE = 4000
TARGET = {(0, 0): 0.1, (0, 1): 0.2, (1, 0): 0.3, (1, 1): 0.4}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The test machine's cores are shared: oversubscribed BLAS/OpenMP makes the mixtures ~10x slower."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def world():
    """Directions ``U`` (2, 16), skewed training latents and noisy classifier scores."""
    rng = np.random.default_rng(0)
    u1 = rng.standard_normal(D)
    u1 /= np.linalg.norm(u1)
    v = rng.standard_normal(D)
    v -= (v @ u1) * u1
    v /= np.linalg.norm(v)
    U = np.stack([u1, 0.6 * u1 + 0.8 * v])
    mean = 1.2816 * u1 + 0.9 * v                     # P(attribute 0) = 0.9
    z = rng.standard_normal((N_FIT, D)) + mean
    scores = 3.0 * (z @ U.T) + 0.3 * rng.standard_normal((N_FIT, 2))   # logit-like scores
    return {"U": U, "z": z, "scores": scores}


def analytic(x, U):
    """Subgroup proportions of codes ``x`` under the true attributes."""
    return subgroup_proportions(subgroup_labels(x @ U.T), 2)


@pytest.fixture(scope="module")
def fair(world):
    return FairLatentSampler(seed=0).fit(world["z"], world["scores"])


# --------------------------------------------------------------------------- boundaries
def test_fit_boundary_recovers_known_direction():
    rng = np.random.default_rng(1)
    u = rng.standard_normal(D)
    u /= np.linalg.norm(u)
    z = rng.standard_normal((N_FIT, D))
    b = fit_boundary(z, z @ u + 0.1 * rng.standard_normal(N_FIT), threshold=0.0)
    assert isinstance(b, Boundary)
    assert np.isclose(np.linalg.norm(b.normal), 1.0)
    assert b.normal @ u >= 0.95                      # measured ≈ 0.99
    assert abs(b.offset) < 0.1 and b.threshold == 0.0
    assert b.val_accuracy >= 0.95 and b.n_train + b.n_val == 160
    flipped = fit_boundary(z, -(z @ u))
    assert flipped.normal @ u <= -0.95 and flipped.threshold is None


def test_fit_boundary_skewed_data_calibrated_to_threshold(world):
    z, U, s = world["z"], world["U"], world["scores"]
    for i in range(2):
        b = fit_boundary(z, s[:, i], threshold=0.0)
        assert b.normal @ U[i] >= 0.95               # measured ≈ 0.995
        agree = np.mean((signed_distance(z, b) > 0) == (z @ U[i] > 0))
        assert agree >= 0.98


def test_fit_boundary_rejects_bad_input(world):
    z = world["z"]
    with pytest.raises(ValueError, match="scores must have shape"):
        fit_boundary(z, world["scores"])
    with pytest.raises(ValueError, match="ratio"):
        fit_boundary(z, world["scores"][:, 0], ratio=0.0)
    with pytest.raises(ValueError, match="2-D"):
        fit_boundary(z[:, 0], world["scores"][:, 0])


def correlated_normals(k=3, d=8, seed=2):
    rng = np.random.default_rng(seed)
    n = rng.standard_normal((k, d)) + 2.0 * rng.standard_normal(d)   # shared component: correlated rows
    return n / np.linalg.norm(n, axis=1, keepdims=True)


@pytest.mark.parametrize("method", ["lowdin", "gram-schmidt"])
def test_orthogonalize_is_orthonormal_and_keeps_span(method):
    n = correlated_normals()
    assert np.abs(n @ n.T - np.eye(3)).max() > 0.3   # really correlated
    q = orthogonalize(n, method=method)
    assert q.shape == n.shape
    np.testing.assert_allclose(q @ q.T, np.eye(3), atol=1e-10)
    np.testing.assert_allclose((n @ q.T) @ q, n, atol=1e-10)          # every input lies in the output span
    assert np.all(np.einsum("ij,ij->i", q, n) > 0)                    # rows keep their orientation
    if method == "gram-schmidt":
        np.testing.assert_allclose(q[0], n[0], atol=1e-12)
        np.testing.assert_allclose((n[1] @ q[:2].T) @ q[:2], n[1], atol=1e-10)   # span of first two kept
    else:
        perm = [2, 0, 1]
        np.testing.assert_allclose(orthogonalize(n[perm], method=method), q[perm], atol=1e-10)


def test_orthogonalize_and_conditional_errors():
    n = correlated_normals()
    with pytest.raises(ValueError, match="dependent"):
        orthogonalize(np.stack([n[0], n[1], n[0] + n[1]]))
    with pytest.raises(ValueError, match="unknown"):
        orthogonalize(n, method="magic")
    with pytest.raises(ValueError, match="span"):
        conditional_normal(n[0] + n[1], n[:2])


def test_conditional_normal_and_directions():
    n = correlated_normals()
    c = conditional_normal(n[0], n[1:])
    assert np.isclose(np.linalg.norm(c), 1.0) and c @ n[0] > 0
    np.testing.assert_allclose(n[1:] @ c, 0.0, atol=1e-12)
    dirs = conditional_directions(n)
    effect = n @ dirs.T                                # effect of direction j on distance i
    np.testing.assert_allclose(effect - np.diag(np.diag(effect)), 0.0, atol=1e-12)
    np.testing.assert_allclose(dirs[0], c, atol=1e-12)


def test_edit_reaches_distance_along_normal():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((50, 8))
    normal = rng.standard_normal(8) * 3.0             # not unit: normalised inside
    b = Boundary(normal=normal / np.linalg.norm(normal), offset=0.4, val_accuracy=1.0, n_train=0)
    targets = rng.normal(size=50)
    for dist in (1.5, targets):
        out = edit(z, b, dist)
        np.testing.assert_allclose(signed_distance(out, b), np.broadcast_to(dist, (50,)), atol=1e-6)
        move = out - z
        along = move @ b.normal
        np.testing.assert_allclose(move, along[:, None] * b.normal, atol=1e-12)
    np.testing.assert_allclose(edit(z, normal, targets, offset=0.4), edit(z, b, targets), atol=1e-12)
    with pytest.raises(ValueError, match="distance"):
        edit(z, b, np.zeros(3))


def test_edit_many_hits_all_targets_inside_span():
    rng = np.random.default_rng(4)
    n = correlated_normals()
    offsets = np.array([0.3, -0.2, 0.1])
    z = rng.standard_normal((40, 8))
    targets = rng.normal(size=(40, 3))
    out = edit_many(z, n, targets, offsets=offsets)
    np.testing.assert_allclose(out @ n.T + offsets, targets, atol=1e-6)
    move = out - z
    q = orthogonalize(n)
    np.testing.assert_allclose((move @ q.T) @ q, move, atol=1e-10)    # only within span(normals)
    for dirs in (conditional_directions(n), q):                       # same edit whatever the basis
        np.testing.assert_allclose(edit_many(z, n, targets, offsets=offsets, directions=dirs), out, atol=1e-10)
    # orthonormal boundaries: the same as one edit after another
    bounds = [Boundary(normal=q[i], offset=offsets[i], val_accuracy=1.0, n_train=0) for i in range(3)]
    seq = z
    for i in range(3):
        seq = edit(seq, bounds[i], targets[:, i])
    np.testing.assert_allclose(edit_many(z, bounds, targets), seq, atol=1e-10)
    with pytest.raises(ValueError, match="distances"):
        edit_many(z, n, np.zeros(2))


# --------------------------------------------------------------------------- fair sampler
def test_sampler_reaches_uniform_from_skewed_data(world, fair):
    U = world["U"]
    before = analytic(world["z"], U)
    assert before.min() < 0.05 and before.max() > 0.8
    assert fair.subgroups_ == [(0, 0), (0, 1), (1, 0), (1, 1)] == subgroups(2)
    assert len(fair.mixtures_) == 4 and len(fair.boundaries_) == 2
    cosines = [fair.boundaries_[i].normal @ U[i] for i in range(2)]
    assert min(cosines) >= 0.95
    x, lab = fair.sample(N_SAMPLE, return_subgroups=True)
    assert x.shape == (N_SAMPLE, D)
    np.testing.assert_array_equal(np.bincount(lab, minlength=4), [1000] * 4)
    reached = analytic(x, U)
    np.testing.assert_allclose(reached, 0.25, atol=0.02)                # measured within ≈0.5 pp
    assert fairness_discrepancy(reached, np.full(4, 0.25)) < 0.03 < fairness_discrepancy(before, np.full(4, 0.25))


def test_sampler_reaches_non_uniform_target(world, fair):
    want = target_proportions(TARGET, 2)
    reached = analytic(fair.sample(N_SAMPLE, target=TARGET), world["U"])
    np.testing.assert_allclose(reached, want, atol=0.02)
    same = fair.sample(N_SAMPLE, target=np.array([1.0, 2.0, 3.0, 4.0]))  # array form, normalised
    np.testing.assert_array_equal(same, fair.sample(N_SAMPLE, target=TARGET))


def test_sampler_without_truncation_and_other_covariances(world):
    z, s, U = world["z"], world["scores"], world["U"]
    loose = FairLatentSampler(covariance_type="diag", truncate=False, seed=1).fit(z, s)
    np.testing.assert_allclose(analytic(loose.sample(N_SAMPLE), U), 0.25, atol=0.03)
    bic = FairLatentSampler(n_components=2, select_by_bic=True, seed=1).fit(z[:1500], s[:1500])
    assert all(c in (1, 2) for c in bic.n_components_)
    np.testing.assert_allclose(analytic(bic.sample(N_SAMPLE), U), 0.25, atol=0.03)


def test_sampler_is_deterministic(world, fair):
    a = fair.sample(500, seed=7)
    np.testing.assert_array_equal(a, fair.sample(500, seed=7))
    assert not np.array_equal(a, fair.sample(500, seed=8))
    again = FairLatentSampler(seed=0).fit(world["z"], world["scores"])
    np.testing.assert_array_equal(again.sample(500, seed=7), a)


def test_sampler_rejects_bad_input(world, fair):
    z, s = world["z"], world["scores"]
    with pytest.raises(SamplingError, match="not fitted"):
        FairLatentSampler().sample(10)
    with pytest.raises(ValueError, match="rows to match"):
        FairLatentSampler().fit(z, s[:-1])
    with pytest.raises(ValueError, match="covariance_type"):
        FairLatentSampler(covariance_type="banana")
    for bad, msg in (([0.5, 0.5], "length"), ([1, -1, 1, 1], "non-negative"), ([0, 0, 0, 0], "all zero"),
                     ({(1, 0, 1): 1.0}, "0/1 tuple"), ({(2, 0): 1.0}, "0/1 tuple")):
        with pytest.raises(ValueError, match=msg):
            fair.sample(10, target=bad)
    assert fair.sample(0).shape == (0, D)


# --------------------------------------------------------------------------- baselines
def test_plain_sampler_keeps_the_skew(world):
    U = world["U"]
    plain = PlainSampler().fit(world["z"], world["scores"])
    reached = analytic(plain.sample(N_SAMPLE, target=None), U)
    assert fairness_discrepancy(reached, np.full(4, 0.25)) > 0.5
    np.testing.assert_allclose(reached, analytic(world["z"], U), atol=0.03)
    std = PlainSampler(prior="standard").fit(world["z"])
    assert abs(std.sample(N_SAMPLE).mean()) < 0.05


def test_rejection_sampler_meets_counts_and_caps(world):
    U = world["U"]
    rej = RejectionSampler(lambda x: x @ U.T, seed=0).fit(world["z"], world["scores"])
    x, lab = rej.sample(N_SAMPLE, target=TARGET, return_subgroups=True)
    np.testing.assert_allclose(analytic(x, U), [0.1, 0.2, 0.3, 0.4], atol=1e-12)
    np.testing.assert_array_equal(np.bincount(lab), [400, 800, 1200, 1600])
    assert rej.draws_ > N_SAMPLE
    capped = RejectionSampler(lambda x: x @ U.T, batch_size=100, max_draws=300).fit(world["z"], world["scores"])
    with pytest.raises(SamplingError, match="max_draws"):
        capped.sample(N_SAMPLE)
    wrong = RejectionSampler(lambda x: x @ U[:1].T).fit(world["z"], world["scores"])
    with pytest.raises(ValueError, match="predict returned shape"):
        wrong.sample(10)


def test_importance_reweighter_reaches_target_on_its_labels(world):
    rw = ImportanceReweighter(seed=0).fit(world["z"], world["scores"])
    w = rw.weights()
    assert np.isclose(w.mean(), 1.0)
    _, lab = rw.sample(N_SAMPLE, return_subgroups=True)
    np.testing.assert_allclose(subgroup_proportions(lab, 2), 0.25, atol=0.03)
    one_sided = ImportanceReweighter().fit(world["z"], np.abs(world["scores"]))   # only subgroup (1, 1)
    with pytest.raises(ValueError, match="no fitted code"):
        one_sided.sample(10)


# --------------------------------------------------------------------------- metrics
def test_subgroup_labels_order_and_proportions():
    scores = np.array([[-1.0, -2.0], [-1.0, 0.5], [2.0, -0.1], [3.0, 1.0], [0.0, 1.0]])
    lab = subgroup_labels(scores)
    np.testing.assert_array_equal(lab, [0, 1, 2, 3, 1])               # 0 is "absent"
    assert [subgroups(2)[i] for i in lab[:4]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    np.testing.assert_allclose(subgroup_proportions(lab, 2), [0.2, 0.4, 0.2, 0.2])
    with pytest.raises(ValueError):
        subgroup_proportions(np.array([0, 4]), 2)
    np.testing.assert_array_equal(allocate_counts(10, [1, 1, 1]), [4, 3, 3])
    assert allocate_counts(7, [0.5, 0.25, 0.25]).sum() == 7


def test_proportion_cis_against_hand_computed_values():
    lab = np.array([1, 1] + [0] * 8)                                   # 2 successes of 10 for subgroup 1
    low, high = proportion_cis(lab, 1)
    assert low[1] == pytest.approx(0.05668, abs=1e-4) and high[1] == pytest.approx(0.50984, abs=1e-4)
    assert low[0] == pytest.approx(1 - 0.50984, abs=1e-4)
    low, high = proportion_cis(lab, 1, method="clopper-pearson")
    assert low[1] == pytest.approx(0.02521, abs=1e-4) and high[1] == pytest.approx(0.55610, abs=1e-4)


def test_kl_and_l2_discrepancy():
    u = np.full(4, 0.25)
    assert kl_divergence(u, u) == pytest.approx(0.0, abs=1e-12)
    assert kl_divergence([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.5 * np.log(2) + 0.5 * np.log(2 / 3), abs=1e-8)
    assert kl_divergence([10, 10], [1, 3]) == pytest.approx(0.143841, abs=1e-6)   # counts are normalised
    assert np.isfinite(kl_divergence([1, 0], [0, 1]))
    assert fairness_discrepancy([0.5, 0.5, 0, 0], u) == pytest.approx(0.5)
    assert fairness_discrepancy(u, u) == 0.0
    for bad in ([0.5, 0.5], [-0.1, 0.5, 0.3, 0.3], [0, 0, 0, 0]):
        with pytest.raises(ValueError):
            kl_divergence(bad, u)


def test_diversity_of_known_points():
    square = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert diversity(square) == pytest.approx((4 + 2 * np.sqrt(2)) / 6)
    big = np.random.default_rng(5).standard_normal((300, 3))
    assert diversity(big, max_n=100, seed=1) == diversity(big, max_n=100, seed=1)
    assert diversity(big, max_n=100) == pytest.approx(diversity(big), rel=0.15)
    with pytest.raises(ValueError):
        diversity(square[:1])


def test_precision_recall_and_frechet():
    rng = np.random.default_rng(6)
    real = rng.standard_normal((200, 4))
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)
    half = np.concatenate([real[:100], real[100:] + 100.0])
    precision, recall = precision_recall(real, half)
    assert precision == pytest.approx(0.5)
    assert 0.5 <= recall < 1.0
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError):
        precision_recall(real, real[:, :3])
