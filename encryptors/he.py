"""Shared machinery of the TenSEAL schemes: security check, chunking into ciphertexts, views, public handles.

Key generation uses TenSEAL's OS randomness, so ``seed`` does not make HE keys reproducible (only recorded).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import tenseal as ts
from tenseal import sealapi

from encryptors import seal_format, tenseal_proto
from encryptors.base import Encryptor, MissingKeyError
from encryptors.security import check_security
from encryptors.views import VIEWS, ResidueView
from he_leak.errors import CiphertextError, ConfigError, ParameterError

Hidden = tuple[Any, ...]  # one TenSEAL vector per chunk of at most ``slots`` values


class SealEncryptor(Encryptor):
    """A TenSEAL vector scheme whose ciphertexts are viewed residue by residue (see ``encryptors.views``)."""

    has_public_key: ClassVar[bool] = True
    scheme: ClassVar[Any]

    def __init__(
        self,
        *,
        n: int,
        seed: int,
        poly_modulus_degree: int,
        coeff_mod_bit_sizes: Sequence[int],
        view: str,
        insecure: bool,
    ) -> None:
        if view not in VIEWS:
            raise ConfigError(f"unknown ciphertext view {view!r}; known: {', '.join(VIEWS)}")
        self.n, self.seed, self.view_kind, self.insecure = n, seed, view, bool(insecure)
        self.poly_modulus_degree = int(poly_modulus_degree)
        self.coeff_mod_bit_sizes = [int(b) for b in coeff_mod_bit_sizes]
        check_security(
            poly_modulus_degree=self.poly_modulus_degree, bit_sizes=self.coeff_mod_bit_sizes, insecure=self.insecure
        )
        try:
            self._ctx = self._make_context()
            probe = self._encrypt_chunk(np.zeros(min(n, self.slots)))
        except (ValueError, RuntimeError) as err:  # SEAL/TenSEAL refusing the parameters
            raise ParameterError(f"{self.name} parameters rejected by SEAL: {err}; {self._param_text()}") from err
        self._layout(probe)
        self.view_quantum = 1.0 / 255.0 if self.view_kind == "bytes" else None

    # --- scheme-specific hooks -------------------------------------------------------------------------------
    @property
    @abstractmethod
    def slots(self) -> int:
        """Plaintext values per ciphertext."""

    @abstractmethod
    def _make_context(self) -> ts.Context: ...

    @abstractmethod
    def _encrypt_chunk(self, chunk: np.ndarray) -> Any: ...

    @abstractmethod
    def _decrypt_chunk(self, vec: Any, secret_key: Any) -> np.ndarray: ...

    @abstractmethod
    def _load_vector(self, blob: bytes) -> Any: ...

    @abstractmethod
    def _sealapi_params(self) -> sealapi.EncryptionParameters: ...

    # --- shared machinery ------------------------------------------------------------------------------------
    def _param_text(self) -> str:
        return f"poly_modulus_degree={self.poly_modulus_degree}, coeff_mod_bit_sizes={self.coeff_mod_bit_sizes}"

    @property
    def chunk_sizes(self) -> tuple[int, ...]:
        full, rest = divmod(self.n, self.slots)
        return (self.slots,) * full + ((rest,) if rest else ())

    def _layout(self, probe: Any) -> None:
        """Record the ciphertext template (metadata kept from the public side) and the primes q_j."""
        msg = tenseal_proto.decode(probe.serialize())
        ct = seal_format.parse(msg.ciphertexts[0])
        context = sealapi.SEALContext(self._sealapi_params(), True, sealapi.SEC_LEVEL_TYPE.NONE)
        if list(ct.parms_id) != list(context.first_parms_id()):
            raise ParameterError(f"cannot reproduce TenSEAL's moduli for {self._param_text()}")
        primes = [m.value() for m in context.first_context_data().parms().coeff_modulus()]
        self.moduli: tuple[int, ...] = tuple(primes[: ct.coeff_modulus_size])
        # metadata only: data is kept empty and replaced on unview
        self._template = dataclasses.replace(ct, data=np.zeros((0,), dtype=np.uint64))
        self._scale = msg.scale
        self._codec = ResidueView(self.view_kind, self.moduli, ct.size, ct.poly_modulus_degree)

    @property
    def view_size(self) -> int:
        return self._codec.length * len(self.chunk_sizes)

    def encrypt(self, x: np.ndarray) -> Hidden:
        x = self._plaintext(x)
        bounds = np.cumsum((0,) + self.chunk_sizes)
        return tuple(self._encrypt_chunk(x[a:b]) for a, b in itertools.pairwise(bounds))

    def _check_hidden(self, hidden: Hidden) -> None:
        if not isinstance(hidden, tuple) or len(hidden) != len(self.chunk_sizes):
            raise CiphertextError(
                f"expected a tuple of {len(self.chunk_sizes)} {self.name} vectors, got {hidden!r:.80}"
            )

    def decrypt(self, hidden: Hidden) -> np.ndarray:
        self._check_hidden(hidden)
        if not self._ctx.has_secret_key():
            raise MissingKeyError(f"this {self.name} handle is public (no secret key); decrypt with the key holder's")
        sk = self._ctx.secret_key()
        return np.concatenate([self._decrypt_chunk(vec, sk) for vec in hidden]).astype(np.float64)

    def view(self, hidden: Hidden) -> np.ndarray:
        self._check_hidden(hidden)
        parts = []
        for vec in hidden:
            msg = tenseal_proto.decode(vec.serialize())
            if len(msg.ciphertexts) != 1:
                raise CiphertextError(f"expected one ciphertext per {self.name} vector, got {len(msg.ciphertexts)}")
            ct = seal_format.parse(msg.ciphertexts[0])
            t = self._template
            if (ct.parms_id, ct.size, ct.is_ntt_form) != (t.parms_id, t.size, t.is_ntt_form):
                raise CiphertextError("ciphertext is not fresh (different level, size or form); it has no view")
            parts.append(self._codec.encode(ct.data))
        return np.concatenate(parts)

    def unview(self, v: np.ndarray) -> Hidden:
        arr = self._view_vector(v)
        per = self._codec.length
        out = []
        for i, chunk in enumerate(self.chunk_sizes):
            ct = dataclasses.replace(self._template, data=self._codec.decode(arr[i * per : (i + 1) * per]))
            seal_format.check_residues(ct, self.moduli)
            blob = seal_format.dump(ct, compress=False)
            out.append(
                self._load_vector(tenseal_proto.encode(tenseal_proto.VectorProto((chunk,), (blob,), self._scale)))
            )
        return tuple(out)

    def public(self) -> SealEncryptor:
        handle = copy.copy(self)
        handle._ctx = self._context_from(
            self._ctx.serialize(save_secret_key=False, save_galois_keys=False, save_relin_keys=False)
        )
        return handle

    def _context_from(self, blob: bytes) -> Any:
        """Rebuild a context from `serialize` bytes (TenSEAL's; overridden by the SEAL-only insecure backend)."""
        return ts.context_from(blob)

    @property
    def is_public(self) -> bool:
        return not self._ctx.has_secret_key()

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        ctx = state.pop("_ctx")
        state["_ctx_bytes"] = ctx.serialize(
            save_secret_key=ctx.has_secret_key(), save_galois_keys=False, save_relin_keys=False
        )
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        state = dict(state)
        blob = state.pop("_ctx_bytes")
        self.__dict__.update(state)
        self._ctx = self._context_from(blob)

    def describe(self) -> dict[str, object]:
        return {
            "encryptor": self.name,
            "n": self.n,
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            **self._extra_params(),
            "view": self.view_kind,
            "insecure": self.insecure,
            "ciphertexts": len(self.chunk_sizes),
            "view_size": self.view_size,
            "public": self.is_public,
        }

    def _extra_params(self) -> dict[str, object]:
        return {}
