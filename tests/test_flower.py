"""End to end with a real FL framework: a Flower NumPyClient trains locally (experiments/flower_fedavg.py), its
fit() result is saved and attacked with `he-leak attack --update`, on digits and on a user folder of 32×32 PNGs.

Needs the optional extra `flower` (flwr); `make flower` runs this file in its own environment (flwr's install
pins older rich/protobuf than the test environment, see README). Skipped where flwr is absent."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from flower_fedavg import attack_args, capture  # noqa: E402

from he_leak.cli import main  # noqa: E402

RECOVERED_PSNR = 30.0  # he-leak's default success_psnr
ITERATIONS = "60"  # dlg steps (each up to 20 L-BFGS iterations), the attacker-side stop ends runs earlier


def _attack(capsys, args: list[str]) -> dict:
    assert main([*args, "--iterations", ITERATIONS, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _user_folder(path: Path) -> Path:
    """Four 32×32 grey PNGs cut from scikit-image pictures that no built-in dataset uses (a user's own data)."""
    from PIL import Image
    from skimage import data as sk

    path.mkdir()
    for k, picture in enumerate((sk.camera(), sk.coins(), sk.moon(), sk.page())):
        h, w = picture.shape[:2]
        crop = picture[h // 2 - 64 : h // 2 + 64, w // 2 - 64 : w // 2 + 64]
        Image.fromarray(crop).resize((32, 32), Image.LANCZOS).save(path / f"{k:02d}.png")
    return path


@pytest.mark.parametrize("where", ["digits", "folder"])
def test_a_flower_clients_fit_result_is_attacked(tmp_path, capsys, where):
    data = "digits" if where == "digits" else str(_user_folder(tmp_path / "pngs"))
    setting = dict(data=data, index=0 if where == "folder" else 10, batch=2, steps=4, lr=0.1, local_batch=1)
    paths = capture(out=tmp_path / "round", **setting)
    with np.load(paths["update"]) as fit:
        assert sorted(fit.files) == ["arr_0", "arr_1", "arr_2", "arr_3"]  # Flower's ndarrays, state_dict order
    args = attack_args(paths, **setting)
    scored = _attack(capsys, args)
    assert scored["truth_known"] is True and scored["config"]["update"] == str(paths["update"])
    with capsys.disabled():
        print(f"\n{where}: dlg on a Flower fit() update, PSNR {scored['plaintext_psnr']:.1f} dB, "
              f"{scored['recovered']}/{scored['batch']} recovered")
    assert scored["plaintext_psnr"] >= RECOVERED_PSNR
    blind = _attack(capsys, [a for a in args if a != "--truth"])  # what the server alone knows
    assert blind["truth_known"] is False and blind["plaintext_psnr"] is None and blind["recovered"] is None
