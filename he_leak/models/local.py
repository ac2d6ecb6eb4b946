"""The client's side of a federated round, in plain torch — the reference the attacks' functional simulation
(he_leak.attacks.optim.unroll) is tested against — and the training stage of the attacked model.

* `client_update`: one gradient of the batch (FedSGD), or the local training of he_leak.records.LocalTraining
  (FedAvg: `steps` steps of torch.optim.SGD on a copy of the global model, mini-batches in the client's order) and
  the update −Δ/(steps·lr) it shares, with the BatchNorm running buffers after training when the model runs in
  train mode (they travel with the update, as a state_dict does).
* `pretrain`: `--pretrain-epochs N` — the model trained for N epochs before the attacked round, on the run's
  dataset without the attacked samples (so the weights have not seen the images the attack must recover; in a
  real federation the client's own data may have shaped earlier rounds, which this does not model). Budget as the
  utility measurement's (he_leak.scoring.utility_accuracy): Adam, learning rate PRETRAIN_LR, mini-batches of
  PRETRAIN_BATCH, seeded order, the model in train mode (BatchNorm's running statistics become the data's).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from he_leak.models.losses import LOSSES
from he_leak.records import LocalTraining

Shared = tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]  # the update per parameter, the running buffers
PRETRAIN_LR = 1e-3
PRETRAIN_BATCH = 32


def batchnorms(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers that keep running statistics, by module name."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats}  # fmt: skip


def running_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The running statistics of its BatchNorm layers (state_dict names: running_mean, running_var,
    num_batches_tracked), copied."""
    out = {}
    for name, bn in batchnorms(model).items():
        for key, value in bn.named_buffers(recurse=False):
            if value is not None:
                out[f"{name}.{key}" if name else key] = value.detach().clone()
    return out


def client_update(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, loss: str,
                  local: LocalTraining | None = None) -> Shared:  # fmt: skip
    """What a client computes from the global `model` (left untouched) and its batch: the update per parameter —
    the batch-mean gradient of `loss` (`local` None), or −Δ/(steps·lr) after its local training — and, when the
    model runs in train mode with BatchNorm, the running buffers after it (else an empty dict)."""
    net = copy.deepcopy(model)
    params = list(net.parameters())
    objective = LOSSES[loss]
    if local is None:
        grads = torch.autograd.grad(objective(net(images), labels), params)
        update = tuple(g.detach() for g in grads)
    else:
        opt = torch.optim.SGD(params, lr=local.lr)
        for step in local.schedule(len(images)):
            idx = torch.tensor(list(step), dtype=torch.long)
            opt.zero_grad(set_to_none=True)
            objective(net(images[idx]), labels[idx]).backward()
            opt.step()
        scale = local.steps * local.lr
        update = tuple((p0.detach() - p1.detach()) / scale for p0, p1 in zip(model.parameters(), params, strict=True))
    return update, (running_buffers(net) if net.training else {})


def pretrain(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, epochs: int, loss: str,
             seed: int) -> nn.Module:  # fmt: skip
    """Train `model` in place for `epochs` epochs on (images, labels) (see the module docstring); returns it in the
    mode it came in."""
    if epochs <= 0 or len(images) == 0:
        return model
    was_training = model.training
    model.train()
    x, y = torch.from_numpy(images).float(), torch.from_numpy(labels.astype(np.int64))
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=PRETRAIN_LR)
    gen = torch.Generator().manual_seed(seed)
    objective = LOSSES[loss]
    with torch.random.fork_rng(devices=[]):  # a user model's own randomness (dropout) follows the seed too
        torch.manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for start in range(0, len(order), PRETRAIN_BATCH):
                batch = order[start : start + PRETRAIN_BATCH]
                if len(batch) < 2 and batchnorms(model):  # BatchNorm cannot take the statistics of one sample
                    continue
                opt.zero_grad(set_to_none=True)
                objective(model(x[batch]), y[batch]).backward()
                opt.step()
    return model.train(was_training)
