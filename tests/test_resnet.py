"""ResNet-18 (he_leak.models.resnet): the standard layout's parameter count, per-sample normalisation, DLG's double
backward against float64 finite differences, IG's vmap against a loop, and the memory guard against a measured peak."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from he_leak.attacks.optim.functional import GradientModel, batched_value_and_grad
from he_leak.config import RunConfig
from he_leak.errors import ConfigError
from he_leak.models import ModelSpec, build_model, memory, shape_model
from he_leak.records import Observation
from he_leak.scenarios.base import shared_gradient

ROOT = Path(__file__).resolve().parents[1]
CIFAR_RESNET18_PARAMS = 11_173_962  # the 3×3-stem ResNet-18 with 10 classes (widely quoted for CIFAR-10)
FD_RTOL = 1e-8  # float64 central differences (step FD_STEP) vs autograd; measured 2e-11
FD_STEP = 1e-5
F32_RTOL = 1e-4  # float32 double backward vs float64, relative L2 error of the input gradient; measured 2e-6
GUARD_FACTOR = 3.0  # the guard's estimate is an upper bound of the measured peak, and within this factor of it


def expected_params(channels: int, classes: int) -> int:
    """ResNet-18's parameter count from its layer shapes: bias-free convolutions, GroupNorm affine pairs, linear."""

    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k

    total = conv(channels, 64, 3) + 2 * 64
    cin = 64
    for cout in (64, 128, 256, 512):
        for _ in range(2):
            total += conv(cin, cout, 3) + 2 * cout + conv(cout, cout, 3) + 2 * cout
            if cin != cout:
                total += conv(cin, cout, 1) + 2 * cout  # projection shortcut
            cin = cout
    return total + 512 * classes + classes


def spec(side: int = 64, **kw) -> ModelSpec:
    return ModelSpec(name="resnet18", input_shape=(3, side, side), **kw)


@pytest.mark.parametrize(("channels", "classes"), [(3, 10), (1, 7)])
def test_parameter_count_is_the_standard_resnet18(channels, classes):
    s = ModelSpec(name="resnet18", input_shape=(channels, 64, 64), classes=classes)
    count = sum(p.numel() for p in shape_model(s).parameters())
    assert count == expected_params(channels, classes)
    if (channels, classes) == (3, 10):
        assert count == CIFAR_RESNET18_PARAMS


def test_meta_forward_and_backward_shapes():
    model = shape_model(spec(64))
    x = torch.empty(2, 3, 64, 64, device="meta", requires_grad=True)
    out = model(x)
    assert out.shape == (2, 10)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert g.shape == x.shape


def test_too_small_an_image_is_a_config_error():
    with pytest.raises(ConfigError, match="too small"):
        build_model(spec(6))


def test_seeded_and_per_sample_in_train_and_eval():
    """Same seed, same weights; GroupNorm: a sample's output does not depend on the batch, nor on train/eval."""
    a, b = build_model(spec(16, activation="relu", seed=3)), build_model(spec(16, activation="relu", seed=3))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(next(a.parameters()), next(build_model(spec(16, seed=4)).parameters()))
    model = a.double()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    batched = model(x)
    single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.train()(x), batched, rtol=1e-12, atol=1e-12)


def dlg_objective(model, target, x, y_logits, *, create_graph=True):
    """DLG's gradient-matching loss: Σ‖∇θ CE(f(x), softmax(ŷ)) − t‖² (one forward, a backward with create_graph so
    that the loss can be differentiated again)."""
    params = list(model.parameters())
    loss = F.cross_entropy(model(x), F.softmax(y_logits, -1))
    grads = torch.autograd.grad(loss, params, create_graph=create_graph)
    return sum(((g - t) ** 2).sum() for g, t in zip(grads, target, strict=True))


def test_dlg_double_backward_matches_float64_finite_differences():
    gen = torch.Generator().manual_seed(0)
    model = build_model(spec(16, activation="softplus")).double()
    truth = torch.rand(1, 3, 16, 16, generator=gen, dtype=torch.float64)
    target = shared_gradient(model, truth, torch.tensor([2]))
    x = torch.rand(1, 3, 16, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(1, 10, dtype=torch.float64, requires_grad=True)
    gx, gy = torch.autograd.grad(dlg_objective(model, target, x, y), (x, y))
    for k in range(1):  # a random direction in (x, ŷ) jointly; each costs two objective values
        vx = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        vy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
        plus, minus = (
            dlg_objective(model, target, (x + h * vx).detach(), (y + h * vy).detach(), create_graph=False)
            for h in (FD_STEP, -FD_STEP)
        )
        numeric = float((plus - minus) / (2 * FD_STEP))
        analytic = float((gx * vx).sum() + (gy * vy).sum())
        assert abs(numeric - analytic) <= FD_RTOL * abs(analytic), (k, numeric, analytic)
    net32 = build_model(spec(16, activation="softplus"))
    x32 = x.detach().float().requires_grad_(True)
    (g32,) = torch.autograd.grad(dlg_objective(net32, [t.float() for t in target], x32, y.detach().float()), x32)
    assert float((g32.double() - gx).norm() / gx.norm()) <= F32_RTOL


def test_ig_vmap_over_restarts_matches_one_restart_at_a_time():
    """torch.func grad + vmap (IG's batched restarts) through GroupNorm equals plain autograd per restart."""
    gen = torch.Generator().manual_seed(1)
    model = build_model(spec(8, activation="relu"))
    truth = torch.rand(1, 3, 8, 8, generator=gen)
    obs = Observation(model=model, gradients=shared_gradient(model, truth, torch.tensor([4])), input_shape=(3, 8, 8),
                      batch=1, classes=10)  # fmt: skip
    gm = GradientModel(obs, device=torch.device("cpu"), dtype=torch.float64)
    xs = torch.rand(2, 1, 3, 8, 8, generator=gen, dtype=torch.float64)
    y = torch.tensor([4])
    values, grads = batched_value_and_grad(gm.cosine, xs, y)
    for k in range(2):
        v, g = batched_value_and_grad(gm.cosine, xs[k : k + 1], y)
        torch.testing.assert_close(values[k : k + 1], v, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grads[k : k + 1], g, rtol=1e-8, atol=1e-12)


def guard(attack: str, *, batch: int = 1, restarts: int = 1, model: str = "resnet18") -> int:
    cfg = RunConfig(scenario="plain", attack=attack, model=model, data="photos64", batch=batch, restarts=restarts)
    s = ModelSpec(name=model, input_shape=(3, 64, 64))
    parts = memory.estimate(cfg, model=shape_model(s), input_shape=s.input_shape, image_values=3 * 64 * 64,
                            dataset_size=63, samples=batch)  # fmt: skip
    return sum(parts.values())


def test_the_guard_estimate_grows_with_model_batch_and_restarts():
    assert guard("dlg") > guard("dlg", model="lenet")
    assert guard("dlg", batch=4) > guard("dlg", batch=2) > guard("dlg")
    assert guard("ig", restarts=4) > guard("ig", restarts=2) > guard("ig")


def test_the_guard_estimate_bounds_a_measured_resnet18_peak():
    """bench_resnet's float64 DLG evaluation (the heavier of DLG's two precision phases) in a fresh process."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "experiments/bench_resnet.py"), "--methods", "dlg64", "--iterations", "1",
         "--warmup", "0", "--device", "cpu", "--json"],
        capture_output=True, text=True, timeout=300, check=True, cwd=ROOT,
    )  # fmt: skip
    (row,) = json.loads(out.stdout)
    assert row["peak_bytes"] <= row["estimate_bytes"] <= GUARD_FACTOR * row["peak_bytes"], row
