"""Scenario `secagg`: K clients and a server that learns only the plaintext sum of their updates (secure
aggregation, modelled with pairwise masks done for real: encryptors.secagg).

Each of `--clients K` (≥ 2) clients computes the gradient of its own batch of `--batch B` samples (the same global
model; DP-SGD with `--dp-noise`), masks it with its pairwise masks and sends it; the server adds the masked vectors
and the masks cancel. The attacker is the server: each client's masked vector alone is uniform noise, so what it
attacks is the unmasked mean gradient of all K·B samples, as one batch (matched scoring, `recovered` of K·B) — the
same view a key-holding client of he-aggregate has, reached without HE. `he_seconds` / `he_bytes` hold the
masking protocol's cost per round (masking and summing; the K masked vectors sent): there is no HE here.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from encryptors import secagg
from he_leak.errors import ConfigError
from he_leak.records import HeCost, Observation, Observed, Reconstruction, Truth
from he_leak.scenarios.base import SCENARIOS, Estimates, Pool, Scenario


@SCENARIOS.register("secagg")
class SecAgg(Scenario):
    """K clients, pairwise-masked updates, a server that sees their sum."""

    name = "secagg"
    per_client = True
    utility_measured = "plaintext-equivalent (the masked sum is the plaintext sum up to 2^-32 fixed point)"

    def __init__(self, cfg, *, key_seed=None) -> None:
        super().__init__(cfg, key_seed=key_seed)
        if cfg.clients < 2:
            raise ConfigError("secagg needs --clients K >= 2 (with one client the server's sum is that client's "
                              "update; use scenario plain)")  # fmt: skip

    @property
    def key_source(self) -> str | None:
        return self.key_seed.source  # the pairwise masks are the clients' secret

    def input_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(image_shape)

    def observe(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Observed:
        k, b = self.cfg.clients, self.cfg.batch
        updates = [self.share(self.client_gradient(model, images[i * b : (i + 1) * b], labels[i * b : (i + 1) * b],
                                                   client=i), client=i) for i in range(k)]  # fmt: skip
        flat = [torch.cat([g.double().flatten() for g in u]).numpy() for u in updates]
        aggregation = secagg.aggregate(flat, self.key_seed)
        mean = torch.from_numpy(aggregation.total / k)
        sizes = [g.numel() for g in updates[0]]
        grads = tuple(part.reshape(g.shape).to(g.dtype) for part, g in zip(mean.split(sizes), updates[0],
                                                                             strict=True))  # fmt: skip
        obs = Observation(model=model, gradients=grads, input_shape=tuple(images.shape[1:]), batch=k * b,
                          classes=self.cfg.classes, loss=self.loss)  # fmt: skip
        cost = HeCost(seconds=aggregation.seconds, bytes=aggregation.bytes)
        self.aggregation = aggregation
        return Observed(obs, Truth(inputs=images, labels=labels, plaintext=images), cost)

    def interpret(self, rec: Reconstruction, truth: Truth, labels: np.ndarray | None, pool: Pool) -> Estimates:
        return Estimates(keyless=rec.inputs.reshape(truth.plaintext.shape))
