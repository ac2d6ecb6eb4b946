"""Models (registered by name), shaped from the data and initialised deterministically from the seed."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from he_leak.errors import ConfigError
from he_leak.registry import Registry

MODELS: Registry = Registry("model")
MIN_CONV_SIDE = 4  # below this a 5×5 (or 3×3 strided) convolution sees mostly padding
ACTIVATIONS: Registry = Registry("activation")
for _name, _act in {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "softplus": nn.Softplus,
}.items():
    ACTIVATIONS.register(_name)(_act)


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Everything that fixes a model: its name, the input it takes, the classes and the architecture options."""

    name: str = "lenet"
    input_shape: tuple[int, ...] = (1, 8, 8)
    classes: int = 10
    hidden: tuple[int, ...] = (64, 32)
    width: int = 12
    activation: str = "sigmoid"
    stride: int = 2  # conv1's stride
    seed: int = 0


def build_model(spec: ModelSpec) -> nn.Module:
    """The registered model for `spec`, in float32 on the CPU, with seeded weights."""
    factory = MODELS[spec.name]
    if spec.classes < 2:
        raise ConfigError(f"--classes {spec.classes}: a classifier needs at least 2 classes")
    gen = torch.Generator().manual_seed(spec.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = factory(spec, gen)
    return model.eval()


def _image_shape(spec: ModelSpec) -> tuple[int, int, int]:
    if len(spec.input_shape) != 3:
        raise ConfigError(
            f"model {spec.name!r} needs image input C×H×W, got {spec.input_shape}; use --model mlp for flat inputs"
        )
    if min(spec.input_shape[1:]) < MIN_CONV_SIDE:
        raise ConfigError(
            f"image {spec.input_shape[1]}×{spec.input_shape[2]} is too small for model {spec.name!r} "
            f"(needs at least {MIN_CONV_SIDE}×{MIN_CONV_SIDE}); use larger images or --model mlp"
        )
    return spec.input_shape  # type: ignore[return-value]


def _conv_out(side: int, *, kernel: int, stride: int, padding: int) -> int:
    return (side + 2 * padding - kernel) // stride + 1


class LeNet(nn.Module):
    """The DLG paper's LeNet: three 5×5 convolutions (12 channels, strides 2, 2, 1), sigmoid, one linear layer."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        c, h, w = _image_shape(spec)
        act = ACTIVATIONS[spec.activation]
        self.body = nn.Sequential(
            nn.Conv2d(c, 12, 5, padding=2, stride=2), act(),
            nn.Conv2d(12, 12, 5, padding=2, stride=2), act(),
            nn.Conv2d(12, 12, 5, padding=2, stride=1), act(),
        )  # fmt: skip
        for s in (2, 2, 1):
            h, w = _conv_out(h, kernel=5, stride=s, padding=2), _conv_out(w, kernel=5, stride=s, padding=2)
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


@MODELS.register("convnet")
def convnet(spec: ModelSpec, gen: torch.Generator) -> nn.Module:
    """A small CNN: 3×3 conv (`--width` kernels), 3×3 conv with stride 2, the activation after each, a linear head."""
    c, h, w = _image_shape(spec)
    act = ACTIVATIONS[spec.activation]
    k = spec.width
    h2, w2 = _conv_out(h, kernel=3, stride=2, padding=1), _conv_out(w, kernel=3, stride=2, padding=1)
    return nn.Sequential(
        nn.Conv2d(c, k, 3, padding=1), act(),
        nn.Conv2d(k, k, 3, padding=1, stride=2), act(),
        nn.Flatten(), nn.Linear(k * h2 * w2, spec.classes),
    )  # fmt: skip


from he_leak import models_conv  # noqa: E402, F401  (registers conv1; it imports this module's names)
