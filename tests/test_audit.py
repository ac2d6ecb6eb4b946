"""The structural audit: hand-checkable ranks and Qian's conditions."""

from he_leak.audit import audit, format_audit, linear_rank
from he_leak.models import ModelSpec


def test_linear_rank_by_hand() -> None:
    # h=4 outputs, d=10 inputs, batch 8, rank(W)=4: gradient block min(4,8)*10=40, forward 8*4=32 -> 72 of 80
    assert linear_rank(4, 10, 8, 4) == (4 * 10 + 8 * 4, 72)
    assert linear_rank(32, 10, 1, 10) == (32 * 10 + 32, 10)


def test_mlp_batch_condition() -> None:
    wide = audit(ModelSpec(name="mlp", input_shape=(1, 25, 25), classes=2, hidden=(32,)), batch=8)
    narrow = audit(ModelSpec(name="mlp", input_shape=(1, 25, 25), classes=2, hidden=(4,)), batch=8)
    assert wide.exact_reconstruction_possible and not narrow.exact_reconstruction_possible
    assert narrow.layers[0].qian_ok is False and narrow.layers[0].deficiency > 0
    assert narrow.security_index < wide.security_index <= 0
    d = wide.to_dict()
    assert set(d) >= {"layers", "security_index", "exact_reconstruction_possible"}


def test_lenet_table() -> None:
    a = audit(ModelSpec(name="lenet", input_shape=(1, 25, 25), classes=2), batch=1)
    assert len(a.layers) == 4 and "security index" in format_audit(a)
