"""Selective encryption: which gradient entries a client encrypts (True) and which it sends in the clear.

- by layer name (NVFlare's `encrypt_layers`): every entry of each parameter whose name matches a regular expression;
- by fraction p of all entries, chosen by
  - ``sensitivity`` (FedML-HE): the entries whose value depends most on the input, s_j = E_x ‖∂g_j/∂x‖², estimated
    with Hutchinson probes (E_v (J v)_j² = ‖J_j‖² for v ~ N(0, I); J the Jacobian of the gradient wrt the input),
    averaged over the clients' samples — the clients agree on one public mask;
  - ``random``: a uniformly random set of entries (public, seeded);
  - ``magnitude``: the entries of largest |mean gradient| over the clients (note: the mask itself then tells the
    server where the large entries are).
Ties are broken by position; exactly round(p · total) entries are encrypted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, jvp

from he_leak.errors import ConfigError
from he_leak.losses import LOSSES

PROBES = 16  # Hutchinson probes per sample for the sensitivity map

Mask = tuple[torch.Tensor, ...]


def by_layers(model: nn.Module, pattern: str) -> Mask:
    """Encrypt every parameter whose name (as in model.named_parameters()) matches `pattern` (re.search)."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"encrypt_layers {pattern!r} is not a regular expression ({e}); e.g. 'fc|body\\.4'") from None
    names = [n for n, _ in model.named_parameters()]
    if not any(regex.search(n) for n in names):
        raise ConfigError(f"encrypt_layers {pattern!r} matches no parameter; names: {', '.join(names)}")
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


def sensitivity(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, loss: str, seed: int,
                probes: int = PROBES) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """Per gradient entry, mean over samples of ‖∂g/∂x‖² (one sample's gradient g), by Hutchinson probes."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    objective = LOSSES[loss]
    gen = torch.Generator().manual_seed(seed)

    def gradient(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        g = grad(lambda p: objective(functional_call(model, p, (x[None],)), y[None]))(params)
        return tuple(g[n] for n in params)

    total = [torch.zeros_like(p) for p in params.values()]
    for x, y in zip(inputs, labels, strict=True):
        for _ in range(probes):
            v = torch.randn(x.shape, generator=gen, dtype=x.dtype)
            _, jv = jvp(lambda z, y=y: gradient(z, y), (x,), (v,))
            for t, j in zip(total, jv, strict=True):
                t += j.detach() ** 2
    return tuple(t / (probes * len(inputs)) for t in total)


def select(model: nn.Module, *, fraction: float, how: str, layers: str | None, inputs: torch.Tensor,
           labels: torch.Tensor, mean_gradient: Sequence[torch.Tensor], loss: str, seed: int) -> Mask:  # fmt: skip
    """The public encryption mask (True = encrypted) for a run's settings (see the module docstring)."""
    if layers:
        return by_layers(model, layers)
    shapes = [p.shape for p in model.parameters()]
    if fraction >= 1.0:
        return tuple(torch.ones(s, dtype=torch.bool) for s in shapes)
    if fraction <= 0.0:
        return tuple(torch.zeros(s, dtype=torch.bool) for s in shapes)
    if how == "sensitivity":
        return top_fraction(sensitivity(model, inputs, labels, loss=loss, seed=seed), fraction)
    if how == "magnitude":
        return top_fraction([g.abs() for g in mean_gradient], fraction)
    if how == "random":
        gen = torch.Generator().manual_seed(seed)
        return top_fraction([torch.rand(s, generator=gen) for s in shapes], fraction)
    raise ConfigError(f"select {how!r}: use sensitivity, random or magnitude")
