"""Extra convolutional models for the structure experiments (registered in MODELS on import; he_leak.models imports
this module, so every user of the registry sees them)."""

from __future__ import annotations

import torch
from torch import nn

from he_leak.errors import ConfigError
from he_leak.models.base import ACTIVATIONS, MODELS, ModelSpec, conv_out, image_shape

CONV1_KERNEL = 3


@MODELS.register("conv1")
def conv1(spec: ModelSpec, gen: torch.Generator) -> nn.Module:
    """One 3×3 convolution (`--width` kernels, `--stride`, zero padding 1), the activation, then a linear head: the
    smallest net for Qian et al.'s kernel condition h ≥ (d/d')²·C (d input width, d' output width, C channels)."""
    c, h, w = image_shape(spec)
    if not 1 <= spec.stride <= CONV1_KERNEL:
        raise ConfigError(f"--stride {spec.stride}: conv1 takes a stride from 1 to {CONV1_KERNEL} (its kernel is 3×3)")
    h2 = conv_out(h, kernel=CONV1_KERNEL, stride=spec.stride, padding=1)
    w2 = conv_out(w, kernel=CONV1_KERNEL, stride=spec.stride, padding=1)
    return nn.Sequential(
        nn.Conv2d(c, spec.width, CONV1_KERNEL, padding=1, stride=spec.stride), ACTIVATIONS[spec.activation](),
        nn.Flatten(), nn.Linear(spec.width * h2 * w2, spec.classes),
    )  # fmt: skip
