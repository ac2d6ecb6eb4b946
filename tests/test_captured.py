"""A captured update (`he-leak attack --update FILE --weights GLOBAL`): every documented file layout gives the same
observation, the truth is unknown unless `--truth` says the data is the client's batch, bad files are one line."""

import json

import numpy as np
import pytest
import torch

from he_leak.cli import main
from he_leak.config import RunConfig
from he_leak.data import load_dataset
from he_leak.errors import ConfigError, DataError
from he_leak.models import ModelSpec, build_model
from he_leak.models.local import client_update
from he_leak.records import LocalTraining
from he_leak.runner import prepare, run_one

SPEC = ModelSpec(name="mlp", input_shape=(1, 8, 8), hidden=(16,), seed=0)
INDEX, LR = 7, 0.5


@pytest.fixture()
def round_files(tmp_path):
    """A client's round on digit INDEX (one local step of the whole batch) and its files in every layout."""
    model = build_model(SPEC)
    torch.save(model.state_dict(), tmp_path / "global.pt")
    ds = load_dataset("digits")
    x, y = torch.from_numpy(ds.images[INDEX : INDEX + 1]), torch.from_numpy(ds.labels[INDEX : INDEX + 1])
    update, _ = client_update(model, x, y, loss="cross-entropy", local=LocalTraining(steps=1, lr=LR, batch=1))
    names = [n for n, _ in model.named_parameters()]
    delta = {n: (-LR * u).numpy() for n, u in zip(names, update, strict=True)}
    weights = [p.detach() - LR * u for p, u in zip(model.parameters(), update, strict=True)]
    np.savez(tmp_path / "delta.npz", **delta)
    np.save(tmp_path / "flat.npy", np.concatenate([v.reshape(-1) for v in delta.values()]))
    torch.save(weights, tmp_path / "weights.pt")
    gradient, _ = client_update(model, x, y, loss="cross-entropy")
    torch.save(dict(zip(names, gradient, strict=True)), tmp_path / "gradient.pt")
    return tmp_path


def _cfg(files, update, kind, **more):
    local = {} if kind == "gradient" else dict(local_steps=1, local_lr=LR)
    return RunConfig(model="mlp", hidden=(16,), attack="analytic", index=INDEX, weights=str(files / "global.pt"),
                     update=str(files / update), update_kind=kind, **local, **more)  # fmt: skip


def test_every_layout_gives_the_same_observation(round_files):
    layouts = [("delta.npz", "delta"), ("flat.npy", "delta"), ("weights.pt", "weights"), ("gradient.pt", "gradient")]
    seen = [prepare(_cfg(round_files, f, k)).observation.gradients for f, k in layouts]
    for other in seen[1:]:
        for a, b in zip(seen[0], other, strict=True):
            assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())  # float32 weights minus global


def test_truth_unknown_unless_the_client_batch_is_given(round_files, tmp_path, capsys):
    scored = run_one(_cfg(round_files, "delta.npz", "delta", update_truth=True))
    assert scored.truth_known is True and scored.success and scored.plaintext_psnr >= 60
    out = tmp_path / "blind"
    args = ["attack", "--model", "mlp", "--hidden", "16", "--attack", "analytic", "--weights",
            str(round_files / "global.pt"), "--update", str(round_files / "delta.npz"), "--local-steps", "1",
            "--local-lr", str(LR), "--json", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    blind = json.loads(capsys.readouterr().out)
    assert blind["truth_known"] is False and blind["success"] is False
    assert all(blind[k] is None for k in ("plaintext_psnr", "input_psnr", "prior_psnr", "recovered", "label_correct"))
    with np.load(out / "reconstruction.npz") as saved:  # what the attacker recovered, for the user to look at
        digit = load_dataset("digits").images[INDEX]
        assert saved["reconstruction"].shape == (1, 1, 8, 8) and saved["labels"].tolist() == [7]
        assert float(np.abs(saved["reconstruction"][0] - digit).max()) <= 1e-3
    assert (out / "reconstruction.png").exists()


@pytest.mark.parametrize("change, error, match", [
    (dict(update_kind="delta", local_steps=0, local_lr=None), ConfigError, "state the client's local training"),
    (dict(weights=None), ConfigError, "--update needs --weights GLOBAL"),
    (dict(scenario="he-aggregate"), ConfigError, "--update does not apply to scenario he-aggregate"),
    (dict(utility=True), ConfigError, "drop --utility"),
])  # fmt: skip
def test_bad_settings_are_refused(round_files, change, error, match):
    with pytest.raises(error, match=match):
        prepare(_cfg(round_files, "delta.npz", "delta").replace(**change))


def test_files_that_do_not_fit_are_one_line(round_files):
    np.savez(round_files / "short.npz", **{"1.weight": np.zeros((16, 64))})
    with pytest.raises(DataError, match=r"missing 1.bias, 3.weight, 3.bias"):
        prepare(_cfg(round_files, "short.npz", "delta"))
    np.savez(round_files / "shaped.npz", **{"1.weight": np.zeros((16, 63)), "1.bias": np.zeros(16),
                                            "3.weight": np.zeros((10, 16)), "3.bias": np.zeros(10)})  # fmt: skip
    with pytest.raises(DataError, match=r"mis-shaped 1.weight \(16, 63\) \(model \(16, 64\)\)"):
        prepare(_cfg(round_files, "shaped.npz", "delta"))
    np.save(round_files / "flat_short.npy", np.zeros(10))
    with pytest.raises(DataError, match="a flat vector of 10 values; the model has 1210 parameter entries"):
        prepare(_cfg(round_files, "flat_short.npy", "delta"))
    np.savez(round_files / "three.npz", np.zeros(1), np.zeros(1), np.zeros(1))
    with pytest.raises(DataError, match="holds 3 arrays; the model has 4 parameters"):
        prepare(_cfg(round_files, "three.npz", "delta"))
