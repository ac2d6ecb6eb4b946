"""The structural audit: hand-checkable ranks, Qian's sufficient conditions (one unit for one input), activity from
a real forward pass (ReLU, square and sigmoid3 give forward equations only where z can be read back), agreement with
the layerwise attack's ranks, and bad batches refused."""

import pytest
import torch

from he_leak.attacks.base import AttackOptions
from he_leak.attacks.layerwise import Layerwise
from he_leak.data import load_dataset
from he_leak.errors import ConfigError
from he_leak.models import ModelSpec, Sigmoid3, Square, build_model
from he_leak.models.audit import audit, format_audit, known_preactivations, linear_rank, qian_fc
from he_leak.records import Observation
from he_leak.scenarios.base import shared_gradient

DIGITS = (1, 8, 8)


def test_linear_rank_by_hand() -> None:
    # h=4 outputs, d=10 inputs, batch 8, rank(W)=4: gradient block min(4,8)*10=40, forward 8*4=32 -> 72 of 80
    assert linear_rank(4, 10, 8, 4) == (4 * 10 + 8 * 4, 72)
    assert linear_rank(32, 10, 1, 10) == (32 * 10 + 32, 10)


def test_qian_one_unit_for_one_input_more_units_than_samples_for_a_batch() -> None:
    assert qian_fc(1, 1) and not qian_fc(2, 2) and qian_fc(3, 2)
    one = audit(ModelSpec(name="mlp", input_shape=DIGITS, hidden=(1,)), batch=1)
    assert one.layers[0].qian_ok is True and one.exact_reconstruction_possible
    assert "one unit suffices" in one.reason


@pytest.mark.parametrize("batch", [0, -3])
def test_a_batch_below_one_is_refused(batch: int) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        audit(ModelSpec(name="mlp", input_shape=DIGITS, hidden=(4,)), batch=batch)


def test_inputs_of_the_wrong_shape_are_refused() -> None:
    with pytest.raises(ConfigError, match="one per sample"):
        audit(ModelSpec(name="mlp", input_shape=DIGITS, hidden=(4,)), batch=2, inputs=torch.rand(3, *DIGITS))


def test_mlp_batch_condition() -> None:
    wide = audit(ModelSpec(name="mlp", input_shape=(1, 25, 25), classes=2, hidden=(32,)), batch=8)
    narrow = audit(ModelSpec(name="mlp", input_shape=(1, 25, 25), classes=2, hidden=(4,)), batch=8)
    assert wide.exact_reconstruction_possible and not narrow.exact_reconstruction_possible
    assert narrow.layers[0].qian_ok is False
    assert narrow.layers[0].deficiency == 8 * 625 - (4 * 625 + 8 * 4)  # rank(D)·d + Σ rank(W): generic δ's
    assert narrow.security_index < wide.security_index <= 0
    d = wide.to_dict()
    assert set(d) >= {"layers", "security_index", "exact_reconstruction_possible"}


def test_relu_activity_is_counted_from_the_forward_pass() -> None:
    """The known pre-activations of a ReLU layer are exactly its active units on the audited inputs."""
    spec = ModelSpec(name="mlp", input_shape=DIGITS, hidden=(16, 8), activation="relu")
    x = torch.rand(3, *DIGITS, generator=torch.Generator().manual_seed(4))
    a = audit(spec, batch=3, inputs=x)
    model = build_model(spec)
    z1 = model[1](model[0](x))
    z2 = model[3](torch.relu(z1))
    assert a.layers[0].known_outputs == pytest.approx(float((z1 > 0).double().mean()))
    assert a.layers[1].known_outputs == pytest.approx(float((z2 > 0).double().mean()))
    assert a.layers[0].constraints == 16 * 64 + int((z1 > 0).sum())
    assert not a.invertible_activations


def test_relu_convnet_agrees_with_the_layerwise_attack() -> None:
    """digits #0 through a ReLU convnet: the layerwise attack finds conv 2 rank deficient (inactive units give no
    forward equation); the audit of the same input finds the same per-layer ranks, exactly, and says so."""
    ds = load_dataset("digits")
    x, y = ds.batch(0, 1)
    spec = ModelSpec(name="convnet", input_shape=ds.shape, classes=10, activation="relu")
    model = build_model(spec).double()
    x64 = torch.tensor(x).double()
    obs = Observation(model=model, gradients=shared_gradient(model, x64, torch.tensor(y)), input_shape=ds.shape,
                      batch=1, classes=10)  # fmt: skip
    layers = Layerwise(AttackOptions()).reconstruct(obs).info["layers"]
    a = audit(spec, batch=1, inputs=torch.tensor(x))
    assert [(r["unknowns"], r["rank"]) for r in layers] == [(r.unknowns, r.rank) for r in reversed(a.layers)]
    assert all(r.exact for r in a.layers)
    assert a.layers[1].deficiency > 0 and a.security_index < 0 and not a.exact_reconstruction_possible
    sigmoid = audit(ModelSpec(name="convnet", input_shape=ds.shape, classes=10), batch=1, inputs=torch.tensor(x))
    assert all(r.deficiency == 0 for r in sigmoid.layers) and sigmoid.exact_reconstruction_possible


def test_polynomial_activations_are_not_counted_as_invertible() -> None:
    """square loses the sign (no forward equation anywhere); sigmoid3 has one real pre-image only beyond twice its
    turning point (|z| > 8.1), three branches elsewhere."""
    z = torch.tensor([-9.0, -3.0, 0.0, 0.5, 3.0, 9.0])
    assert not known_preactivations(Square(), z).any()
    assert known_preactivations(Sigmoid3(), z).tolist() == [True, False, False, False, False, True]
    x = torch.rand(1, *DIGITS, generator=torch.Generator().manual_seed(0))
    square = audit(ModelSpec(name="convnet", input_shape=DIGITS, activation="square"), batch=1, inputs=x)
    sigmoid = audit(ModelSpec(name="convnet", input_shape=DIGITS, activation="sigmoid"), batch=1, inputs=x)
    assert not square.invertible_activations and sigmoid.invertible_activations
    assert square.layers[0].known_outputs == 0.0 and square.layers[0].constraints < sigmoid.layers[0].constraints
    assert square.layers[1].deficiency > 0 == sigmoid.layers[1].deficiency


def test_lenet_table() -> None:
    a = audit(ModelSpec(name="lenet", input_shape=DIGITS, classes=2), batch=1)
    text = format_audit(a)
    assert len(a.layers) == 4 and "security index" in text and "known z" in text
    assert all(r.exact for r in a.layers)


def test_models_outside_the_rank_count_get_no_index():
    """ResNet-18 (GroupNorm, residual additions): the audit refuses rather than give a meaningless index, and a run
    records security_index None."""
    from he_leak.errors import ConfigError
    from he_leak.runner import security_index

    spec = ModelSpec(name="resnet18", input_shape=(3, 16, 16))
    with pytest.raises(ConfigError, match="GroupNorm"):
        audit(spec, batch=1)
    assert security_index(spec, 1) is None
    assert security_index(ModelSpec(name="mlp", input_shape=(1, 8, 8), hidden=(16,)), 1) is not None
