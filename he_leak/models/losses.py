"""Training losses, registered by name. Each has the form L(z, y) = Φ(z) − yᵀz (+ a term free of the weights),
so its gradient at the logits is δ = φ(z) − y with the *link* φ = ∇Φ:

- ``cross-entropy``: Φ = logsumexp, φ = softmax (the usual classifier; DLG, iDLG, IG all assume it);
- ``mse``: ½‖z − y‖², φ = identity (HE training: no softmax under encryption);
- ``poly-sigmoid``: φ(z) = 0.5 + 0.197 z − 0.004 z³ per class, the degree-3 sigmoid fit on [-5, 5] that
  TenSEAL's encrypted logistic-regression tutorial uses; its gradient (φ(z) − y)·xᵀ is that tutorial's update.

Attacks read the loss from the Observation, and label recovery uses the link: the output layer's bias gradient of
a batch is mean_n φ(z_n) − mean_n y_n for every loss here. Targets may be class indices or label distributions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from he_leak.registry import Registry

LOSSES: Registry = Registry("loss")
SIGMOID3 = (0.5, 0.197, 0.0, -0.004)  # c0 + c1 z + c2 z² + c3 z³


def sigmoid3(z: torch.Tensor) -> torch.Tensor:
    """The degree-3 polynomial sigmoid approximation (SIGMOID3)."""
    c0, c1, _, c3 = SIGMOID3
    return c0 + c1 * z + c3 * z**3


def _targets(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Class indices → one-hot rows in the logits' dtype; label distributions unchanged."""
    if target.is_floating_point():
        return target.to(logits.dtype)
    return F.one_hot(target.long(), logits.shape[-1]).to(logits.dtype)


@dataclass(frozen=True)
class Loss:
    """A loss L(z, y) = Φ(z) − yᵀz + c(y), averaged over the batch; `link` is φ = ∇Φ."""

    name: str
    potential: Callable[[torch.Tensor], torch.Tensor]  # Φ per sample: B×K → B
    link: Callable[[torch.Tensor], torch.Tensor]  # φ: B×K → B×K
    constant: Callable[[torch.Tensor], torch.Tensor] = lambda y: y.new_zeros(y.shape[:-1])

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y = _targets(target, logits)
        per_sample = self.potential(logits) - (y * logits).sum(-1) + self.constant(y)
        return per_sample.mean()

    def delta(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """∂L_n/∂z_n for each sample (before the 1/B of the batch mean)."""
        return self.link(logits) - _targets(target, logits)


def register(loss: Loss) -> Loss:
    return LOSSES.register(loss.name)(loss)


CROSS_ENTROPY = register(
    Loss("cross-entropy", lambda z: torch.logsumexp(z, -1), lambda z: torch.softmax(z, -1))
)
MSE = register(Loss("mse", lambda z: 0.5 * (z * z).sum(-1), lambda z: z, lambda y: 0.5 * (y * y).sum(-1)))
POLY_SIGMOID = register(
    Loss(
        "poly-sigmoid",
        lambda z: (SIGMOID3[0] * z + SIGMOID3[1] / 2 * z**2 + SIGMOID3[3] / 4 * z**4).sum(-1),
        sigmoid3,
    )
)
