"""The analytic attack against float64 torch references: exact recovery where the structure allows it."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from he_leak.attacks.analytic import Analytic
from he_leak.attacks.base import AttackOptions
from he_leak.data import load_dataset
from he_leak.errors import AttackFailed
from he_leak.models import ModelSpec, build_model
from he_leak.records import Observation
from he_leak.scenarios.base import shared_gradient

EXACT_PSNR = 60.0  # dB over data range 1: "exact" for float32 gradients


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return 200.0 if mse == 0 else 10 * np.log10(1 / mse)


def observe(data: str, index: int, batch: int, **spec) -> tuple[Observation, torch.Tensor]:
    ds = load_dataset(data)
    x, y = ds.batch(index, batch)
    x, y = torch.tensor(x), torch.tensor(y)
    classes = 10 if data == "digits" else 2
    model = build_model(ModelSpec(name="mlp", input_shape=ds.shape, classes=classes, **spec))
    obs = Observation(
        model=model, gradients=shared_gradient(model, x, y), input_shape=ds.shape, batch=batch, classes=classes
    )
    return obs, x


def matched_psnrs(rec: torch.Tensor, truth: torch.Tensor) -> list[float]:
    p = np.array([[psnr(r, t) for t in truth] for r in rec])
    rows, cols = linear_sum_assignment(-p)
    return list(p[rows, cols])


@pytest.mark.parametrize("data", ["digits", "faces"])
@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_single_input_is_exact(data: str, activation: str) -> None:
    obs, x = observe(data, 5, 1, hidden=(32,), activation=activation)
    rec = Analytic(AttackOptions()).reconstruct(obs)
    assert rec.recovered == 1 and rec.error is None
    assert psnr(rec.inputs, x) >= EXACT_PSNR


def test_single_input_through_one_hidden_unit_of_a_deep_net() -> None:
    obs, x = observe("faces", 7, 1, hidden=(1, 16, 16), activation="sigmoid")
    rec = Analytic(AttackOptions()).reconstruct(obs)
    assert psnr(rec.inputs, x) >= EXACT_PSNR


def test_batch_of_eight_faces_with_32_hidden_units() -> None:
    obs, x = observe("faces", 0, 8, hidden=(32,), activation="tanh")
    rec = Analytic(AttackOptions()).reconstruct(obs)
    assert rec.recovered == 8 and rec.error is None, rec.error
    assert min(matched_psnrs(rec.inputs, x)) >= EXACT_PSNR


def test_four_hidden_units_cannot_hold_a_batch_of_eight() -> None:
    obs, _ = observe("faces", 0, 8, hidden=(4,), activation="sigmoid")
    rec = Analytic(AttackOptions()).reconstruct(obs)
    assert rec.error and rec.recovered is not None and rec.recovered < 8
    assert rec.inputs.shape == (8, 1, 25, 25)


def test_conv_first_layer_is_refused() -> None:
    ds = load_dataset("digits")
    model = build_model(ModelSpec(name="convnet", input_shape=ds.shape, classes=10))
    x, y = ds.batch(0, 1)
    obs = Observation(
        model=model,
        gradients=shared_gradient(model, torch.tensor(x), torch.tensor(y)),
        input_shape=ds.shape,
        batch=1,
        classes=10,
    )
    with pytest.raises(AttackFailed):
        Analytic(AttackOptions()).reconstruct(obs)


def test_ckks_input_batch_of_views() -> None:
    """ckks-input (N=4096: 65536-dim bytes views), a batch of 2 views through 32 hidden units: recovered exactly,
    so the recovered views round back to ciphertexts that decrypt to the images."""
    from he_leak.config import RunConfig
    from he_leak.runner import run_one

    cfg = RunConfig(scenario="ckks-input", attack="analytic", model="mlp", hidden=(32,), data="digits", batch=2,
                    device="cpu")  # fmt: skip
    result = run_one(cfg).result
    assert result.symbol_exact == 1.0 and result.decrypts is True and result.recovered == 2 and result.success
