"""Shared machinery of the SEAL schemes (ckks, bfv): reproducible keys, chunking into ciphertexts, views, handles.

Keys and encryption noise come from the key holder's secret ``key_seed`` (a `he_leak.seeds.KeySeed`; see
`encryptors.seal_backend` for why each random draw gets its own seeded context); a public handle holds the public
key and its own encryption randomness (a public seed), nothing else. The security level is chosen once when the
parameters are (`SealContext`).
"""

from __future__ import annotations

import copy
import dataclasses
from abc import abstractmethod
from collections.abc import Sequence
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
from tenseal import sealapi

from encryptors import seal_format, tenseal_proto
from encryptors.base import Encryptor, MissingKeyError
from encryptors.seal_backend import Randomness, SealContext, SealParams, encrypt
from encryptors.seal_keys import KeySet
from encryptors.views import VIEWS, ResidueView
from he_leak.errors import CiphertextError, ConfigError, ParameterError
from he_leak.seeds import KeySeed, PublicSeed


class SealVector:
    """One ciphertext holding ``size`` values; ``serialize`` writes it the way TenSEAL writes a one-ciphertext
    vector (its SEAL ciphertext inside TenSEAL's protobuf message). Pickles as those bytes."""

    def __init__(self, context: SealContext, ciphertext: sealapi.Ciphertext, *, size: int, scale: float | None):
        self.context, self.ciphertext, self.size, self.scale = context, ciphertext, size, scale

    def seal_bytes(self) -> bytes:
        return self.context.save(self.ciphertext)

    def serialize(self) -> bytes:
        return tenseal_proto.encode(tenseal_proto.VectorProto((self.size,), (self.seal_bytes(),), self.scale))

    @classmethod
    def load(cls, context: SealContext, blob: bytes) -> SealVector:
        msg = tenseal_proto.decode(blob)
        if len(msg.ciphertexts) != 1:
            raise CiphertextError(f"expected one ciphertext per vector, got {len(msg.ciphertexts)}")
        cipher = context.load(sealapi.Ciphertext(), msg.ciphertexts[0])
        return cls(context, cipher, size=msg.sizes[0], scale=msg.scale)

    def __getstate__(self) -> dict[str, object]:
        return {"context": self.context, "blob": self.serialize()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(SealVector.load(state["context"], state["blob"]).__dict__)


Hidden = tuple[SealVector, ...]  # one vector per chunk of at most ``slots`` values


class SealEncryptor(Encryptor):
    """A SEAL scheme whose ciphertexts are viewed residue by residue (see ``encryptors.views``)."""

    has_public_key: ClassVar[bool] = True

    def __init__(self, *, n: int, key_seed: KeySeed, params: SealParams, view: str, insecure: bool) -> None:
        if view not in VIEWS:
            raise ConfigError(f"unknown ciphertext view {view!r}; known: {', '.join(VIEWS)}")
        self.n, self.view_kind = n, view
        self.context = SealContext(params, insecure=bool(insecure))
        self.keys = KeySet.generate(self.context, key_seed)
        self._randomness = Randomness(key_seed.child("encrypt"))
        try:
            zero = self._encode(np.zeros(min(n, self.slots)))
            probe = encrypt(self.context, self.keys.public, zero, key_seed.child("probe"))
        except (ValueError, RuntimeError) as err:  # SEAL refusing the parameters (e.g. scale beyond the primes)
            raise ParameterError(f"{self.name} parameters rejected by SEAL: {err}; {params.text()}") from err
        ct = seal_format.parse(self.context.save(probe))
        if list(ct.parms_id) != list(self.context.seal.first_parms_id()):
            raise ParameterError(f"fresh {self.name} ciphertexts are not at the first data level; {params.text()}")
        self.moduli: tuple[int, ...] = self.context.data_primes
        self._template = dataclasses.replace(ct, data=np.zeros((0,), dtype=np.uint64))  # metadata only
        self._codec = ResidueView(self.view_kind, self.moduli, ct.size, ct.poly_modulus_degree)
        self.view_quantum = 1.0 / 255.0 if self.view_kind == "bytes" else None

    # --- scheme-specific hooks -------------------------------------------------------------------------------
    @property
    @abstractmethod
    def slots(self) -> int:
        """Plaintext values per ciphertext."""

    @abstractmethod
    def _encode(self, chunk: np.ndarray) -> sealapi.Plaintext: ...

    @abstractmethod
    def _decode(self, plain: sealapi.Plaintext, size: int) -> np.ndarray: ...

    @property
    def _scale(self) -> float | None:
        """CKKS scale recorded with each vector (None for BFV)."""
        return None

    # --- shared machinery ------------------------------------------------------------------------------------
    @property
    def params(self) -> SealParams:
        return self.context.params

    @property
    def chunk_sizes(self) -> tuple[int, ...]:
        full, rest = divmod(self.n, self.slots)
        return (self.slots,) * full + ((rest,) if rest else ())

    @property
    def view_size(self) -> int:
        return self._codec.length * len(self.chunk_sizes)

    def encrypt(self, x: np.ndarray) -> Hidden:
        x = self._plaintext(x)
        out, start = [], 0
        for size in self.chunk_sizes:
            chunk = x[start : start + size]
            seed = self._randomness.next(chunk.tobytes())
            cipher = encrypt(self.context, self.keys.public, self._encode(chunk), seed)
            out.append(SealVector(self.context, cipher, size=size, scale=self._scale))
            start += size
        return tuple(out)

    def _check_hidden(self, hidden: Hidden) -> None:
        if not isinstance(hidden, tuple) or len(hidden) != len(self.chunk_sizes):
            raise CiphertextError(
                f"expected a tuple of {len(self.chunk_sizes)} {self.name} vectors, got {hidden!r:.80}"
            )

    @cached_property
    def _decryptor(self) -> sealapi.Decryptor:
        if self.keys.secret is None:
            raise MissingKeyError(f"this {self.name} handle is public (no secret key); decrypt with the key holder's")
        return sealapi.Decryptor(self.context.seal, self.keys.secret)

    def decrypt(self, hidden: Hidden) -> np.ndarray:
        self._check_hidden(hidden)
        parts = []
        for vec in hidden:
            plain = sealapi.Plaintext()
            self._decryptor.decrypt(vec.ciphertext, plain)
            parts.append(self._decode(plain, vec.size))
        return np.concatenate(parts).astype(np.float64)

    def view(self, hidden: Hidden) -> np.ndarray:
        self._check_hidden(hidden)
        parts = []
        t = self._template
        for vec in hidden:
            ct = seal_format.parse(vec.seal_bytes())
            if (ct.parms_id, ct.size, ct.is_ntt_form) != (t.parms_id, t.size, t.is_ntt_form):
                raise CiphertextError("ciphertext is not fresh (different level, size or form); it has no view")
            parts.append(self._codec.encode(ct.data))
        return np.concatenate(parts)

    def unview(self, v: np.ndarray) -> Hidden:
        arr = self._view_vector(v)
        per = self._codec.length
        out = []
        for i, size in enumerate(self.chunk_sizes):
            ct = dataclasses.replace(self._template, data=self._codec.decode(arr[i * per : (i + 1) * per]))
            seal_format.check_residues(ct, self.moduli)
            cipher = self.context.load(sealapi.Ciphertext(), seal_format.dump(ct, compress=False))
            out.append(SealVector(self.context, cipher, size=size, scale=self._scale))
        return tuple(out)

    def load_vector(self, blob: bytes) -> SealVector:
        """A vector from ``SealVector.serialize()`` bytes (SEAL validates it against the parameters)."""
        return SealVector.load(self.context, blob)

    def public(self, *, seed: PublicSeed | int) -> SealEncryptor:
        handle = copy.copy(self)
        handle.__dict__.pop("_decryptor", None)  # bound to the owner's secret key
        handle.keys = self.keys.without_secret()
        handle._randomness = Randomness(PublicSeed.coerce(seed, f"{self.name} public handle").child("encrypt"))
        return handle

    @property
    def is_public(self) -> bool:
        return self.keys.secret is None

    def public_key_bytes(self) -> int:
        return len(self.context.save(self.keys.public))

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_decryptor", "_encoder")}  # SEAL objects

    def describe(self) -> dict[str, object]:
        return {
            "encryptor": self.name,
            "n": self.n,
            "poly_modulus_degree": self.params.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.params.coeff_mod_bit_sizes),
            **self._extra_params(),
            "view": self.view_kind,
            "insecure": not self.params.within_table,
            "security": self.context.security,
            "precision": self.precision,
            "ciphertexts": len(self.chunk_sizes),
            "view_size": self.view_size,
            "public": self.is_public,
        }

    def _extra_params(self) -> dict[str, object]:
        return {}


def bit_sizes(values: Sequence[int]) -> tuple[int, ...]:
    """Coefficient-modulus bit sizes as a tuple of ints (ConfigError on anything else)."""
    try:
        return tuple(int(b) for b in values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"coeff_mod_bit_sizes must be a list of integers, got {values!r}") from err
