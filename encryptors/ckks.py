"""CKKS (TenSEAL) encryption of the plaintext vector, N/2 values per ciphertext."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tenseal as ts
from tenseal import sealapi

from encryptors import sealapi_backend
from encryptors.base import ENCRYPTORS
from encryptors.he import SealEncryptor
from encryptors.security import SECURE_MAX_BITS
from he_leak.errors import ConfigError

#: 2**28 decrypts fresh ciphertexts to ~2e-5 (2**21: ~2e-3) and still leaves room for one plaintext multiply +
#: rescale with the default [40, 20, 40] chain (scale 2**36 < q0 = 2**40).
DEFAULT_SCALE = 2.0**28


@ENCRYPTORS.register("ckks")
class CkksEncryptor(SealEncryptor):
    """TenSEAL CKKS; ``view`` picks the ciphertext view ("bytes" exact, "residues" lossy)."""

    name = "ckks"
    scheme = ts.SCHEME_TYPE.CKKS

    def __init__(
        self,
        *,
        n: int,
        seed: int,
        poly_modulus_degree: int = 4096,
        coeff_mod_bit_sizes: Sequence[int] = (40, 20, 40),
        scale: float = DEFAULT_SCALE,
        view: str = "bytes",
        insecure: bool = False,
    ) -> None:
        if not isinstance(scale, int | float) or isinstance(scale, bool) or not scale > 1:
            raise ConfigError(f"ckks scale must be a number > 1, got {scale!r}")
        self.scale = float(scale)
        # Beyond the 128-bit table TenSEAL refuses to build a context: `insecure = true` then runs on SEAL directly.
        self.weak = bool(insecure) and sum(coeff_mod_bit_sizes) > SECURE_MAX_BITS.get(poly_modulus_degree, -1)
        super().__init__(
            n=n,
            seed=seed,
            poly_modulus_degree=poly_modulus_degree,
            coeff_mod_bit_sizes=coeff_mod_bit_sizes,
            view=view,
            insecure=insecure,
        )

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    def _make_context(self) -> ts.Context | sealapi_backend.SealapiContext:
        if self.weak:
            return sealapi_backend.SealapiContext(self.poly_modulus_degree, self.coeff_mod_bit_sizes)
        ctx = ts.context(self.scheme, self.poly_modulus_degree, coeff_mod_bit_sizes=self.coeff_mod_bit_sizes)
        ctx.global_scale = self.scale
        return ctx

    def _sealapi_params(self) -> sealapi.EncryptionParameters:
        params = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
        params.set_poly_modulus_degree(self.poly_modulus_degree)
        params.set_coeff_modulus(sealapi.CoeffModulus.Create(self.poly_modulus_degree, self.coeff_mod_bit_sizes))
        return params

    def _encrypt_chunk(self, chunk: np.ndarray) -> Any:
        if self.weak:
            return sealapi_backend.encrypt(self._ctx, chunk, self.scale)
        return ts.ckks_vector(self._ctx, chunk.tolist(), self.scale)

    def _decrypt_chunk(self, vec: Any, secret_key: Any) -> np.ndarray:
        if self.weak:
            return sealapi_backend.decrypt(self._ctx, vec, secret_key)
        return np.asarray(vec.decrypt(secret_key), dtype=np.float64)

    def _load_vector(self, blob: bytes) -> Any:
        if self.weak:
            return sealapi_backend.load_vector(self._ctx, blob)
        return ts.ckks_vector_from(self._ctx, blob)

    def _context_from(self, blob: bytes) -> Any:
        if self.weak:
            return sealapi_backend.SealapiContext.from_bytes(blob)
        return ts.context_from(blob)

    def _extra_params(self) -> dict[str, object]:
        return {"scale": self.scale, "backend": "seal (no security level)" if self.weak else "tenseal"}
