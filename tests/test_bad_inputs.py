"""Issue 9's table of bad inputs: each one is refused before any work with exactly one line on stderr naming the
fix, exit code 2, no traceback and nothing written (sweep-level cases live in the experiment tests)."""

import numpy as np
import pytest

from he_leak.cli import main

A = ["attack", "--model", "mlp", "--hidden", "8", "--data", "digits"]


def _npz_negative_labels(tmp):
    path = tmp / "neg.npz"
    np.savez(path, x=np.zeros((2, 8, 8), np.float32), y=np.array([0, -1]))
    return str(path)


def _fake_png(tmp):
    path = tmp / "fake.png"
    path.write_text("not a png")
    return str(path)


def _int64(tmp):
    path = tmp / "int64.npy"
    np.save(path, np.arange(64, dtype=np.int64).reshape(8, 8))
    return str(path)


def _one_png(tmp):
    from PIL import Image

    path = tmp / "one.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    return str(path)


CASES = {
    "he poly_modulus_degree=abc": (A + ["--scenario", "ckks-input", "--he", "poly_modulus_degree=abc"],
                                   "poly_modulus_degree"),
    "he coeff_mod_bit_sizes=abc": (A + ["--scenario", "ckks-input", "--he", "coeff_mod_bit_sizes=abc"],
                                   "coeff_mod_bit_sizes"),
    "he unknown key": (A + ["--scenario", "ckks-input", "--he", "colour=red"], "colour"),
    "he insecure=true": (A + ["--scenario", "ckks-input", "--he", "insecure=true"], "--insecure"),
    "encryptor on plain": (A + ["--encryptor", "ckks"], "does not apply"),
    "he on plain": (A + ["--he", "poly_modulus_degree=8192"], "does not apply"),
    "ig lr -1": (A + ["--attack", "ig", "--lr", "-1"], "lr must be positive"),
    "lr nan": (A + ["--attack", "ig", "--lr", "nan"], "finite"),
    "tv negative": (A + ["--attack", "ig", "--tv", "-1"], "tv"),
    "noise negative": (A + ["--noise", "-0.1"], "noise"),
    "prune 1": (A + ["--prune", "1"], "prune"),
    "encrypt fraction 2": (A + ["--scenario", "he-aggregate", "--encrypt-fraction", "2"], "encrypt_fraction"),
    "unknown loss": (A + ["--loss", "hinge"], "unknown loss"),
    "he-train cross-entropy": (A + ["--scenario", "he-train", "--loss", "cross-entropy"], "cannot train"),
    "he-train sigmoid": (A + ["--scenario", "he-train", "--activation", "sigmoid"], "layer 2 (Sigmoid)"),
    "he-train lenet": (["attack", "--scenario", "he-train"], "layer body.0 (Conv2d): use --model mlp"),
    "flood bits on plain": (A + ["--flood-bits", "20"], "--flood-bits does not apply"),
    "flood bits 0": (A + ["--scenario", "he-train", "--flood-bits", "0"], "flood_bits must be at least 1"),
    "flood bits 53": (A + ["--scenario", "he-train", "--flood-bits", "53"], "at most 52"),
    "bad layer regex": (A + ["--scenario", "he-aggregate", "--encrypt-layers", "("], "regular expression"),
    "audit batch 0": (["audit", "--model", "mlp", "--batch", "0"], "batch"),
    "npz negative labels": (["attack", "--model", "mlp", "--data", _npz_negative_labels], "label"),
    "png that is not a png": (["attack", "--model", "mlp", "--data", _fake_png], "PNG"),
    "int64 array": (["attack", "--model", "mlp", "--data", _int64], "uint8"),
    "labels beyond classes": (A + ["--classes", "5"], "--classes"),
    "clients 2 on one image": (["attack", "--model", "mlp", "--data", _one_png, "--scenario", "he-aggregate",
                                "--clients", "2"], "--clients 2 × --batch 1 asks for 2 samples"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_one_line_exit_2_nothing_written(name, tmp_path, capsys):
    args, needle = CASES[name]
    args = [a(tmp_path) if callable(a) else a for a in args]
    out = tmp_path / "out"
    if args[0] == "attack":
        args = args + ["--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert "Traceback" not in err[0] and not out.exists()


def test_out_that_is_a_file_is_refused_before_the_attack(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(A + ["--attack", "dlg", "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err and target.read_text() == "x"
