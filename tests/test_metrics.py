"""Metrics against hand-computed values."""

import math

import numpy as np
import pytest

from he_leak.scoring.metrics import PSNR_CAP, label_accuracy, match, mse, psnr, ssim, symbol_exact


def test_mse_and_psnr_by_hand():
    a = np.zeros((1, 2, 2))
    b = np.array([[[0.1, 0.0], [0.0, 0.3]]])
    assert mse(a, b) == pytest.approx((0.01 + 0.09) / 4)  # 0.025
    assert psnr(a, b) == pytest.approx(10 * math.log10(1 / 0.025))  # 16.0206 dB
    assert psnr(a, a) == PSNR_CAP
    assert psnr(np.zeros(4), np.full(4, 0.1)) == pytest.approx(20.0)


def test_ssim_identity_and_inverse():
    rng = np.random.default_rng(0)
    img = rng.random((3, 16, 16))
    assert ssim(img, img) == pytest.approx(1.0)
    assert ssim(img, 1 - img) < 0
    assert ssim(np.zeros((1, 8, 8)) + 0.5, np.zeros((1, 8, 8)) + 0.5) == pytest.approx(1.0)


def test_match_undoes_a_permutation():
    truth = np.random.default_rng(1).random((5, 1, 4, 4))
    perm = np.array([3, 0, 4, 1, 2])
    recovered = truth[perm] + 0.01
    order = match(recovered, truth)
    np.testing.assert_allclose(recovered[order] - 0.01, truth)


def test_symbol_exact_and_labels():
    q = 1 / 255
    t = np.array([0, 10, 20, 255]) * q
    r = t + np.array([0.4, -0.4, 0.6, 0.0]) * q  # the third rounds to the wrong symbol
    assert symbol_exact(r, t, quantum=q) == 0.75
    assert label_accuracy(np.array([1, 2, 3]), np.array([1, 0, 3])) == pytest.approx(2 / 3)
