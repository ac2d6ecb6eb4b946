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
- ``colluder``: the server forwards each client's own ciphertext to one key-holding party it controls (a sybil, the
  K+1-th party, with no data of its own; or a compromised participant). What that party can read alone decides:
  under one shared key (``--he-backend seal``: NVFlare, FedML-HE) it decrypts the victim's (client 0's) ciphertext and
  attacks that client's own update (batch B, scored against its B samples); under threshold CKKS
  (``--he-backend openfhe-threshold``: every one of the K+1 parties holds a key share and a decryption needs all of
  them) its own share decrypts nothing (its one-share decryption of the victim's ciphertext is recorded as
  ``he_params.colluder_alone_error``), so it attacks the decrypted aggregate like a client.

The HE backend (encryptors.aggregation) is chosen once, in input_shape; the scenario asks it what one party decrypts
alone (``decrypt_alone``) and how many shares a decryption takes (``shares_needed``).

A malicious server may also craft the model (``--imprint BINS``, Fowl et al.): an imprint layer in front of it
(he_leak.models.imprint) with bins at quantiles of the mean brightness of the server's own data (the dataset without
the attacked samples); ``--attack imprint`` then reads single samples out of an aggregate of any size.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time

import numpy as np
import torch
from torch import nn

from encryptors.aggregation import make_aggregator
from encryptors.packing import PackingParams
from he_leak.config import RunConfig
from he_leak.data import Dataset, load_dataset
from he_leak.errors import ConfigError
from he_leak.models import shape_model
from he_leak.models.imprint import imprinted, public_bins
from he_leak.models.local import running_buffers
from he_leak.records import HeCost, LocalTraining, Observation, Observed, Reconstruction, SharedBuffers, Truth
from he_leak.scenarios.base import SCENARIOS, Estimates, Pool, Scenario, shared_buffers
from he_leak.scenarios.selection import select
from he_leak.scenarios.sensitivity import check_exact, client_map, client_samples
from he_leak.seeds import KeySeed, derive

# the aggregated sensitivity map is encrypted scaled so that its largest entry is at most 2^MAP_MAX_BITS: CKKS at
# scale 2^40 then holds it in 80 of the fresh ciphertext's 100 data bits, and its ~1e-8 absolute noise is ~1e-20
# of the largest entry (unscaled, entries below ~1e-8 — half of LeNet's — would be ranked by noise)
MAP_MAX_BITS = 40


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
    per_client = True
    encryptor = "ckks"
    utility_measured = "plaintext-equivalent (trained in plaintext; encrypted sums are exact up to CKKS error)"

    def __init__(self, cfg: RunConfig, *, key_seed: KeySeed | None = None) -> None:
        super().__init__(cfg, key_seed=key_seed)
        if cfg.imprint and cfg.utility:
            raise ConfigError("--utility with --imprint: the crafted model serves one malicious round and is never "
                              "trained; measure utility without --imprint")  # fmt: skip

    def input_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        known = {f.name for f in dataclasses.fields(PackingParams)}
        unknown = sorted(set(self.cfg.encryptor_params) - known)
        if unknown:
            raise ConfigError(f"unknown HE parameter(s) {', '.join(unknown)} for he-aggregate; known: "
                              f"{', '.join(sorted(known))}")  # fmt: skip
        params = PackingParams(**{k: (tuple(v) if isinstance(v, list) else v)
                                  for k, v in self.cfg.encryptor_params.items()})  # fmt: skip
        self.packing = make_aggregator(self.cfg.he_backend, params, parties=self.parties, key_seed=self.key_seed)
        self.insecure = False
        return tuple(image_shape)

    @property
    def parties(self) -> int:
        """Key holders: the K clients, plus the server's own key-holding party when it colludes."""
        return self.cfg.clients + (self.cfg.role == "colluder")

    @property
    def colluder(self) -> int:
        """The colluding party's index (the last one)."""
        return self.parties - 1

    @property
    def uses_sensitivity(self) -> bool:
        """Whether the mask comes from the sensitivity map (a fraction strictly between 0 and 1, no layer regex)."""
        cfg = self.cfg
        return cfg.select == "sensitivity" and not cfg.encrypt_layers and 0 < cfg.encrypt_fraction < 1

    def check(self, spec) -> None:
        if self.uses_sensitivity and self.cfg.sensitivity == "exact":
            check_exact(shape_model(spec), spec.input_shape, self.cfg.sensitivity_samples * self.cfg.clients)

    def he_params(self) -> dict[str, object] | None:
        return {**self.packing.describe(), "encrypted_fraction": getattr(self, "encrypted", None),
                **getattr(self, "map_info", {}), **getattr(self, "colluder_info", {})}  # fmt: skip

    def observe(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Observed:
        if self.cfg.imprint:  # the malicious server crafts the model it sends
            model = imprinted(model, tuple(images.shape[1:]), self.imprint_thresholds())
        k, b, local = self.cfg.clients, self.cfg.batch, self.cfg.local()
        if k > 1 and local is None and self.cfg.role == "client" and model.training and running_buffers(model):
            raise ConfigError("he-aggregate --role client: the aggregate of K clients' gradients mixes their own "
                              "BatchNorm statistics; state the round as --local-steps 1 --local-lr η so the attack "
                              "simulates each client")  # fmt: skip
        shares = [self.client_share(model, images[i * b : (i + 1) * b], labels[i * b : (i + 1) * b], client=i)
                  for i in range(k)]  # fmt: skip
        per_client = [update for update, _ in shares]
        mean = tuple(torch.stack(gs).mean(0) for gs in zip(*per_client, strict=True))
        mask = select(
            model, fraction=self.cfg.encrypt_fraction, how=self.cfg.select, layers=self.cfg.encrypt_layers,
            sensitivity=lambda: self.sensitivity_map(model), mean_gradient=mean, seed=derive(self.cfg.seed, "mask"),
        )  # fmt: skip
        # what each client sends: its gradient, or after local training its weight difference Δ = −E·η·update
        # (NVFlare encrypts the difference; equal steps, so its step-weighted average is the mean)
        scale = -local.steps * local.lr if local else 1.0
        hidden_buffers = self.encrypted_buffers([after for _, after in shares])
        hidden = [np.concatenate([flatten(tuple(g * scale for g in update), mask, encrypted=True),
                                  *(after[n].double().flatten().numpy() for n in hidden_buffers)])
                  for update, after in shares]  # fmt: skip
        start = time.perf_counter()
        if hidden[0].size:  # each client encrypts its share; the server adds; the key holders decrypt the sum
            sent = [self.packing.encrypt(v) for v in hidden]
            aggregate = self.packing.decrypt(self.packing.server().sum(sent)) / k
        else:
            sent, aggregate = [], np.zeros(0)
        seconds = time.perf_counter() - start
        self.encrypted = encrypted_share(mask)
        cost = HeCost(seconds=seconds, bytes=self.packing.cost_bytes(sent) if sent else 0,
                      key_bytes=self.packing.public_key_bytes())  # fmt: skip
        view = View(model, images, labels, mask, cost)
        if self.cfg.role == "colluder" and self.colludes_alone(sent, hidden[0]):  # one gradient, no buffers (config)
            victim = unflatten(self.alone, per_client[0], mask, encrypted=True, into=per_client[0])
            return view.observed(victim, batch=b, loss=self.loss, classes=self.cfg.classes)
        if self.cfg.role in ("client", "colluder"):  # a key holder: the decrypted aggregate plus the clear part
            cut = len(hidden[0]) - sum(shares[0][1][n].numel() for n in hidden_buffers)
            grads = unflatten(aggregate[:cut] / scale, mean, mask, encrypted=True, into=mean)
            after = self.mean_buffers([a for _, a in shares], hidden_buffers, aggregate[cut:])
            return view.observed(grads, batch=k * b, loss=self.loss, classes=self.cfg.classes, local=local,
                                 buffers=shared_buffers(model, after))  # fmt: skip
        visible = tuple(~m for m in mask)
        clear = tuple(g * v for g, v in zip(per_client[0], visible, strict=True))
        seen = {n: v for n, v in shares[0][1].items() if n not in hidden_buffers}  # the counts are public
        buffers = SharedBuffers(running_buffers(model), seen) if any(v.is_floating_point() for v in seen.values()) \
            else None
        return view.observed(clear, batch=b, loss=self.loss, classes=self.cfg.classes, mask=visible, buffers=buffers,
                             local=dataclasses.replace(local, clients=1) if local else None)  # fmt: skip

    def colludes_alone(self, sent: list, victim: np.ndarray) -> bool:
        """The colluding party decrypts the victim's forwarded ciphertext with the key material it holds (kept in
        ``self.alone``); True when its own decryption decodes — then it attacks what it read (the victim's update
        under one shared key) —, False when the library refuses to decode it (a decryption needs other parties'
        shares): then it attacks the aggregate. The rule uses what the colluder sees, not the backend's declared
        ``shares_needed`` nor the truth; its error against the victim's true update is recorded (scoring side only)."""
        alone = self.packing.decrypt_alone(sent[0], party=self.colluder) if sent else victim
        error = None if alone is None else float(np.abs(alone - victim).max() / max(np.abs(victim).max(), 1e-300))
        self.colluder_info = {"colluder_party": self.colluder, "colluder_alone_decodes": alone is not None,
                              "colluder_alone_error": error}  # fmt: skip
        self.alone = alone
        return alone is not None

    def imprint_thresholds(self) -> np.ndarray:
        """The imprint layer's bins from the server's own data: quantiles of the mean brightness of the dataset's
        samples other than the attacked ones (the attacker's public pool)."""
        ds = load_dataset(self.cfg.data, layout=self.cfg.layout, normalize=self.cfg.normalize)
        others = np.setdiff1d(np.arange(len(ds)), ds.indices(self.cfg.index, self.samples))
        return public_bins(ds.images[others].reshape(len(others), -1).mean(1), self.cfg.imprint)

    def encrypted_buffers(self, afters: list[dict[str, torch.Tensor]]) -> list[str]:
        """The running statistics (float buffers) the clients encrypt with the update: those `--encrypt-layers`
        matches, or without it all of them when the whole update is encrypted (a fraction covers parameters only)."""
        names = [n for n, v in afters[0].items() if v.is_floating_point()]
        if self.cfg.encrypt_layers:
            return [n for n in names if re.search(self.cfg.encrypt_layers, n)]
        return names if self.cfg.encrypt_fraction >= 1 else []

    @staticmethod
    def mean_buffers(afters: list[dict[str, torch.Tensor]], hidden: list[str],
                     decrypted: np.ndarray) -> dict[str, torch.Tensor]:  # fmt: skip
        """The clients' running buffers averaged: the encrypted ones from the decrypted aggregate, the rest in the
        clear; the batch counts (equal for every client) as they are."""
        out = {n: (torch.stack([a[n] for a in afters]).mean(0) if v.is_floating_point() else v)
               for n, v in afters[0].items()}  # fmt: skip
        start = 0
        for n in hidden:
            size = out[n].numel()
            out[n] = torch.from_numpy(decrypted[start : start + size].copy()).reshape(out[n].shape).to(out[n].dtype)
            start += size
        return out

    def client_data(self) -> tuple[Dataset, list[np.ndarray]]:
        """The dataset and each client's own samples (indices) for its sensitivity map: `sensitivity_samples` per
        client, drawn from the whole dataset by the client's seeded generator, independent of the attacked index."""
        cfg = self.cfg
        ds = load_dataset(cfg.data, layout=cfg.layout, normalize=cfg.normalize)
        draws = client_samples(len(ds), clients=cfg.clients, samples=cfg.sensitivity_samples,
                               seed=derive(cfg.seed, "client", "data"))  # fmt: skip
        return ds, draws

    def sensitivity_map(self, model: nn.Module) -> tuple[torch.Tensor, ...]:
        """FedML-HE's aggregated map: each client computes its map on its own data with the global model before
        training (he_leak.scenarios.sensitivity, cached per process), encrypts it with the packed CKKS of the gradients;
        the server adds the ciphertexts; a key holder decrypts the sum, whose top-p entries become the public mask."""
        ds, draws = self.client_data()
        if self.cfg.sensitivity == "exact":
            check_exact(model, ds.shape, sum(len(d) for d in draws))
        maps = [client_map(model, torch.from_numpy(ds.images[idx]), torch.from_numpy(ds.labels[idx]), loss=self.loss,
                           method=self.cfg.sensitivity, seed=derive(self.cfg.seed, "client", k, "probes"))
                for k, idx in enumerate(draws)]  # fmt: skip
        flat = [torch.cat([t.flatten() for t in m]).numpy() for m in maps]
        # the entries span many decades (LeNet: 1e-28 … 0.6) and CKKS adds ~1e-8 absolute noise, so every client
        # scales by one power of two that lifts the largest possible sum to 2^MAP_MAX_BITS: the clients share the
        # binary exponent of their map's maximum (one integer each); a power of two leaves every mantissa intact
        top = max(math.frexp(float(v.max()))[1] for v in flat)
        shift = MAP_MAX_BITS - top - math.ceil(math.log2(len(flat)))
        sent = [self.packing.encrypt(np.ldexp(v, shift)) for v in flat]
        total = torch.from_numpy(np.ldexp(self.packing.decrypt(self.packing.server().sum(sent)), -shift))
        attacked = ds.indices(self.cfg.index, self.samples)[: self.cfg.batch]
        self.map_info = {
            "sensitivity": self.cfg.sensitivity, "samples_per_client": len(draws[0]), "clients": len(draws),
            "attacked_in_own_data": int(np.isin(attacked, draws[0]).sum()),
            "map_he_bytes": int(sum(c.nbytes for c in sent)), "map_scale_bits": shift,
        }  # fmt: skip
        return tuple(part.reshape(p.shape) for part, p in zip(total.split([p.numel() for p in model.parameters()]),
                                                              model.parameters(), strict=True))  # fmt: skip

    def interpret(self, rec: Reconstruction, truth: Truth, labels: np.ndarray | None, pool: Pool) -> Estimates:
        return Estimates(keyless=rec.inputs.reshape(truth.plaintext.shape))


def encrypted_share(mask: tuple[torch.Tensor, ...]) -> float:
    """The fraction of entries a mask encrypts."""
    return sum(int(m.sum()) for m in mask) / max(1, sum(math.prod(m.shape) for m in mask))


@dataclasses.dataclass(frozen=True)
class View:
    """One round's model, data, mask and HE cost; ``observed`` makes the attacker's Observation of some gradient
    (the truth: the first ``batch`` samples)."""

    model: nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    mask: tuple[torch.Tensor, ...]
    cost: HeCost

    def observed(self, grads: tuple[torch.Tensor, ...], *, batch: int, loss: str, classes: int,
                 mask: tuple[torch.Tensor, ...] | None = None, local: LocalTraining | None = None,
                 buffers: SharedBuffers | None = None) -> Observed:  # fmt: skip
        obs = Observation(model=self.model, gradients=grads, input_shape=tuple(self.images.shape[1:]), batch=batch,
                          classes=classes, loss=loss, mask=mask, local=local, buffers=buffers)  # fmt: skip
        images, labels = self.images[:batch], self.labels[:batch]
        return Observed(obs, Truth(inputs=images, labels=labels, plaintext=images), self.cost)
