"""BFV on SEAL: quantised pixels round(255 x), N values per ciphertext."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
from tenseal import sealapi

from encryptors.base import ENCRYPTORS
from encryptors.he import SealEncryptor, bit_sizes
from encryptors.seal_backend import SealParams
from he_leak.errors import ParameterError
from he_leak.seeds import KeySeed

LEVELS = 255  # plaintext quantisation: x -> round(255 x)
PLAIN_MODULUS_BITS = 20  # batching prime size (1032193 for N = 4096)


def _default_bits(poly_modulus_degree: int) -> tuple[int, ...]:
    """SEAL's 128-bit default BFV coefficient modulus bit sizes for N."""
    try:
        moduli = sealapi.CoeffModulus.BFVDefault(poly_modulus_degree, sealapi.SEC_LEVEL_TYPE.TC128)
    except ValueError as err:
        raise ParameterError(
            f"SEAL has no default BFV modulus for N={poly_modulus_degree}: {err}; set coeff_mod_bit_sizes explicitly"
        ) from err
    return tuple(m.bit_count() for m in moduli)


@ENCRYPTORS.register("bfv")
class BfvEncryptor(SealEncryptor):
    """BFV on round(255 x); decrypt returns the integers / 255 (exact for BFV, so ``precision`` is the 1/255
    quantisation: 0.5/255)."""

    name = "bfv"
    precision = 0.5 / LEVELS

    def __init__(
        self,
        *,
        n: int,
        key_seed: KeySeed,
        poly_modulus_degree: int = 4096,
        coeff_mod_bit_sizes: Sequence[int] | None = None,
        plain_modulus: int | None = None,
        view: str = "bytes",
        insecure: bool = False,
    ) -> None:
        degree = int(poly_modulus_degree)
        bits = _default_bits(degree) if coeff_mod_bit_sizes is None else bit_sizes(coeff_mod_bit_sizes)
        try:
            t = plain_modulus or sealapi.PlainModulus.Batching(degree, PLAIN_MODULUS_BITS).value()
        except ValueError as err:
            raise ParameterError(
                f"no {PLAIN_MODULUS_BITS}-bit batching prime for N={degree}: {err}; "
                "set plain_modulus to a prime = 1 mod 2N"
            ) from err
        if t <= LEVELS:
            raise ParameterError(f"bfv plain_modulus {t} must exceed {LEVELS} to hold pixel values")
        self.plain_modulus = int(t)
        params = SealParams("bfv", degree, bits, self.plain_modulus)
        super().__init__(n=n, key_seed=key_seed, params=params, view=view, insecure=insecure)

    @property
    def slots(self) -> int:
        return self.params.poly_modulus_degree

    def _encode(self, chunk: np.ndarray) -> sealapi.Plaintext:
        plain = sealapi.Plaintext()
        self._encoder.encode(np.rint(chunk * LEVELS).astype(np.int64).tolist(), plain)
        return plain

    def _decode(self, plain: sealapi.Plaintext, size: int) -> np.ndarray:
        return np.asarray(self._encoder.decode_int64(plain), np.float64)[:size] / LEVELS

    @cached_property
    def _encoder(self) -> sealapi.BatchEncoder:
        return sealapi.BatchEncoder(self.context.seal)

    def _extra_params(self) -> dict[str, object]:
        return {"plain_modulus": self.plain_modulus}
