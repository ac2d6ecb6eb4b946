"""The scenario interface: who sees which gradient, and what the truth is to score against."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from he_leak.config import RunConfig
from he_leak.records import Observation, Reconstruction, Truth
from he_leak.registry import Registry

SCENARIOS: Registry = Registry("scenario")


@dataclass(frozen=True)
class Estimates:
    """Plaintext images estimated from a Reconstruction (B×C×H×W), by the attacker and by a key holder."""

    keyless: torch.Tensor | None  # the attacker's own best estimate of the plaintext
    with_key: torch.Tensor | None = None  # a key holder's decryption of the recovered input
    decrypts: torch.Tensor | None = None  # per sample: did the recovered input decrypt at all


class Scenario(ABC):
    """Turns a batch of images into what the attacker observes, and a reconstruction back into plaintext."""

    name: str = "scenario"
    encryptor: str | None = None
    insecure: bool | None = None
    success_metric: str = "plaintext_psnr"

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    @abstractmethod
    def input_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one model input for images of `image_shape`."""

    @abstractmethod
    def observe(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[Observation, Truth]:
        """The attacker's Observation, and the Truth kept aside for scoring."""

    @abstractmethod
    def interpret(self, rec: Reconstruction, truth: Truth) -> Estimates:
        """Plaintext estimates from the reconstructed inputs (the Truth only supplies image shape / key-holder data)."""

    def threshold(self) -> float:
        """The success threshold on `success_metric`, from the run's config."""
        return self.cfg.success_psnr

    def success(self, row: dict[str, object]) -> bool:
        """The run's success criterion (DESIGN.md): `success_metric` at or above the configured threshold."""
        value = row.get(self.success_metric)
        return isinstance(value, float | int) and value >= self.threshold()

    def panels(self, rec: Reconstruction, truth: Truth) -> dict[str, np.ndarray]:
        """Extra images (B×C×H×W in [0,1]) for figures, e.g. ciphertext views drawn as images."""
        return {}


def shared_gradient(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The mean cross-entropy gradient over the batch, one tensor per parameter (what a client shares)."""
    model.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(inputs), labels)
    grads = torch.autograd.grad(loss, [p for p in model.parameters()])
    return tuple(g.detach() for g in grads)
