"""Gradients of the model as pure functions of the dummy input, so K restarts run through one vmapped pass."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import functional_call, grad, grad_and_value, vmap

from he_leak.losses import LOSSES
from he_leak.records import Observation


class GradientModel:
    """The observed model, its loss and its target gradient (visible entries only), on one device and dtype, as
    functions for torch.func."""

    def __init__(self, obs: Observation, *, device: torch.device, dtype: torch.dtype) -> None:
        self.model = obs.model
        self.loss = LOSSES[obs.loss]
        self.params = {n: p.detach().to(device, dtype) for n, p in obs.model.named_parameters()}
        self.names = list(self.params)
        self.mask = None if obs.mask is None else [m.to(device) for m in obs.mask]
        self.target = self._visible([g.detach().to(device, dtype) for g in obs.gradients])
        self.target_sq = sum(float((t * t).sum()) for t in self.target)
        self.device, self.dtype = device, dtype

    def _visible(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Hidden (encrypted) entries set to zero, so they take no part in any distance."""
        if self.mask is None:
            return grads
        return [g * m for g, m in zip(grads, self.mask, strict=True)]

    def grads(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """The loss's batch-mean gradient wrt every parameter for x (B×input_shape) with labels or label
        distributions y; hidden entries zeroed."""

        def loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.loss(functional_call(self.model, params, (x,)), y)

        g = grad(loss)(self.params)
        return self._visible([g[n] for n in self.names])

    def cosine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """1 − cosine similarity between the dummy gradient and the target, over the visible entries."""
        g = self.grads(x, y)
        dot = sum((a * b).sum() for a, b in zip(g, self.target, strict=True))
        norm = torch.sqrt(sum((a * a).sum() for a in g))
        return 1 - dot / (norm * self.target_sq**0.5 + 1e-30)


def batched_value_and_grad(
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], xs: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Objective values (K,) and their gradients wrt xs (K×B×…) for K restarts sharing labels y, in one pass.

    K = 1 skips vmap (plain autograd around the inner torch.func.grad is ~2× faster per step on CPU)."""
    if xs.shape[0] == 1:
        x = xs[0].detach().requires_grad_(True)
        value = objective(x, y)
        (g,) = torch.autograd.grad(value, x)
        return value.detach().reshape(1), g.unsqueeze(0)
    g, v = vmap(grad_and_value(objective), in_dims=(0, None))(xs, y)
    return v, g


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels of B×C×H×W images (0 for flat inputs)."""
    if x.dim() != 4:
        return x.new_zeros(())
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
