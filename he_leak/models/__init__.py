"""Models: the registry and ModelSpec (base), the built-in models (small: lenet, mlp, logreg, convnet; conv: conv1;
resnet: resnet18), training losses, the memory guard and the rank audit. Importing the package registers every
built-in model."""

from he_leak.models import conv, resnet, small  # noqa: F401  (registers the built-in models)
from he_leak.models.base import (
    ACTIVATIONS,
    MIN_CONV_SIDE,
    MODELS,
    POLYNOMIAL,
    ModelSpec,
    Sigmoid3,
    Square,
    build_model,
    shape_model,
)

__all__ = [
    "ACTIVATIONS", "MIN_CONV_SIDE", "MODELS", "POLYNOMIAL", "ModelSpec", "Sigmoid3", "Square", "build_model",
    "shape_model",
]  # fmt: skip
