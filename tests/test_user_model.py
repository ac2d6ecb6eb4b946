"""A user's own model (`--model module.py:factory`, `package.module:factory`), never registered: built with the
input shape and class count, attacked, audited, its weights loaded strictly, refused in one line where it cannot be
used, and carried to sweep workers as its reference string."""

import json
import pickle
import sys

import pytest
import torch

from he_leak.cli import main
from he_leak.config import RunConfig
from he_leak.errors import ConfigError, DataError
from he_leak.models import ModelSpec, build_model
from he_leak.models.checkpoint import load_weights
from he_leak.runner import prepare, run_one

CNN = '''
import math
from torch import nn


def net(input_shape, classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.Sigmoid(), nn.Flatten(),
                         nn.Linear(4 * h * w, classes))


def fc(input_shape, num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 16), nn.Sigmoid(), nn.Linear(16, num_classes))


def pooled(input_shape, classes):
    return nn.Sequential(nn.Conv2d(input_shape[0], 4, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * (input_shape[1] // 2) * (input_shape[2] // 2), classes))


def needs_depth(input_shape, depth):
    return nn.Linear(1, 1)


not_a_model = 3
'''


@pytest.fixture()
def module(tmp_path):
    path = tmp_path / "mymodels.py"
    path.write_text(CNN)
    return path


def test_factory_gets_shape_and_classes_and_the_seed_fixes_the_weights(module):
    a = build_model(ModelSpec(name=f"{module}:net", input_shape=(1, 8, 8), classes=7, seed=1))
    b = build_model(ModelSpec(name=f"{module}:net", input_shape=(1, 8, 8), classes=7, seed=1))
    c = build_model(ModelSpec(name=f"{module}:net", input_shape=(1, 8, 8), classes=7, seed=2))
    assert a(torch.zeros(1, 1, 8, 8)).shape == (1, 7)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a[0].weight, c[0].weight)
    assert build_model(ModelSpec(name=f"{module}:fc", input_shape=(1, 8, 8), classes=3))[-1].out_features == 3


@pytest.mark.parametrize("attack, iterations", [("dlg", 30), ("ig", 200)])
def test_a_user_cnn_is_attacked(module, attack, iterations):
    result = run_one(RunConfig(model=f"{module}:net", attack=attack, data="digits", index=2, iterations=iterations))
    assert result.model == f"{module}:net" and result.error is None
    assert result.plaintext_psnr > result.prior_psnr  # the attack ran on the user's model and did better than guessing
    if attack == "dlg":
        assert result.plaintext_psnr >= 30


def test_closed_form_refuses_a_conv_first_layer_in_one_line_naming_it(module, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["attack", "--model", f"{module}:net", "--attack", "analytic", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and not out.exists()
    assert "layer 0 is Conv2d" in err
    fc = run_one(RunConfig(model=f"{module}:fc", attack="analytic", data="digits", index=4))
    assert fc.success and fc.plaintext_psnr >= 60  # a user model with a fully connected first layer: closed form


def test_weights_from_a_pt_are_loaded_and_a_bad_checkpoint_is_refused(module, tmp_path, capsys):
    spec = ModelSpec(name=f"{module}:net", input_shape=(1, 8, 8), seed=5)
    trained = build_model(spec)
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    cfg = RunConfig(model=f"{module}:net", weights=str(tmp_path / "w.pt"), attack="dlg", iterations=2)
    ctx = prepare(cfg)  # seed 0, but the weights are seed 5's
    assert all(torch.equal(p, q) for p, q in zip(ctx.observation.model.parameters(), trained.parameters(),
                                                  strict=True))  # fmt: skip
    bad = dict(trained.state_dict())
    bad["3.weight"] = torch.zeros(10, 5)
    bad["extra"] = torch.zeros(1)
    del bad["0.bias"]
    torch.save(bad, tmp_path / "bad.pt")
    out = tmp_path / "out"
    code = main(["attack", "--model", f"{module}:net", "--weights", str(tmp_path / "bad.pt"), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists() and "\n" not in err
    assert "missing 0.bias; unexpected extra; mis-shaped 3.weight (10, 5) (model (10, 256))" in err
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="not a torch file of tensors"):
        load_weights(trained, tmp_path / "junk.pt")
    torch.save({"state_dict": trained.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    with pytest.raises(DataError, match=r"training checkpoint: save checkpoint\['state_dict'\] alone"):
        load_weights(trained, tmp_path / "ckpt.pt")


def test_safetensors_are_read_with_the_extra_and_refused_in_one_line_without_it(module, tmp_path, monkeypatch):
    safetensors = pytest.importorskip("safetensors.torch")
    model = build_model(ModelSpec(name=f"{module}:net", input_shape=(1, 8, 8), seed=4))
    safetensors.save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    other = build_model(ModelSpec(name=f"{module}:net", input_shape=(1, 8, 8)))
    load_weights(other, tmp_path / "w.safetensors")
    assert torch.equal(other[0].weight, model[0].weight)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # as if the package were not installed
    with pytest.raises(ConfigError, match=r"needs the safetensors package: pip install -e '\.\[safetensors\]'"):
        load_weights(other, tmp_path / "w.safetensors")


@pytest.mark.parametrize("suffix, match", [
    (":needs_depth", "requires depth"),
    (":not_a_model", "is not callable"),
    (":nope", "has no 'nope'"),
])  # fmt: skip
def test_unusable_factories_are_refused_in_one_line(module, suffix, match):
    with pytest.raises(ConfigError, match=match):
        build_model(ModelSpec(name=f"{module}{suffix}", input_shape=(1, 8, 8)))


def test_registered_models_options_are_refused_for_a_user_model(module):
    with pytest.raises(ConfigError, match=r"--hidden does not apply to model .*:fc \(only mlp uses it\)"):
        prepare(RunConfig(model=f"{module}:fc", hidden=(8,)))


def test_a_package_module_factory_and_encrypt_layers_by_the_models_own_names(module, monkeypatch):
    monkeypatch.syspath_prepend(str(module.parent))
    cfg = RunConfig(model="mymodels:net", scenario="he-aggregate", attack="dlg", iterations=1, encrypt_layers=r"^0\.")
    ctx = prepare(cfg)
    visible = ctx.observation.mask
    assert [bool(v.any()) for v in visible] == [False, False, True, True]  # conv (0.*) encrypted, linear (3.*) clear
    with pytest.raises(ConfigError, match=r"matches no parameter or buffer; names: 0.weight, 0.bias, 3.weight"):
        prepare(cfg.replace(encrypt_layers="conv"))


def test_the_model_travels_to_a_worker_as_its_reference(module, tmp_path):
    """A fresh worker has imported nothing: the pickled config (a path and a name) is all it gets."""
    from he_leak.models.user import factory_of
    from he_leak.sweep.worker import execute

    cfg = RunConfig(model=f"{module}:fc", attack="analytic", data="digits", index=1)
    shipped = pickle.loads(pickle.dumps(cfg))
    factory_of.cache_clear()
    for name in [n for n in sys.modules if n.startswith("he_leak_user_")]:
        del sys.modules[name]
    row = execute(shipped).row
    assert row["success"] and row["model"] == f"{module}:fc"
    toml = tmp_path / "exp.toml"
    toml.write_text(f'[fixed]\nmodel = "{module}:fc"\nattack = "analytic"\n[[grid]]\nindex = [0, 1]\n')
    from he_leak.sweep.experiment import load_experiment

    assert [c.model for c in load_experiment(toml).runs] == [f"{module}:fc"] * 2
    toml.write_text(f'[fixed]\nmodel = "{module}:missing"\n')
    with pytest.raises(ConfigError, match="has no 'missing'"):
        load_experiment(toml)


def test_the_audit_takes_a_user_model_and_names_a_layer_it_cannot_analyse(module, capsys):
    assert main(["audit", "--model", f"{module}:fc", "--json"]) == 0
    audit = json.loads(capsys.readouterr().out)
    assert audit["model"] == f"{module}:fc" and audit["exact_reconstruction_possible"] is True
    assert main(["audit", "--model", f"{module}:pooled"]) == 2
    err = capsys.readouterr().err
    assert "layer 1 (MaxPool2d)" in err and "\n" not in err.strip()
