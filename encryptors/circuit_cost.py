"""The cost model of `encryptors.circuit_eval`'s ``CkksEvaluator``: the SEAL operations it performs for a program,
predicted from layouts, levels and the plaintext operands alone (no keys, no ciphertexts, no slot values).

``CostOps`` implements the operations of the program (he_leak.scenarios.he_program's ``Ops``) on ``Shape``s, a
layout and a level, and counts by kind what the evaluator does for each (``OP_KINDS``): ``lower`` (a mod switch when
it skips a level, then a plaintext multiply by 1 and a rescale per ciphertext), additions, plaintext products
(a zero plaintext is a fresh encryption of zero instead), products (multiply, relinearise, rescale), polynomials
(as the evaluator splits them) and matrix products (the plan of `encryptors.circuit_layout.matvec_terms`: one
plaintext multiply per non-zero diagonal, the chained baby rotations, Horner's giant rotations and additions).
Running a program here and through the evaluator must give the same counts: tests/test_he_train.py checks that the
he-train gradient came from the evaluator this way. A transparent intermediate (x − x) makes the evaluator encrypt
a zero the model does not predict; the programs here never produce one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from encryptors.circuit_layout import Grid, Layout, Replicated, baby_steps, matvec_layout, matvec_terms
from he_leak.errors import ConfigError

#: what the evaluator counts: SEAL's operation names, plus its fresh encryptions of zero
OP_KINDS = ("add", "sub", "add_plain", "multiply_plain", "multiply", "relinearize", "rescale", "rotate", "mod_switch",
            "encrypt_zero")  # fmt: skip


@dataclass(frozen=True)
class Shape:
    """A ciphertext vector without its data: its layout and the rescales it has used."""

    layout: Layout
    level: int


class CostOps:
    """The program's operations on Shapes, counting the evaluator's SEAL operations in ``ops`` and the deepest level
    in ``depth``; ``slots`` is the plan's slot count (it decides how many ciphertexts a Grid takes)."""

    def __init__(self, *, slots: int) -> None:
        self.slots = slots
        self.ops: Counter[str] = Counter()
        self.depth = 0

    def leaf(self, length: int, period: int) -> Shape:
        """A fresh encryption of ``length`` values replicated with ``period`` (``CkksCircuit.encrypt``)."""
        return Shape(Replicated(length, period, self.slots), 0)

    def _at(self, layout: Layout, level: int) -> Shape:
        self.depth = max(self.depth, level)
        return Shape(layout, level)

    def _zero(self, level: int) -> None:
        self.ops["encrypt_zero"] += 1
        self.ops["mod_switch"] += bool(level)

    def lower(self, x: Shape, level: int) -> Shape:
        if level > x.level:
            n = x.layout.chunks
            self.ops["mod_switch"] += n * (level - 1 > x.level)
            self.ops["multiply_plain"] += n
            self.ops["rescale"] += n
        return self._at(x.layout, max(level, x.level))

    def _align(self, a: Shape, b: Shape) -> tuple[Shape, Shape]:
        level = max(a.level, b.level)
        return self.lower(a, level), self.lower(b, level)

    def add(self, a: Shape, b: Shape) -> Shape:
        return self._combine(a, b, "add")

    def sub(self, a: Shape, b: Shape) -> Shape:
        return self._combine(a, b, "sub")

    def _combine(self, a: Shape, b: Shape, kind: str) -> Shape:
        if a.layout != b.layout:
            raise ConfigError(f"cannot add ciphertexts in different layouts: {a.layout} and {b.layout}")
        a, b = self._align(a, b)
        self.ops[kind] += a.layout.chunks
        return a

    def add_plain(self, a: Shape, values: np.ndarray | float) -> Shape:
        self.ops["add_plain"] += a.layout.chunks
        return a

    def mul_plain(self, a: Shape, values: np.ndarray | float) -> Shape:
        chunks = [float(values)] * a.layout.chunks if np.ndim(values) == 0 else a.layout.pack(values)
        for chunk in chunks:
            if np.any(chunk):
                self.ops["multiply_plain"] += 1
                self.ops["rescale"] += 1
            else:
                self._zero(a.level + 1)
        return self._at(a.layout, a.level + 1)

    def multiply(self, a: Shape, b: Shape) -> Shape:
        if isinstance(a.layout, Replicated) and isinstance(b.layout, Grid):
            a, b = b, a
        if a.layout == b.layout:
            layout = a.layout
        elif isinstance(a.layout, Grid) and isinstance(b.layout, Replicated) and a.layout.stride == b.layout.period:
            layout = Grid(a.layout.rows, min(a.layout.cols, b.layout.length), a.layout.stride, a.layout.slots)
        else:
            raise ConfigError(f"cannot multiply ciphertexts in layouts {a.layout} and {b.layout}")
        a, b = self._align(a, b)
        for kind in ("multiply", "relinearize", "rescale"):
            self.ops[kind] += a.layout.chunks
        return self._at(layout, a.level + 1)

    def square(self, a: Shape) -> Shape:
        return self.multiply(a, a)

    def polyval(self, z: Shape, coeffs: Sequence[float]) -> Shape:
        """The evaluator's split of c0 + c1 z + c2 z² + c3 z³ (``CkksEvaluator.polyval``)."""
        c = [float(v) for v in coeffs] + [0.0] * (4 - len(coeffs))
        if not c[2] and not c[3]:
            return self.add_plain(self.mul_plain(z, c[1]), c[0])
        if c[2] == 1.0 and not c[1] and not c[3]:
            return self.add_plain(self.square(z), c[0])
        if not c[3]:
            return self.add_plain(self.multiply(self.add_plain(self.mul_plain(z, c[2]), c[1]), z), c[0])
        out = self.multiply(self.square(z), self.add_plain(self.mul_plain(z, c[3]), c[2]))
        if c[1]:
            out = self.add(out, self.mul_plain(z, c[1]))
        return self.add_plain(out, c[0])

    def matvec(self, matrix: np.ndarray, x: Shape, *, out: str = "replicated") -> Shape:
        m_arr = np.asarray(matrix, np.float64)
        result = matvec_layout(m_arr, x.layout, out)
        p = x.layout.period
        g = baby_steps(p)
        babies = 0  # rotations of x made so far (shared by every chunk)
        for chunk in range(result.chunks):
            terms = matvec_terms(m_arr, x.layout, result, chunk)
            babies = max([babies] + [b for _, b, _ in terms])
            self.ops["multiply_plain"] += len(terms)
            giants = sorted({t for t, _, _ in terms})
            self.ops["add"] += len(terms) - len(giants)  # inside each giant step
            if giants:  # Horner from the top giant step down: a rotation per step below it, an add per inner
                self.ops["rotate"] += giants[-1] // g
                self.ops["add"] += len(giants) - 1
                self.ops["rescale"] += 1
            else:
                self._zero(x.level + 1)
        self.ops["rotate"] += babies
        return self._at(result, x.level + 1)

    def outer(self, u: Shape, v: Shape) -> Shape:
        if isinstance(u.layout, Replicated):
            u = self.matvec(np.eye(u.layout.length), u, out="grid")
        return self.multiply(u, v)
