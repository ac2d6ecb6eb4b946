"""CKKS gradient packing (NVFlare's parameters): packed sums against numpy, a server without the secret key,
reproducible bytes, sizes and errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from encryptors.packing import GradientPacker, Packed, PackingParams
from he_leak.errors import CiphertextError, ConfigError, ParameterError
from he_leak.seeds import KeySeed

KEY_SEED = KeySeed.from_hex("77" * 32)  # test secrets
OTHER_KEY = KeySeed.from_hex("78" * 32)
LENGTH = 3 * 4096 + 17  # four ciphertexts at N=8192
CLIENTS = 4
# Tolerance: GradientPacker.error_bound(total) = (Σ|w_k| + K)·precision, precision = 4·N/scale = 3e-8. Measured
# |decrypt − numpy| of K summed fresh encryptions: 0.31, 0.72, 1.09 precision units at K = 1, 4, 16 (unweighted;
# weighted by uniform [0,1) weights: 0.37, 0.70, 1.27), against bounds of 2, 8 and 32 units (unweighted).


@pytest.fixture(scope="module")
def packer() -> GradientPacker:
    return GradientPacker(key_seed=KEY_SEED)


@pytest.fixture(scope="module")
def grads() -> np.ndarray:
    return np.random.default_rng(0).normal(scale=0.1, size=(CLIENTS, LENGTH))


def test_nvflare_defaults_and_round_trip(packer: GradientPacker, grads: np.ndarray) -> None:
    assert packer.describe() == {
        "poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [60, 40, 40], "scale": 2.0**40, "security": "128-bit",
    }  # fmt: skip
    packed = packer.encrypt(grads[0])
    assert len(packed.ciphertexts) == packer.ciphertexts_for(LENGTH) == 4
    out = packer.decrypt(packed)
    assert out.shape == (LENGTH,) and out.dtype == np.float64
    assert np.abs(out - grads[0]).max() <= packer.precision


def test_server_sum_matches_numpy(packer: GradientPacker, grads: np.ndarray) -> None:
    server = packer.server()
    sent = [pickle.loads(pickle.dumps(packer.encrypt(g))) for g in grads]  # what travels to the server
    total = server.sum(sent)
    error = np.abs(packer.decrypt(total) - grads.sum(0)).max()
    assert error <= packer.error_bound(total) == 2 * CLIENTS * packer.precision


def test_weighted_server_sum_matches_numpy(packer: GradientPacker, grads: np.ndarray) -> None:
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    total = packer.server().sum([packer.encrypt(g) for g in grads], weights=weights)
    assert np.abs(packer.decrypt(total) - weights @ grads).max() <= packer.error_bound(total)


def test_server_holds_no_secret_key(packer: GradientPacker) -> None:
    server = packer.server()
    blob = pickle.dumps(server.keys) + pickle.dumps(server.context)
    secret = packer.context.save(packer.keys.secret)
    assert server.keys.secret is None and not hasattr(server, "decrypt")
    assert all(secret[i : i + 32] not in blob for i in (64, len(secret) // 2))
    assert secret[64:96] in pickle.dumps(packer.keys)  # where the key is, the search finds it


def test_same_key_seed_same_bytes(packer: GradientPacker, grads: np.ndarray) -> None:
    def blobs(p: GradientPacker) -> list[bytes]:
        return [p.context.save(c) for c in p.encrypt(grads[1]).ciphertexts]

    twin, other = GradientPacker(key_seed=KEY_SEED), GradientPacker(key_seed=OTHER_KEY)
    assert blobs(twin) == blobs(GradientPacker(key_seed=KEY_SEED))
    assert blobs(twin) != blobs(other)
    assert blobs(twin) != blobs(twin)  # the second encryption of the same vector has fresh randomness


def test_bytes_sent(packer: GradientPacker, grads: np.ndarray) -> None:
    """Two polynomials per ciphertext over the 60- and 40-bit data primes: zstd brings the 8-byte words towards
    their bit widths, (60 + 40)/8 bytes per coefficient pair (measured ~235 kB per ciphertext)."""
    packed = packer.encrypt(grads[0])
    per_ciphertext = packed.nbytes / len(packed.ciphertexts)
    assert (60 + 40) / 8 * 2 * 8192 < per_ciphertext < 2 * 2 * 8192 * 8 + 200  # + SEAL headers


def test_bad_input_is_refused(packer: GradientPacker, grads: np.ndarray) -> None:
    server = packer.server()
    a, b = packer.encrypt(grads[0]), packer.encrypt(grads[0][:100])
    with pytest.raises(CiphertextError, match="equal lengths"):
        server.sum([a, b])
    with pytest.raises(ConfigError, match="weights"):
        server.sum([a, a], weights=[1.0])
    with pytest.raises(ConfigError, match="at least one"):
        server.sum([])
    with pytest.raises(ConfigError, match="finite"):
        packer.encrypt(np.array([1.0, np.nan]))
    with pytest.raises(ParameterError, match="128-bit"):
        GradientPacker(PackingParams(coeff_mod_bit_sizes=(60, 60, 60, 60)), key_seed=KEY_SEED)
    short = GradientPacker(PackingParams(coeff_mod_bit_sizes=(60, 40)), key_seed=KEY_SEED)
    with pytest.raises(ParameterError, match="one more prime"):
        short.server().sum([short.encrypt(grads[0][:10])], weights=[0.5])
    assert isinstance(a, Packed)
