"""BFV (TenSEAL) encryption of quantised pixels round(255 x), N values per ciphertext."""

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
from he_leak.errors import ParameterError

LEVELS = 255  # plaintext quantisation: x -> round(255 x)
PLAIN_MODULUS_BITS = 20  # batching prime size (1032193 for N = 4096)


def _default_bits(poly_modulus_degree: int) -> list[int]:
    """SEAL's 128-bit default BFV coefficient modulus bit sizes for N."""
    try:
        moduli = sealapi.CoeffModulus.BFVDefault(poly_modulus_degree, sealapi.SEC_LEVEL_TYPE.TC128)
    except ValueError as err:
        raise ParameterError(
            f"SEAL has no default BFV modulus for N={poly_modulus_degree}: {err}; set coeff_mod_bit_sizes explicitly"
        ) from err
    return [m.bit_count() for m in moduli]


@ENCRYPTORS.register("bfv")
class BfvEncryptor(SealEncryptor):
    """TenSEAL BFV on round(255 x); decrypt returns the integers / 255."""

    name = "bfv"
    scheme = ts.SCHEME_TYPE.BFV

    def __init__(
        self,
        *,
        n: int,
        seed: int,
        poly_modulus_degree: int = 4096,
        coeff_mod_bit_sizes: Sequence[int] | None = None,
        plain_modulus: int | None = None,
        view: str = "bytes",
        insecure: bool = False,
    ) -> None:
        bits = _default_bits(poly_modulus_degree) if coeff_mod_bit_sizes is None else coeff_mod_bit_sizes
        try:
            t = plain_modulus or sealapi.PlainModulus.Batching(poly_modulus_degree, PLAIN_MODULUS_BITS).value()
        except ValueError as err:
            raise ParameterError(
                f"no {PLAIN_MODULUS_BITS}-bit batching prime for N={poly_modulus_degree}: {err}; "
                "set plain_modulus to a prime = 1 mod 2N"
            ) from err
        if t <= LEVELS:
            raise ParameterError(f"bfv plain_modulus {t} must exceed {LEVELS} to hold pixel values")
        self.plain_modulus = int(t)
        # Beyond the 128-bit table TenSEAL refuses to build a context: `insecure = true` then runs on SEAL directly.
        self.weak = bool(insecure) and sum(bits) > SECURE_MAX_BITS.get(poly_modulus_degree, -1)
        super().__init__(
            n=n,
            seed=seed,
            poly_modulus_degree=poly_modulus_degree,
            coeff_mod_bit_sizes=bits,
            view=view,
            insecure=insecure,
        )

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree

    def _make_context(self) -> ts.Context | sealapi_backend.SealapiContext:
        if self.weak:
            bits, t = self.coeff_mod_bit_sizes, self.plain_modulus
            return sealapi_backend.SealapiContext(self.poly_modulus_degree, bits, t)
        return ts.context(
            self.scheme,
            self.poly_modulus_degree,
            plain_modulus=self.plain_modulus,
            coeff_mod_bit_sizes=self.coeff_mod_bit_sizes,
        )

    def _sealapi_params(self) -> sealapi.EncryptionParameters:
        params = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.BFV)
        params.set_poly_modulus_degree(self.poly_modulus_degree)
        params.set_coeff_modulus(sealapi.CoeffModulus.Create(self.poly_modulus_degree, self.coeff_mod_bit_sizes))
        params.set_plain_modulus(self.plain_modulus)
        return params

    def _encrypt_chunk(self, chunk: np.ndarray) -> Any:
        levels = np.rint(chunk * LEVELS).astype(np.int64)
        if self.weak:
            return sealapi_backend.encrypt(self._ctx, levels, None)
        return ts.bfv_vector(self._ctx, levels.tolist())

    def _decrypt_chunk(self, vec: Any, secret_key: Any) -> np.ndarray:
        if self.weak:
            return sealapi_backend.decrypt(self._ctx, vec, secret_key) / LEVELS
        return np.asarray(vec.decrypt(secret_key), dtype=np.float64) / LEVELS

    def _load_vector(self, blob: bytes) -> Any:
        if self.weak:
            return sealapi_backend.load_vector(self._ctx, blob)
        return ts.bfv_vector_from(self._ctx, blob)

    def _context_from(self, blob: bytes) -> Any:
        if self.weak:
            return sealapi_backend.SealapiContext.from_bytes(blob)
        return ts.context_from(blob)

    def _extra_params(self) -> dict[str, object]:
        return {"plain_modulus": self.plain_modulus, "backend": "seal (no security level)" if self.weak else "tenseal"}
