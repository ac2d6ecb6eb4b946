"""CKKS on SEAL: the plaintext vector at ``scale``, N/2 values per ciphertext."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
from tenseal import sealapi

from encryptors.base import ENCRYPTORS
from encryptors.he import SealEncryptor, bit_sizes
from encryptors.seal_backend import SealParams
from he_leak.errors import ConfigError
from he_leak.seeds import KeySeed

#: 2**28 decrypts fresh ciphertexts to ~2e-5 (2**21: ~2e-3) and still leaves room for one plaintext multiply +
#: rescale with the default [40, 20, 40] chain (scale 2**36 < q0 = 2**40).
DEFAULT_SCALE = 2.0**28
#: |decrypt − x|·scale/N of fresh encryptions (encoding rounding + encryption noise, both independent of the scale
#: in coefficient units and growing with N): median 0.89-1.07, max 1.40-1.88 over 100 encryptions each of x uniform
#: in [0,1] at (N, scale) = (2048, 2**20), (4096, 2**28), (4096, 2**40), (8192, 2**28), (8192, 2**40), 40 at
#: (16384, 2**40). ``precision`` = 4·N/scale, about twice the largest measured (tests re-measure it).
NOISE_PER_DEGREE = 4.0


@ENCRYPTORS.register("ckks")
class CkksEncryptor(SealEncryptor):
    """CKKS; ``view`` picks the ciphertext view ("bytes" exact, "residues" lossy)."""

    name = "ckks"

    def __init__(
        self,
        *,
        n: int,
        key_seed: KeySeed,
        poly_modulus_degree: int = 4096,
        coeff_mod_bit_sizes: Sequence[int] = (40, 20, 40),
        scale: float = DEFAULT_SCALE,
        view: str = "bytes",
        insecure: bool = False,
    ) -> None:
        if not isinstance(scale, int | float) or isinstance(scale, bool) or not scale > 1:
            raise ConfigError(f"ckks scale must be a number > 1, got {scale!r}")
        self.scale = float(scale)
        self.precision = NOISE_PER_DEGREE * int(poly_modulus_degree) / self.scale
        params = SealParams("ckks", int(poly_modulus_degree), bit_sizes(coeff_mod_bit_sizes))
        super().__init__(n=n, key_seed=key_seed, params=params, view=view, insecure=insecure)

    @property
    def slots(self) -> int:
        return self.params.poly_modulus_degree // 2

    @property
    def _scale(self) -> float:
        return self.scale

    def _encode(self, chunk: np.ndarray) -> sealapi.Plaintext:
        plain = sealapi.Plaintext()
        self._encoder.encode(chunk.tolist(), self.scale, plain)
        return plain

    def _decode(self, plain: sealapi.Plaintext, size: int) -> np.ndarray:
        return np.asarray(self._encoder.decode_double(plain), np.float64)[:size]

    @cached_property
    def _encoder(self) -> sealapi.CKKSEncoder:
        return sealapi.CKKSEncoder(self.context.seal)

    def _extra_params(self) -> dict[str, object]:
        return {"scale": self.scale}
