"""The alternatives to HE: DP-SGD through Opacus (the shared gradient is one DP-SGD step's, against a per-sample
reference; its noise is the client's secret; the accountant's ε is the training's) and secure aggregation with
pairwise masks (the server gets the exact sum and nothing per client)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encryptors import secagg
from he_leak.config import RunConfig
from he_leak.errors import ConfigError
from he_leak.models import ModelSpec, build_model
from he_leak.options import why_unused
from he_leak.runner import prepare
from he_leak.scenarios import SCENARIOS
from he_leak.scenarios.base import shared_gradient
from he_leak.scenarios.dp_sgd import DP_DELTA, dp_gradient, epsilon
from he_leak.scoring.utility_accuracy import BATCH, EPOCHS, train_dp
from he_leak.seeds import KeySeed

#: per-sample gradients in float32 through Opacus's hooks against torch's own, per unit of the largest entry
GRAD_RTOL = 1e-5
#: the empirical std of n ≈ 2,400 iid Gaussian entries lies within 5 standard errors (1/√(2n) ≈ 1.4%) of σ
NOISE_RTOL = 0.08
SPEC = ModelSpec(name="mlp", input_shape=(1, 8, 8), classes=10, hidden=(32,), width=12, stride=2,
                 activation="sigmoid", seed=0)  # fmt: skip
KEY = KeySeed.from_hex("77" * 32)


def batch(n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 8, 8, generator=gen), torch.arange(n) % 10


def close(got, want) -> None:
    scale = max(float(w.abs().max()) for w in want)
    assert max(float((g - w).abs().max()) for g, w in zip(got, want, strict=True)) <= GRAD_RTOL * scale


def step(model, x, y, *, z: float, c: float, seed: int = 0):
    return dp_gradient(model, x, y, loss="cross-entropy", noise_multiplier=z, max_grad_norm=c,
                       generator=torch.Generator().manual_seed(seed))  # fmt: skip


def test_dp_step_is_the_mean_of_clipped_per_sample_gradients() -> None:
    model, (x, y) = build_model(SPEC), batch()
    per_sample = [shared_gradient(model, x[i : i + 1], y[i : i + 1]) for i in range(len(x))]
    close(step(model, x, y, z=0.0, c=1e6), shared_gradient(model, x, y))  # nothing clipped, no noise
    bound = 0.5 * min(float(torch.sqrt(sum((g**2).sum() for g in gs))) for gs in per_sample)
    clipped = []
    for gs in per_sample:  # every sample's gradient is longer than the bound: scaled to norm `bound`
        norm = float(torch.sqrt(sum((g**2).sum() for g in gs)))
        clipped.append([g * bound / norm for g in gs])
    want = [sum(parts) / len(x) for parts in zip(*clipped, strict=True)]
    close(step(model, x, y, z=0.0, c=bound), want)


def test_dp_noise_has_std_z_c_over_b() -> None:
    model, (x, y) = build_model(SPEC), batch(4)
    exact = step(model, x, y, z=0.0, c=0.3)
    noisy = step(model, x, y, z=2.0, c=0.3, seed=5)
    diff = torch.cat([(a - b).flatten() for a, b in zip(noisy, exact, strict=True)])
    assert abs(float(diff.std()) / (2.0 * 0.3 / 4) - 1) < NOISE_RTOL


def test_dp_noise_is_the_clients_secret() -> None:
    """Same config, same key seed → the same shared gradient; another key seed (same public run seed) → other
    noise: the run seed cannot redraw it."""
    cfg = RunConfig(scenario="plain", attack="analytic", model="mlp", hidden=(32,), dp_noise=1.0)
    a, b = (prepare(cfg, key_seed=KEY).observation.gradients for _ in range(2))
    c = prepare(cfg, key_seed=KeySeed.from_hex("78" * 32)).observation.gradients
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not any(torch.equal(u, w) for u, w in zip(a, c, strict=True))
    assert prepare(cfg, key_seed=KEY).base.key_source == "given"


def test_accountant_epsilon_is_the_trainings() -> None:
    """ε computed from (z, rate, steps) equals what Opacus's PrivacyEngine reports after train_dp (64 samples)."""
    gen = torch.Generator().manual_seed(0)
    inputs, labels = torch.rand(96, 1, 8, 8, generator=gen), torch.arange(96) % 10
    spec = ModelSpec(name="logreg", input_shape=(1, 8, 8), classes=10, seed=0)
    _, got = train_dp(spec, inputs, labels, np.arange(64), loss="cross-entropy", dp=(1.3, 1.0), seed=3)
    batches = -(-64 // BATCH)
    assert got == pytest.approx(epsilon(noise_multiplier=1.3, sample_rate=1 / batches, steps=EPOCHS * batches,
                                        delta=DP_DELTA), rel=1e-9)  # fmt: skip
    assert epsilon(noise_multiplier=4.0, sample_rate=0.01, steps=100) < epsilon(noise_multiplier=1.0,
                                                                                 sample_rate=0.01, steps=100)


def test_dp_options_are_honoured_or_refused() -> None:
    with pytest.raises(ConfigError, match="--dp-clip does not apply without --dp-noise"):
        RunConfig(dp_clip=2.0)
    with pytest.raises(ConfigError, match="noise multiplier"):
        RunConfig(dp_noise=0.0)
    with pytest.raises(ConfigError, match="drop --clip"):
        SCENARIOS["plain"](RunConfig(dp_noise=1.0, noise=0.1))
    with pytest.raises(ConfigError, match="--dp-noise does not apply to scenario he-train"):
        SCENARIOS["he-train"](RunConfig(scenario="he-train", dp_noise=1.0))
    for name in ("plain", "ckks-input", "he-aggregate", "secagg"):
        assert why_unused("dp_noise", RunConfig(scenario=name, dp_noise=1.0)) is None


# --- secure aggregation ------------------------------------------------------------------------------------------
def test_masks_cancel_in_the_sum_and_hide_each_update() -> None:
    rng = np.random.default_rng(0)
    updates = [rng.normal(size=500) for _ in range(4)]
    run = secagg.aggregate(updates, KEY)
    np.testing.assert_allclose(run.total, np.sum(updates, axis=0), rtol=0, atol=4 * 2.0**-secagg.FRACTION_BITS)
    for update, masked in zip(updates, run.masked, strict=True):  # alone, a masked vector is uniform in Z_2^64
        alone = secagg.decode(masked)
        assert np.median(np.abs(alone)) > 2.0**20 and abs(np.corrcoef(alone, update)[0, 1]) < 0.2
    other = secagg.aggregate(updates, KeySeed.from_hex("78" * 32))
    assert not np.array_equal(other.masked[0], run.masked[0]) and np.array_equal(other.total, run.total)
    assert run.bytes == 4 * 500 * 8
    with pytest.raises(ConfigError, match="at least 2"):
        secagg.aggregate(updates[:1], KEY)
    with pytest.raises(ConfigError, match="below"):
        secagg.encode(np.array([2.0**40]), 4)


def test_secagg_server_sees_the_mean_of_the_clients_gradients() -> None:
    cfg = RunConfig(scenario="secagg", clients=3, attack="analytic", model="mlp", hidden=(32,), data="digits",
                    index=6)  # fmt: skip
    ctx = prepare(cfg, key_seed=KEY)
    images, labels = ctx.truth.inputs, ctx.truth.labels
    model = ctx.observation.model
    want = [torch.stack(gs).mean(0) for gs in zip(*(shared_gradient(model, images[i : i + 1], labels[i : i + 1])
                                                    for i in range(3)), strict=True)]  # fmt: skip
    close(ctx.observation.gradients, want)
    assert ctx.observation.batch == 3 and ctx.base.he_bytes > 0 and ctx.base.key_source == "given"
    with pytest.raises(ConfigError, match="K >= 2"):
        SCENARIOS["secagg"](RunConfig(scenario="secagg"))
