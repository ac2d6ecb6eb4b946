"""Scenario `he-aggregate`: K clients encrypt their gradients and the server adds ciphertexts (NVFlare, FedML-HE).

Each of `--clients K` clients computes the gradient of its own batch of `--batch B` samples (the same global model),
applies the configured defences, and encrypts the entries the public mask selects (CKKS, packed into as few
ciphertexts as the slots allow; everything by default, or a fraction p chosen by sensitivity / at random / by
magnitude, or whole layers by regex). The rest travels in the clear. The server, without the secret key, adds the
ciphertexts of all clients; the clients (key holders) decrypt the aggregate.

Who attacks (`--role`):
- ``server``: sees each client's ciphertexts (nothing to invert without the key) and its clear entries; it attacks
  client 0's clear part with gradient matching restricted to the visible entries (Observation.mask). With everything
  encrypted nothing is visible: the attack cannot run and the server's best estimate is its prior.
- ``client``: an honest-but-curious key holder sees the decrypted aggregate — the mean gradient of all K·B samples —
  and attacks it as one batch (matched scoring, `recovered` of K·B).
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch
from torch import nn

from encryptors.packing import GradientPacker, PackingParams
from he_leak.errors import ConfigError
from he_leak.records import Observation, Reconstruction, Truth
from he_leak.scenarios.base import SCENARIOS, Estimates, Scenario, shared_gradient
from he_leak.seeds import derive
from he_leak.selection import select


def flatten(grads: tuple[torch.Tensor, ...], mask: tuple[torch.Tensor, ...], *, encrypted: bool) -> np.ndarray:
    """The entries of `grads` where mask == encrypted, as one float64 vector (parameter order, row-major)."""
    parts = [g.double().flatten()[(m.flatten() == encrypted)] for g, m in zip(grads, mask, strict=True)]
    return torch.cat(parts).numpy() if parts else np.zeros(0)


def unflatten(values: np.ndarray, like: tuple[torch.Tensor, ...], mask: tuple[torch.Tensor, ...],
              *, encrypted: bool, into: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """Write `values` back at the entries where mask == encrypted, on top of `into`."""
    out, start = [], 0
    for g, m, base in zip(like, mask, into, strict=True):
        flat = base.double().flatten().clone()
        where = (m.flatten() == encrypted).nonzero().flatten()
        flat[where] = torch.from_numpy(values[start : start + len(where)])
        start += len(where)
        out.append(flat.reshape(g.shape).to(g.dtype))
    return tuple(out)


@SCENARIOS.register("he-aggregate")
class HeAggregate(Scenario):
    """K clients, packed CKKS encryption of (a selected part of) each gradient, aggregation by the server."""

    name = "he-aggregate"
    encryptor = "ckks"
    utility_measured = "plaintext-equivalent (trained in plaintext; encrypted sums are exact up to CKKS error)"
    options = frozenset({"encryptor_params", "clients", "role", "encrypt_fraction", "select", "encrypt_layers"})

    @property
    def samples(self) -> int:
        return self.cfg.clients * self.cfg.batch

    @property
    def samples_asked(self) -> str:
        return f"--clients {self.cfg.clients} × --batch {self.cfg.batch}"

    def input_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        known = {f.name for f in dataclasses.fields(PackingParams)}
        unknown = sorted(set(self.cfg.encryptor_params) - known)
        if unknown:
            raise ConfigError(f"unknown HE parameter(s) {', '.join(unknown)} for he-aggregate; known: "
                              f"{', '.join(sorted(known))}")  # fmt: skip
        params = PackingParams(**{k: (tuple(v) if isinstance(v, list) else v)
                                  for k, v in self.cfg.encryptor_params.items()})  # fmt: skip
        self.packing = GradientPacker(params, key_seed=self.key_seed)
        self.insecure = False
        return tuple(image_shape)

    def he_params(self) -> dict[str, object] | None:
        return {**self.packing.describe(), "encrypted_fraction": getattr(self, "encrypted", None)}

    def observe(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[Observation, Truth]:
        k, b = self.cfg.clients, self.cfg.batch
        per_client = [self.share(shared_gradient(model, images[i * b : (i + 1) * b], labels[i * b : (i + 1) * b],
                                                 loss=self.loss), client=i) for i in range(k)]  # fmt: skip
        mean = tuple(torch.stack(gs).mean(0) for gs in zip(*per_client, strict=True))
        mask = select(
            model, fraction=self.cfg.encrypt_fraction, how=self.cfg.select, layers=self.cfg.encrypt_layers,
            inputs=images, labels=labels, mean_gradient=mean, loss=self.loss, seed=derive(self.cfg.seed, "mask"),
        )  # fmt: skip
        start = time.perf_counter()
        hidden = [flatten(g, mask, encrypted=True) for g in per_client]
        if hidden[0].size:  # each client encrypts its share; the server adds; a key holder decrypts
            sent = [self.packing.encrypt(v) for v in hidden]
            aggregate = self.packing.decrypt(self.packing.server().sum(sent)) / k
        else:
            sent, aggregate = [], np.zeros(0)
        seconds = time.perf_counter() - start
        self.encrypted = encrypted_share(mask)
        extras = {"result": {"he_seconds": seconds, "he_bytes": int(sum(c.nbytes for c in sent)),
                             "he_key_bytes": self.packing.public_key_bytes()}}  # fmt: skip
        if self.cfg.role == "client":  # a key holder: the decrypted aggregate plus the aggregated clear part
            grads = unflatten(aggregate, mean, mask, encrypted=True, into=mean)
            obs = Observation(model=model, gradients=grads, input_shape=tuple(images.shape[1:]), batch=k * b,
                              classes=self.cfg.classes, loss=self.loss)  # fmt: skip
            return obs, Truth(inputs=images, labels=labels, plaintext=images, extras=extras)
        visible = tuple(~m for m in mask)
        clear = tuple(g * v for g, v in zip(per_client[0], visible, strict=True))
        obs = Observation(model=model, gradients=clear, input_shape=tuple(images.shape[1:]), batch=b,
                          classes=self.cfg.classes, loss=self.loss, mask=visible)  # fmt: skip
        return obs, Truth(inputs=images[:b], labels=labels[:b], plaintext=images[:b], extras=extras)

    def interpret(self, rec: Reconstruction, truth: Truth, labels: np.ndarray | None) -> Estimates:
        return Estimates(keyless=rec.inputs.reshape(truth.plaintext.shape))


def encrypted_share(mask: tuple[torch.Tensor, ...]) -> float:
    """The fraction of entries a mask encrypts."""
    return sum(int(m.sum()) for m in mask) / max(1, sum(math.prod(m.shape) for m in mask))
