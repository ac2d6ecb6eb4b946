"""The forward and backward pass of a small polynomial network as a program over abstract operations, run either
homomorphically (encryptors.circuit's evaluator) or on numpy float64 arrays (``PlainOps``: the reference, and the
tracer that measures the circuit's multiplicative depth before any key is made).

Model: Linear layers with a polynomial activation between them (`square`, `sigmoid3`), e.g. an MLP with one or two
hidden layers, or logistic regression (one layer). Loss L = Φ(z) − yᵀz with link φ (he_leak.losses): mse (φ = id)
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
from he_leak.losses import SIGMOID3
from he_leak.models import Sigmoid3, Square

ACTIVATIONS = {Square: "square", Sigmoid3: "sigmoid3"}
LINKS = {"mse": None, "poly-sigmoid": SIGMOID3}
DERIVATIVE = {"sigmoid3": (SIGMOID3[1], 0.0, 3 * SIGMOID3[3])}


class Ops(Protocol):
    """What the program needs (encryptors.circuit_eval.CkksEvaluator has exactly these)."""

    def matvec(self, matrix: np.ndarray, x: Any) -> Any: ...
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
    """The model as Linear layers with polynomial activations between them, or ConfigError naming what to use."""
    layers: list[Layer] = []
    for module in model.modules():
        if module is model or isinstance(module, nn.Sequential | nn.Flatten):
            continue
        if isinstance(module, nn.Linear):
            if layers and layers[-1].act is None:
                raise ConfigError("he-train needs an activation between two linear layers")
            if module.bias is None:
                raise ConfigError("he-train needs linear layers with a bias")
            w = module.weight.detach().double().numpy()
            layers.append(Layer(w, module.bias.detach().double().numpy(), None))
        elif type(module) in ACTIVATIONS and layers and layers[-1].act is None:
            layers[-1] = Layer(layers[-1].weight, layers[-1].bias, ACTIVATIONS[type(module)])
        else:
            raise ConfigError(
                f"he-train evaluates linear layers and polynomial activations only, not {type(module).__name__}: "
                "use --model mlp --activation square|sigmoid3 (one or two --hidden layers) or --model logreg"
            )
    if not layers or layers[-1].act is not None:
        raise ConfigError("he-train needs a model ending in a linear layer (the logits)")
    return layers


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


@dataclass(frozen=True)
class Traced:
    """A float64 value and the number of rescales (multiplicative levels) it has used."""

    value: np.ndarray
    level: int


class PlainOps:
    """The program on float64 numpy arrays, counting levels the way encryptors.circuit_eval does: products and
    plain-matrix products use one level, polynomials one or two, an outer product expands u (one level) and then
    multiplies. ``depth`` is the deepest level reached."""

    def __init__(self) -> None:
        self.depth = 0

    def leaf(self, value: np.ndarray) -> Traced:
        """A fresh input (an encryption: level 0)."""
        return self._at(value, 0)

    def _at(self, value: np.ndarray, level: int) -> Traced:
        self.depth = max(self.depth, level)
        return Traced(np.asarray(value, np.float64), level)

    def matvec(self, matrix: np.ndarray, x: Traced) -> Traced:
        return self._at(np.asarray(matrix) @ x.value, x.level + 1)

    def add_plain(self, a: Traced, values: np.ndarray) -> Traced:
        return self._at(a.value + values, a.level)

    def sub(self, a: Traced, b: Traced) -> Traced:
        return self._at(a.value - b.value, max(a.level, b.level))

    def multiply(self, a: Traced, b: Traced) -> Traced:
        return self._at(a.value * b.value, max(a.level, b.level) + 1)

    def square(self, a: Traced) -> Traced:
        return self.multiply(a, a)

    def polyval(self, z: Traced, coeffs: tuple[float, ...]) -> Traced:
        c = [float(v) for v in coeffs] + [0.0] * (4 - len(coeffs))
        value = c[0] + c[1] * z.value + c[2] * z.value**2 + c[3] * z.value**3
        linear_or_square = (not c[2] and not c[3]) or (c[2] == 1.0 and not c[1] and not c[3])
        return self._at(value, z.level + (1 if linear_or_square else 2))

    def outer(self, u: Traced, v: Traced) -> Traced:
        return self._at(np.outer(u.value, v.value), max(u.level + 1, v.level) + 1)
