"""The command line: --json prints exactly one Result with every DESIGN.md key; bad input is one line and exit 2."""

import json
import subprocess
import sys

import pytest

from he_leak.cli import main
from he_leak.records import RESULT_KEYS


def run_cli(*args, check_exit=None):
    proc = subprocess.run([sys.executable, "-m", "he_leak", *args], capture_output=True, text=True, timeout=300)
    if check_exit is not None:
        assert proc.returncode == check_exit, proc.stderr
    return proc


def test_attack_json_has_every_result_key(tmp_path):
    proc = run_cli("attack", "--attack", "idlg", "--model", "lenet", "--data", "digits", "--index", "3",
                   "--iterations", "50", "--json", "--out", str(tmp_path), check_exit=0)  # fmt: skip
    row = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert set(RESULT_KEYS) <= set(row)
    assert row["scenario"] == "plain" and row["attack"] == "idlg" and row["index"] == 3
    assert row["success"] is True and row["plaintext_psnr"] >= 30
    assert (tmp_path / "reconstruction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "result.json").read_text())["attack"] == "idlg"


def test_attack_table_without_json(capsys):
    assert main(["attack", "--attack", "idlg", "--model", "lenet", "--data", "digits", "--iterations", "20"]) == 0
    out = capsys.readouterr().out
    assert "plaintext_psnr" in out and "idlg" in out


@pytest.mark.parametrize(
    "args, needle",
    [
        (["attack", "--attack", "nope"], "unknown attack 'nope'; known:"),
        (["attack", "--scenario", "nope"], "unknown scenario 'nope'; known:"),
        (["attack", "--model", "nope"], "unknown model 'nope'; known:"),
        (["attack", "--data", "nope"], "unknown dataset 'nope'; known:"),
        (["attack", "--data", "/no/such/file.png"], "no such file"),
        (["attack", "--model", "lenet", "--data", "digits", "--index", "99999"], "out of range"),
        (["attack", "--hidden", "a,b"], "comma-separated list of integers"),
        (["attack", "--batch", "0"], "batch must be at least 1"),
        (["attack", "--device", "tpu"], "invalid choice"),
        (["attack", "--scenario", "ckks-input", "--he", "poly_modulus_degree=4096",
          "--he", "coeff_mod_bit_sizes=[60,60,60]"], "128-bit"),  # fmt: skip
        (["run", "/no/such.toml", "--out", "/tmp/x"], ".toml"),
        (["bench", "--threads", "0"], "--threads 0"),
        (["bench", "--pairs", "0"], "at least 1"),
        (["table", "/no/such/results.jsonl"], "no such results file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert proc.stdout == ""


def test_image_that_does_not_fit_the_model(tmp_path):
    import numpy as np

    np.save(tmp_path / "tiny.npy", np.zeros((2, 2)))  # 2×2 is too small for LeNet's convolutions
    proc = run_cli("attack", "--model", "lenet", "--data", str(tmp_path / "tiny.npy"), "--iterations", "1")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_bad_toml_writes_nothing(tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text('[fixed]\nattack = "dlg"\nbogus = 1\n')
    out = tmp_path / "out"
    proc = run_cli("run", str(toml), "--out", str(out))
    assert proc.returncode == 2 and "bogus" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (out / "results.jsonl").exists()


def test_list_names_every_registry():
    proc = run_cli("list", check_exit=0)
    for word in ("scenarios:", "encryptors:", "attacks:", "models:", "datasets:", "ckks", "idlg", "lenet", "faces"):
        assert word in proc.stdout


def test_table_prints_the_protection_table_of_recorded_results(tmp_path, capsys):
    rows = []
    for scenario, psnr, k in (("plain", 150.0, 1), ("he-train", 140.0, 1)):
        for i in range(3):
            rows.append({"scenario": scenario, "attack": "analytic", "success": True, "recovered": k, "batch": 1,
                         "config": {"scenario": scenario, "attack": "analytic", "index": i, "model": "mlp",
                                    "activation": "square"},
                         "sample_psnrs": {"keyless": [psnr], "prior": [12.0]}})  # fmt: skip
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["table", str(tmp_path)]) == 0
    folder = capsys.readouterr().out
    assert main(["table", str(tmp_path / "results.jsonl")]) == 0
    assert capsys.readouterr().out == folder
    assert "| plain | sees the gradient | does not stop | analytic | 3/3 (0.29–1.00) | 150.0 / 150.0 |" in folder
    assert "| he-train · mlp square, mse | sees the update | does not stop |" in folder and "Clopper–Pearson" in folder
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    assert main(["table", str(tmp_path)]) == 2 and "fewer than two protections" in capsys.readouterr().err
