"""The model registry, activations and ModelSpec, shared by he_leak.models and the extra model modules (which
register into MODELS); build_model and shape_model look names up here."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from he_leak.errors import ConfigError
from he_leak.models.checkpoint import load_weights
from he_leak.models.losses import sigmoid3
from he_leak.models.user import build_user, check_output, is_user_model
from he_leak.registry import Registry

MODELS: Registry = Registry("model")
MIN_CONV_SIDE = 4  # below this a 5×5 (or 3×3 strided) convolution sees mostly padding
ACTIVATIONS: Registry = Registry("activation")


class Square(nn.Module):
    """x², the activation of HE-friendly networks (CryptoNets): one ciphertext multiplication."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class Sigmoid3(nn.Module):
    """The degree-3 polynomial sigmoid approximation of he_leak.models.losses.SIGMOID3 (two multiplicative levels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sigmoid3(x)


POLYNOMIAL = (Square, Sigmoid3)  # activations a CKKS circuit can evaluate exactly
for _name, _act in {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "softplus": nn.Softplus,
    "square": Square,
    "sigmoid3": Sigmoid3,
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
    weights: str | None = None  # a state_dict file loaded strictly over the seeded initialisation
    mode: str = "eval"  # train: BatchNorm normalises by the batch's statistics and updates its running buffers


def _construct(spec: ModelSpec, gen: torch.Generator) -> nn.Module:
    """The registered model, or a user's factory (he_leak.models.user), for `spec`."""
    if is_user_model(spec.name):
        return build_user(spec.name, input_shape=spec.input_shape, classes=spec.classes)
    if spec.name not in MODELS:
        raise ConfigError(f"unknown model {spec.name!r}; known: {', '.join(sorted(MODELS))}; or your own as "
                          "path/to/module.py:factory or package.module:factory")  # fmt: skip
    return MODELS[spec.name](spec, gen)


def build_model(spec: ModelSpec) -> nn.Module:
    """The model for `spec`, in float32 on the CPU, with seeded weights (or `spec.weights`), in `spec.mode`."""
    if spec.classes < 2:
        raise ConfigError(f"--classes {spec.classes}: a classifier needs at least 2 classes")
    gen = torch.Generator().manual_seed(spec.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = _construct(spec, gen)
    if is_user_model(spec.name):
        check_output(model, spec.name, input_shape=spec.input_shape, classes=spec.classes)
    if spec.weights is not None:
        load_weights(model, spec.weights)
    return set_mode(model, spec.mode)


def set_mode(model: nn.Module, mode: str) -> nn.Module:
    """eval(), or train() where the update stays a function of the data alone: a layer that draws random numbers
    in train mode (dropout) is refused, naming it."""
    if mode != "train":
        return model.eval()
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            raise ConfigError(f"--model-mode train: layer {name} ({type(module).__name__}) draws a random mask the "
                              "attacker cannot know; use --model-mode eval or a model without dropout")  # fmt: skip
        if isinstance(module, nn.modules.instancenorm._InstanceNorm) and module.track_running_stats:
            raise ConfigError(f"--model-mode train: layer {name} ({type(module).__name__} with running statistics) "
                              "is not modelled; use track_running_stats=False or --model-mode eval")  # fmt: skip
    return model.train()


def shape_model(spec: ModelSpec) -> nn.Module:
    """The model of `spec` on torch's meta device: shapes and parameter counts without allocating any weights (a
    user factory that cannot build there is built on the CPU)."""
    with torch.device("meta"):
        try:
            return _construct(spec, torch.Generator())
        except ConfigError:
            if not is_user_model(spec.name):
                raise
    return _construct(spec, torch.Generator())


def image_shape(spec: ModelSpec) -> tuple[int, int, int]:
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


def conv_out(side: int, *, kernel: int, stride: int, padding: int) -> int:
    return (side + 2 * padding - kernel) // stride + 1
