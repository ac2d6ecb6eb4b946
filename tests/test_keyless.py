"""The keyless decoders against references: the dual ridge equals scikit-learn's Ridge at the alpha it picks and its
leave-one-out error equals brute-force refits; a linear scheme is undone, a label-blind random view gives the prior."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from he_leak.scenarios.keyless import SKETCH_DIM, DualRidge, KeylessDecoder, chosen_plaintexts, count_sketch

RIDGE_RTOL = 1e-8  # float64 dual form vs scikit-learn's primal Ridge
LOO_RTOL = 1e-6  # hat-matrix leave-one-out vs m refits


def _problem(m=40, k=30, n=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, k))
    y = x @ rng.normal(size=(k, n)) + 0.3 * rng.normal(size=(m, n)) + 2.0
    return x, y


def test_dual_ridge_matches_sklearn_ridge():
    x, y = _problem()
    dual = DualRidge(alphas=np.array([0.5])).fit(x, y)
    ref = Ridge(alpha=0.5).fit(x, y)
    np.testing.assert_allclose(dual.predict(x[:7]), ref.predict(x[:7]), rtol=RIDGE_RTOL, atol=1e-10)


def test_dual_ridge_leave_one_out_is_exact():
    x, y = _problem(m=25, k=40, n=3)  # fewer samples than features: the dual's home ground
    alpha = 2.0
    dual = DualRidge(alphas=np.array([alpha])).fit(x, y)
    errors = []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        fit = Ridge(alpha=alpha).fit(x[keep], y[keep])
        errors.append((fit.predict(x[i : i + 1])[0] - y[i]) ** 2)
    assert dual.loo_mse == pytest.approx(float(np.mean(errors)), rel=LOO_RTOL)


def test_linear_mask_is_undone_and_noise_gives_the_prior():
    rng = np.random.default_rng(1)
    n, m, classes = 16, 16 + 64, 3
    images = rng.random((60, n))
    labels = rng.integers(classes, size=60)
    plains, soft = chosen_plaintexts(images, labels, count=m, classes=classes, seed=2, fallback=None)
    means = np.stack([images[labels == c].mean(0) for c in range(classes)])
    a, b = np.linalg.qr(rng.normal(size=(n, n)))[0], rng.uniform(-0.5, 0.5, n)
    target, target_label = rng.random(n), np.array([1])
    linear = KeylessDecoder(classes=classes, seed=0).fit((a @ p + b for p in plains), plains, soft, means)
    est = linear.predict((a @ target + b)[None], np.eye(classes)[target_label], means[target_label])
    assert est.chosen == "ridge"
    np.testing.assert_allclose(est.best[0], target, atol=1e-4)
    noise = KeylessDecoder(classes=classes, seed=0).fit((rng.random(200) for _ in plains), plains, soft, means)
    est = noise.predict(rng.random((1, 200)), np.eye(classes)[target_label], means[target_label])
    prior_err = np.mean((means[1] - target) ** 2)
    assert np.mean((est.best[0] - target) ** 2) <= 1.25 * prior_err  # no better than the class mean, not much worse


def test_wide_views_are_sketched_and_narrow_ones_kept():
    assert count_sketch(SKETCH_DIM, dim=SKETCH_DIM, seed=0) is None
    s = count_sketch(3 * SKETCH_DIM, dim=SKETCH_DIM, seed=0)
    assert s.shape == (3 * SKETCH_DIM, SKETCH_DIM) and s.nnz == 3 * SKETCH_DIM


def test_chosen_plaintexts_fall_back_when_the_pool_is_empty():
    plains, soft = chosen_plaintexts(np.zeros((0, 4)), np.zeros(0, int), count=5, classes=2, seed=0,
                                     fallback=lambda k, rng: rng.random((k, 4)))  # fmt: skip
    assert plains.shape == (5, 4) and np.allclose(soft, 0.5)
