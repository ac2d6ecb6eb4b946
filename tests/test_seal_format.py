"""SEAL ciphertext reader/writer: round trips through SEAL's own loader, and corrupt input is a CiphertextError."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from encryptors import make_encryptor, seal_format, tenseal_proto
from encryptors.he import SealEncryptor
from he_leak.errors import CiphertextError
from he_leak.seeds import KeySeed

N_VALUES = 100


@pytest.fixture(scope="module", params=["ckks", "bfv"])
def enc(request: pytest.FixtureRequest) -> SealEncryptor:
    return make_encryptor(request.param, n=N_VALUES, key_seed=KeySeed.from_hex("5e" * 32))  # a test secret


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(3).random(N_VALUES)


@pytest.fixture(scope="module")
def sealed(enc: SealEncryptor, x: np.ndarray) -> tuple[tenseal_proto.VectorProto, bytes]:
    """One encrypted vector serialised as TenSEAL serialises vectors, and its SEAL ciphertext blob (zstd, by SEAL)."""
    msg = tenseal_proto.decode(enc.encrypt(x)[0].serialize())
    return msg, msg.ciphertexts[0]


def _load(enc: SealEncryptor, msg: tenseal_proto.VectorProto, blob: bytes) -> np.ndarray:
    """Decrypt ``blob`` after SEAL itself loaded it (through the TenSEAL vector message)."""
    vec = enc.load_vector(tenseal_proto.encode(tenseal_proto.VectorProto(msg.sizes, (blob,), msg.scale)))
    return enc.decrypt((vec,))


def test_header_and_members_match_the_parameters(enc: SealEncryptor, sealed: tuple) -> None:
    _, blob = sealed
    magic, hsize, major, _, mode, reserved, total = struct.unpack_from("<HBBBBHQ", blob)
    assert (magic, hsize, major, mode, reserved, total) == (0xA15E, 16, 4, 2, 0, len(blob))
    ct = seal_format.parse(blob)
    assert ct.size == 2 and ct.poly_modulus_degree == 4096 and ct.coeff_modulus_size == len(enc.moduli)
    assert ct.data.shape == (2, len(enc.moduli), 4096) and ct.data.dtype == np.uint64
    assert ct.is_ntt_form == (enc.name == "ckks")  # CKKS ciphertexts are stored in NTT form, BFV ones are not
    assert ct.correction_factor == 1
    seal_format.check_residues(ct, enc.moduli)  # polynomial-major order: every prime's row is below that prime
    assert all(int(ct.data[:, j].max()) > q // 2 for j, q in enumerate(enc.moduli))  # residues fill [0, q_j)


@pytest.mark.parametrize("compress", [False, True])
def test_parse_dump_load_decrypts_the_same(enc: SealEncryptor, sealed: tuple, x: np.ndarray, compress: bool) -> None:
    msg, blob = sealed
    ct = seal_format.parse(blob)
    again = seal_format.dump(ct, compress=compress)
    np.testing.assert_array_equal(_load(enc, msg, again), _load(enc, msg, blob))
    np.testing.assert_array_equal(seal_format.parse(again).data, ct.data)
    if not compress:
        assert len(again) == 16 + 73 + 16 + 8 + 8 * ct.data.size


def test_parse_dump_is_a_fixed_point(sealed: tuple) -> None:
    _, blob = sealed
    once = seal_format.dump(seal_format.parse(blob), compress=False)
    assert seal_format.dump(seal_format.parse(once), compress=False) == once


def test_modified_residue_changes_the_decryption(enc: SealEncryptor, sealed: tuple, x: np.ndarray) -> None:
    msg, blob = sealed
    ct = seal_format.parse(blob)
    data = ct.data.copy()
    data[1, 0, :] = (data[1, 0, :] + np.uint64(12345)) % np.uint64(enc.moduli[0])
    tampered = seal_format.dump(seal_format.SealCiphertext(**{**ct.__dict__, "data": data}), compress=False)
    assert np.abs(_load(enc, msg, tampered) - _load(enc, msg, blob)).max() > 1e-3


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b[:10], "truncated"),
        (lambda b: b"\x00\x00" + b[2:], "magic"),
        (lambda b: b + b"\x00" * 7, "trailing garbage"),
        (lambda b: b[:5] + b"\x07" + b[6:], "header"),  # compression mode 7
    ],
)
def test_corrupt_blobs_are_ciphertext_errors(sealed: tuple, corrupt, match: str) -> None:
    _, blob = sealed
    with pytest.raises(CiphertextError, match=match):
        seal_format.parse(corrupt(blob))


def _uncompressed(sealed: tuple) -> bytearray:
    return bytearray(seal_format.dump(seal_format.parse(sealed[1]), compress=False))


def test_uncompressed_body_corruption_is_caught(sealed: tuple) -> None:
    blob = _uncompressed(sealed)
    bad_size = blob.copy()
    struct.pack_into("<Q", bad_size, 16 + 33, 3)  # ciphertext size 2 -> 3: array too short
    with pytest.raises(CiphertextError, match="coefficient array"):
        seal_format.parse(bytes(bad_size))
    bad_degree = blob.copy()
    struct.pack_into("<Q", bad_degree, 16 + 41, 4095)  # N not a power of two
    with pytest.raises(CiphertextError, match="implausible"):
        seal_format.parse(bytes(bad_degree))
    bad_count = blob.copy()
    struct.pack_into("<Q", bad_count, 16 + 73 + 16, 7)
    with pytest.raises(CiphertextError, match="count"):
        seal_format.parse(bytes(bad_count))


def test_garbled_zstd_is_caught(sealed: tuple) -> None:
    _, blob = sealed
    garbled = blob[:16] + bytes(len(blob) - 16)
    with pytest.raises(CiphertextError, match="decompress"):
        seal_format.parse(garbled)


def test_residue_not_below_prime_is_rejected(enc: SealEncryptor, sealed: tuple) -> None:
    ct = seal_format.parse(sealed[1])
    data = ct.data.copy()
    data[0, -1, 17] = enc.moduli[-1]
    with pytest.raises(CiphertextError, match=r"polynomial 0, prime 1 .* coefficient 17"):
        seal_format.check_residues(seal_format.SealCiphertext(**{**ct.__dict__, "data": data}), enc.moduli)
    with pytest.raises(CiphertextError, match="primes"):
        seal_format.check_residues(ct, enc.moduli[:1])


def test_tenseal_message_round_trip_and_corruption(sealed: tuple) -> None:
    msg, _ = sealed
    assert tenseal_proto.decode(tenseal_proto.encode(msg)) == msg
    with pytest.raises(CiphertextError, match="truncated"):
        tenseal_proto.decode(tenseal_proto.encode(msg)[:-20])
    with pytest.raises(CiphertextError, match="unexpected field"):
        tenseal_proto.decode(b"\x28\x01")
