"""The table of bad inputs (issue 9's rows, then issue 22's): each one is refused before any work with exactly one
line on stderr naming the fix, exit code 2, no traceback and nothing written. Issue 22's inputs whose documented
behaviour is not a refusal (capped workers, readability) are tests/test_input_behaviour.py's table; sweep-level cases
live in the experiment tests."""

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


def test_out_that_is_a_file_is_refused_before_the_attack(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(A + ["--attack", "dlg", "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err and target.read_text() == "x"


# ------------------------------------------------------------------------------------------------------ issue 22
# Every input issue 22 lists that must be refused: (arguments, a phrase of the one line, [a phrase it must not hold,
# a setup(tmp_path, monkeypatch)]). Attacks that would run on a build that accepts the input are cheap ones.
M = ["attack", "--model", "mlp", "--hidden", "8", "--data", "digits", "--attack", "analytic"]
AGG = M + ["--scenario", "he-aggregate"]
BENCH = ["bench", "--pairs", "1", "--methods", "analytic"]


def _toml(text):
    def make(tmp):
        path = tmp / "exp.toml"
        path.write_text(text)
        return str(path)

    return make


CHEAP = '[fixed]\nscenario = "plain"\nattack = "analytic"\nmodel = "mlp"\nhidden = [8]\n'


def _npy(shape, dtype=np.uint8):
    def make(tmp):
        path = tmp / "x.npy"
        np.save(path, np.zeros(shape, dtype))
        return str(path)

    return make


def _small_pixel_limit(tmp, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # an 8×8 PNG is then over twice Pillow's pixel limit


def _a_file(tmp):
    path = tmp / "afile"
    path.write_text("x")
    return str(path)


ISSUE22 = {
    # every option used by the chosen scenario / attack / model, or refused — also at its default value
    "role on plain, at its default": (M + ["--role", "server"], "--role does not apply to scenario plain"),
    "select on plain, at its default": (M + ["--select", "sensitivity"], "--select does not apply"),
    "fraction with encrypt-layers": (AGG + ["--encrypt-layers", r"^1\.", "--encrypt-fraction", "0.5"],
                                     "--encrypt-fraction does not apply with --encrypt-layers"),
    "select with everything encrypted": (AGG + ["--select", "random"], "--select"),
    "he backend with nothing encrypted": (AGG + ["--encrypt-fraction", "0", "--he-backend", "seal"],
                                          "--he-backend does not apply with --encrypt-fraction 0"),
    "he parameters with nothing encrypted": (AGG + ["--encrypt-fraction", "0", "--he", "poly_modulus_degree=8192"],
                                             "--he does not apply with --encrypt-fraction 0"),
    "tv with dlg": (M[:-1] + ["dlg", "--iterations", "1", "--tv", "0.1"], "--tv does not apply to attack dlg"),
    "lr with analytic": (M + ["--lr", "0.1"], "--lr does not apply to attack analytic"),
    "restarts with analytic": (M + ["--restarts", "3"], "--restarts does not apply to attack analytic"),
    "restarts 1 with analytic": (M + ["--restarts", "1"], "--restarts does not apply to attack analytic"),
    "hidden with lenet": (["attack", "--model", "lenet", "--attack", "analytic", "--hidden", "5"],
                          "--hidden does not apply to model lenet"),
    "width with mlp": (M + ["--width", "12"], "--width does not apply to model mlp"),
    "normalize with a built-in dataset": (M + ["--normalize"], "--normalize"),
    "hidden 32,,16": (M[:4] + ["32,,16"] + M[5:], "32,,16"),
    "seed beyond 64 bits": (M + ["--seed", "1180591620717411303424"], "seed"),
    "seed negative": (M + ["--seed", "-1"], "seed"),
    # output paths probed before the work
    "out in /proc": (M + ["--out", "/proc/he-leak-x"], "/proc/he-leak-x"),
    "out below a file": (M + ["--out", lambda t: _a_file(t) + "/sub"], "not a folder"),
    "out below /dev/null": (M + ["--out", "/dev/null/x"], "/dev/null is not a folder"),
    # errors that name the real cause
    "ckks N=3000": (M + ["--scenario", "ckks-input", "--he", "poly_modulus_degree=3000"], "power of two",
                    "insecure"),
    "ckks N=3000 insecure": (M + ["--scenario", "ckks-input", "--he", "poly_modulus_degree=3000", "--insecure"],
                             "power of two"),
    "he-aggregate N=2048": (AGG + ["--he", "poly_modulus_degree=2048"], "128-bit", "insecure"),
    "png over the pixel limit": (["attack", "--model", "mlp", "--attack", "analytic", "--data", _one_png],
                                 "pixel limit", None, _small_pixel_limit),
    "(4, 8, 8) npy: rgba or 4 images": (["attack", "--model", "mlp", "--attack", "analytic", "--data",
                                          _npy((4, 8, 8))], "--layout"),
    "index beyond a layout-read file": (["attack", "--model", "mlp", "--attack", "analytic", "--index", "2",
                                          "--data", _npy((3, 8, 8))], "--layout nhw"),
    "status of a file": (["status", _a_file], "is a file"),
    # resources: audit and bench through the memory estimate
    "audit hidden 2e9": (["audit", "--model", "mlp", "--hidden", "2000000000"], "would need about"),
    "audit batch 1e8": (["audit", "--model", "mlp", "--hidden", "8", "--batch", "100000000"], "would need about"),
    "audit width 0": (["audit", "--model", "convnet", "--width", "0"], "width"),
    "audit hidden with lenet": (["audit", "--model", "lenet", "--hidden", "5"], "--hidden does not apply"),
    "bench classes 1e8": (BENCH[:4] + ["dlg", "--classes", "100000000"], "would need about"),
    # bench options
    "bench methods ,": (["bench", "--methods", ","], "--methods"),
    "bench batched -1": (BENCH + ["--batched=-1"], "--batched"),
    "bench x-tol -1": (BENCH + ["--x-tol=-1"], "--x-tol"),
    "bench x-tol nan": (BENCH + ["--x-tol", "nan", "--json"], "--x-tol"),
    "bench rounds 0": (BENCH + ["--batched", "2", "--rounds", "0"], "--rounds"),
    # experiment files: types, ranges, duplicates, options at their default
    "toml seed string": (["run", _toml(CHEAP + '[[grid]]\nseed = ["7"]\n')], "seed must be an integer"),
    "toml seed float": (["run", _toml(CHEAP + "[[grid]]\nseed = [1e3]\n")], "seed must be an integer"),
    "toml seed 2**70": (["run", _toml(CHEAP + f"seed = {2**70}\n")], "seed"),
    "toml success_psnr -5": (["run", _toml(CHEAP + "success_psnr = -5.0\n")], "success_psnr"),
    "toml duplicate index": (["run", _toml(CHEAP + "[[grid]]\nindex = [0, 0, 0]\n")], "more than once"),
    "toml role on plain": (["run", _toml(CHEAP + 'role = "server"\n')], "--role does not apply"),
    "toml grid hidden with lenet": (["run", _toml(CHEAP + '[[grid]]\nmodel = ["mlp", "lenet"]\n')],
                                    "--hidden does not apply to model lenet"),
    "toml expect min nan": (["run", _toml(CHEAP + '[[expect]]\nmetric = "input_psnr"\nmin = nan\n')], "finite"),
    "run workers 0": (["run", _toml(CHEAP), "--workers", "0"], "--workers"),
}  # fmt: skip


TABLE = {**CASES, **ISSUE22}  # issue 9's rows and issue 22's, one test
assert len(TABLE) == len(CASES) + len(ISSUE22)  # no name in both


def _row(value):
    args, needle, *rest = value
    absent = rest[0] if rest else None
    setup = rest[1] if len(rest) > 1 else None
    return args, needle, absent, setup


@pytest.mark.parametrize("name", sorted(TABLE))
def test_bad_input_one_line_exit_2_nothing_written(name, tmp_path, capsys, monkeypatch):
    args, needle, absent, setup = _row(TABLE[name])
    if setup is not None:
        setup(tmp_path, monkeypatch)
    args = [a(tmp_path) if callable(a) else a for a in args]
    out = tmp_path / "out"
    if args[0] in ("attack", "run") and "--out" not in args:
        args = args + ["--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert absent is None or absent not in err[0], err
    assert "Traceback" not in err[0] and not out.exists() and not (tmp_path / "he-leak-x").exists()
