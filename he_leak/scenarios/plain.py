"""Scenario `plain`: no encryption. The model input is the image; the attacker sees the plaintext gradient."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from he_leak.records import Observation, Observed, Reconstruction, Truth
from he_leak.scenarios.base import SCENARIOS, Estimates, Pool, Scenario


@SCENARIOS.register("plain")
class Plain(Scenario):
    """The baseline every encrypted scenario is compared with."""

    name = "plain"

    def input_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(image_shape)

    def observe(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Observed:
        grads = self.share(self.client_gradient(model, images, labels))
        obs = Observation(
            model=model,
            gradients=grads,
            input_shape=tuple(images.shape[1:]),
            batch=len(images),
            classes=self.cfg.classes,
            loss=self.loss,
        )
        return Observed(obs, Truth(inputs=images, labels=labels, plaintext=images))

    def interpret(self, rec: Reconstruction, truth: Truth, labels: np.ndarray | None, pool: Pool) -> Estimates:
        return Estimates(keyless=rec.inputs.reshape(truth.plaintext.shape))
