"""The model of the Flower example (experiments/flower_fedavg.py), as a user would write it: a factory he-leak
calls with the input shape and the class count (`--model experiments/flower_model.py:mlp`); never registered."""

import math

from torch import nn


def mlp(input_shape: tuple[int, ...], classes: int = 10) -> nn.Module:
    """Flatten, 64 sigmoid units, a linear output."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 64), nn.Sigmoid(), nn.Linear(64, classes))
