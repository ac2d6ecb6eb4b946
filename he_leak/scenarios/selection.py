"""Selective encryption: which gradient entries a client encrypts (True) and which it sends in the clear.

- by layer name (NVFlare's `encrypt_layers`): every entry of each parameter whose name matches a regular expression;
- by fraction p of all entries, chosen by
  - ``sensitivity`` (FedML-HE): the top-p entries of the clients' aggregated sensitivity map
    (he_leak.scenarios.sensitivity: each client computes its map on its own data before training; he-aggregate sums the
    maps under HE). The mask is public and the same for every round and every attacked batch;
  - ``random``: a uniformly random set of entries (public, seeded);
  - ``magnitude``: the entries of largest |mean gradient| over the clients, per round (note: the mask itself then
    tells the server where the large entries are).
Ties are broken by position; exactly round(p · total) entries are encrypted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
from torch import nn

from he_leak.errors import ConfigError

Mask = tuple[torch.Tensor, ...]


def by_layers(model: nn.Module, pattern: str) -> Mask:
    """Encrypt every parameter whose name (as in model.named_parameters(): the model's own names, a user model's
    too) matches `pattern` (re.search); the running buffers it matches are encrypted by he-aggregate."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"encrypt_layers {pattern!r} is not a regular expression ({e}); e.g. 'fc|body\\.4'") from None
    names = list(model.state_dict())
    if not any(regex.search(n) for n in names):
        raise ConfigError(f"encrypt_layers {pattern!r} matches no parameter or buffer; names: {', '.join(names)}")
    return tuple(torch.full(p.shape, bool(regex.search(n))) for n, p in model.named_parameters())


def top_fraction(scores: Sequence[torch.Tensor], fraction: float) -> Mask:
    """True on the round(fraction · total) entries with the largest score (ties: the earlier position)."""
    flat = torch.cat([s.detach().double().flatten() for s in scores])
    keep = int(round(fraction * flat.numel()))
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    if keep:
        order = torch.argsort(-flat, stable=True)
        chosen[order[:keep]] = True
    return tuple(part.reshape(s.shape) for part, s in zip(chosen.split([s.numel() for s in scores]), scores,
                                                           strict=True))  # fmt: skip


def select(model: nn.Module, *, fraction: float, how: str, layers: str | None,
           sensitivity: Callable[[], Sequence[torch.Tensor]], mean_gradient: Sequence[torch.Tensor],
           seed: int) -> Mask:  # fmt: skip
    """The public encryption mask (True = encrypted) for a run's settings (see the module docstring).
    `sensitivity` is called only when the sensitivity map is needed (0 < p < 1, no layer regex)."""
    if layers:
        return by_layers(model, layers)
    shapes = [p.shape for p in model.parameters()]
    if fraction >= 1.0:
        return tuple(torch.ones(s, dtype=torch.bool) for s in shapes)
    if fraction <= 0.0:
        return tuple(torch.zeros(s, dtype=torch.bool) for s in shapes)
    if how == "sensitivity":
        return top_fraction(sensitivity(), fraction)
    if how == "magnitude":
        return top_fraction([g.abs() for g in mean_gradient], fraction)
    if how == "random":
        gen = torch.Generator().manual_seed(seed)
        return top_fraction([torch.rand(s, generator=gen) for s in shapes], fraction)
    raise ConfigError(f"select {how!r}: use sensitivity, random or magnitude")
