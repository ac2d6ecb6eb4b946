"""Scenarios against plain references: the shared gradient is torch's float64 mean cross-entropy gradient, and the
attacker's side of ckks-input never holds a secret key (checked by serialising everything the attack receives)."""

import pickle

import numpy as np
import pytest
import torch

from encryptors import MissingKeyError
from he_leak.config import RunConfig
from he_leak.runner import prepare, run_one
from he_leak.scenarios import SCENARIOS

GRAD_RTOL = 1e-4  # float32 model gradient vs a float64 reference


@pytest.mark.parametrize("scenario, encryptor", [("plain", None), ("ckks-input", "ckks"), ("ckks-input", "bfv")])
def test_shared_gradient_matches_float64_reference(scenario, encryptor):
    cfg = RunConfig(scenario=scenario, encryptor=encryptor, model="mlp", hidden=(8,), data="digits", batch=3)
    _, obs, truth = prepare(cfg)
    ref = [p.detach().double().clone().requires_grad_(True) for p in obs.model.parameters()]
    x = truth.inputs.double().reshape(len(truth.inputs), -1)
    h = torch.sigmoid(x @ ref[0].T + ref[1])
    loss = torch.nn.functional.cross_entropy(h @ ref[2].T + ref[3], truth.labels)
    expected = torch.autograd.grad(loss, ref)
    for got, want in zip(obs.gradients, expected, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=GRAD_RTOL, atol=1e-7)


def test_ckks_input_view_is_the_ciphertext_and_plaintext_is_hidden():
    scenario, obs, truth = prepare(RunConfig(scenario="ckks-input", model="mlp", hidden=(8,), data="faces"))
    assert obs.input_shape == (65536,) and obs.quantum == pytest.approx(1 / 255)
    (hidden,) = truth.extras["hidden"]
    np.testing.assert_allclose(scenario.enc.decrypt(hidden), truth.plaintext.reshape(-1).numpy(), atol=1e-4)
    np.testing.assert_array_equal(scenario.enc.view(hidden), truth.inputs[0].numpy())


@pytest.mark.parametrize("encryptor", ["ckks", "bfv", "permute", "linear-mask"])
def test_attacker_side_holds_no_secret_key(encryptor):
    _, obs, _ = prepare(RunConfig(scenario="ckks-input", encryptor=encryptor, model="mlp", hidden=(8,)))
    received = pickle.loads(pickle.dumps(obs))  # everything the attack receives survives serialisation ...
    with pytest.raises(MissingKeyError):  # ... and cannot decrypt
        received.public.decrypt(received.public.unview(np.zeros(received.public.view_size, np.float32)))
    if encryptor in ("ckks", "bfv"):
        assert not received.public._ctx.has_secret_key()
    else:
        assert received.public._secret is None


def test_weak_encryption_leaks_and_ckks_does_not():
    """The keyless decoder: a permutation is undone by ridge regression; CKKS stays at the dataset-mean guess."""
    weak = run_one(RunConfig(scenario="ckks-input", encryptor="permute", attack="analytic", model="mlp",
                             hidden=(8,), data="digits")).result  # fmt: skip
    strong = run_one(RunConfig(scenario="ckks-input", encryptor="ckks", attack="analytic", model="mlp",
                               hidden=(8,), data="digits")).result  # fmt: skip
    assert weak.plaintext_psnr >= 30
    assert strong.symbol_exact == 1.0 and strong.decrypts and strong.key_plaintext_psnr >= 40
    assert abs(strong.keyless_gain) <= 1.0


def test_every_scenario_is_tested():
    assert set(SCENARIOS) == {"plain", "ckks-input"}


def test_insecure_parameters_are_refused_then_recorded():
    """120 bits at N=4096 is below 128-bit security: refused, unless insecure = true, which the Result records."""
    from he_leak.errors import ParameterError

    weak = dict(scenario="ckks-input", encryptor="ckks", attack="analytic", model="mlp", hidden=(8,),
                encryptor_params={"coeff_mod_bit_sizes": [50, 40, 30]})  # fmt: skip
    with pytest.raises(ParameterError, match="insecure = true"):
        run_one(RunConfig(**weak))
    result = run_one(RunConfig(**weak, insecure=True)).result
    assert result.insecure is True and result.symbol_exact == 1.0 and result.decrypts
    assert run_one(RunConfig(**{**weak, "encryptor_params": {}})).result.insecure is False
