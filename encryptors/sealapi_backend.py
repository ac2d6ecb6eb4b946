"""CKKS and BFV directly on SEAL (TenSEAL's `sealapi`), for `insecure = true` parameters TenSEAL itself refuses.

TenSEAL always builds its SEAL context at 128-bit security, so parameters beyond the HomomorphicEncryption.org
table can only be had through SEAL with security level NONE. These small classes mimic the parts of a TenSEAL
context and vector that `encryptors.he.SealEncryptor` uses (has_secret_key, secret_key, serialize), so views,
unviews, public handles and pickling work unchanged. Keys travel as SEAL's own key files.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tenseal import sealapi

from encryptors import tenseal_proto

_TMP = "/dev/shm" if Path("/dev/shm").is_dir() else None


def _save(obj) -> bytes:
    with tempfile.NamedTemporaryFile(dir=_TMP) as f:
        obj.save(f.name)
        return Path(f.name).read_bytes()


def _load(obj, context: sealapi.SEALContext, blob: bytes):
    with tempfile.NamedTemporaryFile(dir=_TMP) as f:
        f.write(blob)
        f.flush()
        obj.load(context, f.name)
    return obj


def _seal_context(poly_modulus_degree: int, bit_sizes: Sequence[int], plain_modulus: int | None):
    scheme = sealapi.SCHEME_TYPE.CKKS if plain_modulus is None else sealapi.SCHEME_TYPE.BFV
    params = sealapi.EncryptionParameters(scheme)
    params.set_poly_modulus_degree(poly_modulus_degree)
    params.set_coeff_modulus(sealapi.CoeffModulus.Create(poly_modulus_degree, list(bit_sizes)))
    if plain_modulus is not None:
        params.set_plain_modulus(plain_modulus)
    context = sealapi.SEALContext(params, True, sealapi.SEC_LEVEL_TYPE.NONE)
    if not context.parameters_set():
        raise ValueError("SEAL rejects these parameters even without a security level")
    return context


class SealapiContext:
    """A key set on SEAL with no security check (CKKS, or BFV when `plain_modulus` is given): public key always,
    secret key for the owner."""

    def __init__(
        self, poly_modulus_degree: int, bit_sizes: Sequence[int], plain_modulus: int | None = None, *,
        keys: dict | None = None,
    ) -> None:  # fmt: skip
        self.poly_modulus_degree, self.bit_sizes, self.plain_modulus = (
            poly_modulus_degree,
            list(bit_sizes),
            plain_modulus,
        )
        self.seal = _seal_context(poly_modulus_degree, self.bit_sizes, plain_modulus)
        if keys is None:
            gen = sealapi.KeyGenerator(self.seal)
            self.public_key = sealapi.PublicKey()
            gen.create_public_key(self.public_key)
            self._secret = gen.secret_key()
        else:
            self.public_key = _load(sealapi.PublicKey(), self.seal, keys["public"])
            secret = keys.get("secret")
            self._secret = None if secret is None else _load(sealapi.SecretKey(), self.seal, secret)
        self.encoder = (sealapi.CKKSEncoder if plain_modulus is None else sealapi.BatchEncoder)(self.seal)
        self.encryptor = sealapi.Encryptor(self.seal, self.public_key)

    def has_secret_key(self) -> bool:
        return self._secret is not None

    def secret_key(self) -> sealapi.SecretKey:
        return self._secret

    def serialize(self, *, save_secret_key: bool, **_: bool) -> bytes:
        keys = {"public": _save(self.public_key)}
        if save_secret_key and self._secret is not None:
            keys["secret"] = _save(self._secret)
        return pickle.dumps((self.poly_modulus_degree, self.bit_sizes, self.plain_modulus, keys))

    @classmethod
    def from_bytes(cls, blob: bytes) -> SealapiContext:
        n, bits, plain_modulus, keys = pickle.loads(blob)  # our own key files, never user input
        return cls(n, bits, plain_modulus, keys=keys)


class SealapiVector:
    """One ciphertext holding `size` values, serialised the way TenSEAL serialises its vectors."""

    def __init__(self, ciphertext: sealapi.Ciphertext, *, size: int, scale: float | None) -> None:
        self.ciphertext, self.size, self.scale = ciphertext, size, scale

    def serialize(self) -> bytes:
        blob = _save(self.ciphertext)
        return tenseal_proto.encode(tenseal_proto.VectorProto((self.size,), (blob,), self.scale))


def encrypt(context: SealapiContext, values: np.ndarray, scale: float | None) -> SealapiVector:
    """CKKS: float values at `scale`; BFV (scale None): integer values."""
    plain = sealapi.Plaintext()
    if scale is None:
        context.encoder.encode(np.asarray(values, np.int64).tolist(), plain)
    else:
        context.encoder.encode(np.asarray(values, np.float64).tolist(), scale, plain)
    cipher = sealapi.Ciphertext()
    context.encryptor.encrypt(plain, cipher)
    return SealapiVector(cipher, size=len(values), scale=scale)


def decrypt(context: SealapiContext, vec: SealapiVector, secret_key: sealapi.SecretKey) -> np.ndarray:
    plain = sealapi.Plaintext()
    sealapi.Decryptor(context.seal, secret_key).decrypt(vec.ciphertext, plain)
    decode = context.encoder.decode_int64 if vec.scale is None else context.encoder.decode_double
    return np.asarray(decode(plain), np.float64)[: vec.size]


def load_vector(context: SealapiContext, blob: bytes) -> SealapiVector:
    msg = tenseal_proto.decode(blob)
    cipher = _load(sealapi.Ciphertext(), context.seal, msg.ciphertexts[0])
    return SealapiVector(cipher, size=msg.sizes[0], scale=msg.scale)
