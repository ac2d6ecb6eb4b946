"""The batched (vmapped) restart gradients equal a plain float64 torch double-backward, restart by restart."""

import torch

from he_leak.attacks.optim.functional import GradientModel, batched_value_and_grad
from he_leak.models import ModelSpec, build_model
from he_leak.records import Observation
from he_leak.scenarios.base import shared_gradient

TOL = 1e-10  # float64


def test_vmapped_restarts_match_plain_autograd():
    model = build_model(ModelSpec(name="lenet", input_shape=(1, 8, 8), classes=10)).double()
    y = torch.tensor([3, 7])
    target = shared_gradient(model, torch.rand(2, 1, 8, 8, dtype=torch.float64), y)
    obs = Observation(model=model, gradients=target, input_shape=(1, 8, 8), batch=2, classes=10)
    gm = GradientModel(obs, device=torch.device("cpu"), dtype=torch.float64)
    xs = torch.rand(3, 2, 1, 8, 8, dtype=torch.float64)
    values, grads = batched_value_and_grad(gm.cosine, xs, y)
    for k in range(3):
        x = xs[k].clone().requires_grad_(True)
        g = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), list(model.parameters()),
                                create_graph=True)  # fmt: skip
        dot = sum((a * b).sum() for a, b in zip(g, target, strict=True))
        na = torch.sqrt(sum((a * a).sum() for a in g))
        nb = torch.sqrt(sum((b * b).sum() for b in target))
        ref = 1 - dot / (na * nb)
        (ref_grad,) = torch.autograd.grad(ref, x)
        assert abs(float(values[k]) - float(ref.detach())) < TOL
        torch.testing.assert_close(grads[k], ref_grad, rtol=1e-8, atol=TOL)
        single_v, single_g = batched_value_and_grad(gm.cosine, xs[k : k + 1], y)  # the K = 1 fast path
        torch.testing.assert_close(single_g[0], ref_grad, rtol=1e-8, atol=TOL)
