"""Deterministic CKKS circuits on SEAL for encrypted training with plaintext weights: parameters planned from the
circuit's depth, keys from a secret key seed (he_leak.seeds.KeySeed), slot layouts, and the key holder's encrypt /
decrypt.

The evaluation itself (add, plain-matrix products, polynomials, outer products) is `encryptors.circuit_eval`'s
``CkksEvaluator``: a handle with the public, relinearisation and Galois keys but no secret key.

Why not TenSEAL's CKKSVector ops: they are not reproducible. TenSEAL builds its SEAL context without a seedable
PRNG, and its ops draw fresh randomness internally (``mm`` / ``matmul_plain`` calls ``encrypt_zero``), so the same
inputs and keys give different ciphertext bytes after every ``mm``; its ``mm`` also needs the vector encrypted
replicated across all slots. Here every random draw (keys, encryptions, the evaluator's rare encryptions of zero)
comes from seeds, and evaluation itself is deterministic. Speed of a plain-matrix × encrypted-vector product,
same parameters (N=8192, [60, 40, 40, 60], scale 2**40), `python -m experiments.bench_circuit` on a 2-core machine
under load (load average 7-8, median of 5): 64 → 16: 152 ms here vs 943 ms TenSEAL ``mm``; 784 → 32: 1.9 s vs
17.0 s (baby-step/giant-step: 2·√period rotations instead of one per input); errors 4e-8 / 7e-8 vs 1.5e-7 / 1.8e-7;
bytes identical across two identical products here, different every time with TenSEAL.

Scales: every ciphertext that has used k rescales carries exactly the canonical scale Δ_k of its level, with
Δ_0 = q_D (the last data prime) and Δ_{k+1} = Δ_k²/q_{D−k} (the prime the k-th rescale drops). A product of two
level-k ciphertexts, or of one with a plaintext encoded at Δ_k, lands on Δ_{k+1} after its rescale, so additions
never meet mismatched scales; a ciphertext brought down to a lower level is multiplied by a constant 1 encoded at
the scale that lands it on that level's Δ (one plaintext multiply, no approximation). Values must stay below
2**(first_bits − scale_bits − 1) in magnitude (2**19 with the defaults) at the last level.

Noise flooding (``decrypt(..., flood_bits=B)``): an exact CKKS decryption handed to someone who holds the
ciphertext lets them recover the secret key (Li & Micciancio, EUROCRYPT 2021: decryption − message reveals the
noise, a linear function of the key). The standard mitigation adds fresh noise, much larger than the ciphertext's,
to the decrypted polynomial before anything is shared. Here the key holder adds a plaintext p whose N coefficients
are iid Gaussian of standard deviation σ = 2**B (rounded to integers) to the ciphertext and decrypts: Dec(c + p) =
Dec(c) + p exactly (SEAL's add_plain adds p to c0), so the flooding is in the coefficient domain of the decrypted
plaintext. p is made with SEAL's own encoder: complex slot values v with E|v|² = N·σ²/Δ² (real and imaginary parts
each of standard deviation σ·√(N/2)/Δ) encode at scale Δ to coefficients of variance σ² — the canonical embedding is
√N times a unitary map for power-of-two cyclotomics. The slot-domain equivalent: each decoded (real) slot gets iid
Gaussian noise of standard deviation σ·√(N/2)/Δ (``flood_slot_std``). tests/test_circuit.py measures both constants
through SEAL (the coefficients by subtracting c0 before and after, out of NTT form). B is at most
``first_bits − FLOOD_MARGIN_BITS``: a coefficient would need 2**(FLOOD_MARGIN_BITS − 1) = 128 σ to wrap modulo the
last prime.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from tenseal import sealapi

from encryptors.circuit_eval import CkksEvaluator, CtVector, canonical_scales
from encryptors.circuit_layout import Grid, Replicated, rotation_steps
from encryptors.key_recovery import secret_coefficients
from encryptors.seal_backend import Randomness, SealContext, SealParams, decrypt_values, encrypt
from encryptors.seal_keys import KeySet
from encryptors.security import SECURE_MAX_BITS
from he_leak.errors import ConfigError, ParameterError
from he_leak.seeds import KeySeed, PublicSeed

__all__ = ["CircuitPlan", "CkksCircuit", "CkksEvaluator", "CtVector", "Grid", "Replicated", "plan_circuit"]

FIRST_BITS = 60  # the first (and last remaining) prime of a planned chain
FLOOD_MARGIN_BITS = 8  # flooding noise σ = 2**B stays this many bits below the first prime
MAX_FLOOD_BITS = FIRST_BITS - FLOOD_MARGIN_BITS


@dataclass(frozen=True)
class CircuitPlan:
    """CKKS parameters for a circuit of multiplicative ``depth`` needing ``slots`` slots: the chain is
    [first_bits, scale_bits × depth, special_bits] at the smallest ring degree N whose 128-bit limit holds it."""

    depth: int
    slots: int
    scale_bits: int
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]

    @property
    def slot_count(self) -> int:
        return self.poly_modulus_degree // 2

    def describe(self) -> dict[str, object]:
        """What was chosen and why it is secure, for the run record."""
        return {
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "depth": self.depth,
            "scale_bits": self.scale_bits,
            "slots": self.slot_count,
            "modulus_bits": sum(self.coeff_mod_bit_sizes),
            "max_bits_128": SECURE_MAX_BITS[self.poly_modulus_degree],
            "security": "128-bit",
        }


def plan_circuit(
    *, depth: int, slots: int, scale_bits: int = 40, first_bits: int = FIRST_BITS, special_bits: int | None = None
) -> CircuitPlan:
    """The smallest 128-bit-secure N (N/2 >= ``slots``) whose table limit holds [first, scale × depth, special]."""
    special = first_bits if special_bits is None else special_bits
    if depth < 1 or slots < 1:
        raise ConfigError(f"a circuit needs depth >= 1 and slots >= 1, got depth={depth}, slots={slots}")
    if not 20 <= scale_bits < first_bits <= 60 or not scale_bits <= special <= 60:
        raise ParameterError(
            f"need 20 <= scale_bits < first_bits <= 60 and scale_bits <= special_bits <= 60 (SEAL primes are at most "
            f"60 bits), got scale_bits={scale_bits}, first_bits={first_bits}, special_bits={special}"
        )
    bits = (first_bits, *([scale_bits] * depth), special)
    for degree, limit in sorted(SECURE_MAX_BITS.items()):
        if degree // 2 >= slots and sum(bits) <= limit:
            return CircuitPlan(depth, slots, scale_bits, degree, bits)
    biggest = max(SECURE_MAX_BITS)
    raise ParameterError(
        f"no 128-bit CKKS parameters hold depth {depth} at {scale_bits}-bit scale ({sum(bits)} bits) with {slots} "
        f"slots (the largest, N={biggest}, allows {SECURE_MAX_BITS[biggest]} bits); lower the depth or scale_bits"
    )


class CkksCircuit:
    """The key holder of a planned circuit: keys from ``key_seed`` (relinearisation, and Galois keys for the
    rotations that matrix products over each of ``periods`` need), encryption and decryption. Evaluation is done
    by ``evaluator(seed=...)``, which holds no secret key."""

    def __init__(self, plan: CircuitPlan, *, key_seed: KeySeed, periods: Iterable[int] = ()) -> None:
        key_seed = KeySeed.check(key_seed, "CkksCircuit")
        self.plan = plan
        params = SealParams("ckks", plan.poly_modulus_degree, plan.coeff_mod_bit_sizes)
        self.context = SealContext(params, insecure=False, insecure_allowed=False)  # planned here: no --insecure
        self.periods = tuple(sorted({self._check_period(p) for p in periods}))
        self.steps = tuple(sorted({s for p in self.periods for s in rotation_steps(p)}))
        tool = self.context.seal.key_context_data().galois_tool()
        elts = [tool.get_elt_from_step(s) for s in self.steps]
        self._keys = KeySet.generate(self.context, key_seed, relin=True, galois_elts=elts)
        self._randomness = Randomness(key_seed.child("circuit", "encrypt"))
        self._encoder = sealapi.CKKSEncoder(self.context.seal)

    def _check_period(self, period: int) -> int:
        if period < 1 or period & (period - 1) or self.plan.slot_count % period:
            raise ConfigError(f"period {period} must be a power of two dividing the {self.plan.slot_count} slots")
        return int(period)

    def evaluator(self, *, seed: PublicSeed | int) -> CkksEvaluator:
        """The evaluation handle (no secret key); ``seed`` (public: the server's own) randomises the rare encryptions
        of zero it makes."""
        return CkksEvaluator(self.context, self._keys.without_secret(), self.steps, seed=seed)

    def encrypt(self, x: Sequence[float] | np.ndarray, *, period: int | None = None) -> CtVector:
        """``x`` replicated with ``period`` (default: the smallest power of two >= len(x)) across all slots."""
        values = np.asarray(x, dtype=np.float64).reshape(-1)
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise ConfigError("encrypt needs a non-empty finite vector")
        p = self._check_period(period or 1 << max(0, math.ceil(math.log2(values.size))))
        if values.size > p:
            raise ConfigError(f"a vector of {values.size} values does not fit period {p}")
        layout = Replicated(values.size, p, self.plan.slot_count)
        (slots,) = layout.pack(values)
        plain = sealapi.Plaintext()
        self._encoder.encode(slots.tolist(), self.scales[0], plain)
        cipher = encrypt(self.context, self._keys.public, plain, self._randomness.next(values.tobytes()))
        return CtVector(layout, (cipher,), 0)

    @property
    def scales(self) -> tuple[float, ...]:
        return canonical_scales(self.context)

    def decrypt(self, ct: CtVector, *, flood_bits: int | None = None) -> np.ndarray:
        """Float64 values in the layout's shape: (length,) for Replicated, (rows, cols) for Grid; with
        ``flood_bits`` B, the decryption flooded with coefficient noise of standard deviation 2**B first."""
        return ct.layout.unpack([s.real for s in self.decrypt_slots(ct, flood_bits=flood_bits)])

    def decrypt_slots(self, ct: CtVector, *, flood_bits: int | None = None) -> list[np.ndarray]:
        """Every slot of every ciphertext of ``ct``, complex, as SEAL decodes the (flooded, with ``flood_bits``)
        decryption: what the key holder could hand over (encryptors.key_recovery.share picks what it does)."""
        if flood_bits is not None:
            ct = self.flooded(ct, flood_bits)
        return decrypt_values(self.context, self._keys.secret, self._encoder, ct.ciphertexts, complex_slots=True)

    def secret_coefficients(self) -> np.ndarray:
        """The secret key's coefficients (int8, ternary): for scoring a key-recovery attack, never for an attacker."""
        return secret_coefficients(self.context, self._keys.secret)

    def flooded(self, ct: CtVector, bits: int) -> CtVector:
        """ct + p, p a fresh plaintext per ciphertext whose coefficients are iid Gaussian of standard deviation
        2**bits (module docstring); the randomness is the key holder's."""
        if not 1 <= bits <= self.plan.coeff_mod_bit_sizes[0] - FLOOD_MARGIN_BITS:
            raise ParameterError(f"flood bits {bits}: use 1 to {self.plan.coeff_mod_bit_sizes[0] - FLOOD_MARGIN_BITS} "
                                 f"(the first prime has {self.plan.coeff_mod_bit_sizes[0]} bits)")  # fmt: skip
        n, out = self.plan.poly_modulus_degree, []
        for cipher in ct.ciphertexts:
            rng = np.random.default_rng(self._randomness.next(f"flood/{bits}".encode()).entropy())
            std = 2.0**bits * math.sqrt(n / 2) / cipher.scale  # of each of the real and imaginary parts
            values = std * (rng.standard_normal(n // 2) + 1j * rng.standard_normal(n // 2))
            plain = sealapi.Plaintext()
            self._encoder.encode(values.tolist(), cipher.parms_id(), cipher.scale, plain)
            flooded = sealapi.Ciphertext()
            self.context.evaluator.add_plain(cipher, plain, flooded)
            out.append(flooded)
        return CtVector(ct.layout, tuple(out), ct.level)

    def flood_slot_std(self, bits: int, level: int) -> float:
        """The standard deviation flooding with 2**bits adds to each decoded slot of a ciphertext at ``level``."""
        return 2.0**bits * math.sqrt(self.plan.poly_modulus_degree / 2) / self.scales[level]
