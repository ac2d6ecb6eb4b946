"""Seeds: public ones derived from the run's seed, and the key holder's secret key seed, which nothing public leads to.

- ``derive(seed, *purpose)``: 40 bits of SHA-256 of the run's seed and a purpose, for everything that may be public:
  data, model initialisation, the attack, the attacker's own randomness (the client's defence noise is secret: it
  comes from the KeySeed). The run's seed is in every
  Result's config, so anyone can recompute these; none of them leads to a key.
- ``PublicSeed``: randomness that is the attacker's own (its encryptions with the public key, the server's
  encryptions of zero), derived from the run's seed. A type of its own, so it never stands in for a key seed.
- ``KeySeed``: 256 bits of secret entropy held by the key holder alone: OS randomness (``KeySeed.fresh()``), or a
  secret the user keeps for replay (``KeySeed.from_hex``, at least 128 bits; a sweep keeps one in its results folder,
  he_leak.sweep.store). Every key and every encryption of the key holder draws from a child of it (HMAC-SHA256), and
  SEAL's PRNG gets a full-width seed (8 × 64 bits, HMAC-SHA512). No function maps an int to a KeySeed, and key
  generation (encryptors) refuses anything that is not one — the run's seed cannot lead to a key.
"""

from __future__ import annotations

import hashlib
import hmac
import numbers
import secrets
import struct
from dataclasses import dataclass, field

from he_leak.errors import ConfigError

KEY_BYTES = 32  # a fresh key seed: 256 bits
MIN_KEY_BYTES = 16  # a given one: at least 128 bits
SOURCES = ("os", "given", "sweep")  # where a key seed came from (the Result's key_source)
_PRNG_LABEL = b"he-leak/seal-prng"


def derive(seed: int, *purpose: str | int) -> int:
    """A 40-bit public seed for `purpose`, deterministic in (seed, purpose) and unrelated to other purposes (40 bits:
    room for `seed * 1000 + restart` style offsets in a 64-bit generator seed)."""
    text = "he-leak/" + "/".join(str(p) for p in (seed, *purpose))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:5], "little")


def words(seed: int, count: int = 8) -> list[int]:
    """`count` 64-bit words expanded from a public `seed` (SEAL's PRNG seed is 8 words)."""
    digest = hashlib.sha512(f"he-leak-words/{seed}".encode()).digest()
    while len(digest) < 8 * count:
        digest += hashlib.sha512(digest).digest()
    return list(struct.unpack(f"<{count}Q", digest[: 8 * count]))


def _label(purpose: tuple[str | int, ...]) -> bytes:
    return ("he-leak/" + "/".join(str(p) for p in purpose)).encode()


@dataclass(frozen=True)
class KeySeed:
    """The key holder's secret seed (>= 128 bits; 256 when fresh). Its repr shows only where it came from."""

    material: bytes = field(repr=False)
    source: str = field(default="given", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.material, bytes):
            raise TypeError(f"a KeySeed holds bytes of secret randomness, not {type(self.material).__name__}; use "
                            f"KeySeed.fresh() or KeySeed.from_hex(secret)")  # fmt: skip
        if len(self.material) < MIN_KEY_BYTES:
            raise ConfigError(f"a key seed needs at least {8 * MIN_KEY_BYTES} bits, got {8 * len(self.material)}")
        if self.source not in SOURCES:
            raise ValueError(f"key seed source must be one of {', '.join(SOURCES)}, got {self.source!r}")

    @classmethod
    def fresh(cls) -> KeySeed:
        """256 bits of OS randomness (``secrets.token_bytes``)."""
        return cls(secrets.token_bytes(KEY_BYTES), source="os")

    @classmethod
    def from_hex(cls, text: str, *, source: str = "given", what: str = "--key-seed") -> KeySeed:
        """A secret given as hex digits (64 for 256 bits; fewer than 32 — 128 bits — refused, one line naming the
        fix). `what` names where it came from in the message."""
        digits = str(text).strip().lower().removeprefix("0x")
        hint = "make one with: python -c 'import secrets; print(secrets.token_hex(32))'"
        try:
            material = bytes.fromhex(digits)
        except ValueError:
            raise ConfigError(f"{what}: not a hex string (digits 0-9, a-f, even length); {hint}") from None
        if len(material) < MIN_KEY_BYTES:
            raise ConfigError(f"{what}: {4 * len(digits)} bits is too short, a key seed needs at least "
                              f"{2 * MIN_KEY_BYTES} hex digits ({8 * MIN_KEY_BYTES} bits), 64 recommended; "
                              f"{hint}")  # fmt: skip
        return cls(material, source=source)

    @classmethod
    def check(cls, value: object, where: str) -> KeySeed:
        """`value` if it is a KeySeed, else TypeError naming the type (an int, above all, is refused)."""
        if not isinstance(value, cls):
            raise TypeError(f"{where}: key_seed must be a he_leak.seeds.KeySeed (KeySeed.fresh() or "
                            f"KeySeed.from_hex(secret)), not {type(value).__name__}")  # fmt: skip
        return value

    def hex(self) -> str:
        """The secret as hex digits (for the user's own replay file; never put it in a Result)."""
        return self.material.hex()

    def child(self, *purpose: str | int) -> KeySeed:
        """The seed for `purpose`: HMAC-SHA256 keyed with this seed (one-way, independent across purposes)."""
        return KeySeed(hmac.new(self.material, _label(purpose), hashlib.sha256).digest(), source=self.source)

    def prng_words(self) -> list[int]:
        """SEAL's PRNG seed at full width: 8 × 64 bits of HMAC-SHA512 keyed with this seed."""
        return list(struct.unpack("<8Q", hmac.new(self.material, _PRNG_LABEL, hashlib.sha512).digest()))

    def entropy(self) -> int:
        """This seed as one integer (for numpy's SeedSequence, which keeps every bit of it)."""
        return int.from_bytes(self.material, "little")


@dataclass(frozen=True)
class PublicSeed:
    """Randomness that may be public (the attacker's own), derived from the run's seed: never a key seed."""

    value: int

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise TypeError(f"a PublicSeed holds an int, not {type(self.value).__name__}")

    @classmethod
    def of(cls, seed: int, *purpose: str | int) -> PublicSeed:
        """``derive(seed, *purpose)`` as a public seed."""
        return cls(derive(seed, *purpose))

    @classmethod
    def coerce(cls, value: object, where: str) -> PublicSeed:
        """A public seed from a PublicSeed or an int; a KeySeed is refused (a key seed never goes to a public
        handle)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, KeySeed):
            raise TypeError(f"{where}: a key seed never goes to the attacker's side; pass a public seed (an int)")
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{where}: seed must be an int or a PublicSeed, not {type(value).__name__}")
        return cls(int(value))

    def child(self, *purpose: str | int) -> PublicSeed:
        return PublicSeed(derive(self.value, *purpose))

    def prng_words(self) -> list[int]:
        return words(self.value)
