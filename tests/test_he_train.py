"""he-train: the shared gradient came from the homomorphic evaluator (a CKKS-sized error and the operation counts
the program predicts), noise flooding of the shared decryption, evaluation-key bytes, how utility is labelled, and
the scenario's default activation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encryptors.circuit_cost import CostOps
from he_leak.config import RunConfig
from he_leak.errors import ConfigError, ParameterError
from he_leak.models import build_model
from he_leak.runner import prepare, run_one
from he_leak.scenarios import SCENARIOS, model_spec
from he_leak.scenarios.base import shared_gradient
from he_leak.scenarios.he_program import PlainOps, batch_gradient, layers_of
from he_leak.scenarios.he_train import HeRound, HeTrain, reference_gradient

#: a gradient that went through CKKS at scale 2^40 differs from torch's float64 one by more than this (relative to
#: each tensor's largest entry; measured ~1e-6); float64 arithmetic on the same program stays below ~1e-15
CKKS_FLOOR = 1e-12
HE_GRAD_RTOL = 1e-4  # the documented bound (tests/test_scenarios.py): measured ~1e-6
#: the std of n ≈ 600 iid Gaussian entries is within 5 standard errors (1/√(2n) ≈ 3%) of the flooding std
FLOOD_RTOL = 0.15
CASE = dict(scenario="he-train", model="mlp", hidden=(8,), batch=2, attack="analytic", data="digits")
KINDS = ("multiply_plain", "multiply", "relinearize", "rescale", "rotate", "add", "add_plain")


@pytest.fixture(scope="module")
def exact():
    return prepare(RunConfig(**CASE))


@pytest.fixture(scope="module")
def flooded():
    return prepare(RunConfig(**{**CASE, "batch": 1}, flood_bits=30))


def predicted_ops(scenario, obs) -> dict[str, int]:
    """The operation counts of the program for this run, from the program itself on ciphertext shapes: the
    attacker's copy of the model, the planned slots and period, one (x, y) per sample."""
    params = scenario.he_params()
    cost = CostOps(slots=params["slots"])
    n = int(np.prod(obs.input_shape))
    xs = [cost.leaf(n, params["period"]) for _ in range(obs.batch)]
    ys = [cost.leaf(obs.classes, params["period"]) for _ in range(obs.batch)]
    batch_gradient(cost, layers_of(obs.model), xs, ys, loss=obs.loss)
    assert cost.depth == params["depth"]
    return dict(cost.ops)


def assert_from_the_evaluator(ctx) -> None:
    """Fails unless the shared gradient is the evaluator's: an error of CKKS size against torch's float64
    gradient, and the evaluator performed exactly the operations the program needs."""
    scenario, obs = ctx.scenario, ctx.observation
    error = ctx.base.he_gradient_error
    assert CKKS_FLOOR < error <= HE_GRAD_RTOL, error
    ops = scenario.he_params()["he_ops"]
    assert ops == predicted_ops(scenario, obs)
    assert all(ops.get(kind, 0) > 0 for kind in KINDS), ops


@pytest.mark.parametrize(("model", "hidden", "activation", "loss"), [
    ("mlp", (8,), "square", "mse"), ("mlp", (6, 5), "sigmoid3", "poly-sigmoid"), ("logreg", None, None, "mse"),
])  # fmt: skip
def test_the_program_in_float64_is_torchs_gradient(model, hidden, activation, loss):
    """The program itself (PlainOps: numpy float64) gives torch's float64 gradient, so the CKKS error measured
    above is the encryption's alone."""
    cfg = RunConfig(scenario="he-train", model=model, activation=activation, loss=loss,
                    **({"hidden": hidden} if hidden else {}))  # fmt: skip
    net = build_model(model_spec(cfg, (1, 8, 8)))
    torch.manual_seed(0)
    images, labels = torch.rand(3, 1, 8, 8), torch.tensor([1, 7, 3])
    ops = PlainOps()
    xs = [x.double().flatten().numpy() for x in images]
    ys = [np.eye(10)[int(y)] for y in labels]
    got = [g / len(images) for g in batch_gradient(ops, layers_of(net), xs, ys, loss=loss)]
    for g, want in zip(got, reference_gradient(net, images, labels, loss), strict=True):
        np.testing.assert_allclose(g, want.numpy().reshape(g.shape), rtol=0, atol=1e-12 * float(want.abs().max()))


def test_the_shared_gradient_came_from_the_homomorphic_evaluator(exact):
    assert_from_the_evaluator(exact)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_check_fails_on_torchs_gradient(monkeypatch, dtype):
    """The evaluator path replaced by torch's gradient (float64: no error at all; float32: an error inside the
    CKKS band, caught by the operation counts) fails the check above."""

    def torch_gradient(self, circuit, period, model, images, labels):
        if dtype == torch.float64:
            grads = reference_gradient(model, images, labels, self.loss)
        else:
            grads = shared_gradient(model, images.float(), labels, loss=self.loss)
        flat = [g.double().numpy() for g in grads]
        return HeRound(flat, flat, 0, {}, [0] * len(flat))

    monkeypatch.setattr(HeTrain, "encrypted_gradient", torch_gradient)
    with pytest.raises(AssertionError):
        logreg = {k: v for k, v in CASE.items() if k != "hidden"}  # logreg has no hidden layer
        assert_from_the_evaluator(prepare(RunConfig(**{**logreg, "model": "logreg", "loss": "poly-sigmoid"})))


def test_flooding_adds_noise_of_the_documented_size(exact, flooded):
    """Same run with --flood-bits 30: the shared gradient is the exact one plus iid noise of std
    2^30·√(N/2)/Δ / B per entry (he_params' flood_std); the exact decryption is unchanged."""
    scenario, obs, truth = flooded.scenario, flooded.observation, flooded.truth
    params = scenario.he_params()
    assert params["flood_bits"] == 30 and params["he_gradient_error_exact"] <= HE_GRAD_RTOL
    reference = reference_gradient(obs.model, truth.inputs, truth.labels, obs.loss)
    noise = torch.cat([(g.double() - r).flatten() for g, r in zip(obs.gradients, reference, strict=True)])
    assert abs(float(noise.std()) / params["flood_std"] - 1) < FLOOD_RTOL
    assert abs(float(noise.mean())) < 5 * params["flood_std"] / noise.numel() ** 0.5
    assert flooded.base.he_gradient_error > 100 * exact.base.he_gradient_error
    assert params["decryption_noise_bits"] < 30 - 10  # the flooding dominates the ciphertext noise
    assert params["he_ops"] == predicted_ops(scenario, obs)  # flooding is the key holder's, not the evaluator's


def test_utility_training_gets_the_flooding_equivalent(flooded):
    """The utility's plaintext training adds, per tensor, the flooding's slot-domain std over the mini-batch."""
    scenario, obs = flooded.scenario, flooded.observation
    zeros = tuple(torch.zeros(p.shape, dtype=torch.float64) for p in obs.model.parameters())
    noisy = scenario.training_update(zeros, batch=4, seed=1)
    z = torch.cat([(g / (std / 4)).flatten() for g, std in zip(noisy, scenario.flood_std, strict=True)])
    assert abs(float(z.std()) - 1) < FLOOD_RTOL
    assert "flooding 2^30" in scenario.utility_measured


def test_flood_bits_is_checked():
    with pytest.raises(ConfigError, match="flood_bits must be at least 1"):
        RunConfig(scenario="he-train", flood_bits=0)
    with pytest.raises(ParameterError, match="at most 52"):
        HeTrain(RunConfig(scenario="he-train", flood_bits=53))
    with pytest.raises(ConfigError, match="--flood-bits does not apply to scenario he-aggregate"):
        SCENARIOS["he-aggregate"](RunConfig(scenario="he-aggregate", flood_bits=20))


def test_key_bytes_are_the_public_relinearisation_and_galois_keys(exact):
    """A key is 2 polynomials at the key level (public) or 2 per data prime (each key-switching key): public +
    relinearisation + one Galois key per rotation step; SEAL stores ~bits/8 bytes per residue (+ ~15%)."""
    params = exact.scenario.he_params()
    bits = params["coeff_mod_bit_sizes"]
    steps = 2  # rotation_steps(64): baby step 1 and giant step 8
    polys = 2 + 2 * (len(bits) - 1) * (1 + steps)
    ratio = exact.base.he_key_bytes / (polys * params["poly_modulus_degree"] * sum(bits) / 8)
    assert 1.0 <= ratio <= 1.35, ratio


@pytest.mark.parametrize(("scenario", "degree", "bits"), [("ckks-input", 4096, 100), ("he-aggregate", 8192, 140)])
def test_key_bytes_of_the_other_he_scenarios_are_a_public_key(scenario, degree, bits):
    ctx = prepare(RunConfig(scenario=scenario, model="mlp", hidden=(4,), attack="analytic"))
    ratio = ctx.base.he_key_bytes / (2 * degree * bits / 8)
    assert 1.0 <= ratio <= 1.35, ratio


def test_utility_says_how_it_was_measured(monkeypatch):
    needs = {"secagg": {"clients": 2}}  # secure aggregation needs two clients at least
    labels = {name: SCENARIOS[name](RunConfig(scenario=name, **needs.get(name, {}))).utility_measured
              for name in SCENARIOS}
    assert labels["plain"] == "plaintext" and labels["ckks-input"] == "on ciphertext views"
    assert labels["he-train"].startswith("plaintext-equivalent") and labels["he-aggregate"].startswith(
        "plaintext-equivalent")  # fmt: skip
    monkeypatch.setattr("he_leak.scoring.utility_accuracy.utility",
                        lambda cfg, scenario, ds: (0.5, 0.75))  # the wiring, not training
    cfg = RunConfig(scenario="plain", model="mlp", hidden=(4,), attack="analytic")
    result = run_one(cfg.replace(utility=True))
    assert (result.utility, result.utility_plain, result.utility_measured) == (0.5, 0.75, "plaintext")
    assert run_one(cfg).utility_measured is None


def test_he_train_defaults_to_a_polynomial_activation():
    cfg = RunConfig(scenario="he-train", model="mlp", hidden=(4,))
    assert model_spec(cfg, (1, 8, 8)).activation == "square"
    assert model_spec(cfg.replace(scenario="plain"), (1, 8, 8)).activation == "sigmoid"
    assert model_spec(cfg.replace(activation="tanh"), (1, 8, 8)).activation == "tanh"
    scenario = HeTrain(cfg)
    scenario.check(model_spec(cfg, (1, 8, 8)))  # accepted as it is


@pytest.mark.parametrize(("changes", "needle"), [
    (dict(), "layer body.0 (Conv2d)"),  # the default model, LeNet
    (dict(model="mlp", hidden=(4,), activation="sigmoid"), "layer 2 (Sigmoid): use --activation square or sigmoid3"),
])  # fmt: skip
def test_he_train_refuses_what_it_cannot_evaluate_naming_the_layer(changes, needle):
    cfg = RunConfig(scenario="he-train", **changes)
    with pytest.raises(ConfigError, match="--model mlp" if not changes else "polynomial activations only") as err:
        HeTrain(cfg).check(model_spec(cfg, (1, 8, 8)))
    assert needle in str(err.value) and "\n" not in str(err.value)
