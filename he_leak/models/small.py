"""The small built-in models (lenet, mlp, logreg, convnet), registered by name in he_leak.models.base.MODELS, shaped
from the data and initialised deterministically from the seed."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from he_leak.errors import ConfigError
from he_leak.models.base import ACTIVATIONS, MODELS, ModelSpec, conv_out, image_shape


class LeNet(nn.Module):
    """The DLG paper's LeNet: three 5×5 convolutions (12 channels, strides 2, 2, 1), sigmoid, one linear layer;
    `batchnorm`: a BatchNorm2d between each convolution and its activation."""

    def __init__(self, spec: ModelSpec, *, batchnorm: bool = False) -> None:
        super().__init__()
        c, h, w = image_shape(spec)
        act = ACTIVATIONS[spec.activation]
        layers: list[nn.Module] = []
        for cin, stride in ((c, 2), (12, 2), (12, 1)):
            layers.append(nn.Conv2d(cin, 12, 5, padding=2, stride=stride))
            layers += [nn.BatchNorm2d(12)] if batchnorm else []
            layers.append(act())
        self.body = nn.Sequential(*layers)
        for s in (2, 2, 1):
            h, w = conv_out(h, kernel=5, stride=s, padding=2), conv_out(w, kernel=5, stride=s, padding=2)
        self.fc = nn.Linear(12 * h * w, spec.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


@MODELS.register("lenet")
def lenet(spec: ModelSpec, gen: torch.Generator) -> nn.Module:
    """LeNet with the DLG paper's initialisation: every parameter uniform in [-0.5, 0.5]."""
    model = LeNet(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.5, 0.5, generator=gen)
    return model


@MODELS.register("lenet-bn")
def lenet_bn(spec: ModelSpec, gen: torch.Generator) -> nn.Module:
    """LeNet with a BatchNorm2d after each convolution: convolutions and the linear layer drawn as in `lenet`,
    BatchNorm's affine weights 1 and biases 0, running statistics 0 / 1 (PyTorch's defaults)."""
    model = LeNet(spec, batchnorm=True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.uniform_(-0.5, 0.5, generator=gen)
                m.bias.uniform_(-0.5, 0.5, generator=gen)
    return model


@MODELS.register("mlp")
def mlp(spec: ModelSpec, gen: torch.Generator) -> nn.Module:
    """Fully connected with bias: flatten, `--hidden` layers with the chosen activation, then a linear output."""
    if not spec.hidden or min(spec.hidden) < 1:
        raise ConfigError(f"--hidden {spec.hidden}: give one or more positive layer widths, e.g. --hidden 64,32")
    act: Callable[[], nn.Module] = ACTIVATIONS[spec.activation]
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(spec.input_shape)
    for h in spec.hidden:
        layers += [nn.Linear(width, h), act()]
        width = h
    layers.append(nn.Linear(width, spec.classes))
    return nn.Sequential(*layers)


@MODELS.register("logreg")
def logreg(spec: ModelSpec, gen: torch.Generator) -> nn.Module:
    """(Multinomial) logistic regression: flatten, one linear layer to the classes (TenSEAL's HE-training model)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(spec.input_shape), spec.classes))


@MODELS.register("convnet")
def convnet(spec: ModelSpec, gen: torch.Generator) -> nn.Module:
    """A small CNN: 3×3 conv (`--width` kernels), 3×3 conv with stride 2, the activation after each, a linear head."""
    c, h, w = image_shape(spec)
    act = ACTIVATIONS[spec.activation]
    k = spec.width
    h2, w2 = conv_out(h, kernel=3, stride=2, padding=1), conv_out(w, kernel=3, stride=2, padding=1)
    return nn.Sequential(
        nn.Conv2d(c, k, 3, padding=1), act(),
        nn.Conv2d(k, k, 3, padding=1, stride=2), act(),
        nn.Flatten(), nn.Linear(k * h2 * w2, spec.classes),
    )  # fmt: skip
