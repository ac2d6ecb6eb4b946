"""SEAL directly (TenSEAL's `sealapi` bindings): one parameter set, its security level chosen once, and one-use
seeded randomness for every key and every encryption.

Why every random draw gets its own context: SEAL draws randomness from the parameters' PRNG factory, and a
`Blake2xbPRNGFactory` built with a seed hands that *same* seed to every PRNG it creates. With one seeded context,
every encryption reuses the same (u, e0, e1) and every key-switching key component the same (a, e). Measured on
SEAL 4 / TenSEAL 0.3.18: two encryptions of different messages subtract to a transparent ciphertext (c1 = 0, c0 =
Δ(m1 − m2)), and the c0 of two relinearisation-key components differ in one limb each, by P·s² — both a full key
or plaintext leak (tests/test_encryptors.py keeps the checks). So the secret key, the public key, each component of
each key-switching key (`encryptors.seal_keys`) and each encryption draw from a context seeded for that draw alone.
A context costs about one encryption (N=4096: ~6 ms vs ~3 ms, N=8192: ~8 vs ~5, N=16384: ~18 vs ~20, loaded
2-core machine), the price of reproducibility. The main context keeps SEAL's OS-random factory and is never asked
for randomness, so a draw that slipped through would show up as irreproducible, never as reused.

Seeds (he_leak.seeds): the key holder's draws come from children of its secret `KeySeed` (>= 128 bits, never derived
from the run's seed), and SEAL's PRNG gets a full-width seed (8 × 64 bits of HMAC-SHA512); the attacker's own
encryptions with the public key draw from a `PublicSeed`, derived from the public run seed.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tenseal import sealapi

from encryptors.security import SECURE_MAX_BITS, check_seal_limits, check_security
from he_leak.errors import ParameterError
from he_leak.seeds import KeySeed, PublicSeed

SECURE, NO_SECURITY = "128-bit", "none"
_TMP = "/dev/shm" if Path("/dev/shm").is_dir() else None  # SEAL objects save/load only through file paths
T = TypeVar("T")


@dataclass(frozen=True)
class SealParams:
    """One RLWE parameter set: scheme ("ckks" or "bfv"), ring degree N, prime sizes, BFV plaintext modulus."""

    scheme: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    plain_modulus: int | None = None

    @property
    def within_table(self) -> bool:
        """Whether the parameters meet the 128-bit HomomorphicEncryption.org table."""
        limit = SECURE_MAX_BITS.get(self.poly_modulus_degree)
        return limit is not None and sum(self.coeff_mod_bit_sizes) <= limit

    def text(self) -> str:
        return f"poly_modulus_degree={self.poly_modulus_degree}, coeff_mod_bit_sizes={list(self.coeff_mod_bit_sizes)}"


class SealContext:
    """SEAL contexts for one parameter set at a security level chosen once: 128-bit (TC128) within the table, none
    beyond it (only with ``insecure``; otherwise ParameterError). SEAL's own limits are checked first, so that the
    128-bit table never suggests ``insecure`` for parameters SEAL rejects anyway; `insecure_allowed` False: the
    caller has no such option (he-aggregate), and the message says so. Pickles as its parameters."""

    def __init__(self, params: SealParams, *, insecure: bool, insecure_allowed: bool = True) -> None:
        check_seal_limits(poly_modulus_degree=params.poly_modulus_degree, bit_sizes=params.coeff_mod_bit_sizes)
        self.params = params
        self.security = SECURE if params.within_table else NO_SECURITY
        self._moduli = self._create_moduli()
        self._level = sealapi.SEC_LEVEL_TYPE.NONE
        self._context(None, expand=False)  # SEAL's own verdict on the parameters, before the security table
        check_security(poly_modulus_degree=params.poly_modulus_degree, bit_sizes=params.coeff_mod_bit_sizes,
                       insecure=insecure, insecure_allowed=insecure_allowed)  # fmt: skip
        self._build()

    def _create_moduli(self) -> Any:
        p = self.params
        try:
            return sealapi.CoeffModulus.Create(p.poly_modulus_degree, list(p.coeff_mod_bit_sizes))
        except (ValueError, RuntimeError) as err:
            raise ParameterError(f"{p.scheme} parameters rejected by SEAL: {err}; {p.text()}") from err

    def _build(self) -> None:
        self._moduli = self._create_moduli()
        self._level = sealapi.SEC_LEVEL_TYPE.TC128 if self.security == SECURE else sealapi.SEC_LEVEL_TYPE.NONE
        self.seal = self._context(None, expand=True)

    def _context(self, seed: KeySeed | PublicSeed | None, *, expand: bool) -> sealapi.SEALContext:
        p = self.params
        parms = sealapi.EncryptionParameters(getattr(sealapi.SCHEME_TYPE, p.scheme.upper()))
        parms.set_poly_modulus_degree(p.poly_modulus_degree)
        parms.set_coeff_modulus(self._moduli)
        if p.plain_modulus is not None:
            parms.set_plain_modulus(p.plain_modulus)
        if seed is not None:
            parms.set_random_generator(sealapi.Blake2xbPRNGFactory(seed.prng_words()))
        context = sealapi.SEALContext(parms, expand, self._level)
        if not context.parameters_set():
            raise ParameterError(
                f"{p.scheme} parameters rejected by SEAL: {context.parameters_error_message()}; {p.text()}"
            )
        return context

    def seeded(self, seed: KeySeed | PublicSeed) -> sealapi.SEALContext:
        """A context (key and first data level) whose every random draw comes from ``seed``: use it for ONE draw."""
        if not isinstance(seed, KeySeed | PublicSeed):
            raise TypeError(f"a seeded context needs a KeySeed or a PublicSeed, not {type(seed).__name__}")
        return self._context(seed, expand=False)

    @property
    def degree(self) -> int:
        return self.params.poly_modulus_degree

    @cached_property
    def data_primes(self) -> tuple[int, ...]:
        """The primes of a fresh ciphertext (the first data level: the key level without the special prime)."""
        return tuple(m.value() for m in self.seal.first_context_data().parms().coeff_modulus())

    @cached_property
    def evaluator(self) -> sealapi.Evaluator:
        return sealapi.Evaluator(self.seal)

    def save(self, obj: Any) -> bytes:
        """SEAL's own serialisation of ``obj`` (Ciphertext, keys, ...), through a temporary file."""
        with tempfile.NamedTemporaryFile(dir=_TMP) as f:
            obj.save(f.name)
            return Path(f.name).read_bytes()

    def load(self, obj: T, blob: bytes) -> T:
        """Load ``blob`` into the empty SEAL object ``obj`` (SEAL validates it against the parameters)."""
        with tempfile.NamedTemporaryFile(dir=_TMP) as f:
            f.write(blob)
            f.flush()
            obj.load(self.seal, f.name)
        return obj

    def __getstate__(self) -> dict[str, object]:
        return {"params": self.params, "security": self.security}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.params, self.security = state["params"], state["security"]
        self._build()


@dataclass
class Randomness:
    """One-use seeds for encryptions. The i-th draw for message m is root.child(i, sha256(m)): a stream never
    repeats, and two copies of one stream (a pickled key holder and the original) can only repeat a seed for the
    same message, which leaks no more than that the messages are equal. A key holder's root is a child of its
    KeySeed, a public handle's a PublicSeed."""

    root: KeySeed | PublicSeed
    count: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.root, KeySeed | PublicSeed):
            raise TypeError(f"Randomness needs a KeySeed or a PublicSeed root, not {type(self.root).__name__}")

    def next(self, message: bytes) -> KeySeed | PublicSeed:
        self.count += 1
        return self.root.child(self.count, hashlib.sha256(message).hexdigest())


def encrypt(context: SealContext, public_key: sealapi.PublicKey, plain: sealapi.Plaintext,
            seed: KeySeed | PublicSeed):  # fmt: skip
    """Public-key encryption of ``plain`` with randomness from ``seed`` alone."""
    out = sealapi.Ciphertext()
    sealapi.Encryptor(context.seeded(seed), public_key).encrypt(plain, out)
    return out


def decrypt_values(context: SealContext, secret_key: sealapi.SecretKey, encoder: sealapi.CKKSEncoder,
                   ciphertexts, *, complex_slots: bool = False) -> list[np.ndarray]:  # fmt: skip
    """Each CKKS ciphertext decrypted and decoded to its float64 slot values (the key holder's side); with
    ``complex_slots`` the complex values (SEAL's decode_double returns their real parts)."""
    decryptor = sealapi.Decryptor(context.seal, secret_key)
    out = []
    for cipher in ciphertexts:
        plain = sealapi.Plaintext()
        decryptor.decrypt(cipher, plain)
        decoded = encoder.decode_complex(plain) if complex_slots else encoder.decode_double(plain)
        out.append(np.asarray(decoded, np.complex128 if complex_slots else np.float64))
    return out
