"""Scenario `plain`: no encryption. The model input is the image; the attacker sees the plaintext update — one
gradient, or the update of the client's local training (`--local-steps`) — or an update captured from a real
federated run (`--update FILE`, docs/design.md "Captured updates")."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from he_leak.models.checkpoint import read_update
from he_leak.models.local import running_buffers
from he_leak.records import Observation, Observed, Reconstruction, SharedBuffers, Truth
from he_leak.scenarios.base import SCENARIOS, Estimates, Pool, Scenario, shared_buffers


@SCENARIOS.register("plain")
class Plain(Scenario):
    """The baseline every encrypted scenario is compared with."""

    name = "plain"

    def input_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(image_shape)

    def observe(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Observed:
        if self.cfg.update is not None:
            return self.captured(model, images, labels)
        grads, after = self.client_share(model, images, labels)
        obs = Observation(
            model=model, gradients=grads, input_shape=tuple(images.shape[1:]), batch=len(images),
            classes=self.cfg.classes, loss=self.loss, local=self.cfg.local(), buffers=shared_buffers(model, after),
        )  # fmt: skip
        return Observed(obs, Truth(inputs=images, labels=labels, plaintext=images))

    def captured(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Observed:
        """The update of `--update FILE` from the global model (`--weights`), in the shared form: the gradient as
        given, or −Δ/(E·η) of a weight difference (`delta`) or of the client's weights (`weights`); the defences
        are applied as a client would. The truth is the batch `--data/--index/--batch` selects with `--truth`,
        else unknown (None: nothing is scored)."""
        values, file_buffers = read_update(model, self.cfg.update)
        params = dict(model.named_parameters())
        local = self.cfg.local()
        kind = self.cfg.update_kind
        if kind == "gradient":
            update = [values[n] for n in params]
        else:
            deltas = [values[n] - params[n].detach().double() if kind == "weights" else values[n] for n in params]
            update = [-d / (local.steps * local.lr) for d in deltas]
        grads = self.share(tuple(u.to(p.dtype) for u, p in zip(update, params.values(), strict=True)))
        before = running_buffers(model)
        after = {n: (before[n] + v.to(before[n].dtype) if kind == "delta" else v.to(before[n].dtype))
                 for n, v in file_buffers.items() if n in before}  # fmt: skip
        buffers = SharedBuffers(before, after) if after and model.training else None
        obs = Observation(model=model, gradients=grads, input_shape=tuple(images.shape[1:]), batch=self.cfg.batch,
                          classes=self.cfg.classes, loss=self.loss, local=local, buffers=buffers)  # fmt: skip
        truth = Truth(inputs=images, labels=labels, plaintext=images) if self.cfg.update_truth else None
        return Observed(obs, truth)

    def interpret(self, rec: Reconstruction, truth: Truth, labels: np.ndarray | None, pool: Pool) -> Estimates:
        return Estimates(keyless=rec.inputs.reshape(truth.plaintext.shape))
