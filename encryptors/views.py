"""Ciphertext views: residue arrays <-> float32 model inputs, vectorised with numpy.

- ``bytes``: each residue mod q_j as ceil(bits(q_j)/8) little-endian bytes, each byte/255 one feature (exact in
  float32, so an exact recovery rounds back to the exact ciphertext);
- ``residues``: residue / q_j as one float32 feature (lossy: the low bits, where the message lives, are lost).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from he_leak.errors import CiphertextError

VIEWS = ("bytes", "residues")


@dataclass(frozen=True)
class ResidueView:
    """Maps residue arrays of shape (size, len(moduli), degree) to flat float32 views and back."""

    kind: str
    moduli: tuple[int, ...]
    size: int
    degree: int

    @property
    def widths(self) -> tuple[int, ...]:
        """Bytes per residue for each prime (1 feature per prime in the residues view)."""
        if self.kind == "residues":
            return (1,) * len(self.moduli)
        return tuple((q.bit_length() + 7) // 8 for q in self.moduli)

    @property
    def length(self) -> int:
        return self.size * self.degree * sum(self.widths)

    def encode(self, data: np.ndarray) -> np.ndarray:
        """Residues (uint64, shape (size, primes, degree)) -> float32 view, polynomial-major then prime."""
        if self.kind == "residues":
            q = np.asarray(self.moduli, dtype=np.float64)[None, :, None]
            return (data / q).astype(np.float32).reshape(-1)
        parts = []
        raw = np.ascontiguousarray(data, dtype="<u8").view(np.uint8).reshape(self.size, len(self.moduli), -1, 8)
        for j, w in enumerate(self.widths):
            parts.append(raw[:, j, :, :w].reshape(self.size, -1))
        return (np.concatenate(parts, axis=1).astype(np.float32) / np.float32(255)).reshape(-1)

    def decode(self, v: np.ndarray) -> np.ndarray:
        """View (finite floats, length ``length``) -> residues: round, clamp, reassemble (not yet range-checked)."""
        if v.size != self.length:
            raise CiphertextError(f"ciphertext view must have {self.length} values, got {v.size}")
        if self.kind == "residues":
            q = np.asarray(self.moduli, dtype=np.float64)[None, :, None]
            frac = np.clip(np.asarray(v, dtype=np.float64).reshape(self.size, len(self.moduli), self.degree), 0, 1)
            return (np.rint(frac * q).astype(np.uint64)) % q.astype(np.uint64)
        digits = np.clip(np.rint(np.asarray(v, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
        digits = digits.reshape(self.size, -1)
        out = np.zeros((self.size, len(self.moduli), self.degree, 8), dtype=np.uint8)
        start = 0
        for j, w in enumerate(self.widths):
            stop = start + w * self.degree
            out[:, j, :, :w] = digits[:, start:stop].reshape(self.size, self.degree, w)
            start = stop
        return out.view("<u8").reshape(self.size, len(self.moduli), self.degree).astype(np.uint64)
