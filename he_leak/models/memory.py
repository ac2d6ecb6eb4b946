"""A size guard: estimate a run's peak memory before the expensive work and refuse, in one line naming the estimate
and the limit, a run that would not fit the machine.

The estimate adds the parts that grow with the problem (an upper-bound style sum; measured peaks are below it):
the interpreter and libraries, the dataset, the model and its gradient copies, the activations of a double
backward pass (times IG's restarts, which share one vmapped pass), the attack's state (L-BFGS memory, IG restarts,
the analytic system), ckks-input's keyless decoder (sketched features and an m × m Gram matrix) and the utility
measurement's training set. The limit is a fraction of the machine's physical memory (not of what is free now: a
run's fate must not depend on the load). `he-leak audit` and `he-leak bench` go through the same guard
(`audit_estimate`; the bench estimates each of its problems as an attack run).

Checked against measured peaks (ResNet-18 / 64×64 among them): docs/measurements.md#memory-guard.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from he_leak.config import RunConfig
from he_leak.errors import ConfigError

GB = 1024**3
BASE_BYTES = 700 * 1024**2  # python + torch + tenseal + scikit-learn/image, measured ~470-650 MB after imports
LIMIT_FRACTION = 0.8  # of physical memory
# weights and the observed gradient (float32), the attack's float32 and float64 copies with their target gradients,
# the double backward's parameter-sized intermediates: in 4-byte units. 8 left a 15% margin on ResNet-18's float64
# DLG phase (peak 1.22 GiB, estimate 1.40), where the parameters dominate; 12 gives 1.57.
MODEL_COPIES = 12
ACTIVATION_COPIES = 6  # forward activations kept for a double backward (DLG's objective), with their gradients
LBFGS_HISTORY = 300  # he_leak.attacks.optim.lbfgs_match.HISTORY: (s, y) pairs kept in float32


def physical_memory() -> int:
    """Bytes of physical memory of this machine."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no guard
        return 1 << 62


def activation_values(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Values in all module outputs for one sample (one forward pass on zeros, leaves only; a meta-device model
    costs nothing)."""
    total = [0]
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda mod, i, o: total.__setitem__(0, total[0] + o.numel())) for m in leaves]
    try:
        with torch.no_grad():
            first = next(model.parameters())
            model(torch.zeros(1, *input_shape, device=first.device, dtype=first.dtype))
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def estimate(cfg: RunConfig, *, model: nn.Module, input_shape: tuple[int, ...], image_values: int,
             dataset_size: int, samples: int, decoder_samples: int = 0, runs: int = 1) -> dict[str, int]:  # fmt: skip
    """Estimated bytes by part (see the module docstring); `runs` attacks of this shape at once (a batched objective
    over that many models, as `he-leak bench --batched` runs them)."""
    params = sum(p.numel() for p in model.parameters())
    inputs = math.prod(input_shape)
    parts = {
        "libraries": BASE_BYTES,
        "dataset": 4 * dataset_size * image_values,
        "model": 4 * MODEL_COPIES * params,
        "activations": 8 * ACTIVATION_COPIES * samples * activation_values(model, input_shape),
    }
    if cfg.attack == "ig":  # IG's restarts run through one vmapped pass: K times the activations
        parts["activations"] *= cfg.restarts
    if cfg.local_steps and cfg.unroll and cfg.attack in ("dlg", "idlg", "ig"):  # every unrolled step stays in the
        parts["activations"] *= cfg.local_steps  # graph: its activations, its weights and their gradient (float64)
        parts["unrolled"] = 16 * cfg.local_steps * params
    if cfg.attack in ("dlg", "idlg"):
        parts["attack"] = 4 * 2 * LBFGS_HISTORY * samples * (inputs + cfg.classes) + 8 * 4 * samples * inputs
    elif cfg.attack == "ig":
        parts["attack"] = 4 * 6 * cfg.restarts * samples * inputs
    else:  # analytic / layerwise: a few dense copies of the first layer's system
        first = next((p for p in model.parameters() if p.dim() >= 2), None)
        parts["attack"] = 8 * 4 * (first.numel() if first is not None else inputs)
    if decoder_samples:
        width = min(inputs, 4096)
        parts["decoder"] = 8 * (3 * decoder_samples * width + 3 * decoder_samples**2 + 3 * decoder_samples
                                * image_values) + 2 * 4 * 2**23  # fmt: skip
    if cfg.utility:
        parts["utility"] = dataset_size * inputs * (1 if inputs > image_values else 4) + 4 * MODEL_COPIES * params
    for part in ("model", "activations", "attack"):
        parts[part] *= runs
    return parts


def audit_estimate(model: nn.Module, input_shape: tuple[int, ...], *, batch: int) -> dict[str, int]:
    """Estimated bytes by part of `he-leak audit` (he_leak.models.audit): its random float32 inputs and their float64
    copy, the model in float32 and float64 with gradients, the activations kept for the backward pass, and the rank
    computations (float64 copies of the largest weight, SVD workspace, a dense convolution system)."""
    from he_leak.models.audit import DENSE_LIMIT

    params = [p.numel() for p in model.parameters()]
    return {
        "libraries": BASE_BYTES,
        "inputs": 12 * batch * math.prod(input_shape),
        "model": 20 * sum(params),
        "activations": 8 * ACTIVATION_COPIES * batch * activation_values(model, input_shape),
        "ranks": 8 * 3 * max(params, default=0) + 8 * 2 * DENSE_LIMIT,
    }


def check(parts: dict[str, int], *, limit: int | None = None) -> None:
    """ConfigError (one line: the estimate, its largest parts, the limit) when the sum exceeds the limit."""
    limit = int(LIMIT_FRACTION * physical_memory()) if limit is None else limit
    total = sum(parts.values())
    if total <= limit:
        return
    top = sorted(parts.items(), key=lambda kv: -kv[1])[:3]
    detail = ", ".join(f"{k} {v / GB:.1f} GB" for k, v in top)
    raise ConfigError(
        f"this run would need about {total / GB:.1f} GB ({detail}) but the limit here is {limit / GB:.1f} GB "
        f"({LIMIT_FRACTION:.0%} of physical memory); use a smaller image, batch, model or --hidden"
    )
