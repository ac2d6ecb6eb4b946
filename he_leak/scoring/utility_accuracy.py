"""Utility: what a model trained under a scenario's protection is worth — test accuracy after a fixed training budget
on a train split, beside the same model trained on plaintext images with the same budget.

The model is the run's (same architecture, seed and loss); its training inputs are the scenario's model inputs (for
ckks-input the views of each training image's ciphertext, encrypted once under the client's key); every mini-batch
gradient goes through what the scenario does to a shared gradient (``Scenario.training_update``: the defences —
clip, prune, noise —, and for he-train with `--flood-bits` the flooding noise's slot-domain equivalent) before the
update. Encryption that is exact up to CKKS precision (he-train, he-aggregate) is trained in plaintext: it changes
nothing but the last bits (he-train's own encrypted loop, `--train-steps`, compares the two). Training he-train's
model under HE for this budget would take ~1,260 training images × 10 epochs × ~2.5 s per encrypted gradient ≈ 9
hours per model, so its utility is labelled plaintext-equivalent (Result.utility_measured says how each was measured).

Budget (stated, fixed): EPOCHS passes of Adam (LR) over a stratified 70/30 split, mini-batches of BATCH.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from he_leak.config import RunConfig
from he_leak.data import Dataset
from he_leak.models import ModelSpec, build_model
from he_leak.models.losses import LOSSES
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
    loss: str, update: Update | None, seed: int,
) -> float:  # fmt: skip
    """Train a fresh model of `spec` on inputs[train] for the budget, each mini-batch gradient passed through
    `update` (None: as computed); its accuracy on inputs[test]."""
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
    model.eval()
    with torch.no_grad():
        predicted = model(inputs[torch.from_numpy(test)].float()).argmax(1)
    return float((predicted == labels[torch.from_numpy(test)]).double().mean())


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
        protected = train_and_test(model_spec(cfg, input_shape), inputs, labels, train, test, loss=scenario.loss,
                                   update=scenario.training_update, seed=seed)  # fmt: skip
        plain = train_and_test(model_spec(cfg, ds.shape), torch.from_numpy(ds.images), labels, train, test,
                               loss=scenario.loss, update=None, seed=seed)  # fmt: skip
        _CACHE[key] = (protected, plain)
    return _CACHE[key]
