"""The records that flow one way through a run: Observation (what the attacker sees), Truth (kept aside),
Reconstruction (what the attack returns), Result (one row of the contract in docs/design.md, with the library
versions it was computed with) and Record (a finished run as a worker hands it to the sweep's driver)."""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import math
import platform
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from he_leak import __version__

RESULT_KEYS = (
    "scenario", "encryptor", "model", "attack", "data", "index", "seed", "batch", "device", "seconds", "run_seconds",
    "iterations",
    "label_correct", "input_mse", "input_psnr", "input_ssim", "symbol_exact", "decrypts", "plaintext_mse",
    "plaintext_psnr", "plaintext_ssim", "key_plaintext_psnr", "key_plaintext_ssim", "mean_psnr", "prior_psnr",
    "keyless_gain", "recovered", "utility", "he_seconds", "he_bytes", "he_gradient_error", "success", "error",
)  # fmt: skip
KEYLESS, KEY_HOLDER, PRIOR = "keyless", "key holder", "prior"  # keys of Result.sample_psnrs (per-sample PSNRs)


@dataclass(frozen=True, kw_only=True)
class LocalTraining:
    """FedAvg's local training, as the client runs it and the attacker is told: `steps` plain SGD steps (no momentum,
    no weight decay) of learning rate `lr` on mini-batches of `batch` samples — the client's samples in their order,
    DataLoader-style (shuffle off, last mini-batch of an epoch smaller), epoch after epoch — by each of `clients`
    clients, whose weight differences are averaged. The shared update is then −Δ/(steps·lr): the mean of the steps'
    gradients (the gradient itself for one step on the whole batch)."""

    steps: int
    lr: float
    batch: int
    clients: int = 1

    def schedule(self, samples: int) -> list[range]:
        """Which of a client's `samples` (positions) each step uses."""
        per_epoch = -(-samples // self.batch)
        return [range(k * self.batch, min((k + 1) * self.batch, samples))
                for k in (t % per_epoch for t in range(self.steps))]  # fmt: skip


@dataclass(frozen=True)
class SharedBuffers:
    """Running statistics (BatchNorm in train mode) that travel with an update: the global model's, as the server
    sent them, and the client's after its local training (the entries the attacker sees in the clear)."""

    before: dict[str, torch.Tensor]
    after: dict[str, torch.Tensor]


@dataclass(frozen=True)
class Observation:
    """What the attacker observes: the model (architecture and plaintext weights), the shared gradient and public
    facts about the input (shape, box, quantisation step, batch size, class count). Never the data or a key."""

    model: nn.Module
    gradients: tuple[torch.Tensor, ...]
    input_shape: tuple[int, ...]
    batch: int
    classes: int
    bounds: tuple[float, float] = (0.0, 1.0)
    quantum: float | None = None  # inputs are known multiples of this (1/255 for the bytes view)
    public: Any = None  # a public encryption handle (no secret key), when the scenario has one
    loss: str = "cross-entropy"  # the training loss whose gradient was shared (he_leak.models.losses)
    # which gradient entries the attacker sees (True) — None: all of them; hidden entries are zero in `gradients`
    mask: tuple[torch.Tensor, ...] | None = None
    # FedAvg: `gradients` hold the update −Δ/(steps·lr) of this local training (None: one gradient, FedSGD)
    local: LocalTraining | None = None
    buffers: SharedBuffers | None = None  # running statistics shared with the update (BatchNorm in train mode)

    def __repr__(self) -> str:
        n = sum(g.numel() for g in self.gradients)
        seen = n if self.mask is None else int(sum(int(m.sum()) for m in self.mask))
        return (
            f"Observation({type(self.model).__name__}, {len(self.gradients)} gradient tensors / {seen} of {n} values "
            f"visible, {self.loss}, input {self.batch}×{self.input_shape}, {self.classes} classes, "
            f"bounds {self.bounds})"
        )


@dataclass(frozen=True)
class Truth:
    """The ground truth, kept away from the attack: the model inputs, labels and plaintext images of the attacked
    samples, and the client's ciphertexts of them where the scenario encrypts its inputs (ckks-input)."""

    inputs: torch.Tensor  # B × input_shape, the model's true input
    labels: torch.Tensor  # B
    plaintext: torch.Tensor  # B × C×H×W images in [0,1]
    ciphertexts: tuple[Any, ...] | None = None  # the client's encryption of each attacked input (key-holder checks)


@dataclass(frozen=True)
class HeCost:
    """What the homomorphic work of one round cost, as a scenario measured it (None: no such work)."""

    seconds: float | None = None  # encrypt, evaluate, aggregate, decrypt
    bytes: int | None = None  # ciphertext bytes sent per round
    key_bytes: int | None = None  # key bytes a party is sent once (public, relinearisation, Galois keys)
    gradient_error: float | None = None  # he-train: the decrypted HE gradient against torch's float64 gradient
    training: dict[str, Any] | None = None  # he-train --train-steps: losses of encrypted vs plaintext SGD

    def result_fields(self) -> dict[str, Any]:
        """The Result fields (he_seconds, he_bytes, …) this cost fills."""
        names = {"seconds": "he_seconds", "bytes": "he_bytes", "key_bytes": "he_key_bytes",
                 "gradient_error": "he_gradient_error", "training": "he_training"}  # fmt: skip
        return {names[k]: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Observed:
    """What a scenario's observe() returns: the attacker's Observation, the Truth kept aside and the HE cost."""

    observation: Observation
    truth: Truth | None  # None: unknown (a captured update attacked without the client's data)
    cost: HeCost = field(default_factory=HeCost)
    fields: dict[str, Any] = field(default_factory=dict)  # other Result fields the scenario measured (key_recovery…)


@dataclass(frozen=True)
class Reconstruction:
    """What an attack returns: candidate model inputs (B × input_shape), labels when it inferred them."""

    inputs: torch.Tensor
    labels: torch.Tensor | None = None
    iterations: int = 0
    loss: float = math.nan
    recovered: int | None = None  # how many of the batch the attack claims to have recovered exactly
    error: str | None = None  # set when the attack could only partly run
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    """One attack run: the keys of DESIGN.md (None where meaningless) plus a few extras."""

    scenario: str
    encryptor: str | None
    model: str
    attack: str
    data: str
    index: int
    seed: int
    batch: int
    device: str
    seconds: float | None = None  # the attack alone: its reconstruct call, with its own stopping rule
    run_seconds: float | None = None  # the whole run: data, model, the scenario's encryption and HE work, the attack,
    # scoring and the utility measurement
    iterations: int | None = None
    label_correct: float | None = None
    input_mse: float | None = None
    input_psnr: float | None = None
    input_ssim: float | None = None
    symbol_exact: float | None = None
    decrypts: bool | None = None
    plaintext_mse: float | None = None
    plaintext_psnr: float | None = None
    plaintext_ssim: float | None = None
    key_plaintext_psnr: float | None = None
    key_plaintext_ssim: float | None = None
    success: bool = False
    error: str | None = None
    recovered: int | None = None  # samples recovered (per-sample rule of the scenario), of `batch`
    keyless_recovered: int | None = None  # samples whose keyless estimate reaches success_psnr (its own count)
    sample_psnrs: dict[str, list[float | None]] | None = None  # per sample: PSNR of each estimate (report.stats)
    visible_fraction: float | None = None  # share of the gradient entries the attacker sees in the clear
    mean_psnr: float | None = None  # PSNR of guessing the dataset-mean image (the label-blind floor)
    prior_psnr: float | None = None  # PSNR of the best prior from what the gradient reveals (class mean of the label)
    keyless_gain: float | None = None  # plaintext_psnr − prior_psnr (dB): what the keyless estimate adds to the prior
    keyless_psnrs: dict[str, float] | None = None  # plaintext PSNR of each keyless learner (ckks-input)
    utility: float | None = None  # test accuracy of the model trained on the scenario's inputs (config.utility)
    utility_plain: float | None = None  # the same model trained on plaintext images, same budget
    utility_measured: str | None = None  # how `utility` was measured (the scenario's utility_measured)
    he_seconds: float | None = None  # homomorphic work per round (encrypt, evaluate, aggregate, decrypt)
    he_bytes: int | None = None  # ciphertext bytes sent per round
    he_key_bytes: int | None = None  # public / evaluation key bytes a party is sent once (not per round)
    he_gradient_error: float | None = None  # he-train: max relative error of the decrypted HE gradient vs torch's
    he_training: dict[str, Any] | None = None  # he-train --train-steps: losses of encrypted vs plaintext SGD
    key_recovery: dict[str, Any] | None = None  # he-train --key-recovery: the server's IND-CPA-D attack on the key
    key_holder_recovered: int | None = None  # samples whose key-holder estimate reaches success_psnr
    dp_epsilon: float | None = None  # --dp-noise: ε of the DP-SGD training at δ = DP_DELTA (Opacus's RDP accountant)
    insecure: bool | None = None  # the HE parameters lie beyond the 128-bit table (measured, not the flag)
    security_index: float | None = None  # models.audit's index of the run's model and batch (0 leaky, -1 secure)
    restarts: int = 1
    label_orders: int | None = None  # ig: label assignments it ran, a whole run each (>1 only on some FedAvg updates)
    defences: dict[str, float] | None = None  # the gradient defences applied (clip, prune, noise) and their values
    he_params: dict[str, Any] | None = None  # the HE parameters actually used (N, modulus chain, scale, ...)
    key_source: str | None = None  # where the key holder's secret key seed came from: os, given (--key-seed), sweep
    truth_known: bool | None = None  # --update: whether the client's data was given to score against (else None)
    versions: dict[str, str] = field(default_factory=dict)  # he-leak, torch, tenseal, numpy
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: non-finite floats become None so that every line is valid JSON."""
        out = dataclasses.asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


@dataclass(frozen=True)
class Record:
    """A finished run: its Result row (JSON-ready, with the run's config) and its images, and the wall time the
    worker spent on it (for chunk sizing and rates; the row's own `seconds` is the attack's time)."""

    row: dict[str, Any]
    panels: dict[str, np.ndarray]
    wall: float = 0.0

    @property
    def failed(self) -> bool:
        """Ended with an error (a numerical failure, an input problem or a dead worker) rather than a result."""
        return bool(self.row.get("error")) and not self.row.get("success")


def versions() -> dict[str, str]:
    """he-leak, python, numpy, torch and tenseal versions (tenseal read from its package metadata, not imported;
    "absent" when it is not installed). The he-leak version is the running package's, not pip's record."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    try:
        tenseal = importlib.metadata.version("tenseal")
    except importlib.metadata.PackageNotFoundError:
        tenseal = "absent"
    return (
        ("he-leak", __version__), ("python", platform.python_version()), ("numpy", np.__version__),
        ("torch", torch.__version__), ("tenseal", tenseal),
    )  # fmt: skip
