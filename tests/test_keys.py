"""The key holder's secret: KeySeed (>= 128 bits, never from an int), where it comes from (fresh, --key-seed, a sweep's
folder secret), replay with the same secret, and fresh ciphertexts with another (tests/test_key_secrecy.py plays
the attacker)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from stubs import rows_by_config, write

from encryptors import make_encryptor
from encryptors.circuit import CkksCircuit, plan_circuit
from encryptors.circuit_eval import CkksEvaluator
from encryptors.packing import GradientPacker
from encryptors.seal_backend import SealContext, SealParams
from encryptors.seal_keys import KeySet
from he_leak.cli import main
from he_leak.config import RunConfig
from he_leak.errors import ConfigError
from he_leak.runner import prepare
from he_leak.scenarios import SCENARIOS
from he_leak.seeds import KeySeed, PublicSeed
from he_leak.sweep.driver import run_experiment
from he_leak.sweep.store import KEY_FILE, RUNS_DIR

HEX = "3c" * 32
KEY, OTHER = KeySeed.from_hex(HEX), KeySeed.from_hex("c3" * 32)
CKKS = dict(scenario="ckks-input", encryptor="ckks", model="mlp", hidden=(8,), data="digits", attack="analytic")
SWEEP = """
name = "keys"
[fixed]
scenario = "ckks-input"
attack = "analytic"
model = "mlp"
hidden = [8]
data = "digits"
[[grid]]
index = [0, 1]
"""


# --------------------------------------------------------------------------------------------- the type
def test_a_fresh_key_seed_is_256_bits_of_os_randomness_and_its_repr_hides_it() -> None:
    a, b = KeySeed.fresh(), KeySeed.fresh()
    assert len(a.material) == 32 and a != b and a.source == "os"
    assert a.hex() not in repr(a) and repr(a) == "KeySeed(source='os')"


def test_children_are_deterministic_independent_and_full_width() -> None:
    assert KEY.child("secret") == KeySeed.from_hex(HEX).child("secret") != KEY.child("public")
    assert KEY.child("secret") != OTHER.child("secret") and len(KEY.child("x").material) == 32
    words = KEY.prng_words()
    assert len(words) == 8 and len(set(words)) == 8 and all(0 <= w < 2**64 for w in words)
    assert max(words).bit_length() > 60  # 64-bit words, not small numbers


@pytest.mark.parametrize("text, needle", [("ab" * 15, "at least 32 hex digits"), ("zz" * 32, "not a hex string"),
                                          ("", "at least 32 hex digits")])  # fmt: skip
def test_a_short_or_malformed_secret_is_one_line_naming_the_fix(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as err:
        KeySeed.from_hex(text)
    assert "\n" not in str(err.value) and "secrets.token_hex(32)" in str(err.value)
    assert KeySeed.from_hex("ab" * 16).source == "given"  # 128 bits is enough


def test_nothing_maps_an_int_to_a_key_seed() -> None:
    plan = plan_circuit(depth=1, slots=8, scale_bits=30, first_bits=40, special_bits=30)
    context = SealContext(SealParams("ckks", 4096, (40, 20, 40)), insecure=False)
    for build in (lambda: KeySeed(12345), lambda: make_encryptor("ckks", n=4, key_seed=12345),
                  lambda: make_encryptor("permute", n=4, key_seed=12345), lambda: GradientPacker(key_seed=12345),
                  lambda: CkksCircuit(plan, key_seed=12345), lambda: KeySet.generate(context, 12345),
                  lambda: SCENARIOS["ckks-input"](RunConfig(**CKKS), key_seed=12345),
                  lambda: make_encryptor("ckks", n=4, key_seed=PublicSeed(12345))):  # fmt: skip
        with pytest.raises(TypeError, match="KeySeed"):
            build()


def test_a_key_seed_never_goes_to_the_attackers_side() -> None:
    enc = make_encryptor("ckks", n=4, key_seed=KEY)
    packer = GradientPacker(key_seed=KEY)
    with pytest.raises(TypeError, match="never goes to the attacker"):
        enc.public(seed=KEY)
    with pytest.raises(TypeError, match="never goes to the attacker"):
        CkksEvaluator(packer.context, packer.keys.without_secret(), [], seed=KEY)


# --------------------------------------------------------------------------------------------- one run
def test_same_secret_same_ciphertexts_another_secret_fresh_ones() -> None:
    cfg = RunConfig(**CKKS, batch=2)
    views = [prepare(cfg, key_seed=k).truth.inputs.numpy() for k in (KEY, KEY, OTHER, None)]
    np.testing.assert_array_equal(views[0], views[1])
    assert not np.array_equal(views[0], views[2]) and not np.array_equal(views[0], views[3])


def _attack(capsys, *extra: str) -> dict:
    args = ["attack", "--scenario", "ckks-input", "--attack", "analytic", "--model", "mlp", "--hidden", "8", "--json"]
    assert main([*args, *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _without_seconds(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.endswith("seconds")}


def test_key_seed_option_replays_a_run_byte_for_byte(capsys) -> None:
    a, b, fresh = _attack(capsys, "--key-seed", HEX), _attack(capsys, "--key-seed", HEX), _attack(capsys)
    assert json.dumps(_without_seconds(a), sort_keys=True) == json.dumps(_without_seconds(b), sort_keys=True)
    assert a["key_source"] == "given" and fresh["key_source"] == "os"
    assert HEX not in json.dumps(a) and "key_seed" not in a["config"]
    assert a["key_plaintext_psnr"] != fresh["key_plaintext_psnr"]  # the decryption noise is the key's


def test_a_short_key_seed_option_is_one_line_and_exit_2(capsys) -> None:
    assert main(["attack", "--key-seed", "abc123"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--key-seed: 24 bits is too short" in err[0]


# --------------------------------------------------------------------------------------------- a sweep
def _view_panels(out: Path) -> list[np.ndarray]:
    return [np.load(p)["view"] for p in sorted((out / RUNS_DIR).glob("*.npz"))]


def test_a_sweep_keeps_its_secret_in_its_folder_and_replays_with_it(tmp_path: Path) -> None:
    grid = write(tmp_path, SWEEP)
    out, pooled, other = tmp_path / "out", tmp_path / "pooled", tmp_path / "other"
    run_experiment(grid, out, limit=1, quiet=True)  # stopped after one run ...
    secret = (out / KEY_FILE).read_text()
    assert stat.S_IMODE(os.stat(out / KEY_FILE).st_mode) == 0o600 and len(secret.strip()) == 64
    run_experiment(grid, out, quiet=True)  # ... and resumed: the same secret
    resumed, views = rows_by_config(out), _view_panels(out)
    assert len(resumed) == 2 and all(r["key_source"] == "sweep" for r in resumed.values())
    for name in os.listdir(out):
        if name != KEY_FILE and (out / name).is_file():
            assert secret.strip() not in (out / name).read_text(errors="replace"), name
    pooled.mkdir()
    (pooled / KEY_FILE).write_text(secret)  # the folder's secret again, both runs from scratch in a pool of workers
    run_experiment(grid, pooled, workers=2, quiet=True)
    assert rows_by_config(pooled) == resumed
    np.testing.assert_array_equal(np.concatenate(views), np.concatenate(_view_panels(pooled)))
    run_experiment(grid, other, limit=1, quiet=True)  # another folder: another secret, another ciphertext
    assert (other / KEY_FILE).read_text() != secret
    (mine,) = [r for r in rows_by_config(other).values()]
    (theirs,) = [r for r in resumed.values() if r["config"] == mine["config"]]
    assert mine["key_plaintext_psnr"] != theirs["key_plaintext_psnr"]
    assert not any(np.array_equal(_view_panels(other)[0], v) for v in views)
