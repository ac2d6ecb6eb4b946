"""The shared update as a function of dummy inputs — what the attacker believes the client computed — written with
torch.func, so that dlg's autograd and ig's vmap both differentiate through it.

* One gradient (FedSGD, `Observation.local` None): the batch-mean gradient of the loss.
* FedAvg (`Observation.local`, the multi-step attack of Geiping et al. 2020, §6): the client's local training
  unrolled — `steps` SGD steps of learning rate `lr` from the observed weights, on the mini-batches of
  `LocalTraining.schedule`, each a torch.func.grad at the current weights — and the update −Δ/(steps·lr); with
  `clients` K the dummies split into K batches, each trained from the same weights, and the updates are averaged
  (the he-aggregate key holder's view). `unroll=False` keeps the single-gradient attack on the same update: the
  update is matched as if it were one gradient of the whole batch at the observed weights.
* BatchNorm in train mode: each such layer is replaced by `BatchStatNorm`, which normalises by the batch's
  statistics as nn.BatchNorm does in train mode but writes no running buffer (so vmap and grad can run it) and
  hands the statistics out; the running buffers after the local steps are recomputed from them by PyTorch's rule
  (momentum, or the cumulative average when momentum is None; the variance unbiased), for ig's BN prior.

Checked against the client's real torch training (he_leak.models.local.client_update) in float64: tests/test_local.py.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad

from he_leak.models.local import batchnorms
from he_leak.models.losses import LOSSES
from he_leak.records import LocalTraining, Observation

Stats = list[tuple[str, torch.Tensor, torch.Tensor]]  # (BatchNorm name, batch mean, unbiased batch variance)


class BatchStatNorm(nn.Module):
    """nn.BatchNorm's train-mode forward without the running-buffer update; the batch statistics go to `sink`."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, name: str, sink: Stats) -> None:
        super().__init__()
        self.register_parameter("weight", bn.weight)
        self.register_parameter("bias", bn.bias)
        self.eps, self.name, self.sink = bn.eps, name, sink

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dims), x.var(dims, correction=0)
        n = x.numel() // x.shape[1]
        self.sink.append((self.name, mean, var * n / max(n - 1, 1)))
        shape = (1, -1) + (1,) * (x.dim() - 2)
        out = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        if self.weight is not None:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out


def train_batchnorms(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers that normalise by batch statistics and update running buffers (train mode)."""
    return batchnorms(model) if model.training else {}


def needs_simulation(obs: Observation, *, unroll: bool) -> bool:
    """Whether the plain gradient path does not describe the update: local steps to unroll, or BatchNorm in train
    mode (its in-place buffer update cannot run under torch.func)."""
    return (obs.local is not None and unroll) or bool(train_batchnorms(obs.model))


class Simulator:
    """The client's update for dummy inputs (see the module docstring)."""

    def __init__(self, obs: Observation, *, unroll: bool = True) -> None:
        self.model, self.loss = obs.model, LOSSES[obs.loss]
        self.local: LocalTraining | None = obs.local if unroll else None
        self.names = [n for n, _ in obs.model.named_parameters()]
        self.norms = {name: (bn.momentum, bn.eps) for name, bn in train_batchnorms(obs.model).items()}
        self.before = dict(obs.buffers.before) if obs.buffers is not None else {}
        self._modules: dict[Any, tuple[nn.Module, Stats]] = {}

    def _module(self, dtype: torch.dtype, device: torch.device) -> tuple[nn.Module, Stats]:
        """A copy of the model in `dtype` on `device`, train-mode BatchNorms replaced, and its statistics sink."""
        key = (dtype, device)
        if key not in self._modules:
            module, sink = copy.deepcopy(self.model).to(device=device, dtype=dtype), []
            for name in self.norms:
                parent, _, child = name.rpartition(".")
                owner = module.get_submodule(parent) if parent else module
                setattr(owner, child, BatchStatNorm(owner.get_submodule(child), name, sink))
            self._modules[key] = (module, sink)
        return self._modules[key]

    def update(self, params: dict[str, torch.Tensor], x: torch.Tensor,
               y: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:  # fmt: skip
        """The shared update per parameter (in `self.names` order) for inputs x (B×…) with labels or label
        distributions y, and the running buffers after it (BatchNorm in train mode; else empty)."""
        module, sink = self._module(x.dtype, x.device)

        order: list[str] = []  # the BatchNorms' names in call order (torch.func's aux holds tensors only)

        def loss(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, Any]:
            sink.clear()
            value = self.loss(functional_call(module, p, (xb,)), yb)
            order[:] = [name for name, _, _ in sink]
            stats = tuple((mean, var) for _, mean, var in sink)
            sink.clear()
            return value, stats

        def step(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> tuple[Any, Stats]:
            g, stats = grad(loss, has_aux=True)(p, xb, yb)
            return g, [(name, mean, var) for name, (mean, var) in zip(order, stats, strict=True)]

        if self.local is None:
            g, stats = step(params, x, y)
            return [g[n] for n in self.names], self._running([stats])
        k = self.local.clients
        size = x.shape[0] // k
        updates, client_stats = [], []
        for c in range(k):
            xc, yc, p, seen = x[c * size : (c + 1) * size], y[c * size : (c + 1) * size], params, []
            for idx in self.local.schedule(size):
                rows = torch.arange(idx.start, idx.stop, device=x.device)
                g, stats = step(p, xc.index_select(0, rows), yc.index_select(0, rows))
                seen.append(stats)
                p = {n: p[n] - self.local.lr * g[n] for n in self.names}
            scale = self.local.steps * self.local.lr
            updates.append([(params[n] - p[n]) / scale for n in self.names])
            client_stats.append(self._running(seen))
        mean = [sum(u[i] for u in updates) / k for i in range(len(self.names))]
        running = {n: sum(s[n] for s in client_stats) / k for n in client_stats[0]} if client_stats[0] else {}
        return mean, running

    def _running(self, steps: list[Stats]) -> dict[str, torch.Tensor]:
        """Running means and variances after the forwards of `steps`, by PyTorch's update rule, from the shared
        buffers before the round (empty without them)."""
        if not self.before or not self.norms:
            return {}
        out: dict[str, torch.Tensor] = {}
        for name, (momentum, _) in self.norms.items():
            prefix = f"{name}." if name else ""
            mean, var = self.before.get(prefix + "running_mean"), self.before.get(prefix + "running_var")
            if mean is None or var is None:
                continue
            count = int(self.before.get(prefix + "num_batches_tracked", torch.tensor(0)))
            for stats in steps:
                for owner, batch_mean, batch_var in stats:
                    if owner != name:
                        continue
                    count += 1
                    factor = momentum if momentum is not None else 1.0 / count
                    mean = (1 - factor) * mean.to(batch_mean) + factor * batch_mean
                    var = (1 - factor) * var.to(batch_var) + factor * batch_var
            out[prefix + "running_mean"], out[prefix + "running_var"] = mean, var
        return out


def bn_distance(predicted: dict[str, torch.Tensor], obs: Observation) -> torch.Tensor:
    """ig's BatchNorm prior (See through Gradients, Yin et al. 2021: the distance of the dummies' batch statistics
    to the client's): mean over the running buffers the attacker sees of ‖predicted − observed‖ / ‖observed −
    before‖. After one forward the numerator is momentum·‖μ̂ − μ‖ (the paper's term, up to the constant); dividing
    by the buffer's change makes the layers' terms scale-free, like the cosine distance it is added to."""
    assert obs.buffers is not None
    terms = []
    for name, value in predicted.items():
        seen = obs.buffers.after.get(name)
        if seen is None:
            continue
        seen = seen.to(value)
        change = float((seen - obs.buffers.before[name].to(value)).norm())
        terms.append((value - seen).norm() / max(change, 1e-12))
    if not terms:
        return predicted[next(iter(predicted))].new_zeros(()) if predicted else torch.zeros(())
    return torch.stack(terms).mean()
