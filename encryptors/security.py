"""128-bit security limits (HomomorphicEncryption.org table) for RLWE parameters."""

from __future__ import annotations

from collections.abc import Sequence

from he_leak.errors import ParameterError

#: poly_modulus_degree N -> maximum total coefficient-modulus bits for 128-bit classical security.
SECURE_MAX_BITS: dict[int, int] = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


SEAL_MAX_PRIME_BITS = 60  # SEAL's SEAL_USER_MOD_BIT_COUNT_MAX: no prime of the coefficient modulus is larger


def check_seal_limits(*, poly_modulus_degree: int, bit_sizes: Sequence[int]) -> None:
    """SEAL's own limits on the parameters, whatever the security level: N a power of two, each prime of 2 to 60
    bits. Checked before the security table, so that no message suggests `insecure` for parameters SEAL refuses."""
    n = poly_modulus_degree
    if n < 2 or n & (n - 1):
        raise ParameterError(f"poly_modulus_degree {n} is not a power of two, which SEAL requires; use one of "
                             f"{', '.join(str(k) for k in SECURE_MAX_BITS)}")  # fmt: skip
    if not bit_sizes or not all(2 <= b <= SEAL_MAX_PRIME_BITS for b in bit_sizes):
        raise ParameterError(f"coeff_mod_bit_sizes {list(bit_sizes)}: SEAL takes one or more primes of 2 to "
                             f"{SEAL_MAX_PRIME_BITS} bits each")  # fmt: skip


def check_security(*, poly_modulus_degree: int, bit_sizes: Sequence[int], insecure: bool,
                   insecure_allowed: bool = True) -> None:  # fmt: skip
    """Refuse parameters below 128-bit security unless ``insecure`` is set. `insecure_allowed` False: the caller
    offers no such option (he-aggregate runs at 128-bit parameters only), so the message does not suggest it."""
    total = sum(bit_sizes)
    limit = SECURE_MAX_BITS.get(poly_modulus_degree)
    if insecure:
        return
    escape = "set insecure = true (--insecure) to allow insecure parameters" if insecure_allowed else (
        "this scenario runs at 128-bit parameters only")  # fmt: skip
    if limit is None:
        known = ", ".join(str(k) for k in SECURE_MAX_BITS)
        raise ParameterError(
            f"poly_modulus_degree {poly_modulus_degree} has no 128-bit security entry (known: {known}); "
            f"use one of those, or {escape}"
        )
    if total > limit:
        raise ParameterError(
            f"coefficient modulus of {total} bits exceeds the 128-bit security limit of {limit} bits for "
            f"poly_modulus_degree {poly_modulus_degree}; shrink coeff_mod_bit_sizes or raise poly_modulus_degree "
            f"({escape})"
        )
