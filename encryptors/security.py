"""128-bit security limits (HomomorphicEncryption.org table) for RLWE parameters."""

from __future__ import annotations

from collections.abc import Sequence

from he_leak.errors import ParameterError

#: poly_modulus_degree N -> maximum total coefficient-modulus bits for 128-bit classical security.
SECURE_MAX_BITS: dict[int, int] = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


def check_security(*, poly_modulus_degree: int, bit_sizes: Sequence[int], insecure: bool) -> None:
    """Refuse parameters below 128-bit security unless ``insecure`` is set."""
    total = sum(bit_sizes)
    limit = SECURE_MAX_BITS.get(poly_modulus_degree)
    if insecure:
        return
    if limit is None:
        known = ", ".join(str(k) for k in SECURE_MAX_BITS)
        raise ParameterError(
            f"poly_modulus_degree {poly_modulus_degree} has no 128-bit security entry (known: {known}); "
            "use one of those or set insecure = true to allow it"
        )
    if total > limit:
        raise ParameterError(
            f"coefficient modulus of {total} bits exceeds the 128-bit security limit of {limit} bits for "
            f"poly_modulus_degree {poly_modulus_degree}; shrink coeff_mod_bit_sizes, raise poly_modulus_degree, "
            "or set insecure = true (--insecure) to allow insecure parameters"
        )
