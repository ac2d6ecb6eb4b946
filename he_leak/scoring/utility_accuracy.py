"""Utility: what a model trained under a scenario's protection is worth — test accuracy after a fixed training budget
on a train split, beside the same model trained on plaintext images with the same budget.

The model is the run's (same architecture, seed and loss); its training inputs are the scenario's model inputs (for
ckks-input the views of each training image's ciphertext, encrypted once under the client's key); every mini-batch
gradient goes through what the scenario does to a shared gradient (``Scenario.training_update``: the defences —
clip, prune, noise —, and for he-train with `--flood-bits` the flooding noise's slot-domain equivalent) before the
update; with `--dp-noise` the model is trained by DP-SGD instead (Opacus, ``train_dp``: per-sample clipping and
noise, Poisson sampling, the same epochs, expected batch size and optimiser). Encryption that is exact up to CKKS
precision (he-train, he-aggregate) is trained in plaintext: it changes nothing but the last bits (he-train's own
encrypted loop, `--train-steps`, compares the two). Training he-train's
model under HE for this budget would take ~1,260 training images × 10 epochs × ~2.5 s per encrypted gradient ≈ 9
hours per model, so its utility is labelled plaintext-equivalent (Result.utility_measured says how each was measured).

Budget (stated, fixed): EPOCHS passes of Adam (LR) over a stratified 70/30 split, mini-batches of BATCH.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

from he_leak.config import RunConfig
from he_leak.data import Dataset
from he_leak.models import ModelSpec, build_model
from he_leak.models.losses import LOSSES
from he_leak.scenarios import dp_sgd
from he_leak.scenarios.base import model_spec
from he_leak.seeds import derive

Update = Callable[..., tuple[torch.Tensor, ...]]  # Scenario.training_update(grads, *, batch, seed)

EPOCHS = 10
BATCH = 32
LR = 1e-3
TEST_FRACTION = 0.3


def split(ds: Dataset, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices, stratified by label when every class has at least two samples."""
    idx = np.arange(len(ds))
    counts = np.bincount(ds.labels)
    stratify = ds.labels if len(ds) >= 4 and counts[counts > 0].min() >= 2 else None
    if len(ds) < 2:
        return idx, idx
    train, test = train_test_split(idx, test_size=TEST_FRACTION, random_state=seed % 2**32, stratify=stratify)
    return np.sort(train), np.sort(test)


def train_and_test(
    spec: ModelSpec, inputs: torch.Tensor, labels: torch.Tensor, train: np.ndarray, test: np.ndarray, *,
    loss: str, update: Update | None, seed: int, dp: tuple[float, float] | None = None,
) -> float:  # fmt: skip
    """Train a fresh model of `spec` on inputs[train] for the budget, each mini-batch gradient passed through
    `update` (None: as computed), or with `dp` = (noise multiplier, clipping bound) by DP-SGD (``train_dp``); its
    accuracy on inputs[test]."""
    if dp is not None:
        model = train_dp(spec, inputs, labels, train, loss=loss, dp=dp, seed=seed)[0]
        return accuracy(model, inputs, labels, test)
    model = build_model(spec).train()
    params = [p for p in model.parameters()]
    opt = torch.optim.Adam(params, lr=LR)
    gen = torch.Generator().manual_seed(seed)
    objective = LOSSES[loss]
    noise_seed = derive(seed, "defence")
    step = 0
    for _ in range(EPOCHS):
        order = torch.from_numpy(train)[torch.randperm(len(train), generator=gen)]
        for start in range(0, len(order), BATCH):
            batch = order[start : start + BATCH]
            value = objective(model(inputs[batch].float()), labels[batch])
            grads = torch.autograd.grad(value, params)
            grads = update(grads, batch=len(batch), seed=noise_seed + step) if update else grads
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            opt.step()
            step += 1
    return accuracy(model, inputs, labels, test)


def accuracy(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, test: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        predicted = model(inputs[torch.from_numpy(test)].float()).argmax(1)
    return float((predicted == labels[torch.from_numpy(test)]).double().mean())


def train_dp(spec: ModelSpec, inputs: torch.Tensor, labels: torch.Tensor, train: np.ndarray, *, loss: str,
             dp: tuple[float, float], seed: int) -> tuple[torch.nn.Module, float]:  # fmt: skip
    """DP-SGD (Adam, LR) for the same budget through Opacus's PrivacyEngine: EPOCHS passes of Poisson-sampled
    batches of expected size BATCH, per-sample clipping and noise (he_leak.scenarios.dp_sgd); the model and the ε
    (δ = DP_DELTA) its accountant reports."""
    model = build_model(spec).train()
    data = TensorDataset(inputs[torch.from_numpy(train)].float(), labels[torch.from_numpy(train)])
    loader = DataLoader(data, batch_size=BATCH, generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    noise = torch.Generator().manual_seed(derive(seed, "dp-sgd"))
    private, opt, loader, engine = dp_sgd.private_training(model, opt, loader, noise_multiplier=dp[0],
                                                           max_grad_norm=dp[1], generator=noise)  # fmt: skip
    objective = LOSSES[loss]
    with warnings.catch_warnings():  # Opacus's hooks warn that the inputs need no gradient: they do not
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(EPOCHS):
            for x, y in loader:
                opt.zero_grad()
                objective(private(x), y).backward()  # a Poisson batch is empty with probability (1 − q)^n ≈ e^−32
                opt.step()
    return model, float(engine.get_epsilon(dp_sgd.DP_DELTA))


def dp_epsilon(cfg: RunConfig, ds: Dataset) -> float | None:
    """ε at δ = DP_DELTA of the utility training with DP-SGD (--dp-noise; None without): EPOCHS epochs of Poisson
    sampling at rate 1/⌈n_train/BATCH⌉ (Opacus's DPDataLoader), Opacus's RDP accountant — what ``train_dp``'s
    accountant reports, computed without training."""
    if cfg.dp_noise is None:
        return None
    batches = math.ceil(len(split(ds, derive(cfg.seed, "utility"))[0]) / BATCH)
    return dp_sgd.epsilon(noise_multiplier=cfg.dp_noise, sample_rate=1 / batches, steps=EPOCHS * batches)


_CACHE: dict[str, tuple[float, float]] = {}
IRRELEVANT = ("attack", "index", "batch", "iterations", "restarts", "lr", "tv", "device", "utility", "success_psnr")


def utility(cfg: RunConfig, scenario, ds: Dataset) -> tuple[float, float]:
    """(test accuracy under the scenario's protection, test accuracy of the plaintext model), same budget; cached
    in the process per everything that determines them (the attack, index and batch do not)."""
    key = json.dumps({k: v for k, v in cfg.key().items() if k not in IRRELEVANT}, sort_keys=True)
    if key not in _CACHE:
        seed = derive(cfg.seed, "utility")
        train, test = split(ds, seed)
        labels = torch.from_numpy(ds.labels.astype(np.int64))
        inputs, input_shape = scenario.training_inputs(ds.images)
        dp = None if cfg.dp_noise is None else (cfg.dp_noise, cfg.dp_clip)
        protected = train_and_test(model_spec(cfg, input_shape), inputs, labels, train, test, loss=scenario.loss,
                                   update=scenario.training_update, seed=seed, dp=dp)  # fmt: skip
        plain = train_and_test(model_spec(cfg, ds.shape), torch.from_numpy(ds.images), labels, train, test,
                               loss=scenario.loss, update=None, seed=seed)  # fmt: skip
        _CACHE[key] = (protected, plain)
    return _CACHE[key]
