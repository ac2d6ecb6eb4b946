"""The one table of run options (he_leak.options) stays true: every RunConfig field has a row, every name in it is
registered, every flag exists on `he-leak attack`, and the checks it drives refuse what a run does not use — also at
the option's default value — while the library, the command line and experiment files agree."""

import dataclasses

import pytest

from he_leak import RunConfig
from he_leak.attacks import ATTACKS
from he_leak.cli.parser import build_parser
from he_leak.errors import ConfigError
from he_leak.models import MODELS
from he_leak.options import OPTIONS
from he_leak.scenarios import SCENARIOS


def test_every_field_has_one_row_and_every_name_is_registered():
    assert set(OPTIONS) == {f.name for f in dataclasses.fields(RunConfig)}
    for name, option in OPTIONS.items():
        for users, registry in ((option.scenarios, SCENARIOS), (option.attacks, ATTACKS), (option.models, MODELS)):
            assert users is None or set(users) <= set(registry), (name, users)


def test_every_flag_is_an_option_of_he_leak_attack():
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["attack"]
    flags = {s for action in sub._actions for s in action.option_strings}
    missing = [o.flag for o in OPTIONS.values() if o.flag.startswith("--") and o.flag not in flags]
    assert not missing, missing


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"scenario": "plain", "role": "server"}, "--role does not apply to scenario plain"),
        ({"attack": "dlg", "tv": 0.0}, "--tv does not apply to attack dlg"),
        ({"attack": "analytic", "restarts": 1}, "--restarts does not apply to attack analytic"),
        ({"attack": "layerwise", "iterations": 10}, "--iterations does not apply to attack layerwise"),
        ({"model": "lenet", "hidden": [64, 32]}, "--hidden does not apply to model lenet"),
        ({"model": "logreg", "activation": "sigmoid"}, "--activation does not apply to model logreg"),
        ({"model": "convnet", "stride": 2}, "--stride does not apply to model convnet"),
        ({"scenario": "he-aggregate", "encrypt_layers": "fc", "select": "random"}, "--select does not apply with"),
        ({"scenario": "he-aggregate", "encrypt_fraction": 0.5, "select": "random", "sensitivity": "exact"},
         "--sensitivity does not apply with --select random"),
        ({"scenario": "he-aggregate", "sensitivity_samples": 32}, "--sensitivity-samples does not apply with"),
        ({"layout": "auto"}, "--layout does not apply to the built-in dataset digits"),
        ({"normalize": False}, "--normalize does not apply"),
    ],
)  # fmt: skip
def test_a_given_option_the_run_does_not_use_is_refused_even_at_its_default(values, needle):
    with pytest.raises(ConfigError, match=needle):
        RunConfig.from_mapping(values, where=None)


def test_the_same_options_are_accepted_where_they_are_used():
    cfg = RunConfig.from_mapping({"scenario": "he-aggregate", "role": "server", "encrypt_fraction": 0.5,
                                  "select": "sensitivity", "sensitivity": "hutchinson", "sensitivity_samples": 8,
                                  "attack": "ig", "tv": 0.0, "restarts": 2, "model": "mlp", "hidden": [8]})  # fmt: skip
    assert cfg.sensitivity == "hutchinson" and cfg.hidden == (8,) and cfg.tv == 0.0


def test_the_library_checks_set_options_and_leaves_defaults_alone():
    RunConfig()  # every default: nothing set
    RunConfig(scenario="he-aggregate", role="client")
    with pytest.raises(ConfigError, match="--role does not apply to scenario plain"):
        RunConfig(role="client")
    with pytest.raises(ConfigError, match="--clients does not apply"):
        RunConfig(scenario="he-aggregate", clients=2).replace(scenario="plain")


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"seed": "7"}, "seed must be an integer"), ({"seed": 1e3}, "seed must be an integer"),
        ({"seed": True}, "seed must be an integer"), ({"seed": 2**64}, "a seed lies in 0"),
        ({"batch": "2"}, "batch must be an integer"), ({"hidden": 32, "model": "mlp"}, "hidden must be a list"),
        ({"hidden": "32,,16", "model": "mlp"}, "no empty entry"), ({"hidden": [0], "model": "mlp"}, "positive"),
        ({"success_psnr": 0.0}, "success_psnr"), ({"success_psnr": 201.0}, "success_psnr"),
        ({"classes": 2**63}, "beyond 64-bit"), ({"noise": float("nan")}, "finite"),
        ({"utility": 1}, "true or false"), ({"encryptor_params": [1], "scenario": "ckks-input"}, "table"),
    ],
)  # fmt: skip
def test_types_and_ranges(values, needle):
    with pytest.raises(ConfigError, match=needle):
        RunConfig.from_mapping(values, where=None)


def test_numpy_numbers_are_read_as_the_python_numbers_they_are():
    import numpy as np

    cfg = RunConfig(index=np.int64(3), seed=np.uint64(2**64 - 1), noise=np.float32(0.5))
    assert type(cfg.index) is int and cfg.seed == 2**64 - 1 and type(cfg.noise) is float
