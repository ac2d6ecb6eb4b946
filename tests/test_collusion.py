"""A colluding key holder in he-aggregate, under one shared key (SEAL) and under threshold CKKS (OpenFHE): what it
reads alone, what it observes, against float64 references; the threshold backend's sums against numpy; the one-line
error when OpenFHE is not importable. The OpenFHE tests skip only where `import openfhe` fails."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch

from encryptors.aggregation import AGGREGATORS, make_aggregator
from encryptors.openfhe_threshold import load_openfhe
from encryptors.packing import PackingParams
from he_leak.config import RunConfig
from he_leak.errors import ConfigError
from he_leak.models.losses import LOSSES
from he_leak.runner import prepare
from he_leak.seeds import KeySeed

KEY = KeySeed.from_hex("c0" * 32)
GRAD_RTOL = 1e-4  # a float32 model gradient against float64, relative to each tensor's largest entry
SEAL_ATOL = 1e-6  # SEAL's decryption at scale 2^40 (packing precision 3e-8)
# OpenFHE threshold: the fused decryption adds every party's partial-decryption noise (σ = 2^20 per coefficient,
# ≈ 6e-5 per slot and party at N = 8192, scale 2^40); ThresholdPacker.error_bound is the named tolerance there
LENGTH = 4096 + 17  # two ciphertexts at N = 8192


def _reference(model, inputs, labels, loss):
    net = copy.deepcopy(model).double()
    return torch.autograd.grad(LOSSES[loss](net(inputs.double()), labels), list(net.parameters()))


def _close(got, want, rtol, atol):
    for g, w in zip(got, want, strict=True):
        assert float((g.double() - w.double()).abs().max()) <= rtol * float(w.abs().max()) + atol


def _cfg(backend: str, clients: int = 3) -> RunConfig:
    return RunConfig(scenario="he-aggregate", role="colluder", clients=clients, he_backend=backend, model="mlp",
                     hidden=(8,), attack="analytic", data="digits")  # fmt: skip


def test_backends_are_registered_by_cli_name():
    assert set(AGGREGATORS) == {"seal", "openfhe-threshold"}
    with pytest.raises(ConfigError, match="unknown HE backend"):
        make_aggregator("paillier", PackingParams(), parties=2, key_seed=KEY)


def test_under_one_shared_key_the_colluder_attacks_the_victims_own_update():
    ctx = prepare(_cfg("seal"), key_seed=KEY)
    obs, truth, info = ctx.observation, ctx.truth, ctx.base.he_params
    assert obs.batch == 1 and len(truth.inputs) == 1  # client 0's batch, not the aggregate of 3
    _close(obs.gradients, _reference(obs.model, truth.inputs, truth.labels, obs.loss), GRAD_RTOL, SEAL_ATOL)
    assert info["colluder_alone_decodes"] and 0 < info["colluder_alone_error"] <= 1e-6
    assert info["colluder_party"] == 3  # the K+1-th party: the server's sybil


def test_missing_openfhe_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "openfhe", None)  # `import openfhe` raises ImportError
    with pytest.raises(ConfigError) as err:
        load_openfhe()
    assert "pip install -e '.[threshold]'" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="openfhe-threshold needs OpenFHE"):
        prepare(_cfg("openfhe-threshold"), key_seed=KEY)


@pytest.fixture(scope="module")
def openfhe():
    return pytest.importorskip("openfhe", reason="OpenFHE's Python wrapper is not importable here")


@pytest.fixture(scope="module")
def threshold(openfhe):
    return make_aggregator("openfhe-threshold", PackingParams(), parties=3, key_seed=KEY)


def test_threshold_sum_matches_numpy(threshold):
    x = np.random.default_rng(0).normal(scale=0.1, size=(3, LENGTH))
    total = threshold.server().sum([threshold.encrypt(v) for v in x])
    error = np.abs(threshold.decrypt(total) - x.sum(0)).max()
    assert len(total.ciphertexts) == 2 and 0 < error <= threshold.error_bound(total)
    assert threshold.describe()["reproducible"] is False and threshold.shares_needed == 3


def test_fewer_than_all_shares_decrypt_nothing(threshold):
    x = np.random.default_rng(1).normal(scale=0.1, size=LENGTH)
    packed = threshold.encrypt(x)
    for parties in ([0], [2], [0, 1], [1, 2]):
        out = threshold.decrypt_with(packed, parties)
        assert out is None or np.abs(out - x).max() > 1e3 * np.abs(x).max(), parties
    assert np.abs(threshold.decrypt_with(packed, [2, 0, 1]) - x).max() <= threshold.error_bound(packed)


def test_under_threshold_ckks_the_colluder_sees_only_the_aggregate(openfhe):
    ctx = prepare(_cfg("openfhe-threshold"), key_seed=KEY)
    obs, truth, info = ctx.observation, ctx.truth, ctx.base.he_params
    assert obs.batch == 3 and len(truth.inputs) == 3  # the mean of the 3 clients' updates
    bound = ctx.scenario.packing.precision  # per entry of the mean: at most K bounds / K
    _close(obs.gradients, _reference(obs.model, truth.inputs, truth.labels, obs.loss), GRAD_RTOL, bound)
    assert info["parties"] == 4 and info["shares_needed"] == 4 and info["reproducible"] is False
    assert not info["colluder_alone_decodes"] or info["colluder_alone_error"] > 1e3
