"""Secure aggregation by pairwise additive masks (Bonawitz et al., CCS 2017, without dropouts), done for real on
the updates: each client encodes its vector in fixed point in Z_(2^64) and adds, for every other client j, the mask
PRG(s_ij) when i < j and subtracts it when i > j; the server adds the K masked vectors, the masks cancel, and it
learns the sum and nothing else (each masked vector alone is uniform in Z_(2^64)^n).

Modelled, and said so: the pairwise seeds s_ij stand for the Diffie–Hellman agreement of the protocol (here children
of the clients' secret key seed, never of the public run seed: an attacker who could redraw them would unmask every
client); dropout recovery (secret-shared seeds, double masking) is not modelled, so all K clients must report.
Fixed point: FRACTION_BITS fractional bits (the sum is exact to 2^−FRACTION_BITS per client); a value must stay
below 2^(63 − FRACTION_BITS)/K in magnitude so the sum does not wrap.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from he_leak.errors import ConfigError
from he_leak.seeds import KeySeed

FRACTION_BITS = 32
SCALE = float(2**FRACTION_BITS)


def encode(values: np.ndarray, clients: int) -> np.ndarray:
    """Fixed point in Z_(2^64) (two's complement), refusing values the sum of ``clients`` could wrap."""
    x = np.asarray(values, dtype=np.float64)
    bound = 2.0 ** (63 - FRACTION_BITS) / clients
    if not np.all(np.isfinite(x)) or np.abs(x).max(initial=0) >= bound:
        raise ConfigError(f"secure aggregation encodes values below {bound:g} in magnitude (fixed point with "
                          f"{FRACTION_BITS} fractional bits, {clients} clients); got {np.abs(x).max():g}")  # fmt: skip
    return np.rint(x * SCALE).astype(np.int64).view(np.uint64)


def decode(total: np.ndarray) -> np.ndarray:
    return np.asarray(total, dtype=np.uint64).view(np.int64).astype(np.float64) / SCALE


def pair_mask(seed: KeySeed, length: int) -> np.ndarray:
    """PRG(s_ij): ``length`` uniform uint64 from the pair's seed (numpy's PCG64 keyed with its 256 bits)."""
    return np.random.default_rng(np.frombuffer(seed.material, dtype=np.uint32)).integers(
        0, 2**64, size=length, dtype=np.uint64, endpoint=False)  # fmt: skip


@dataclass(frozen=True)
class Round:
    """One aggregation: what each client sent (masked), the sum the server unmasks, the seconds and bytes spent."""

    masked: tuple[np.ndarray, ...]
    total: np.ndarray
    seconds: float

    @property
    def bytes(self) -> int:
        return int(sum(m.nbytes for m in self.masked))


def aggregate(updates: Sequence[np.ndarray], key_seed: KeySeed) -> Round:
    """Mask each client's update with the pairwise masks (seeds: children of ``key_seed``), add them as the
    server does; ``total`` is the decoded sum."""
    k = len(updates)
    if k < 2:
        raise ConfigError("secure aggregation needs at least 2 clients (--clients K >= 2)")
    start = time.perf_counter()
    n = len(updates[0])
    masked = []
    for i, update in enumerate(updates):
        y = encode(update, k)
        for j in range(k):
            if j != i:
                mask = pair_mask(key_seed.child("secagg", min(i, j), max(i, j)), n)
                y = y + mask if i < j else y - mask  # uint64 arithmetic wraps modulo 2^64
        masked.append(y)
    total = np.zeros(n, dtype=np.uint64)
    for y in masked:
        total = total + y
    return Round(tuple(masked), decode(total), time.perf_counter() - start)
