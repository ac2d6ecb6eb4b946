"""Gradient defences between the client's gradient and what it shares (before encryption or aggregation), one
registry entry each, applied in a fixed order: clip (L2 norm bound on the whole gradient, as DP-SGD), prune (per
tensor, the smallest-magnitude fraction set to zero, the DLG paper's "gradient pruning"), noise (Gaussian, standard
deviation σ per entry; the DLG paper reports that variance ≥ 1e-2, i.e. σ ≥ 0.1, stops its attack).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from he_leak.registry import Registry

Grads = tuple[torch.Tensor, ...]
Defence = Callable[[Grads, float, torch.Generator], Grads]
DEFENCES: Registry = Registry("defence")
ORDER = ("clip", "prune", "noise")


@DEFENCES.register("clip")
def clip(grads: Grads, bound: float, gen: torch.Generator) -> Grads:
    """Scale the whole gradient down so that its L2 norm is at most `bound`."""
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    factor = min(1.0, bound / norm) if norm > 0 else 1.0
    return tuple(g * factor for g in grads)


@DEFENCES.register("prune")
def prune(grads: Grads, fraction: float, gen: torch.Generator) -> Grads:
    """Per tensor, zero the `fraction` of entries with the smallest magnitude (ties broken by position)."""
    out = []
    for g in grads:
        drop = int(fraction * g.numel())
        if drop == 0:
            out.append(g.clone())
            continue
        order = torch.argsort(g.abs().flatten(), stable=True)
        flat = g.flatten().clone()
        flat[order[:drop]] = 0
        out.append(flat.reshape(g.shape))
    return tuple(out)


@DEFENCES.register("noise")
def noise(grads: Grads, sigma: float, gen: torch.Generator) -> Grads:
    """Add N(0, σ²) to every entry (drawn on the CPU from the client's generator: reproducible anywhere)."""
    return tuple(g + sigma * torch.randn(g.shape, generator=gen, dtype=g.dtype).to(g.device) for g in grads)


def active(settings: dict[str, float | None]) -> dict[str, float]:
    """The defences that do something, in ORDER: clip when set, prune and noise when > 0."""
    return {name: float(v) for name in ORDER if (v := settings.get(name)) is not None and (name == "clip" or v > 0)}


def apply(grads: Sequence[torch.Tensor], settings: dict[str, float], *, seed: int) -> Grads:
    """Apply the `active` defences in ORDER; `seed` drives the noise (the client's own randomness)."""
    gen = torch.Generator().manual_seed(seed)
    out = tuple(grads)
    for name, value in active(settings).items():
        out = DEFENCES[name](out, value, gen)
    return out
