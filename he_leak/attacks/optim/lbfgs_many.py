"""Many `dlg_lbfgs` runs at once: every run keeps its own L-BFGS (memory, line search, stopping rule, precision
escalation), and all their objective evaluations go through one vmapped torch.func pass per dtype.

The runs may differ in model weights (same architecture), target gradient, labels, mask and seed; they must share
the input shape, batch size, class count, training loss and whether labels are known. Each run follows the path it
would follow alone (`tests/test_lbfgs_many.py` checks it against `dlg_lbfgs` one by one, in float64).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vmap
from torch.nn import functional as F

from he_leak.attacks.optim.lbfgs import Evaluation
from he_leak.attacks.optim.lbfgs_match import Request, Result, balance, dlg_lbfgs_steps
from he_leak.attacks.optim.lockstep import run_lockstep
from he_leak.errors import AttackFailed
from he_leak.models.losses import LOSSES
from he_leak.records import Observation


@dataclass(frozen=True, kw_only=True)
class MatchJob:
    """One run of `dlg_lbfgs_many`: what differs between the runs of a batch."""

    model: nn.Module
    target_grads: Sequence[torch.Tensor]
    seed: int
    label: torch.Tensor | None = None
    mask: Sequence[torch.Tensor] | None = None


def compatible(model: nn.Module, other: nn.Module) -> bool:
    """Whether two models can share one vmapped pass: same class, parameter names and shapes, no buffers."""
    if type(model) is not type(other) or list(model.buffers()) or list(other.buffers()):
        return False
    a, b = dict(model.named_parameters()), dict(other.named_parameters())
    return a.keys() == b.keys() and all(a[n].shape == b[n].shape for n in a)


def share_a_pass(observations: Sequence[Observation]) -> bool:
    """Whether observations' runs can share one batched pass: the same input shape, batch, classes, box, loss and
    masking, models of one architecture (`compatible`), and one gradient each (no local steps)."""
    key = lambda o: (o.input_shape, o.batch, o.classes, o.bounds, o.loss, o.mask is None)  # noqa: E731
    first = observations[0]
    if any(o.local is not None for o in observations):  # local steps: each run unrolls its own (one by one)
        return False
    return all(key(o) == key(first) and compatible(first.model, o.model) for o in observations)


class BatchedDistance:
    """The balanced squared gradient distance of `dlg_lbfgs` for many runs, evaluated together (vmap over runs of
    torch.func.grad of the distance, whose inner grad is the model's parameter gradient)."""

    def __init__(
        self, jobs: Sequence[MatchJob], *, shape: tuple[int, ...], classes: int, device: torch.device, loss: str,
        soft: bool,
    ) -> None:  # fmt: skip
        self.jobs, self.shape, self.classes, self.device, self.soft = jobs, shape, classes, device, soft
        self.loss = LOSSES[loss]
        self.module = jobs[0].model
        self.names = [n for n, p in self.module.named_parameters() if p.requires_grad]
        self._cache: dict[torch.dtype, tuple[Any, ...]] = {}
        self.calls = 0

    def _stacked(self, dtype: torch.dtype) -> tuple[Any, ...]:
        """Parameters, masked targets, weights, masks and labels of every run, stacked along dim 0, in `dtype`."""
        if dtype not in self._cache:
            dev = self.device
            params = {
                n: torch.stack([dict(j.model.named_parameters())[n].detach() for j in self.jobs]).to(dev, dtype)
                for n in self.names
            }
            masks, targets, weights = [], [], []
            masked = self.jobs[0].mask is not None  # all runs of a batch are masked or none is (dlg_lbfgs_many)
            for j in self.jobs:
                m = j.mask if masked else [torch.ones_like(t) for t in j.target_grads]
                t = [g.detach() * mm for g, mm in zip(j.target_grads, m, strict=True)]
                masks.append(m)
                targets.append(t)
                try:  # a run whose target cannot be balanced fails in its own generator (dlg_lbfgs_steps checks
                    weights.append(balance(t)[0])  # first): give it zero weights, never fail the others
                except AttackFailed:
                    weights.append([0.0] * len(t))
            stack = lambda rows, i: torch.stack([r[i] for r in rows]).to(dev, dtype)  # noqa: E731
            tg = {n: stack(targets, i) for i, n in enumerate(self.names)}
            mk = {n: stack(masks, i) for i, n in enumerate(self.names)} if masked else None  # no ones to multiply
            w = torch.tensor(weights, dtype=dtype, device=dev)
            labels = None  # known labels as one-hot rows (F.one_hot cannot run under vmap)
            if not self.soft:
                labels = F.one_hot(torch.stack([j.label.reshape(-1) for j in self.jobs]), self.classes).to(dev, dtype)
            self._cache[dtype] = (params, tg, mk, w, labels)
        return self._cache[dtype]

    def _distance(self, params, target, mask, weights, label, x, y_logits) -> torch.Tensor:
        def training_loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
            y = F.softmax(y_logits, -1) if label is None else label
            return self.loss(functional_call(self.module, p, (x,)), y)

        g = grad(training_loss)(params)
        total = x.new_zeros(())
        for i, n in enumerate(self.names):
            diff = g[n] - target[n] if mask is None else (g[n] - target[n]) * mask[n]
            total = total + weights[i] * (diff**2).sum()
        return total

    def __call__(self, ids: Sequence[int], requests: Sequence[Request]) -> list[Evaluation]:
        """Evaluate run ids[i] at the point of requests[i] (flat, as dlg_lbfgs's L-BFGS holds it; the run's own
        objective is not used), one pass per dtype."""
        points = [r[0] for r in requests]
        out: dict[int, Evaluation] = {}
        for dtype in {z.dtype for z in points}:
            sel = [k for k, z in enumerate(points) if z.dtype == dtype]
            group = [ids[k] for k in sel]
            out.update(zip(group, self._evaluate(group, [points[k] for k in sel]), strict=True))
        return [out[i] for i in ids]

    def _evaluate(self, ids: list[int], points: list[torch.Tensor]) -> list[Evaluation]:
        self.calls += 1
        params, target, mask, weights, labels = self._stacked(points[0].dtype)
        idx = torch.tensor(ids, device=self.device)
        every = len(ids) == len(self.jobs)  # ids are sorted and distinct: the whole batch, no copies needed

        def pick(d: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
            return d if d is None or every else {n: v.index_select(0, idx) for n, v in d.items()}

        mask_dim = None if mask is None else 0
        z = torch.stack(points).to(self.device)
        shape = self.shape
        nx = int(torch.Size(shape).numel())
        x = z[:, :nx].reshape(len(ids), *shape)
        if self.soft:
            y = z[:, nx:].reshape(len(ids), shape[0], -1)
            fn = vmap(grad_and_value(self._distance, argnums=(5, 6)), in_dims=(0, 0, mask_dim, 0, None, 0, 0))
            (gx, gy), v = fn(pick(params), pick(target), pick(mask), weights[idx], None, x, y)
            g = torch.cat([gx.reshape(len(ids), -1), gy.reshape(len(ids), -1)], 1)
        else:
            fn = vmap(grad_and_value(self._distance, argnums=5), in_dims=(0, 0, mask_dim, 0, 0, 0, None))
            gx, v = fn(pick(params), pick(target), pick(mask), weights[idx], labels[idx], x, None)
            g = gx.reshape(len(ids), -1)
        return list(zip(v.tolist(), g.unbind(0), strict=True))  # one host sync per batch


def dlg_lbfgs_many(
    jobs: Sequence[MatchJob], *, input_shape: tuple[int, ...], batch: int | None = None, device: Any = "cpu",
    loss: str = "cross-entropy", **options: Any,
) -> list[Result | AttackFailed]:  # fmt: skip
    """`dlg_lbfgs` for each job (with the shared keyword `options`), evaluated through one batched objective: each
    run's result, or the AttackFailed it raised."""
    if not jobs:
        return []
    device = torch.device(device)
    soft = jobs[0].label is None
    if any((j.label is None) != soft or (j.mask is None) != (jobs[0].mask is None) for j in jobs) or not all(
        compatible(jobs[0].model, j.model) for j in jobs
    ):
        raise AttackFailed("dlg_lbfgs_many: the runs differ in architecture, label knowledge or masking")
    b = len(jobs[0].label.reshape(-1)) if not soft else (batch or 1)
    server = BatchedDistance(jobs, shape=(b, *input_shape), classes=options["classes"], device=device, loss=loss,
                             soft=soft)  # fmt: skip

    runs = [
        dlg_lbfgs_steps(
            j.model, j.target_grads, input_shape=input_shape, seed=j.seed, label=j.label, mask=j.mask, batch=batch,
            device=device, loss=loss, **options,
        )  # fmt: skip
        for j in jobs
    ]
    results = run_lockstep(runs, server)
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, AttackFailed):
            raise r
    return results
