"""Gradients of the model as pure functions of the dummy input, so K restarts run through one vmapped pass."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.func import functional_call, grad, grad_and_value, vmap
from torch.nn import functional as F

from he_leak.attacks.optim.unroll import Simulator, bn_distance, needs_simulation
from he_leak.models.losses import LOSSES
from he_leak.records import Observation


class GradientModel:
    """The observed model, its loss and its target gradient (visible entries only), on one device and dtype, as
    functions for torch.func. Local steps to unroll or BatchNorm in train mode go through the Simulator
    (he_leak.attacks.optim.unroll); `unroll=False` matches a local update as one gradient."""

    def __init__(self, obs: Observation, *, device: torch.device, dtype: torch.dtype, unroll: bool = True) -> None:
        self.obs = obs
        self.sim = Simulator(obs, unroll=unroll) if needs_simulation(obs, unroll=unroll) else None
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
        """The loss's batch-mean gradient (or the simulated update) wrt every parameter for x (B×input_shape) with
        labels or label distributions y; hidden entries zeroed."""
        return self.update(x, y)[0]

    def update(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """The shared update for the dummies (hidden entries zeroed) and the running buffers after it (empty
        without BatchNorm in train mode)."""
        if self.sim is None:
            return _grads(self.model, self.loss, self.names, self.params, self.mask, x, y), {}
        g, running = self.sim.update(self.params, x, y)
        return (g if self.mask is None else [a * m for a, m in zip(g, self.mask, strict=True)]), running

    def cosine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """1 − cosine similarity between the dummy gradient and the target, over the visible entries."""
        return cosine_distance(self.grads(x, y), self.target, self.target_sq)

    def objective(self, x: torch.Tensor, y: torch.Tensor, *, tv: float, bn_prior: float = 0.0) -> torch.Tensor:
        """ig's objective: cosine distance + tv·total variation (+ bn_prior · the BatchNorm prior, `bn_distance`)."""
        g, running = self.update(x, y)
        value = cosine_distance(g, self.target, self.target_sq) + tv * total_variation(x)
        if bn_prior:
            value = value + bn_prior * bn_distance(running, self.obs)
        return value


def _grads(module, loss_fn, names, params, mask, x, y) -> list[torch.Tensor]:
    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss_fn(functional_call(module, p, (x,)), y)

    g = grad(loss)(params)
    out = [g[n] for n in names]
    return out if mask is None else [a * m for a, m in zip(out, mask, strict=True)]


def cosine_distance(g: Sequence[torch.Tensor], target: Sequence[torch.Tensor], target_sq: Any) -> torch.Tensor:
    """1 − cosine similarity between gradients g and target (whose squared norm is target_sq)."""
    dot = sum((a * b).sum() for a, b in zip(g, target, strict=True))
    norm = torch.sqrt(sum((a * a).sum() for a in g))
    return 1 - dot / (norm * target_sq**0.5 + 1e-30)


class StackedGradientModels:
    """GradientModels of several observations of one architecture, stacked, so that runs on different observations
    (each with its own weights, target, mask and labels) share one vmapped pass: `values_and_grads`."""

    def __init__(self, models: Sequence[GradientModel], *, classes: int) -> None:
        m0 = models[0]
        self.classes = classes
        self.model, self.loss, self.names = m0.model, m0.loss, m0.names
        self.params = {n: torch.stack([m.params[n] for m in models]) for n in self.names}
        self.target = [torch.stack(ts) for ts in zip(*(m.target for m in models), strict=True)]
        self.target_sq = torch.tensor([m.target_sq for m in models], dtype=m0.dtype, device=m0.device)
        masked = [m.mask is not None for m in models]
        if any(masked) and not all(masked):
            raise ValueError("StackedGradientModels: some observations are masked and some are not")
        self.mask = [torch.stack(ms) for ms in zip(*(m.mask for m in models), strict=True)] if all(masked) else None

    def for_runs(
        self, owner: torch.Tensor, labels: torch.Tensor, tv: float
    ) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """xs ↦ (values, gradients wrt xs): cosine distance + tv·total variation for run r = xs[r] on observation
        owner[r] with labels[r], every run in one pass (what `GradientModel.cosine` + tv·TV gives one by one). Each
        run's weights, target and mask are selected once, here. Class labels become one-hot rows (F.one_hot cannot
        run under vmap; the losses take either)."""
        if not labels.is_floating_point():
            labels = F.one_hot(labels.long(), self.classes).to(self.target_sq.dtype)

        def objective(x, params, target, target_sq, mask, y):
            g = _grads(self.model, self.loss, self.names, params, mask, x, y)
            return cosine_distance(g, target, target_sq) + tv * total_variation(x)

        pick = lambda v: v.index_select(0, owner)  # noqa: E731
        params = {n: pick(v) for n, v in self.params.items()}
        target, target_sq = [pick(t) for t in self.target], pick(self.target_sq)
        mask, mask_dim = (None, None) if self.mask is None else ([pick(m) for m in self.mask], 0)
        fn = vmap(grad_and_value(objective), in_dims=(0, 0, 0, 0, mask_dim, 0))

        def step(xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            g, v = fn(xs, params, target, target_sq, mask, labels)
            return v, g

        return step


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
