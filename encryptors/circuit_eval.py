"""CKKS evaluation without the secret key: automatic level and scale alignment, and the operations an encrypted
training step needs (see `encryptors.circuit` for the scale rule and why TenSEAL's ops are not used; the slot
layouts are `encryptors.circuit_layout`'s).

Matrix products use the diagonal method with baby-step/giant-step rotations: y = Σ_t rot(Σ_b rot(D_{tg+b}, −tg) ⊙
rot(x, b), tg), g ≈ √period: (g − 1) + (period/g − 1) rotations instead of period − 1. The baby rotations are
chained (rot(x, b) = rot(rot(x, b − 1), 1)) and the giant sum is taken Horner-style (acc ← rot(acc, g) + inner_t),
so only two Galois keys (steps 1 and g) are needed per period: a key-switching key at N=16384 with 8 data primes
is ~19 MB and ~1.6 s to make (`encryptors.seal_keys`), against 2·√period keys.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tenseal import sealapi

from encryptors.circuit_layout import Grid, Layout, Replicated, baby_steps, matvec_layout, matvec_terms, rotation_steps
from encryptors.seal_backend import Randomness, SealContext, encrypt
from encryptors.seal_keys import KeySet
from he_leak.errors import ConfigError, ParameterError
from he_leak.seeds import PublicSeed


@dataclass(frozen=True, eq=False)
class CtVector:
    """Ciphertexts in ``layout`` that have used ``level`` rescales (each at the canonical scale of that level)."""

    layout: Layout
    ciphertexts: tuple[sealapi.Ciphertext, ...]
    level: int


def canonical_scales(context: SealContext) -> tuple[float, ...]:
    """Δ_k for k = 0 .. depth rescales: Δ_0 = q_D, Δ_{k+1} = Δ_k²/q_{D−k} (`encryptors.circuit` docstring)."""
    primes = [float(q) for q in context.data_primes]
    scales = [primes[-1]]
    for k in range(len(primes) - 1):
        scales.append(scales[-1] * scales[-1] / primes[len(primes) - 1 - k])
    return tuple(scales)


class CkksEvaluator:
    """Evaluates on ciphertexts with the public, relinearisation and Galois keys only (it cannot decrypt).

    Binary operations first bring both operands to the lower level (more rescales used); every product consumes
    one level, and running out of levels raises ParameterError naming the planned depth. ``ops`` counts every SEAL
    operation it performs, by kind (``OP_KINDS``); `encryptors.circuit_cost` predicts the same counts from a
    program without any ciphertext."""

    def __init__(self, context: SealContext, keys: KeySet, steps: Sequence[int], *, seed: PublicSeed | int) -> None:
        if keys.secret is not None:
            raise ConfigError("an evaluator holds no secret key; pass KeySet.without_secret()")
        self.context, self.keys, self.steps = context, keys, frozenset(steps)
        self._randomness = Randomness(PublicSeed.coerce(seed, "CkksEvaluator").child("circuit", "zero"))
        self._setup()

    def _setup(self) -> None:
        self.scales = canonical_scales(self.context)
        self.depth = len(self.scales) - 1
        self._primes = self.context.data_primes
        self._ev = self.context.evaluator
        self._encoder = sealapi.CKKSEncoder(self.context.seal)
        self.ops: Counter[str] = Counter()
        self._parms, data = [], self.context.seal.first_context_data()
        while data is not None:
            self._parms.append(data.parms_id())
            data = data.next_context_data()

    def __getstate__(self) -> dict[str, object]:
        return {k: self.__dict__[k] for k in ("context", "keys", "steps", "_randomness")}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._setup()

    # --- plumbing --------------------------------------------------------------------------------------------
    def _encode(self, values: np.ndarray | float, level: int, scale: float) -> sealapi.Plaintext:
        plain = sealapi.Plaintext()
        if np.ndim(values) == 0:
            self._encoder.encode(float(values), self._parms[level], scale, plain)
        else:
            self._encoder.encode(np.asarray(values, np.float64).tolist(), self._parms[level], scale, plain)
        return plain

    def _need(self, level: int) -> None:
        if level > self.depth:
            raise ParameterError(
                f"the circuit needs more than the planned multiplicative depth {self.depth} (a product at level "
                f"{level}); plan_circuit(depth=...) with a larger depth"
            )

    def _count(self, kind: str, op: Callable, *args) -> None:
        """Run one SEAL operation, counted under ``kind``."""
        self.ops[kind] += 1
        op(*args)

    def _zero(self, level: int, scale: float) -> sealapi.Ciphertext:
        """A fresh encryption of zero (SEAL refuses results whose mask part vanishes, e.g. x − x or x·0)."""
        seed = self._randomness.next(f"zero/{level}/{scale!r}".encode())
        self.ops["encrypt_zero"] += 1
        zero = encrypt(self.context, self.keys.public, self._encode(0.0, 0, scale), seed)  # fresh: first level
        if level:
            self._count("mod_switch", self._ev.mod_switch_to_inplace, zero, self._parms[level])  # keeps the scale
        return zero

    def _out(self, kind: str, op: Callable, *args, level: int, scale: float) -> sealapi.Ciphertext:
        """A new ciphertext from ``op(*args, out)``; a transparent result is replaced by a fresh zero."""
        out = sealapi.Ciphertext()
        try:
            self._count(kind, op, *args, out)
        except RuntimeError as err:
            if "transparent" not in str(err):
                raise
            return self._zero(level, scale)
        return out

    def _rescale(self, cipher: sealapi.Ciphertext, level: int) -> sealapi.Ciphertext:
        """Rescale a product made at ``level − 1`` down to ``level``; its scale becomes Δ_level exactly."""
        self._count("rescale", self._ev.rescale_to_next_inplace, cipher)
        if not math.isclose(cipher.scale, self.scales[level], rel_tol=1e-12):
            raise RuntimeError(f"scale {cipher.scale!r} is not level {level}'s {self.scales[level]!r} (a bug here)")
        cipher.scale = self.scales[level]  # equal up to the last bit of double rounding
        return cipher

    def lower(self, x: CtVector, level: int) -> CtVector:
        """``x`` at ``level`` (>= x.level) with that level's scale: mod switch, then × 1 at the bridging scale."""
        if level == x.level:
            return x
        if level < x.level:
            raise ParameterError(f"cannot raise a ciphertext from level {x.level} to {level}")
        self._need(level)
        bridge = self.scales[level] * self._primes[self.depth - level + 1] / self.scales[x.level]
        one = self._encode(1.0, level - 1, bridge)
        out = []
        for cipher in x.ciphertexts:
            if level - 1 > x.level:
                switched = sealapi.Ciphertext()
                self._count("mod_switch", self._ev.mod_switch_to, cipher, self._parms[level - 1], switched)
                cipher = switched
            out.append(self._rescale(self._out("multiply_plain", self._ev.multiply_plain, cipher, one, level=level - 1,
                                               scale=self.scales[x.level] * bridge), level))  # fmt: skip
        return CtVector(x.layout, tuple(out), level)

    def _align(self, a: CtVector, b: CtVector) -> tuple[CtVector, CtVector]:
        level = max(a.level, b.level)
        return self.lower(a, level), self.lower(b, level)

    # --- linear operations -----------------------------------------------------------------------------------
    def add(self, a: CtVector, b: CtVector) -> CtVector:
        return self._combine(a, b, "add")

    def sub(self, a: CtVector, b: CtVector) -> CtVector:
        return self._combine(a, b, "sub")

    def _combine(self, a: CtVector, b: CtVector, kind: str) -> CtVector:
        if a.layout != b.layout:
            raise ConfigError(f"cannot add ciphertexts in different layouts: {a.layout} and {b.layout}")
        a, b = self._align(a, b)
        scale = self.scales[a.level]
        pairs = zip(a.ciphertexts, b.ciphertexts, strict=True)
        op = getattr(self._ev, kind)
        out = tuple(self._out(kind, op, x, y, level=a.level, scale=scale) for x, y in pairs)
        return CtVector(a.layout, out, a.level)

    def add_plain(self, a: CtVector, values: np.ndarray | float) -> CtVector:
        """a + values (broadcast to the layout's shape), no level used."""
        chunks = a.layout.pack(values)
        out = []
        for cipher, chunk in zip(a.ciphertexts, chunks, strict=True):
            plain = self._encode(chunk, a.level, self.scales[a.level])
            out.append(self._out("add_plain", self._ev.add_plain, cipher, plain, level=a.level,
                                 scale=self.scales[a.level]))  # fmt: skip
        return CtVector(a.layout, tuple(out), a.level)

    def sub_plain(self, a: CtVector, values: np.ndarray | float) -> CtVector:
        return self.add_plain(a, -np.asarray(values, np.float64))

    def mul_plain(self, a: CtVector, values: np.ndarray | float) -> CtVector:
        """a ⊙ values (a scalar, or an array broadcast to the layout's shape); one level."""
        level = a.level + 1
        self._need(level)
        scale = self.scales[a.level]
        chunks = [float(values)] * a.layout.chunks if np.ndim(values) == 0 else a.layout.pack(values)
        out = []
        for cipher, chunk in zip(a.ciphertexts, chunks, strict=True):
            if not np.any(chunk):
                out.append(self._zero(level, self.scales[level]))
                continue
            plain = self._encode(chunk, a.level, scale)
            out.append(self._rescale(self._out("multiply_plain", self._ev.multiply_plain, cipher, plain,
                                               level=a.level, scale=scale * scale), level))  # fmt: skip
        return CtVector(a.layout, tuple(out), level)

    # --- products ----------------------------------------------------------------------------------------------
    def multiply(self, a: CtVector, b: CtVector) -> CtVector:
        """a ⊙ b, relinearised and rescaled (one level). A Grid times a Replicated of the same stride multiplies
        every row by the vector (the outer-product step)."""
        if isinstance(a.layout, Replicated) and isinstance(b.layout, Grid):
            a, b = b, a
        if a.layout == b.layout:
            layout = a.layout
        elif isinstance(a.layout, Grid) and isinstance(b.layout, Replicated) and a.layout.stride == b.layout.period:
            layout = Grid(a.layout.rows, min(a.layout.cols, b.layout.length), a.layout.stride, a.layout.slots)
        else:
            raise ConfigError(f"cannot multiply ciphertexts in layouts {a.layout} and {b.layout}")
        a, b = self._align(a, b)
        level = a.level + 1
        self._need(level)
        rhs = b.ciphertexts * a.layout.chunks if len(b.ciphertexts) == 1 else b.ciphertexts
        out = []
        for x, y in zip(a.ciphertexts, rhs, strict=True):
            prod = self._out("multiply", self._ev.multiply, x, y, level=a.level, scale=self.scales[a.level] ** 2)
            self._count("relinearize", self._ev.relinearize_inplace, prod, self.keys.relin)
            out.append(self._rescale(prod, level))
        return CtVector(layout, tuple(out), level)

    def square(self, a: CtVector) -> CtVector:
        return self.multiply(a, a)

    def polyval(self, z: CtVector, coeffs: Sequence[float]) -> CtVector:
        """c0 + c1 z + c2 z² + c3 z³ (degree <= 3) slot-wise, in depth 1 (linear, or z² + c0) or 2."""
        c = [float(v) for v in coeffs] + [0.0] * (4 - len(coeffs))
        if len(coeffs) > 4 or not any(c[1:]):
            raise ConfigError(f"polyval evaluates degrees 1 to 3, got coefficients {list(coeffs)}")
        if not c[2] and not c[3]:
            return self.add_plain(self.mul_plain(z, c[1]), c[0])
        if c[2] == 1.0 and not c[1] and not c[3]:
            return self.add_plain(self.square(z), c[0])
        if not c[3]:  # z·(c2 z + c1) + c0
            return self.add_plain(self.multiply(self.add_plain(self.mul_plain(z, c[2]), c[1]), z), c[0])
        inner = self.add_plain(self.mul_plain(z, c[3]), c[2])  # z²·(c3 z + c2) + (c1 z + c0)
        out = self.multiply(self.square(z), inner)
        if c[1]:
            out = self.add(out, self.mul_plain(z, c[1]))
        return self.add_plain(out, c[0])

    def matvec(self, matrix: np.ndarray, x: CtVector, *, out: str = "replicated") -> CtVector:
        """M x for a plaintext m × n matrix and x Replicated (length n): out="replicated" gives Replicated(m)
        (m <= period), out="grid" gives Grid(m, period): row i is y_i in every column (y expanded for an outer
        product). One level; baby-step/giant-step rotations."""
        m_arr = np.asarray(matrix, np.float64)
        result = matvec_layout(m_arr, x.layout, out)
        p = x.layout.period
        missing = sorted(set(rotation_steps(p)) - self.steps)
        if missing:
            raise ParameterError(f"no Galois keys for rotations {missing}; create the CkksCircuit with periods=({p},)")
        level = x.level + 1
        self._need(level)
        g, scale = baby_steps(p), self.scales[x.level]
        babies = [x.ciphertexts[0]]  # rot(x, b), chained by steps of 1
        out_cts = []
        for chunk in range(result.chunks):
            inners: dict[int, sealapi.Ciphertext] = {}
            for t, b, diag in matvec_terms(m_arr, x.layout, result, chunk):
                while len(babies) <= b:
                    babies.append(self._out("rotate", self._ev.rotate_vector, babies[-1], 1, self.keys.galois,
                                            level=x.level, scale=scale))  # fmt: skip
                plain = self._encode(np.roll(diag, t), x.level, scale)
                term = self._out("multiply_plain", self._ev.multiply_plain, babies[b], plain, level=x.level,
                                 scale=scale**2)  # fmt: skip
                inners[t] = term if t not in inners else self._out("add", self._ev.add, inners[t], term,
                                                                   level=x.level, scale=scale**2)  # fmt: skip
            acc = None
            for t in reversed(range(0, p, g)):  # Horner: acc = Σ_t rot(inner_t, t), one rotation by g per step
                if acc is not None:
                    self._count("rotate", self._ev.rotate_vector_inplace, acc, g, self.keys.galois)
                if t in inners:
                    acc = inners[t] if acc is None else self._out("add", self._ev.add, acc, inners[t],
                                                                  level=x.level, scale=scale**2)  # fmt: skip
            out_cts.append(self._zero(level, self.scales[level]) if acc is None else self._rescale(acc, level))
        return CtVector(result, tuple(out_cts), level)

    def outer(self, u: CtVector, v: CtVector) -> CtVector:
        """u vᵀ packed row-major in a Grid (stride = v's period), chunked by rows: u Replicated (expanded here, one
        level) or already an expanded Grid; then one product with v."""
        if isinstance(u.layout, Replicated):
            u = self.matvec(np.eye(u.layout.length), u, out="grid")
        return self.multiply(u, v)

    # --- sizes -------------------------------------------------------------------------------------------------
    def ciphertext_bytes(self, x: CtVector) -> int:
        """Bytes of ``x`` as SEAL serialises it (zstd), i.e. what a party sends."""
        return sum(len(self.context.save(c)) for c in x.ciphertexts)

    def key_bytes(self) -> int:
        """Bytes of the evaluation keys (public, relinearisation, Galois) as SEAL serialises them."""
        keys = (self.keys.public, self.keys.relin, self.keys.galois)
        return sum(len(self.context.save(k)) for k in keys if k is not None)
