"""Label recovery from the gradient of the last (output) linear layer.

For every loss of :mod:`he_leak.models.losses` the gradient at the logits of one sample is ``g = φ(z) - onehot(y)`` with
the loss's link φ (softmax for cross-entropy).  The last layer's bias gradient is the batch mean of these vectors and
its weight gradient is ``mean_n g_n h_nᵀ`` (``h_n`` the layer's input), so

* batch 1, cross-entropy (iDLG, Zhao et al. 2020): softmax is positive, so the label is the argmin of the bias
  gradient, or, without a bias, the one row of the weight gradient whose direction is opposite to all the others;
* batch 1, other links (mse, poly-sigmoid: φ(z) is not confined to (0, 1)): the layer input is ``h = ∂Wᵀ∂b / ‖∂b‖²``,
  so the logits ``z = W h + b`` are known and ``onehot(y) = φ(z) - ∂b``: the label is its argmax;
* batch B: ``B·(φ̄ - ∂b) = Σ_n onehot(y_n)`` where ``φ̄`` is the batch's mean link output.  The attacker does not know
  ``φ̄``; it is estimated by the model's mean link output on random inputs drawn in the box (the estimate is exact when
  the model responds in the same way on data and noise, and good enough to round for small batches).  For
  cross-entropy every class with a negative bias-gradient entry is present at least once.  The counts are rounded so
  they sum to B.

The output layer's gradient must be visible (``obs.mask``); when the aggregator hides it, no label is recovered.

The recovered labels of a batch are returned sorted by class (gradients do not tell which sample has which label).
That order is all one gradient of the whole batch needs (it is symmetric in the samples). An unrolled FedAvg update
whose steps use mini-batches smaller than the client's batch is not: it depends on which label sits in which
mini-batch (and, with several clients, in which client's batch, up to swapping whole clients). `label_orders` lists
one assignment per distinct update, for an attack to try each and keep the one its own objective prefers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from he_leak.errors import AttackFailed
from he_leak.models.losses import LOSSES
from he_leak.records import LocalTraining, Observation

RANDOM_PROBES = 64  # random inputs used to estimate the model's mean softmax
# the most label assignments that give different updates `label_orders` lists (beyond it only the sorted one: each
# costs the attack a whole run), and the most permutations it looks through to find them (8!)
MAX_LABEL_ORDERS = 24
MAX_ENUMERATED = 40320


def output_layer(obs: Observation) -> tuple[nn.Linear, int, int | None]:
    """The last nn.Linear of the model, the index of its weight gradient and of its bias gradient (None: no bias)."""
    linears = [m for m in obs.model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise AttackFailed("label recovery needs a linear output layer; the model has no nn.Linear")
    last = linears[-1]
    if last.out_features != obs.classes:
        raise AttackFailed(f"the last linear layer has {last.out_features} outputs but there are {obs.classes} classes")
    index = {id(p): i for i, p in enumerate(obs.model.parameters())}
    iw, ib = index[id(last.weight)], (index[id(last.bias)] if last.bias is not None else None)
    if obs.mask is not None:  # use only what the attacker sees: a hidden bias (or weight) cannot be used
        if ib is not None and not bool(obs.mask[ib].all()):
            ib = None
        if ib is None and not bool(obs.mask[iw].all()):
            raise AttackFailed("the output layer's gradient is hidden (encrypted): no label can be read from it")
    return last, iw, ib


def _partly_visible_single(obs: Observation) -> torch.Tensor | None:
    """B=1, cross-entropy, part of the output bias hidden: the label is the visible negative entry, or the one hidden
    entry when every visible entry is positive; None when the visible part does not decide."""
    if obs.mask is None or obs.batch != 1 or obs.loss != "cross-entropy":
        return None
    last = [m for m in obs.model.modules() if isinstance(m, nn.Linear)][-1]
    if last.bias is None:
        return None
    ib = {id(p): i for i, p in enumerate(obs.model.parameters())}[id(last.bias)]
    seen, gb = obs.mask[ib].flatten(), obs.gradients[ib].flatten()
    if bool(seen.all()):
        return None
    negative = (seen & (gb < 0)).nonzero().flatten()
    hidden = (~seen).nonzero().flatten()
    if len(negative) == 1:
        return negative.reshape(1).long()
    if len(negative) == 0 and len(hidden) == 1:
        return hidden.reshape(1).long()
    return None


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


def _single_from_logits(obs: Observation, last: nn.Linear, iw: int, ib: int | None) -> torch.Tensor:
    """B=1, any link: h = ∂Wᵀ∂b/‖∂b‖², z = W h + b, onehot(y) = φ(z) − ∂b → its argmax."""
    if ib is None:
        raise AttackFailed(f"label recovery under the {obs.loss} loss needs a visible bias in the output layer")
    gb, gw = obs.gradients[ib].double().flatten(), obs.gradients[iw].double()
    norm = float(gb @ gb)
    if norm == 0.0:
        raise AttackFailed("the output layer's bias gradient is zero: no label can be read from it")
    h = gw.T @ gb / norm
    z = last.weight.detach().double() @ h + last.bias.detach().double()
    onehot = LOSSES[obs.loss].link(z[None])[0] - gb
    return onehot.argmax().reshape(1).long()


@torch.no_grad()
def mean_link(obs: Observation, *, probes: int = RANDOM_PROBES, seed: int = 0) -> tuple[torch.Tensor, float]:
    """The model's mean link output (softmax for cross-entropy) on random inputs drawn uniformly in the box, and the
    mean sum of the output layer's input on them (used when the output layer has no bias)."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = obs.bounds
    x = lo + (hi - lo) * torch.rand((probes, *obs.input_shape), generator=gen)
    param = next(obs.model.parameters())
    last, _, _ = output_layer(obs)
    seen: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    try:
        p = LOSSES[obs.loss].link(obs.model(x.to(param.dtype)).double()).mean(0)
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
    p, h_sum = mean_link(obs)
    if ib is not None:
        gb = obs.gradients[ib].double().flatten()
    else:  # no bias: row sums of gW are mean_n g_{n,c}·(1ᵀh_n) ≈ (mean g)_c · (the probes' mean 1ᵀh)
        gb = obs.gradients[iw].double().sum(dim=1) / (h_sum if abs(h_sum) > 1e-12 else 1.0)
    raw = b * (p - gb)
    present = (gb < 0).long() if obs.loss == "cross-entropy" else torch.zeros_like(gb, dtype=torch.long)
    floor = present if b >= int(present.sum()) else torch.zeros_like(gb, dtype=torch.long)
    return _round_counts(raw, b, floor)


def recover_labels(obs: Observation) -> torch.Tensor:
    """Labels (int64, length obs.batch) recovered from the output layer's gradient; batches come back sorted."""
    partial = _partly_visible_single(obs)
    if partial is not None:
        return partial
    last, iw, ib = output_layer(obs)
    if obs.batch == 1:
        if obs.loss != "cross-entropy":
            return _single_from_logits(obs, last, iw, ib)
        if ib is not None:
            return obs.gradients[ib].flatten().argmin().reshape(1).long()
        return torch.tensor([_single_from_weight(obs.gradients[iw].double())], dtype=torch.long)
    counts = label_counts(obs)
    return torch.repeat_interleave(torch.arange(obs.classes), counts)


def _update_key(labels: tuple[int, ...], local: LocalTraining, per_client: int) -> tuple:
    """What of an assignment of labels to positions the unrolled update depends on: per client, the labels of each of
    its mini-batches as a set (a mini-batch's gradient is a mean over its samples), and the clients as a set (the
    update is their mean)."""
    ranges = sorted({(r.start, r.stop) for r in local.schedule(per_client)})
    clients = [labels[k * per_client : (k + 1) * per_client] for k in range(local.clients)]
    return tuple(sorted(tuple(tuple(sorted(c[a:b])) for a, b in ranges) for c in clients))


def label_orders(labels: torch.Tensor, obs: Observation, *, unroll: bool) -> list[torch.Tensor]:
    """The assignments of the recovered `labels` to the batch's positions that give different unrolled updates —
    FedAvg steps on part of a client's batch, attacked unrolled — one of each (sympy's multiset permutations, sorted
    order first); only `labels` itself when the update does not depend on the order (one gradient, every step on
    the whole batch, not unrolled) or when there are more than MAX_LABEL_ORDERS (each costs the attack a whole
    run)."""
    local = obs.local
    if local is None or not unroll or len(labels) < 2 or (local.clients == 1 and local.batch >= obs.batch):
        return [labels]  # symmetric in the samples: no need to look through the permutations
    from sympy.utilities.iterables import multiset_permutations  # sympy comes with torch

    per_client = obs.batch // local.clients
    seen: dict[tuple, tuple[int, ...]] = {}
    for n, order in enumerate(multiset_permutations(labels.tolist())):
        seen.setdefault(_update_key(tuple(order), local, per_client), tuple(order))
        if len(seen) > MAX_LABEL_ORDERS or n >= MAX_ENUMERATED:
            return [labels]
    return [torch.tensor(o, dtype=labels.dtype, device=labels.device) for o in seen.values()]
