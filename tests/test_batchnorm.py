"""BatchNorm: train mode (batch statistics; the running buffers travel with the update, clear or encrypted) and
eval mode; ig's BN prior as an option; the audit folds eval-mode BatchNorm and refuses the rest with a reason;
ResNet-18 with BatchNorm is registered."""

import pytest
import torch
from torch import nn

from he_leak.config import RunConfig
from he_leak.errors import ConfigError
from he_leak.models import ModelSpec, build_model
from he_leak.models.audit import audit
from he_leak.runner import prepare, run_one

PHOTO = dict(model="lenet-bn", data="photos", classes=7, batch=2, model_mode="train")


def test_resnet18_bn_is_registered_and_matches_resnet18s_parameters():
    bn = build_model(ModelSpec(name="resnet18-bn", input_shape=(3, 8, 8)))
    gn = build_model(ModelSpec(name="resnet18", input_shape=(3, 8, 8)))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 20
    assert [p.shape for p in bn.parameters()] == [p.shape for p in gn.parameters()]  # affine pairs either way


def test_train_mode_shares_the_running_buffers_and_eval_mode_none():
    obs = prepare(RunConfig(**PHOTO, attack="ig", iterations=1)).observation
    assert obs.model.training and obs.buffers is not None
    assert set(obs.buffers.after) == {f"body.{i}.{k}" for i in (1, 4, 7)
                                      for k in ("running_mean", "running_var", "num_batches_tracked")}  # fmt: skip
    assert int(obs.buffers.after["body.1.num_batches_tracked"]) == 1
    assert not torch.equal(obs.buffers.after["body.1.running_mean"], obs.buffers.before["body.1.running_mean"])
    assert prepare(RunConfig(**{**PHOTO, "model_mode": "eval"}, attack="ig", iterations=1)).observation.buffers is None


def test_the_bn_prior_is_igs_option_and_needs_the_buffers():
    result = run_one(RunConfig(**PHOTO, attack="ig", iterations=20, bn_prior=0.1))
    assert result.error is None and result.plaintext_psnr is not None and result.config["bn_prior"] == 0.1
    with pytest.raises(ConfigError, match="--bn-prior needs the BatchNorm running statistics"):
        prepare(RunConfig(**{**PHOTO, "model_mode": "eval"}, attack="ig", bn_prior=0.1))
    with pytest.raises(ConfigError, match=r"--bn-prior does not apply to attack dlg \(only ig uses it\)"):
        prepare(RunConfig(**PHOTO, attack="dlg", bn_prior=0.1))


def test_he_aggregate_encrypts_the_buffers_with_the_update_or_leaves_them_clear():
    common = dict(**PHOTO, scenario="he-aggregate", attack="ig", iterations=1)
    assert prepare(RunConfig(**common)).observation.buffers is None  # everything encrypted: none in the clear
    clear = prepare(RunConfig(**common, encrypt_fraction=0.0)).observation.buffers
    assert clear is not None and "body.7.running_var" in clear.after
    partly = prepare(RunConfig(**common, encrypt_layers="running_var")).observation.buffers
    assert set(partly.after) == {f"body.{i}.{k}" for i in (1, 4, 7) for k in ("running_mean", "num_batches_tracked")}
    plain = prepare(RunConfig(**PHOTO, attack="ig", iterations=1)).observation.buffers
    key_holder = prepare(RunConfig(**common, role="client")).observation.buffers  # decrypts the aggregate (K = 1)
    for name, value in plain.after.items():
        assert float((key_holder.after[name].double() - value.double()).abs().max()) <= 1e-6, name


def test_the_audit_folds_eval_batchnorm_and_refuses_train_batchnorm_with_its_reason():
    bn = audit(ModelSpec(name="lenet-bn", input_shape=(1, 8, 8)), batch=1)
    plain = audit(ModelSpec(name="lenet", input_shape=(1, 8, 8)), batch=1)
    assert [r.rank for r in bn.layers] == [r.rank for r in plain.layers]  # fresh BatchNorm: ~the identity, folded
    with pytest.raises(ConfigError, match=r"layer body.1 \(BatchNorm2d\): it normalises by the batch's statistics"):
        audit(ModelSpec(name="lenet-bn", input_shape=(1, 8, 8), mode="train"), batch=1)
    with pytest.raises(ConfigError, match=r"layer stem.1 \(GroupNorm\): it normalises each sample by its own"):
        audit(ModelSpec(name="resnet18", input_shape=(3, 8, 8)), batch=1)
    with pytest.raises(ConfigError, match="does not take the previous layer's output"):
        audit(ModelSpec(name="resnet18-bn", input_shape=(3, 8, 8)), batch=1)  # folded, then the residual addition


def test_dropout_in_train_mode_is_refused_naming_the_layer(tmp_path):
    source = "from torch import nn\n\ndef net(input_shape, classes):\n    return nn.Sequential(nn.Flatten(), "
    (tmp_path / "drop.py").write_text(source + "nn.Dropout(0.5), nn.Linear(64, classes))\n")
    with pytest.raises(ConfigError, match=r"layer 1 \(Dropout\) draws a random mask"):
        build_model(ModelSpec(name=f"{tmp_path / 'drop.py'}:net", input_shape=(1, 8, 8), mode="train"))
