"""Arithmetic in R_q = Z_q[X]/(X^N + 1) and CKKS's canonical embedding, written out so that an attacker (or a test)
can work on raw SEAL polynomials: exact integers, no SEAL object, no key.

- ``Ntt``: the negacyclic number-theoretic transform mod one prime q ≡ 1 (mod 2N), exact (numpy arrays of Python
  ints): entry i of ``forward(a)`` is a(ψ^(2i+1)) for a primitive 2N-th root ψ. The automorphism X → X^(-1)
  (CKKS's complex conjugation) maps evaluation point i to N − 1 − i (``conjugate_index``).
- ``decode`` / ``reencode``: the canonical embedding in SEAL's slot order (slot l is the root ζ^(3^l mod 2N), ζ =
  e^(iπ/N); tests/test_key_recovery.py checks it against SEAL's own decoder to 1e-9): slot values of an integer
  polynomial at a scale, and back — float64, so exact only up to the decoder's rounding (that is the point of
  IND-CPA-D: the attacker rounds the re-encoded polynomial back to integers).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from he_leak.errors import ParameterError

SLOT_GENERATOR = 3  # SEAL's CKKS encoder orders the slots by powers of 3 modulo 2N


def centered(values: np.ndarray, q: int) -> np.ndarray:
    """Residues mod q as integers in (−q/2, q/2] (object array of Python ints)."""
    a = np.asarray(values, dtype=object) % q
    return np.where(a > q // 2, a - q, a)


class Ntt:
    """Negacyclic NTT of length ``n`` modulo the prime ``q`` (q ≡ 1 mod 2n), on object arrays of Python ints."""

    def __init__(self, q: int, n: int) -> None:
        if n < 2 or n & (n - 1) or (q - 1) % (2 * n):
            raise ParameterError(f"an NTT of length {n} needs n a power of two and q ≡ 1 mod 2n (q = {q})")
        self.q, self.n = int(q), int(n)
        self.psi = self._primitive_root()
        self._bitrev = np.array([int(f"{i:0{n.bit_length() - 1}b}"[::-1], 2) for i in range(n)])

    def _primitive_root(self) -> int:
        """The first g^((q−1)/2n), g = 2, 3, …, of order exactly 2n (ψ^n = −1)."""
        q, n = self.q, self.n
        for g in range(2, 10_000):
            psi = pow(g, (q - 1) // (2 * n), q)
            if pow(psi, n, q) == q - 1:
                return psi
        raise ParameterError(f"no primitive {2 * n}-th root of unity found mod {q}: is it prime?")

    @staticmethod
    def _powers(base: int, count: int, q: int) -> np.ndarray:
        out = np.empty(count, dtype=object)
        acc = 1
        for i in range(count):
            out[i] = acc
            acc = acc * base % q
        return out

    @cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        q, n = self.q, self.n
        psi_inv = pow(self.psi, -1, q)
        omega, omega_inv = self.psi * self.psi % q, psi_inv * psi_inv % q
        return (self._powers(self.psi, n, q), self._powers(psi_inv, n, q), self._powers(omega, n, q),
                self._powers(omega_inv, n, q), pow(n, -1, q))  # fmt: skip

    def _cyclic(self, a: np.ndarray, omegas: np.ndarray) -> np.ndarray:
        """Σ_k a_k ω^(ik) for every i: iterative radix-2 (decimation in time, bit-reversed input)."""
        q, n = self.q, self.n
        a = a[self._bitrev].copy()
        m = 2
        while m <= n:
            twiddle = omegas[:: n // m][: m // 2]
            blocks = a.reshape(-1, m)
            even, odd = blocks[:, : m // 2], blocks[:, m // 2 :] * twiddle % q
            a = np.concatenate([(even + odd) % q, (even - odd) % q], axis=1).reshape(-1)
            m *= 2
        return a

    def forward(self, coeffs: np.ndarray) -> np.ndarray:
        """Evaluations a(ψ^(2i+1)), i = 0 … n−1."""
        psi_pow, _, omegas, _, _ = self._tables
        return self._cyclic(np.asarray(coeffs, dtype=object) % self.q * psi_pow % self.q, omegas)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        """The coefficients (mod q, in [0, q)) of the polynomial with these evaluations."""
        _, psi_inv, _, omegas_inv, n_inv = self._tables
        return self._cyclic(np.asarray(values, dtype=object) % self.q, omegas_inv) * n_inv % self.q * psi_inv % self.q

    def multiply(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a·b in Z_q[X]/(X^n + 1), coefficients in [0, q)."""
        return self.inverse(self.forward(a) * self.forward(b) % self.q)

    def conjugate_index(self) -> np.ndarray:
        """For each evaluation point i, the index of its conjugate ψ^(−(2i+1)): N − 1 − i."""
        return self.n - 1 - np.arange(self.n)


def conjugate(coeffs: np.ndarray) -> np.ndarray:
    """a(X^(−1)) mod X^N + 1: a_0 stays, a_i → −a_(N−i) (the slot-wise complex conjugate of a's embedding)."""
    a = np.asarray(coeffs)
    out = -a[::-1]
    return np.concatenate([a[:1], out[:-1]])


def slot_positions(n: int) -> np.ndarray:
    """For slot l < N/2, the index i of its root ζ^(2i+1) = ζ^(3^l mod 2N) (its conjugate is N − 1 − i)."""
    exponents = np.array([pow(SLOT_GENERATOR, slot, 2 * n) for slot in range(n // 2)])
    return (exponents - 1) // 2


def decode(coeffs: np.ndarray, scale: float) -> np.ndarray:
    """The N/2 complex slot values of the integer polynomial ``coeffs`` at ``scale`` (as SEAL decodes, float64)."""
    p = np.asarray(coeffs, dtype=np.float64)
    n = p.size
    zeta = np.exp(1j * np.pi * np.arange(n) / n)
    evaluations = n * np.fft.ifft(p * zeta)  # at ζ^(2i+1), i = 0 … N−1
    return evaluations[slot_positions(n)] / scale


def reencode(slots: np.ndarray, scale: float, n: int) -> np.ndarray:
    """The real polynomial (float64 coefficients) whose canonical embedding is ``scale``·slots; real slot values
    give the conjugation-symmetric part (p + p(X^(−1)))/2 of any p they were decoded from."""
    values = np.asarray(slots, dtype=np.complex128) * scale
    if values.size != n // 2:
        raise ParameterError(f"re-encoding needs all {n // 2} slots, got {values.size}")
    points = np.zeros(n, dtype=np.complex128)
    where = slot_positions(n)
    points[where] = values
    points[n - 1 - where] = np.conj(values)
    zeta_inv = np.exp(-1j * np.pi * np.arange(n) / n)
    return (np.fft.fft(points) * zeta_inv / n).real
