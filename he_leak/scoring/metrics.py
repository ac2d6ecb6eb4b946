"""Metrics in model-input space and plaintext space: MSE, PSNR (data range 1), SSIM (scikit-image), labels."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from skimage.metrics import structural_similarity

DATA_RANGE = 1.0
PSNR_CAP = 200.0  # dB reported for (numerically) identical images, so every row stays finite JSON


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error over all entries (float64)."""
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for data range 1, capped at PSNR_CAP for identical inputs."""
    m = mse(a, b)
    return PSNR_CAP if m <= DATA_RANGE**2 * 10 ** (-PSNR_CAP / 10) else 10.0 * math.log10(DATA_RANGE**2 / m)


def ssim(a: np.ndarray, b: np.ndarray) -> float | None:
    """Structural similarity of two C×H×W images (scikit-image, data range 1, window fitted to small images);
    None for images under 3×3, where no window fits."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.ndim != 3:
        raise ValueError(f"ssim needs C×H×W images, got {a64.shape}")
    side = min(a64.shape[1:])
    if side < 3:
        return None
    win = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(a64, b64, data_range=DATA_RANGE, channel_axis=0, win_size=win))


def match(recovered: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Order of `recovered` best matching `truth` (Hungarian assignment on MSE): recovered[order[i]] ~ truth[i]."""
    r = np.asarray(recovered, np.float64).reshape(len(recovered), -1)
    t = np.asarray(truth, np.float64).reshape(len(truth), -1)
    cost = ((t[:, None, :] - r[None, :, :]) ** 2).mean(-1)
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


def symbol_exact(recovered: np.ndarray, truth: np.ndarray, *, quantum: float) -> float:
    """Fraction of entries whose recovered symbol (value / quantum, rounded) equals the true one."""
    r = np.rint(np.asarray(recovered, np.float64) / quantum)
    t = np.rint(np.asarray(truth, np.float64) / quantum)
    return float(np.mean(r == t))


def label_accuracy(recovered: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray) -> float:
    """Fraction of labels recovered correctly (after matching)."""
    return float(np.mean(np.asarray(recovered) == np.asarray(truth)))


def image_scores(estimate: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    """Mean MSE / PSNR / SSIM over a batch of images (B×C×H×W), and the per-image PSNRs."""
    psnrs = [psnr(e, t) for e, t in zip(estimate, truth, strict=True)]
    ssims = [ssim(e, t) for e, t in zip(estimate, truth, strict=True)]
    return {
        "mse": float(np.mean([mse(e, t) for e, t in zip(estimate, truth, strict=True)])),
        "psnr": float(np.mean(psnrs)),
        "ssim": None if None in ssims else float(np.mean(ssims)),
        "psnrs": psnrs,
    }
