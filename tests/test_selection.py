"""Selective encryption against exact references: the exact sensitivity map against a float64 Jacobian from
torch.autograd (another code path than torch.func's jvp), the Hutchinson estimate against the exact map, FedML-HE's
protocol in he-aggregate (each client's map on its own data, independent of the attacked batch, summed under CKKS),
fractions exact, layer regexes NVFlare-style, refusals."""

import numpy as np
import pytest
import torch
from stubs import experiment_script
from torch.autograd.functional import jacobian
from torch.func import functional_call

from he_leak.config import RunConfig
from he_leak.errors import ConfigError
from he_leak.models import ModelSpec, build_model, shape_model
from he_leak.models.losses import LOSSES
from he_leak.runner import prepare
from he_leak.scenarios.selection import by_layers, select, top_fraction
from he_leak.scenarios.sensitivity import (
    CHUNK_BYTES,
    check_exact,
    client_map,
    client_samples,
    columns_per_chunk,
    exact,
    hutchinson,
)

EXACT_RTOL = 1e-10  # float64 both ways: forward-over-reverse jvp vs autograd's reverse Jacobian; measured ~1e-15
HUTCHINSON_RTOL = 0.35  # 400 probes: relative error of a chi-square mean ~ sqrt(2/400) = 7% per entry; worst entry
PACKED_RTOL = 1e-12  # the CKKS-summed map vs the plaintext sum, relative to its largest entry (measured ~2e-16)


def _tiny(name="mlp"):
    shape = (1, 3, 3) if name == "mlp" else (2, 5, 5)
    spec = ModelSpec(name=name, input_shape=shape, hidden=(4,), width=2, classes=3, seed=2)
    model = build_model(spec).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, *shape, generator=gen, dtype=torch.float64)
    return model, x, torch.tensor([0, 2])


def _reference(model, x, y):
    """mean_n Σ_i (∂g_j/∂x_i)² from torch.autograd.functional.jacobian of the per-sample gradient (float64)."""
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().requires_grad_(True) for p in model.parameters())
    total = [torch.zeros_like(p) for p in params]
    for xi, yi in zip(x, y, strict=True):
        def g(z, yi=yi):
            def loss(*ps):
                return LOSSES["cross-entropy"](functional_call(model, dict(zip(names, ps, strict=True)), (z[None],)),
                                               yi[None])  # fmt: skip
            return torch.autograd.grad(loss(*params), params, create_graph=True)

        for t, j in zip(total, jacobian(g, xi), strict=True):
            t += (j.reshape(*t.shape, -1) ** 2).sum(-1) / len(x)
    return total


@pytest.mark.parametrize("name", ["mlp", "convnet"])
def test_exact_sensitivity_matches_the_float64_jacobian(name):
    model, x, y = _tiny(name)
    ref = _reference(model, x, y)
    for chunk in (None, 4):  # 4 does not divide D: the last chunk is short
        got = exact(model, x, y, loss="cross-entropy", chunk=chunk)
        for g, r in zip(got, ref, strict=True):
            assert g.dtype == torch.float64
            assert torch.allclose(g, r, rtol=EXACT_RTOL, atol=EXACT_RTOL * float(r.abs().max()))


def test_hutchinson_estimates_the_exact_map():
    model, x, y = _tiny()
    ref = exact(model, x, y, loss="cross-entropy")
    estimate = hutchinson(model, x, y, loss="cross-entropy", seed=0, probes=400)
    for est, r in zip(estimate, ref, strict=True):
        big = r > 1e-3 * r.max()
        assert torch.all((est[big] - r[big]).abs() <= HUTCHINSON_RTOL * r[big])


def test_chunks_bound_the_memory_and_resnet18_is_refused():
    lenet = shape_model(ModelSpec(name="lenet", input_shape=(3, 32, 32), classes=100))
    params = sum(p.numel() for p in lenet.parameters())
    c = columns_per_chunk(params=params, activations=5000, inputs=3072)
    assert 1 <= c < 3072 and c * 8 * params <= CHUNK_BYTES
    assert columns_per_chunk(params=10**9, activations=0, inputs=3072) == 1  # never zero
    check_exact(lenet, (3, 32, 32), 32)  # 8.4e9 Jacobian entries: allowed
    resnet = shape_model(ModelSpec(name="resnet18", input_shape=(3, 64, 64), classes=100))
    with pytest.raises(ConfigError, match="--sensitivity hutchinson"):
        check_exact(resnet, (3, 64, 64), 1)


def test_client_samples_are_seeded_distinct_and_capped():
    a = client_samples(1797, clients=3, samples=32, seed=7)
    assert [len(set(d.tolist())) for d in a] == [32, 32, 32] and not np.array_equal(a[0], a[1])
    assert all(np.array_equal(u, v) for u, v in zip(a, client_samples(1797, clients=3, samples=32, seed=7),
                                                    strict=True))  # fmt: skip
    assert [len(d) for d in client_samples(10, clients=2, samples=32, seed=7)] == [10, 10]


def test_client_maps_are_cached_per_weights_and_data():
    model, x, y = _tiny()
    first = client_map(model, x, y, loss="cross-entropy", method="exact", seed=0)
    assert client_map(model, x, y, loss="cross-entropy", method="exact", seed=1) is first  # seed: Hutchinson only
    assert client_map(model, x, y.flip(0), loss="cross-entropy", method="exact", seed=0) is not first
    assert client_map(model, x, y, loss="cross-entropy", method="hutchinson", seed=0) is not first


# ------------------------------------------------------------------------------------------- FedML-HE in he-aggregate
AGG = dict(scenario="he-aggregate", role="server", model="mlp", hidden=(8,), data="digits", encrypt_fraction=0.3,
           select="sensitivity", attack="dlg", sensitivity_samples=6)  # fmt: skip


def test_the_mask_does_not_depend_on_the_attacked_batch():
    masks = [prepare(RunConfig(**AGG, index=i)).observation.mask for i in (0, 500)]
    assert all(torch.equal(a, b) for a, b in zip(*masks, strict=True))
    share = sum(int((~m).sum()) for m in masks[0]) / sum(m.numel() for m in masks[0])
    assert share == pytest.approx(0.3, abs=1e-3)


def test_the_aggregated_map_is_the_sum_of_the_clients_maps():
    """Two clients, each with its own seeded samples: the CKKS-summed map equals the plaintext sum of the exact
    maps of each client's samples."""
    cfg = RunConfig(**AGG, clients=2)
    ctx = prepare(cfg)
    scenario, obs = ctx.scenario, ctx.observation
    ds, draws = scenario.client_data()
    assert len(draws) == 2 and not np.array_equal(draws[0], draws[1])
    want = [sum(parts) for parts in zip(*(exact(obs.model, torch.from_numpy(ds.images[d]),
                                                torch.from_numpy(ds.labels[d]), loss="cross-entropy")
                                          for d in draws), strict=True)]  # fmt: skip
    got = scenario.sensitivity_map(obs.model)
    top = max(float(w.max()) for w in want)
    assert all(torch.allclose(g, w, rtol=0, atol=PACKED_RTOL * top) for g, w in zip(got, want, strict=True))
    assert torch.equal(torch.cat([m.flatten() for m in obs.mask]), ~torch.cat([m.flatten() for m in
                                                                              top_fraction(want, 0.3)]))  # fmt: skip
    assert scenario.he_params()["sensitivity"] == "exact" and scenario.he_params()["samples_per_client"] == 6


def test_hutchinson_option_runs_and_is_refused_where_meaningless():
    ctx = prepare(RunConfig(**{**AGG, "sensitivity": "hutchinson"}))
    scenario, obs = ctx.scenario, ctx.observation
    assert scenario.he_params()["sensitivity"] == "hutchinson"
    assert sum(int((~m).sum()) for m in obs.mask) == round(0.3 * sum(m.numel() for m in obs.mask))
    for bad in (dict(select="random"), dict(encrypt_layers="^1"), dict(encrypt_fraction=1.0), dict(scenario="plain")):
        fields = {k: v for k, v in {**AGG, "sensitivity": "hutchinson", **bad}.items() if k != "sensitivity_samples"}
        if bad.get("scenario") == "plain":
            fields = {k: v for k, v in fields.items() if k not in ("role", "encrypt_fraction", "select")}
        if "encrypt_layers" in bad or "encrypt_fraction" in bad:  # no fraction to choose: select is refused first
            fields = {k: v for k, v in fields.items() if k not in ("encrypt_fraction", "select")}
        with pytest.raises(ConfigError, match="--sensitivity does not apply"):
            prepare(RunConfig(**fields))
    with pytest.raises(ConfigError, match="sensitivity_samples"):
        RunConfig(**{**AGG, "sensitivity_samples": 0})


# ------------------------------------------------------------------------------------------- masks
def test_fractions_are_exact_and_ordered():
    scores = [torch.tensor([[0.1, 0.9], [0.5, 0.3]]), torch.tensor([0.7, 0.2])]
    mask = top_fraction(scores, 0.5)
    assert sum(int(m.sum()) for m in mask) == 3
    assert mask[0].tolist() == [[False, True], [True, False]] and mask[1].tolist() == [True, False]


@pytest.mark.parametrize("how", ["sensitivity", "random", "magnitude"])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 1.0])
def test_select_encrypts_the_requested_share(how, fraction):
    model, x, y = _tiny()
    grads = torch.autograd.grad(LOSSES["cross-entropy"](model(x), y), list(model.parameters()))
    mask = select(model, fraction=fraction, how=how, layers=None, mean_gradient=grads, seed=1,
                  sensitivity=lambda: exact(model, x, y, loss="cross-entropy"))  # fmt: skip
    total = sum(p.numel() for p in model.parameters())
    assert sum(int(m.sum()) for m in mask) == round(fraction * total)


def test_layer_regex():
    model, _, _ = _tiny()
    mask = by_layers(model, r"^3\.")  # the output layer of Flatten, Linear, act, Linear
    assert [bool(m.all()) for m in mask] == [False, False, True, True]
    with pytest.raises(ConfigError, match="matches no parameter"):
        by_layers(model, "conv")
    with pytest.raises(ConfigError, match="not a regular expression"):
        by_layers(model, "(")


def _selective_table():
    return experiment_script("selective_table")


def test_selective_table_smallest_p_needs_every_larger_p():
    """A lucky p between two p's with gains does not count; one recovered image is a gain; 0 of 20 is "no gain",
    not "stops" (the Clopper–Pearson bound 0.168 is above the verdict tables' 0.15)."""
    t = _selective_table()
    quiet = t.stats([False] * 20, [-5.0 + 0.1 * i for i in range(20)])
    leaky = t.stats([True] + [False] * 19, [-5.0] * 20)
    assert quiet["no_gain"] and not quiet["stops"] and abs(quiet["cp_high"] - 0.1684) < 1e-3
    assert not leaky["no_gain"]
    summary = {0.1: quiet, 0.2: leaky, 0.3: quiet, 0.5: quiet}
    assert t.smallest_stopping([0.1, 0.2, 0.3, 0.5], summary) == 0.3
    assert t.smallest_stopping([0.1, 0.2], {0.1: quiet, 0.2: leaky}) is None
    assert t.stats([False] * 24, [-5.0 + 0.1 * i for i in range(24)])["stops"]


def test_selective_table_counts_a_failed_attack_as_its_prior_only_after_it_ran():
    t = _selective_table()
    quiet, gaining = t.stats([False] * 20, [-5.0] * 20), t.stats([True] * 20, [30.0] * 20)
    failed = t.stats([], [])
    assert t.smallest_stopping([0.9, 0.99], {0.9: gaining, 0.99: failed}) == 0.99
    assert t.smallest_stopping([0.9, 0.99], {0.9: failed, 0.99: failed}) is None
    assert t.smallest_stopping([0.5, 0.9, 0.99], {0.5: gaining, 0.9: quiet, 0.99: failed}) == 0.9
