"""A malicious server's imprint layer in front of a model (Fowl, Geiping, Czaja, Goldblum & Goldstein, "Robbing the
Fed: Directly Obtaining Private Data in Federated Learning with Modified Models", ICLR 2022).

The block maps the flattened input x (d values) through k "bins": unit i computes z_i = m·x − c_i with the same
measurement row m for every unit (here m·x is the image's mean brightness, m = 1/d) and thresholds c_0 < … < c_{k−1}
(the bins), then a ReLU, then a linear layer back to d values whose weights are all equal, so that the loss
gradient reaching unit i from sample n, g_n = ∂ℓ_n/∂y_{n,i}, is the same for every active unit. A sample with
c_i < m·x_n ≤ c_{i+1} activates units 0 … i, so for the batch-mean (or a sum over clients) gradient

    ∂W_i − ∂W_{i+1} = (1/B) Σ_{n in bin i} g_n x_nᵀ,    ∂b_i − ∂b_{i+1} = (1/B) Σ_{n in bin i} g_n,

and a bin holding exactly one sample gives it back as their ratio, however many samples were averaged (the attack:
he_leak.attacks.imprint). Bins are the quantiles of the measurement on data the server holds (``public_bins``), so
that each bin is equally likely to catch a sample.

Where this differs from the paper: the back-projection's weights are 1/k instead of 1, so that the block's output
stays in the input's range and a sigmoid model behind it is not driven into saturation (whose vanishing gradient
would make every g_n ≈ 0); any common value keeps the identity above. The rest of the model sees a constant image
(the paper's block, too, trades the model's function for one round's data).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from he_leak.errors import ConfigError

FIRST_EDGE = -1.0  # the lowest threshold lies below every brightness in [0, 1]: unit 0 is active for every sample


def public_bins(measurements: np.ndarray, bins: int) -> np.ndarray:
    """k thresholds from the server's own data: FIRST_EDGE, then the i/k quantiles (i = 1 … k−1) of the measurement
    (equal-mass bins; ties in the data make equal thresholds, i.e. empty bins)."""
    values = np.asarray(measurements, np.float64).reshape(-1)
    if bins < 2 or values.size == 0:
        raise ConfigError(f"an imprint layer needs at least 2 bins and some public data, got {bins} bins")
    edges = np.quantile(values, np.arange(1, bins) / bins)
    return np.concatenate([[FIRST_EDGE], edges])


class ImprintBlock(nn.Module):
    """Flatten → Linear(d, k) with rows 1/d and biases −c_i → ReLU → Linear(k, d) with weights 1/k → the input shape."""

    def __init__(self, input_shape: tuple[int, ...], thresholds: np.ndarray) -> None:
        super().__init__()
        d, k = math.prod(input_shape), len(thresholds)
        self.input_shape = tuple(input_shape)
        self.measure = nn.Linear(d, k)
        self.back = nn.Linear(k, d)
        with torch.no_grad():
            self.measure.weight.fill_(1.0 / d)
            self.measure.bias.copy_(-torch.as_tensor(np.asarray(thresholds, np.float64)))
            self.back.weight.fill_(1.0 / k)
            self.back.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.back(torch.relu(self.measure(x.flatten(1))))
        return y.reshape(len(x), *self.input_shape)


def imprinted(model: nn.Module, input_shape: tuple[int, ...], thresholds: np.ndarray) -> nn.Module:
    """The crafted model the server sends: the imprint block in front of ``model`` (same dtype and device)."""
    param = next(model.parameters())
    block = ImprintBlock(input_shape, thresholds).to(dtype=param.dtype, device=param.device)
    return nn.Sequential(block, model)
