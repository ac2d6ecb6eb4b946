"""The malicious server's imprint layer (Fowl et al., Robbing the Fed): the bins, the gradient identity the attack
rests on (against a float64 reference and an independent count of which samples sit alone in a bin), the attack
through he-aggregate's encrypted aggregation, and the options it needs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from he_leak.attacks import AttackOptions, make_attack
from he_leak.config import RunConfig
from he_leak.data import load_dataset
from he_leak.errors import AttackFailed, ConfigError
from he_leak.models import ModelSpec, build_model
from he_leak.models.imprint import FIRST_EDGE, imprinted, public_bins
from he_leak.records import Observation
from he_leak.runner import prepare, run_one
from he_leak.scenarios import SCENARIOS
from he_leak.scenarios.base import shared_gradient
from he_leak.seeds import KeySeed

F64_ATOL = 1e-9  # a lone sample's estimate from a float64 gradient: exact up to float64 rounding (measured ~1e-14)
KEY = KeySeed.from_hex("3a" * 32)


def _alone(images: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per sample: does it sit alone in its bin? (its mean brightness against the thresholds; independent of the
    attack, which sees only gradients)."""
    bins = np.searchsorted(thresholds, images.reshape(len(images), -1).mean(1), side="left")
    counts = np.bincount(bins, minlength=len(thresholds) + 1)
    return counts[bins] == 1


def test_public_bins_are_equal_mass_quantiles():
    values = np.random.default_rng(0).uniform(size=10_000)
    edges = public_bins(values, 8)
    assert len(edges) == 8 and edges[0] == FIRST_EDGE and np.all(np.diff(edges) > 0)
    np.testing.assert_allclose(edges[1:], np.arange(1, 8) / 8, atol=0.02)
    with pytest.raises(ConfigError):
        public_bins(values, 1)


def test_lone_samples_come_back_exactly_from_a_float64_batch_gradient():
    ds = load_dataset("digits")
    images = torch.from_numpy(ds.images[:24]).double()
    labels = torch.from_numpy(ds.labels[:24])
    thresholds = public_bins(ds.images[100:].reshape(len(ds.images) - 100, -1).mean(1), 64)
    spec = ModelSpec(name="mlp", input_shape=tuple(images.shape[1:]), classes=10, hidden=(8,), seed=0)
    model = imprinted(build_model(spec).double(), tuple(images.shape[1:]), thresholds)
    grads = shared_gradient(model, images, labels)
    obs = Observation(model=model, gradients=grads, input_shape=tuple(images.shape[1:]), batch=24, classes=10)
    rec = make_attack("imprint", AttackOptions()).reconstruct(obs)
    alone = _alone(images.numpy(), thresholds)
    assert 0 < alone.sum() < len(alone)  # both kinds present, so the test can fail either way
    estimates = rec.inputs.reshape(24, -1).numpy()
    for i in np.flatnonzero(alone):
        error = np.abs(estimates - images[i].reshape(1, -1).numpy()).max(1).min()
        assert error <= F64_ATOL, (i, error)
    for i in np.flatnonzero(~alone):  # a shared bin returns a mixture, not the sample
        assert np.abs(estimates - images[i].reshape(1, -1).numpy()).max(1).min() > 1e-3


def test_the_attack_needs_a_measurement_layer():
    ds = load_dataset("digits")
    images, labels = torch.from_numpy(ds.images[:2]), torch.from_numpy(ds.labels[:2])
    model = build_model(ModelSpec(name="mlp", input_shape=tuple(images.shape[1:]), classes=10, hidden=(8,), seed=0))
    obs = Observation(model=model, gradients=shared_gradient(model, images, labels),
                      input_shape=tuple(images.shape[1:]), batch=2, classes=10)  # fmt: skip
    with pytest.raises(AttackFailed, match="measurement layer"):
        make_attack("imprint", AttackOptions()).reconstruct(obs)


def test_a_key_holder_reads_lone_samples_out_of_the_encrypted_aggregate():
    """K = 4 clients × B = 2 through SEAL's packed CKKS; the sybil key holder sees the mean of all 8 gradients. Every
    sample alone in its bin is recovered, every other one is not (a mixture)."""
    cfg = RunConfig(scenario="he-aggregate", role="client", clients=4, batch=2, imprint=8, model="mlp", hidden=(8,),
                    attack="imprint", data="digits", index=3)  # fmt: skip
    result = run_one(cfg, key_seed=KEY)
    ctx = prepare(cfg, key_seed=KEY)
    alone = _alone(ctx.truth.plaintext.numpy(), ctx.scenario.imprint_thresholds())
    psnrs = np.asarray(result.sample_psnrs["keyless"], dtype=float)
    assert 0 < alone.sum() < len(alone)
    assert result.recovered == int(alone.sum()) and bool(np.all(psnrs[alone] >= cfg.success_psnr))
    assert result.batch == 2 and len(psnrs) == 8


def test_imprint_options_are_checked():
    with pytest.raises(ConfigError, match="at least 2 bins"):
        RunConfig(scenario="he-aggregate", imprint=1)
    with pytest.raises(ConfigError, match="--utility with --imprint"):
        SCENARIOS["he-aggregate"](RunConfig(scenario="he-aggregate", imprint=8, utility=True))
