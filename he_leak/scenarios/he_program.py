"""The forward and backward pass of a small polynomial network as a program over abstract operations, run
homomorphically (encryptors.circuit's evaluator), on numpy float64 arrays (``PlainOps``: the reference), or on
ciphertext shapes (encryptors.circuit_cost's ``CostOps``: the circuit's depth before any key is made, and the
operations the evaluator will perform).

Model: Linear layers with a polynomial activation between them (`square`, `sigmoid3`), e.g. an MLP with one or two
hidden layers, or logistic regression (one layer). Loss L = Φ(z) − yᵀz with link φ (he_leak.models.losses): mse (φ = id)
or poly-sigmoid (φ = SIGMOID3), so at the logits δ = φ(z) − y, and going down

    ∂W_l = δ_l a_{l−1}ᵀ,   ∂b_l = δ_l,   δ_{l−1} = (W_lᵀ δ_l) ⊙ act'(z_{l−1})

(square: act' = 2z, the 2 folded into the plaintext matrix; sigmoid3: act' = c1 + 3 c3 z²).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from torch import nn

from he_leak.errors import ConfigError
from he_leak.models import ACTIVATIONS as MODEL_ACTIVATIONS
from he_leak.models import Sigmoid3, Square
from he_leak.models.losses import SIGMOID3

ACTIVATIONS = {Square: "square", Sigmoid3: "sigmoid3"}
LINKS = {"mse": None, "poly-sigmoid": SIGMOID3}
DERIVATIVE = {"sigmoid3": (SIGMOID3[1], 0.0, 3 * SIGMOID3[3])}


class Ops(Protocol):
    """What the program needs (encryptors.circuit_eval.CkksEvaluator has exactly these)."""

    def matvec(self, matrix: np.ndarray, x: Any) -> Any: ...
    def add(self, a: Any, b: Any) -> Any: ...
    def add_plain(self, a: Any, values: np.ndarray) -> Any: ...
    def sub(self, a: Any, b: Any) -> Any: ...
    def multiply(self, a: Any, b: Any) -> Any: ...
    def square(self, a: Any) -> Any: ...
    def polyval(self, z: Any, coeffs: tuple[float, ...]) -> Any: ...
    def outer(self, u: Any, v: Any) -> Any: ...


@dataclass(frozen=True)
class Layer:
    """One Linear layer (float64 copies of its plaintext weights) and the activation after it (None: the logits)."""

    weight: np.ndarray
    bias: np.ndarray
    act: str | None


def layers_of(model: nn.Module) -> list[Layer]:
    """The model as Linear layers with polynomial activations between them, or ConfigError naming the layer that
    is not and what to use."""
    layers: list[Layer] = []
    for name, module in model.named_modules():
        if module is model or isinstance(module, nn.Sequential | nn.Flatten):
            continue
        where = f"layer {name} ({type(module).__name__})"
        if isinstance(module, nn.Linear):
            if layers and layers[-1].act is None:
                raise ConfigError(f"he-train needs an activation between two linear layers, before {where}")
            if module.bias is None:
                raise ConfigError(f"he-train needs linear layers with a bias; {where} has none")
            w = module.weight.detach().double().numpy()
            layers.append(Layer(w, module.bias.detach().double().numpy(), None))
        elif type(module) in ACTIVATIONS and layers and layers[-1].act is None:
            layers[-1] = Layer(layers[-1].weight, layers[-1].bias, ACTIVATIONS[type(module)])
        elif isinstance(module, _activation_types()):
            raise ConfigError(f"he-train evaluates polynomial activations only, not {where}: use --activation "
                              f"{' or '.join(ACTIVATIONS.values())}")  # fmt: skip
        else:
            raise ConfigError(f"he-train evaluates linear layers and polynomial activations only, not {where}: use "
                              f"--model mlp (one or two --hidden layers) or --model logreg")  # fmt: skip
    if not layers or layers[-1].act is not None:
        raise ConfigError("he-train needs a model ending in a linear layer (the logits)")
    return layers


def _activation_types() -> tuple[type, ...]:
    """The module types of every registered activation (he_leak.models.base.ACTIVATIONS)."""
    return tuple({type(make()) for make in MODEL_ACTIVATIONS.values()})


def activation(ops: Ops, z: Any, act: str) -> Any:
    return ops.square(z) if act == "square" else ops.polyval(z, SIGMOID3)


def backprop(ops: Ops, layers: list[Layer], x: Any, y: Any, *, loss: str) -> list[tuple[Any, Any]]:
    """Per-layer (∂W, ∂b) of one sample with input x and one-hot label y (module docstring)."""
    if loss not in LINKS:
        raise ConfigError(f"he-train computes the mse or poly-sigmoid loss homomorphically, not {loss}")
    inputs, pre = [x], []
    for i, layer in enumerate(layers):
        z = ops.add_plain(ops.matvec(layer.weight, inputs[-1]), layer.bias)
        pre.append(z)
        if i < len(layers) - 1:
            inputs.append(activation(ops, z, layer.act))
    link = LINKS[loss]
    delta = ops.sub(pre[-1] if link is None else ops.polyval(pre[-1], link), y)
    grads: list[tuple[Any, Any]] = []
    for i in reversed(range(len(layers))):
        grads.append((ops.outer(delta, inputs[i]), delta))
        if i == 0:
            break
        below = layers[i - 1].act
        if below == "square":
            delta = ops.multiply(ops.matvec(2.0 * layers[i].weight.T, delta), pre[i - 1])
        else:
            delta = ops.multiply(ops.matvec(layers[i].weight.T, delta), ops.polyval(pre[i - 1], DERIVATIVE[below]))
    return grads[::-1]


def batch_gradient(ops: Ops, layers: list[Layer], xs: list[Any], ys: list[Any], *, loss: str) -> list[Any]:
    """The sum over the samples (x, y) of their gradients, in parameter order (∂W_1, ∂b_1, ∂W_2, ...)."""
    total: list[Any] = []
    for x, y in zip(xs, ys, strict=True):
        flat = [part for pair in backprop(ops, layers, x, y, loss=loss) for part in pair]
        total = [ops.add(a, b) for a, b in zip(total, flat, strict=True)] if total else flat
    return total


class PlainOps:
    """The program on float64 numpy arrays: the reference the homomorphic evaluation approximates."""

    def matvec(self, matrix: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.asarray(matrix) @ x

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def add_plain(self, a: np.ndarray, values: np.ndarray) -> np.ndarray:
        return a + values

    def sub(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a - b

    def multiply(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a * b

    def square(self, a: np.ndarray) -> np.ndarray:
        return a * a

    def polyval(self, z: np.ndarray, coeffs: tuple[float, ...]) -> np.ndarray:
        return np.polynomial.polynomial.polyval(z, [float(c) for c in coeffs])

    def outer(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return np.outer(u, v)
