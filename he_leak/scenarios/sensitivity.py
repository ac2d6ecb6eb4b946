"""Sensitivity maps for FedML-HE's selective encryption (Jin et al., arXiv 2303.10837): how strongly each gradient
entry depends on the input, s_j = mean_x ‖∂g_j/∂x‖² over a client's samples x (g the per-sample gradient of the
training loss wrt the parameters, j one of its entries).

- ``exact``: every column of the Jacobian ∂g/∂x, one forward-over-reverse product (`torch.func.jvp` of the gradient)
  per input dimension, vmapped over chunks of the input basis and summed as squares, in float64. Memory is bounded
  by the chunk (`columns_per_chunk`: at most CHUNK_BYTES of Jacobian columns and their intermediates at once); time
  grows as D · P per sample (D input dimensions, P parameters). Measured on the 2-core VM, one thread, CPU seconds
  per sample (docs/measurements.md): the 32-unit MLP on 8×8 digits (D = 64, P = 2,410) 3–9 ms; the DLG LeNet on
  32×32×3 photos (D = 3,072, P = 85,036) 7.6–7.7 s (float32 4.3 s); ResNet-18 on 64×64×3 (D = 12,288,
  P = 11.2M) 0.8 … 1.8 h, so runs whose map needs more than EXACT_MAX_ENTRIES Jacobian entries are refused before
  they start (`check_exact`), naming ``hutchinson``.
- ``hutchinson``: E_v (J v)_j² = ‖J_j‖² for v ~ N(0, I), PROBES probes per sample (the project's earlier default);
  unbiased but noisy: its top sets overlap the exact ones only partly (experiments/sensitivity_overlap.py).

`client_map` caches a map per (weights, samples, loss, method) within a process, so a sweep over attacked images
with one model computes each client's map once.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from he_leak.config import SENSITIVITIES
from he_leak.errors import ConfigError
from he_leak.models.losses import LOSSES
from he_leak.models.memory import activation_values
from he_leak.scenarios.selection import top_fraction

METHODS = SENSITIVITIES
PROBES = 16  # Hutchinson probes per sample
CHUNK_BYTES = 64 * 2**20  # Jacobian columns (and their intermediates) held at once by the exact map
ACTIVATION_COPIES = 6  # per column: forward activations, their tangents and the backward's, in the jvp of a gradient
# Jacobian entries (D · P · samples · clients) above which the exact map is refused: measured 2.2e7 … 3.4e7 entries/s
# on one core of the 2-core VM (LeNet 2.6e8 per sample in 7.6 s; ResNet-18 1.4e11 in 0.8 … 1.8 h), so 1e11 is about
# an hour of one core. LeNet with 32 samples (8.4e9) is well inside; ResNet-18 is refused even for one sample.
EXACT_MAX_ENTRIES = 1e11
CACHE_SIZE = 32  # client maps kept per process

Map = tuple[torch.Tensor, ...]
_CACHE: OrderedDict[str, Map] = OrderedDict()


def _gradient_fn(model: nn.Module, loss: str, dtype: torch.dtype) -> tuple[Callable, list[str], dict]:
    """x, y ↦ the flat per-sample gradient of `loss` wrt every parameter (dtype), as a pure function of x."""
    params = {n: p.detach().to(dtype) for n, p in model.named_parameters()}
    names = list(params)
    objective = LOSSES[loss]

    def gradient(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = grad(lambda p: objective(functional_call(model, p, (x[None],)), y[None]))(params)
        return torch.cat([g[n].flatten() for n in names])

    return gradient, names, params


def _split(flat: torch.Tensor, model: nn.Module) -> Map:
    shapes = [p.shape for p in model.parameters()]
    return tuple(part.reshape(s) for part, s in zip(flat.split([math.prod(s) for s in shapes]), shapes, strict=True))


def columns_per_chunk(*, params: int, activations: int, inputs: int, itemsize: int = 8) -> int:
    """How many Jacobian columns the exact map computes at once: CHUNK_BYTES over one column's bytes (its P
    entries and ACTIVATION_COPIES of the forward activations), at least 1 and at most D."""
    per_column = itemsize * (params + ACTIVATION_COPIES * activations)
    return max(1, min(inputs, CHUNK_BYTES // per_column))


def exact(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, loss: str, chunk: int | None = None) -> Map:
    """s_j = mean over the samples of Σ_i (∂g_j/∂x_i)², every Jacobian column computed (float64)."""
    dtype = torch.float64
    gradient, _, params = _gradient_fn(model, loss, dtype)
    d = math.prod(inputs.shape[1:])
    if chunk is None:
        chunk = columns_per_chunk(params=sum(p.numel() for p in params.values()),
                                  activations=activation_values(model, tuple(inputs.shape[1:])), inputs=d)  # fmt: skip
    total = torch.zeros(sum(p.numel() for p in params.values()), dtype=dtype)
    for x, y in zip(inputs.to(dtype), labels, strict=True):
        column = vmap(lambda v, x=x, y=y: jvp(lambda z: gradient(z, y), (x,), (v,))[1])
        for start in range(0, d, chunk):
            width = min(d, start + chunk) - start
            basis = torch.zeros(width, d, dtype=dtype)
            basis[torch.arange(width), torch.arange(start, start + width)] = 1.0
            total += (column(basis.reshape(width, *x.shape)) ** 2).sum(0)
    return _split(total / len(inputs), model)


def hutchinson(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, loss: str, seed: int,
               probes: int = PROBES) -> Map:  # fmt: skip
    """The Hutchinson estimate of `exact`: mean over samples and `probes` Gaussian probes v of (J v)² (float64)."""
    dtype = torch.float64
    gradient, _, params = _gradient_fn(model, loss, dtype)
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(sum(p.numel() for p in params.values()), dtype=dtype)
    for x, y in zip(inputs.to(dtype), labels, strict=True):
        for _ in range(probes):
            v = torch.randn(x.shape, generator=gen, dtype=dtype)
            total += jvp(lambda z, y=y: gradient(z, y), (x,), (v,))[1] ** 2
    return _split(total / (probes * len(inputs)), model)


def jacobian_entries(model: nn.Module, input_shape: tuple[int, ...], samples: int) -> int:
    """D · P · samples: the Jacobian entries an exact map over `samples` samples computes."""
    return math.prod(input_shape) * sum(p.numel() for p in model.parameters()) * samples


def check_exact(model: nn.Module, input_shape: tuple[int, ...], samples: int) -> None:
    """Refuse (ConfigError naming the fix) an exact map larger than EXACT_MAX_ENTRIES Jacobian entries."""
    entries = jacobian_entries(model, input_shape, samples)
    if entries > EXACT_MAX_ENTRIES:
        raise ConfigError(
            f"the exact sensitivity map needs {entries:.1e} Jacobian entries ({samples} samples × "
            f"{math.prod(input_shape)} inputs × {entries // (samples * math.prod(input_shape))} parameters; about "
            f"{entries / 3e7 / 3600:.1f} h of one core) — over the {EXACT_MAX_ENTRIES:.0e} limit; use --sensitivity "
            "hutchinson or fewer --sensitivity-samples"
        )


def client_samples(size: int, *, clients: int, samples: int, seed: int) -> list[np.ndarray]:
    """Each client's own data: `samples` distinct dataset indices per client, drawn independently per client from
    the whole dataset with the client's own seeded generator (all of it when the dataset is smaller). Independent of
    any attacked index, so one mask serves a whole sweep of attacked images."""
    take = min(samples, size)
    return [np.sort(np.random.default_rng([seed, k]).choice(size, size=take, replace=False)) for k in range(clients)]


def _digest(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *parts: object) -> str:
    h = hashlib.sha256(repr(parts).encode())
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().double().numpy().tobytes())
    h.update(images.detach().cpu().double().numpy().tobytes())
    h.update(labels.detach().cpu().numpy().astype(np.int64).tobytes())
    return h.hexdigest()


def client_map(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, loss: str, method: str,
               seed: int) -> Map:  # fmt: skip
    """One client's map on its own samples (`exact`, or `hutchinson` with its probes drawn from `seed`), cached
    per (weights, samples, labels, loss, method, seed) in this process."""
    if method not in METHODS:
        raise ConfigError(f"sensitivity {method!r}: use {' or '.join(METHODS)}")
    key = _digest(model, images, labels, type(model).__name__, loss, method, seed if method == "hutchinson" else None)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    if method == "exact":
        out = exact(model, images, labels, loss=loss)
    else:
        out = hutchinson(model, images, labels, loss=loss, seed=seed)
    _CACHE[key] = out
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return out


def overlap(a: Map, b: Map, fraction: float) -> float:
    """|A ∩ B| / |A| for the top-`fraction` entry sets A of map a and B of map b (the selection rule's own ties)."""
    ma, mb = top_fraction(a, fraction), top_fraction(b, fraction)
    chosen = sum(int(x.sum()) for x in ma)
    return sum(int((x & y).sum()) for x, y in zip(ma, mb, strict=True)) / max(1, chosen)
