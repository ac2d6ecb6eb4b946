"""Slot layouts of the CKKS circuits and the plan of a plaintext-matrix product, shared by the evaluator
(`encryptors.circuit_eval`) and its cost model (`encryptors.circuit_cost`); no SEAL objects here.

Layouts: ``Replicated(length, period)`` holds v[s mod period] in slot s (v zero-padded to the period), so a full
rotation by k < period is a cyclic rotation of v; ``Grid(rows, cols, stride)`` holds entry (i, j) at slot
(i mod r)·stride + j of ciphertext i // r (r = slots // stride rows per ciphertext): a matrix packed row-major,
chunked by rows. A matrix product uses the diagonals of M that are not zero (``matvec_terms``), grouped by giant
step t (a multiple of g ≈ √period) and baby step b < g.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from he_leak.errors import ConfigError


@dataclass(frozen=True)
class Replicated:
    """A vector of ``length`` values repeated with ``period`` across all ``slots`` (one ciphertext)."""

    length: int
    period: int
    slots: int

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.length,)

    @property
    def chunks(self) -> int:
        return 1

    def pack(self, values: np.ndarray | float) -> list[np.ndarray]:
        block = np.zeros(self.period)
        block[: self.length] = np.broadcast_to(np.asarray(values, np.float64), self.shape)
        return [np.tile(block, self.slots // self.period)]

    def unpack(self, chunks: Sequence[np.ndarray]) -> np.ndarray:
        return np.asarray(chunks[0][: self.length], np.float64)

    def positions(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of each slot's output entry for a matrix product (row −1: no entry)."""
        pos = np.arange(self.slots) % self.period
        return np.where(pos < self.length, pos, -1), pos


@dataclass(frozen=True)
class Grid:
    """A rows × cols matrix, row i at offset (i mod r)·stride of ciphertext i // r, r = slots // stride."""

    rows: int
    cols: int
    stride: int
    slots: int

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.rows, self.cols)

    @property
    def rows_per_chunk(self) -> int:
        return self.slots // self.stride

    @property
    def chunks(self) -> int:
        return -(-self.rows // self.rows_per_chunk)

    def pack(self, values: np.ndarray | float) -> list[np.ndarray]:
        full = np.zeros((self.chunks * self.rows_per_chunk, self.stride))
        full[: self.rows, : self.cols] = np.broadcast_to(np.asarray(values, np.float64), self.shape)
        return list(full.reshape(self.chunks, self.slots))

    def unpack(self, chunks: Sequence[np.ndarray]) -> np.ndarray:
        full = np.concatenate([np.asarray(c, np.float64) for c in chunks]).reshape(-1, self.stride)
        return full[: self.rows, : self.cols]

    def positions(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        slot = np.arange(self.slots)
        row = chunk * self.rows_per_chunk + slot // self.stride
        return np.where(row < self.rows, row, -1), slot % self.stride


Layout = Replicated | Grid


def baby_steps(period: int) -> int:
    """g: the baby-step count of a period (a power of two near √period)."""
    return 1 << math.ceil(math.log2(period) / 2) if period > 1 else 1


def rotation_steps(period: int) -> list[int]:
    """The rotation steps (Galois keys) a matrix product over ``period`` uses: 1 (baby steps) and g (giant)."""
    g = baby_steps(period)
    return sorted({s for s in (1, g) if s < period})


def matvec_layout(matrix: np.ndarray, x: Layout, out: str) -> Layout:
    """The layout of M x (``CkksEvaluator.matvec``), or ConfigError when M, x or ``out`` do not fit."""
    if not isinstance(x, Replicated) or matrix.ndim != 2 or matrix.shape[1] != x.length:
        raise ConfigError(f"matvec needs an m × {getattr(x, 'length', '?')} matrix and a Replicated vector")
    rows = matrix.shape[0]
    if out not in ("replicated", "grid"):
        raise ConfigError(f"matvec out must be 'replicated' or 'grid', got {out!r}")
    if out == "replicated" and rows > x.period:
        raise ConfigError(f"a replicated result of {rows} values needs period >= {rows}; encrypt with it")
    return Replicated(rows, x.period, x.slots) if out == "replicated" else Grid(rows, x.period, x.period, x.slots)


def matvec_terms(matrix: np.ndarray, x: Replicated, result: Layout, chunk: int) -> list[tuple[int, int, np.ndarray]]:
    """The plan of one output chunk of a matrix product: (t, b, diagonal) for every diagonal d = t + b (t a
    multiple of the baby-step count g, 0 <= b < g) with a non-zero entry in some slot; zero diagonals are skipped."""
    p, rows = x.period, matrix.shape[0]
    padded = np.zeros((rows + 1, p))  # an extra zero row for slots without an entry (row −1)
    padded[:rows, : x.length] = matrix
    row, col = result.positions(chunk)
    g = baby_steps(p)
    terms = []
    for t in range(0, p, g):
        for b in range(g):
            diag = padded[row, (col + t + b) % p]
            if diag.any():
                terms.append((t, b, diag))
    return terms
