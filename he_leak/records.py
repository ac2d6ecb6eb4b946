"""The records that flow one way through a run: Observation (what the attacker sees), Truth (kept aside),
Reconstruction (what the attack returns) and Result (one row of the contract in DESIGN.md)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

RESULT_KEYS = (
    "scenario", "encryptor", "model", "attack", "data", "index", "seed", "batch", "device", "seconds", "iterations",
    "label_correct", "input_mse", "input_psnr", "input_ssim", "symbol_exact", "decrypts", "plaintext_mse",
    "plaintext_psnr", "plaintext_ssim", "key_plaintext_psnr", "key_plaintext_ssim", "success", "error",
)  # fmt: skip


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

    def __repr__(self) -> str:
        n = sum(g.numel() for g in self.gradients)
        return (
            f"Observation({type(self.model).__name__}, {len(self.gradients)} gradient tensors / {n} values, "
            f"input {self.batch}×{self.input_shape}, {self.classes} classes, bounds {self.bounds})"
        )


@dataclass(frozen=True)
class Truth:
    """The ground truth, kept away from the attack: model inputs, labels, plaintext images and scenario extras."""

    inputs: torch.Tensor  # B × input_shape, the model's true input
    labels: torch.Tensor  # B
    plaintext: torch.Tensor  # B × C×H×W images in [0,1]
    extras: dict[str, Any] = field(default_factory=dict)


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
    seconds: float | None = None
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
    recovered: int | None = None
    mean_psnr: float | None = None  # PSNR of guessing the dataset-mean image: the floor a keyless attacker must beat
    keyless_gain: float | None = None  # plaintext_psnr − mean_psnr (dB): what the keyless estimate adds over guessing
    insecure: bool | None = None
    security_index: float | None = None  # he_leak.audit's index of the run's model and batch (0 leaky, -1 secure)
    restarts: int = 1
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: non-finite floats become None so that every line is valid JSON."""
        out = dataclasses.asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
