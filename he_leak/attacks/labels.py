"""Label recovery from the gradient of the last (output) linear layer.

For cross-entropy the gradient at the logits of one sample is ``g = softmax(z) - onehot(y)``: every entry is positive
except the true class's.  The last layer's bias gradient is the batch mean of these vectors and its weight gradient is
``mean_n g_n h_nᵀ`` (``h_n`` the layer's input), so

* batch 1 (iDLG, Zhao et al. 2020): the label is the argmin of the bias gradient, or, without a bias, the one row of the
  weight gradient whose direction is opposite to all the others;
* batch B: ``B·(p̄ - ∂b) = Σ_n onehot(y_n)`` where ``p̄`` is the batch's mean softmax.  The attacker does not know
  ``p̄``; it is estimated by the model's mean softmax on random inputs drawn in the box (the estimate is exact when
  the model is confident in the same way on data and noise, and good enough to round for small batches).  Every class
  with a negative bias-gradient entry is present at least once.  The counts are rounded so they sum to B.

The recovered labels of a batch are returned sorted by class (gradients do not tell which sample has which label).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from he_leak.errors import AttackFailed
from he_leak.records import Observation

RANDOM_PROBES = 64  # random inputs used to estimate the model's mean softmax


def output_layer(obs: Observation) -> tuple[nn.Linear, int, int | None]:
    """The last nn.Linear of the model, the index of its weight gradient and of its bias gradient (None: no bias)."""
    linears = [m for m in obs.model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise AttackFailed("label recovery needs a linear output layer; the model has no nn.Linear")
    last = linears[-1]
    if last.out_features != obs.classes:
        raise AttackFailed(f"the last linear layer has {last.out_features} outputs but there are {obs.classes} classes")
    index = {id(p): i for i, p in enumerate(obs.model.parameters())}
    return last, index[id(last.weight)], (index[id(last.bias)] if last.bias is not None else None)


def _single_from_weight(gw: torch.Tensor) -> int:
    """B=1 without bias: rows of gW are g_c·hᵀ; the label's row points the other way from all the others."""
    ref = int(gw.norm(dim=1).argmax())
    sign = torch.sign(gw @ gw[ref])
    negative = (sign < 0).nonzero().flatten()
    positive = (sign > 0).nonzero().flatten()
    if len(negative) == 1:
        return int(negative[0])
    if len(positive) == 1:
        return ref
    return int(gw.sum(dim=1).argmin())


@torch.no_grad()
def mean_softmax(obs: Observation, *, probes: int = RANDOM_PROBES, seed: int = 0) -> tuple[torch.Tensor, float]:
    """The model's mean softmax on random inputs drawn uniformly in the box, and the mean sum of the output layer's
    input on them (used when the output layer has no bias)."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = obs.bounds
    x = lo + (hi - lo) * torch.rand((probes, *obs.input_shape), generator=gen)
    param = next(obs.model.parameters())
    last, _, _ = output_layer(obs)
    seen: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    try:
        p = torch.softmax(obs.model(x.to(param.dtype)), dim=1).mean(0).double()
    finally:
        handle.remove()
    return p, float(seen[0].flatten(1).sum(1).mean())


def _round_counts(raw: torch.Tensor, total: int, floor: torch.Tensor) -> torch.Tensor:
    """Non-negative integer counts close to `raw`, each at least `floor`, summing to `total` (largest remainder)."""
    raw = raw.clamp(min=0).double()
    counts = torch.maximum(torch.floor(raw), floor.double())
    while counts.sum() > total:  # too many: take from the classes furthest above their estimate
        over = counts - raw
        over[counts <= floor] = -math.inf
        counts[int(over.argmax())] -= 1
    while counts.sum() < total:  # too few: give to the classes furthest below their estimate
        counts[int((raw - counts).argmax())] += 1
    return counts.long()


def label_counts(obs: Observation) -> torch.Tensor:
    """How many samples of each class the batch holds (length obs.classes, summing to obs.batch)."""
    _, iw, ib = output_layer(obs)
    b = obs.batch
    p, h_sum = mean_softmax(obs)
    if ib is not None:
        gb = obs.gradients[ib].double().flatten()
    else:  # no bias: row sums of gW are mean_n g_{n,c}·(1ᵀh_n) ≈ (mean g)_c · (the probes' mean 1ᵀh)
        gb = obs.gradients[iw].double().sum(dim=1) / (h_sum if abs(h_sum) > 1e-12 else 1.0)
    raw = b * (p - gb)
    floor = (gb < 0).long() if b >= int((gb < 0).sum()) else torch.zeros_like(gb, dtype=torch.long)
    return _round_counts(raw, b, floor)


def recover_labels(obs: Observation) -> torch.Tensor:
    """Labels (int64, length obs.batch) recovered from the output layer's gradient; batches come back sorted."""
    _, iw, ib = output_layer(obs)
    if obs.batch == 1:
        if ib is not None:
            return obs.gradients[ib].flatten().argmin().reshape(1).long()
        return torch.tensor([_single_from_weight(obs.gradients[iw].double())], dtype=torch.long)
    counts = label_counts(obs)
    return torch.repeat_interleave(torch.arange(obs.classes), counts)
