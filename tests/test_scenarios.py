"""One contract suite for every scenario: what the attacker observes equals a plain float64 reference of the
scenario's own computation, runs are reproducible, options a scenario does not use are refused; plus ckks-input's
per-sample success rule and he-train / he-aggregate specifics."""

import json

import numpy as np
import pytest
import torch

from encryptors import MissingKeyError
from he_leak.config import RunConfig
from he_leak.errors import ConfigError, ParameterError
from he_leak.models.losses import LOSSES
from he_leak.records import Reconstruction, Result
from he_leak.runner import prepare, run_one
from he_leak.scenarios import SCENARIOS
from he_leak.scoring.score import score
from he_leak.seeds import KeySeed

GRAD_RTOL = 1e-4  # a float32 model gradient vs its float64 reference, relative to each tensor's largest entry
HE_GRAD_RTOL = 1e-4  # he-train's decrypted CKKS gradient (scale 2^40) vs float64: measured ~1e-6
PACKED_ATOL = 1e-6  # he-aggregate's decrypted CKKS sum (scale 2^40): measured ~1e-8
SECAGG_ATOL = 1e-9  # secagg's fixed point: 2^-32 per client before the mean, so at most ~2.3e-10
KEY = KeySeed.from_hex("5c" * 32)  # the key holder's test secret (replay: the same secret gives the same Result)

# scenario -> a small case (RunConfig fields) per variant
CASES = {
    "plain": dict(scenario="plain", model="mlp", hidden=(8,), batch=3),
    "ckks-input": dict(scenario="ckks-input", encryptor="ckks", model="mlp", hidden=(8,), batch=2),
    "ckks-input-bfv": dict(scenario="ckks-input", encryptor="bfv", model="mlp", hidden=(8,), batch=2),
    "he-train": dict(scenario="he-train", model="mlp", activation="square", hidden=(8,), batch=2),
    "he-train-logreg": dict(scenario="he-train", model="logreg", loss="poly-sigmoid", batch=1),
    "he-aggregate-client": dict(scenario="he-aggregate", role="client", clients=2, model="mlp", hidden=(8,), batch=2),
    "he-aggregate-server": dict(scenario="he-aggregate", role="server", clients=2, encrypt_fraction=0.5,
                                select="random", model="mlp", hidden=(8,), batch=2),
    # one shared key: the colluding key holder decrypts the victim's (client 0's) own update
    "he-aggregate-colluder": dict(scenario="he-aggregate", role="colluder", clients=2, model="mlp", hidden=(8,),
                                  batch=2),
    # a malicious server's imprint layer in front of the model; the reference differentiates the crafted model
    "he-aggregate-imprint": dict(scenario="he-aggregate", role="client", clients=2, imprint=16, model="mlp",
                                 hidden=(8,), batch=2, attack="imprint"),  # its own closed form: analytic takes ~70 s
    # pairwise-masked updates: the server's sum of K = 3 clients' gradients, masks cancelled
    "secagg": dict(scenario="secagg", clients=3, model="mlp", hidden=(8,), batch=2),
}  # fmt: skip


def _cfg(case: str, **changes) -> RunConfig:
    return RunConfig(**{"attack": "analytic", **CASES[case], "data": "digits", **changes})


def test_every_scenario_has_a_case():
    assert {c["scenario"] for c in CASES.values()} == set(SCENARIOS)


def _reference(model, inputs, labels, loss):
    net = __import__("copy").deepcopy(model).double()
    value = LOSSES[loss](net(inputs.double()), labels)
    return torch.autograd.grad(value, list(net.parameters()))


def _close(got, want, rtol, atol=0.0, mask=None):
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        g, w = g.double(), w.double()
        if mask is not None:
            g, w = g[mask[i]], w[mask[i]]
        if w.numel():
            assert float((g - w).abs().max()) <= rtol * float(w.abs().max()) + atol, i


@pytest.mark.parametrize("case", sorted(CASES))
def test_observed_gradient_matches_a_float64_reference(case):
    ctx = prepare(_cfg(case))
    scenario, obs, truth = ctx.scenario, ctx.observation, ctx.truth
    if case.startswith("he-aggregate-server"):  # client 0's visible entries, in the clear
        b = scenario.cfg.batch
        ref = _reference(obs.model, truth.inputs[:b], truth.labels[:b], obs.loss)
        _close(obs.gradients, ref, GRAD_RTOL, mask=obs.mask)
        assert all(not bool(g[~m].any()) for g, m in zip(obs.gradients, obs.mask, strict=True))
        return
    ref = _reference(obs.model, truth.inputs, truth.labels, obs.loss)
    rtol, atol = {"he-train": (HE_GRAD_RTOL, 0.0), "he-aggregate": (GRAD_RTOL, PACKED_ATOL),
                  "secagg": (GRAD_RTOL, SECAGG_ATOL)}.get(
        scenario.name, (GRAD_RTOL, 0.0))  # fmt: skip
    _close(obs.gradients, ref, rtol, atol)


@pytest.mark.parametrize("case", sorted(set(CASES) - {"he-train"}))
def test_same_seed_same_result(case):
    cfg = _cfg(case)
    a, b = (_without_timings(run_one(cfg, key_seed=KEY).to_dict()) for _ in range(2))
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _without_timings(value):
    """Every key that is a timing (`seconds`, `*_seconds`) removed, at any depth."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not (k == "seconds" or k.endswith("_seconds"))}
    return value


@pytest.mark.parametrize("option, scenario", [("encryptor", "plain"), ("clients", "ckks-input"),
                                              ("train_steps", "he-aggregate"), ("role", "he-train"),
                                              ("flood_bits", "plain"), ("he_backend", "he-train"),
                                              ("imprint", "plain")])  # fmt: skip
def test_options_a_scenario_does_not_use_are_refused(option, scenario):
    value = {"encryptor": "ckks", "clients": 3, "train_steps": 2, "role": "client", "flood_bits": 20,
             "he_backend": "openfhe-threshold", "imprint": 8}[option]  # fmt: skip
    with pytest.raises(ConfigError, match="does not apply"):
        SCENARIOS[scenario](RunConfig(scenario=scenario, **{option: value}))


def test_he_train_refuses_non_polynomial_models_and_cross_entropy():
    with pytest.raises(ConfigError, match="polynomial activations only, not layer 2 \\(Sigmoid\\)"):
        prepare(RunConfig(scenario="he-train", model="mlp", activation="sigmoid", hidden=(4,)))
    with pytest.raises(ConfigError, match="cannot train with the cross-entropy loss"):
        SCENARIOS["he-train"](RunConfig(scenario="he-train", loss="cross-entropy"))


def test_he_train_attacker_reads_the_decrypted_update():
    result = run_one(_cfg("he-train", batch=1))
    assert result.he_gradient_error <= 1e-3 and result.plaintext_psnr >= 40 and result.success
    assert result.he_params["security"] == "128-bit" and result.he_bytes > 0


def test_he_aggregate_server_sees_nothing_when_everything_is_encrypted():
    result = run_one(_cfg("he-aggregate-server", encrypt_fraction=1.0, select="sensitivity", attack="idlg"))
    assert not result.success and result.error and result.plaintext_psnr is None
    assert result.prior_psnr == pytest.approx(result.mean_psnr)  # no label leaks: the prior is the dataset mean


def test_ckks_input_view_is_the_ciphertext_and_plaintext_is_hidden():
    ctx = prepare(RunConfig(scenario="ckks-input", model="mlp", hidden=(8,), data="faces"))
    scenario, obs, truth = ctx.scenario, ctx.observation, ctx.truth
    assert obs.input_shape == (65536,) and obs.quantum == pytest.approx(1 / 255)
    (hidden,) = truth.ciphertexts
    np.testing.assert_allclose(scenario.enc.decrypt(hidden), truth.plaintext.reshape(-1).numpy(),
                               atol=scenario.enc.precision)  # fmt: skip
    np.testing.assert_array_equal(scenario.enc.view(hidden), truth.inputs[0].numpy())


@pytest.mark.parametrize("encryptor", ["ckks", "bfv", "permute", "linear-mask"])
def test_ckks_input_public_handle_cannot_decrypt(encryptor):
    obs = prepare(RunConfig(scenario="ckks-input", encryptor=encryptor, model="mlp", hidden=(8,))).observation
    with pytest.raises(MissingKeyError):
        obs.public.decrypt(obs.public.unview(np.zeros(obs.public.view_size, np.float32)))


def test_keyless_attacker_against_the_label_aware_prior():
    """A permutation is undone by the decoder; CKKS stays within 1 dB of the class mean of the leaked label."""
    weak = run_one(RunConfig(scenario="ckks-input", encryptor="permute", attack="analytic", model="mlp",
                             hidden=(8,), data="digits"))  # fmt: skip
    strong = run_one(RunConfig(scenario="ckks-input", encryptor="ckks", attack="analytic", model="mlp",
                               hidden=(8,), data="digits"))  # fmt: skip
    assert weak.plaintext_psnr >= 30 and set(weak.keyless_psnrs) == {"ridge", "knn"}
    assert strong.symbol_exact == 1.0 and strong.decrypts and strong.key_plaintext_psnr >= 40 and strong.success
    assert abs(strong.keyless_gain) <= 1.0 and strong.prior_psnr > strong.mean_psnr + 1.0  # the label does leak


def test_insecure_parameters_are_refused_then_recorded():
    """120 bits at N=4096 is beyond 128-bit security: refused, unless insecure = true; recorded from the
    parameters, so secure parameters with the flag are recorded as secure."""
    weak = dict(scenario="ckks-input", encryptor="ckks", attack="analytic", model="mlp", hidden=(8,),
                encryptor_params={"coeff_mod_bit_sizes": [50, 40, 30]})  # fmt: skip
    with pytest.raises(ParameterError, match="insecure = true"):
        run_one(RunConfig(**weak))
    result = run_one(RunConfig(**weak, insecure=True))
    assert result.insecure is True and result.symbol_exact == 1.0 and result.decrypts
    assert run_one(RunConfig(**{**weak, "encryptor_params": {}}, insecure=True)).insecure is False


def _score_view(cfg: RunConfig, flip: int) -> Result:
    """Score a ckks-input 'reconstruction' that is the true view with `flip` bytes changed by one step."""
    ctx = prepare(cfg)
    scenario, obs, truth = ctx.scenario, ctx.observation, ctx.truth
    view = truth.inputs.clone()
    where = np.random.default_rng(0).choice(view.shape[1], size=flip, replace=False)
    codes = torch.round(view[0, where] * 255)
    view[0, where] = torch.where(codes < 255, codes + 1, codes - 1) / 255
    base = Result(scenario=cfg.scenario, encryptor="ckks", model=cfg.model, attack="fake", data=cfg.data, index=0,
                  seed=0, batch=1, device="cpu")  # fmt: skip
    return score(scenario, obs, truth, ctx.pool, Reconstruction(inputs=view, labels=truth.labels), base).result


@pytest.mark.parametrize("flip", [0, 1, 65])
def test_success_means_the_sample_decrypts(flip):
    """A view with one wrong byte has symbol_exact above 0.999 but decrypts to garbage: not recovered."""
    result = _score_view(RunConfig(scenario="ckks-input", encryptor="ckks", model="mlp", hidden=(8,)), flip)
    assert result.symbol_exact == pytest.approx(1 - flip / 65536)
    assert result.recovered == (1 if flip == 0 else 0) and result.success is (flip == 0)
    if flip:
        assert result.key_plaintext_psnr < 30
