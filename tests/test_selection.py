"""Selective encryption masks against exact references: the Hutchinson sensitivity map against the exact Jacobian
row norms (float64), fractions exact, layer regexes NVFlare-style."""

import pytest
import torch
from torch.func import functional_call, grad, jacrev

from he_leak.errors import ConfigError
from he_leak.losses import LOSSES
from he_leak.models import ModelSpec, build_model
from he_leak.selection import by_layers, select, sensitivity, top_fraction

HUTCHINSON_RTOL = 0.35  # 400 probes: relative error of a chi-square mean ~ sqrt(2/400) = 7% per entry; worst entry


def _tiny():
    model = build_model(ModelSpec(name="mlp", input_shape=(1, 3, 3), hidden=(4,), classes=3, seed=2)).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 3, 3, generator=gen, dtype=torch.float64)
    return model, x, torch.tensor([0, 2])


def test_sensitivity_matches_the_exact_jacobian():
    model, x, y = _tiny()
    params = {n: p.detach() for n, p in model.named_parameters()}
    exact = [torch.zeros_like(p) for p in params.values()]
    for xi, yi in zip(x, y, strict=True):
        def g(z, yi=yi):
            out = grad(lambda p: LOSSES["cross-entropy"](functional_call(model, p, (z[None],)), yi[None]))(params)
            return tuple(out[n] for n in params)

        for e, j in zip(exact, jacrev(g)(xi), strict=True):
            e += (j.reshape(*e.shape, -1) ** 2).sum(-1) / len(x)
    estimate = sensitivity(model, x, y, loss="cross-entropy", seed=0, probes=400)
    for est, ref in zip(estimate, exact, strict=True):
        big = ref > 1e-3 * ref.max()
        assert torch.all((est[big] - ref[big]).abs() <= HUTCHINSON_RTOL * ref[big])


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
    mask = select(model, fraction=fraction, how=how, layers=None, inputs=x, labels=y, mean_gradient=grads,
                  loss="cross-entropy", seed=1)  # fmt: skip
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
