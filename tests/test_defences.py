"""Gradient defences against plain references, their order, and their record in the Result."""

import pytest
import torch

from he_leak.config import RunConfig
from he_leak.runner import prepare, run_one
from he_leak.scenarios import defences

NOISE_STD_RTOL = 0.05  # 60k Gaussian draws: the sample standard deviation is within ~0.3% of sigma


def _grads():
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(100, 300, generator=gen), torch.randn(300, generator=gen))


def test_clip_bounds_the_norm_and_keeps_the_direction():
    grads = _grads()
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    clipped = defences.clip(grads, norm / 4, torch.Generator())
    assert float(torch.sqrt(sum((g.double() ** 2).sum() for g in clipped))) == pytest.approx(norm / 4, rel=1e-6)
    torch.testing.assert_close(clipped[0] * 4, grads[0])
    assert defences.clip(grads, 10 * norm, torch.Generator())[0].equal(grads[0])  # inside the bound: unchanged


def test_prune_zeroes_the_smallest_entries_per_tensor():
    grads = _grads()
    pruned = defences.prune(grads, 0.9, torch.Generator())
    for g, p in zip(grads, pruned, strict=True):
        kept = p != 0
        assert int(kept.sum()) == g.numel() - int(0.9 * g.numel())
        assert float(g[kept].abs().min()) >= float(g[~kept].abs().max())
        assert torch.equal(p[kept], g[kept])


def test_noise_has_the_requested_deviation_and_is_seeded():
    grads = _grads()
    noisy = defences.apply(grads, {"noise": 0.1}, seed=3)
    assert float((noisy[0] - grads[0]).std()) == pytest.approx(0.1, rel=NOISE_STD_RTOL)
    assert defences.apply(grads, {"noise": 0.1}, seed=3)[0].equal(noisy[0])


def test_order_is_clip_prune_noise_and_inactive_ones_are_skipped():
    assert list(defences.active({"noise": 0.1, "prune": 0.5, "clip": 2.0})) == ["clip", "prune", "noise"]
    assert defences.active({"noise": 0.0, "prune": 0.0, "clip": None}) == {}


def test_scenarios_share_the_defended_gradient_and_record_it():
    plain = prepare(RunConfig(model="mlp", hidden=(8,))).observation
    pruned = prepare(RunConfig(model="mlp", hidden=(8,), prune=0.5)).observation
    assert all(int((g != 0).sum()) <= g.numel() - int(0.5 * g.numel()) for g in pruned.gradients)
    assert not all(torch.equal(a, b) for a, b in zip(plain.gradients, pruned.gradients, strict=True))
    result = run_one(RunConfig(model="mlp", hidden=(8,), attack="analytic", noise=1e-3, clip=1.0))
    assert result.defences == {"clip": 1.0, "noise": 1e-3}


def test_noise_is_the_clients_secret_not_the_public_seed():
    """The noise comes from the client's key seed: same secret → same shared gradient; another secret (same public
    config and seed) → other noise, so nobody holding only the Result's config can redraw and subtract it."""
    from he_leak.seeds import KeySeed

    cfg = RunConfig(model="mlp", hidden=(8,), noise=1e-2, seed=5)
    secret = KeySeed.from_hex("ab" * 32)
    first, again = (prepare(cfg, key_seed=secret).observation for _ in range(2))
    other = prepare(cfg, key_seed=KeySeed.from_hex("cd" * 32)).observation
    assert all(torch.equal(a, b) for a, b in zip(first.gradients, again.gradients, strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(first.gradients, other.gradients, strict=True))
    assert run_one(cfg.replace(attack="analytic"), key_seed=secret).key_source == "given"
    assert run_one(cfg.replace(attack="analytic", noise=0.0)).key_source is None  # no secret used
