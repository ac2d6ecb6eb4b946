"""Seeds derived from the run's seed, one per party and purpose, so that no party can rebuild another's secret.

The key holder's HE keys and encryption noise come from ``derive(seed, "key", ...)``; the attack gets
``derive(seed, "attack")`` and never the run's seed itself. SHA-256 is one-way, so the attack's seed says nothing
about the key seed (both are still reproducible from the command line)."""

from __future__ import annotations

import hashlib
import struct


def derive(seed: int, *purpose: str | int) -> int:
    """A 40-bit seed for `purpose`, deterministic in (seed, purpose) and unrelated to other purposes (40 bits: room
    for `seed * 1000 + restart` style offsets in a 64-bit generator seed)."""
    text = "he-leak/" + "/".join(str(p) for p in (seed, *purpose))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:5], "little")


def words(seed: int, count: int = 8) -> list[int]:
    """`count` 64-bit words expanded from `seed` (SEAL's PRNG seed is 8 words)."""
    digest = hashlib.sha512(f"he-leak-words/{seed}".encode()).digest()
    while len(digest) < 8 * count:
        digest += hashlib.sha512(digest).digest()
    return list(struct.unpack(f"<{count}Q", digest[: 8 * count]))
