"""A key holder's SEAL keys from its secret key seed, every random draw from its own seeded context.

The key seed is a `he_leak.seeds.KeySeed` (>= 128 bits of secret entropy, never derived from the run's seed; an int
is refused). Secret key, public key, and each *component* of each key-switching key (relinearisation, Galois) get
their own child seed of it (HMAC). SEAL generates all components of a key-switching key in one call, which with a
seeded factory means one (a, e) for all of them (see `encryptors.seal_backend`), so the components are rebuilt here
with fresh randomness each (``independent_kswitch``) and assembled through SEAL's KSwitchKeys serialisation
(parms_id, then rows of PublicKey ciphertexts; read and written here, validated by SEAL's loader).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tenseal import sealapi

from encryptors import seal_format
from encryptors.seal_backend import SealContext
from he_leak.errors import CiphertextError
from he_leak.seeds import KeySeed

_U64 = struct.Struct("<Q")
_PARMS_ID = 32


def split_kswitch(blob: bytes) -> tuple[tuple[int, int], bytes, list[list[bytes]]]:
    """A serialised RelinKeys/GaloisKeys -> (SEAL version, parms_id bytes, rows of serialised component keys)."""
    version, body = seal_format.unwrap(blob, "key-switching keys")
    pid, pos = body[:_PARMS_ID], _PARMS_ID
    (rows,) = _U64.unpack_from(body, pos)
    pos += _U64.size
    table: list[list[bytes]] = []
    for _ in range(rows):
        (count,) = _U64.unpack_from(body, pos)
        pos += _U64.size
        row = []
        for _ in range(count):
            size = seal_format.object_size(memoryview(body)[pos:], "key-switching key component")
            row.append(body[pos : pos + size])
            pos += size
        table.append(row)
    if pos != len(body):
        raise CiphertextError(f"key-switching keys: {len(body) - pos} trailing bytes")
    return version, pid, table


def join_kswitch(version: tuple[int, int], pid: bytes, table: list[list[bytes]]) -> bytes:
    """The inverse of ``split_kswitch`` (uncompressed)."""
    parts = [pid, _U64.pack(len(table))]
    for row in table:
        parts.append(_U64.pack(len(row)))
        parts.extend(row)
    return seal_format.wrap(version, b"".join(parts))


def generate_kswitch(context: SealContext, secret: sealapi.SecretKey, seed: KeySeed, elt: int | None) -> bytes:
    """One SEAL generation of relinearisation keys (elt None) or the Galois key for ``elt`` in a context seeded
    with ``seed``, serialised. Its components share one (a, e): never hand it out as a key."""
    gen = sealapi.KeyGenerator(context.seeded(seed), secret)
    if elt is None:
        keys = sealapi.RelinKeys()
        gen.create_relin_keys(keys)
    else:
        keys = sealapi.GaloisKeys()
        gen.create_galois_keys([int(elt)], keys)  # a list of Galois elements (odd, >= 3): never steps
    return context.save(keys)


def independent_kswitch(
    context: SealContext, secret: sealapi.SecretKey, seed: KeySeed, *, galois_elts: Iterable[int] | None = None
) -> Any:
    """Relinearisation keys (``galois_elts`` None) or Galois keys for ``galois_elts`` whose every component has
    its own randomness.

    Component k of a key switching to s' is (−a_k s + e_k + (P mod q_k)·s'·[limb k], a_k): a symmetric encryption
    of zero at the key level (exactly what SEAL's ``create_public_key`` draws) with (P mod q_k)·s' added to limb k
    of c0. One SEAL generation gives w_k = (P mod q_k)·s' limb k as the difference of two of its components (they
    share (a, e)); each component then gets a fresh zero encryption from its own seed, seed.child(element, k).
    tests/test_circuit.py checks every component equals the one SEAL itself makes in a context with that seed.
    Cost: one generation plus one zero encryption per component, instead of one generation per component (at
    N=16384 with 8 data primes: ~1.6 s vs ~6 s per key, loaded 2-core machine)."""
    kind = sealapi.RelinKeys if galois_elts is None else sealapi.GaloisKeys
    targets: list[int | None] = [None] if galois_elts is None else sorted(set(galois_elts))
    primes = [np.uint64(q) for q in context.data_primes]
    version, pid, out = (4, 0), b"", []
    for elt in targets:
        version, pid, table = split_kswitch(generate_kswitch(context, secret, seed.child("shared", elt or 0), elt))
        index = next(i for i, r in enumerate(table) if r)
        shared = [seal_format.parse(b) for b in table[index]]
        row = []
        for k, q in enumerate(primes):
            if len(primes) == 1:  # a single component shares its randomness with nothing
                row.append(table[index][0])
                break
            other = shared[(k + 1) % len(primes)]
            w = (shared[k].data[0, k] + q - other.data[0, k]) % q  # (P mod q_k)·s' in limb k
            zero = sealapi.PublicKey()
            sealapi.KeyGenerator(context.seeded(seed.child(elt or 0, k)), secret).create_public_key(zero)
            fresh = seal_format.parse(context.save(zero))
            data = fresh.data.copy()
            data[0, k] = (data[0, k] + w) % q
            row.append(seal_format.dump(dataclasses.replace(fresh, data=data), compress=False))
        out += [[] for _ in range(index + 1 - len(out))]
        out[index] = row
    return context.load(kind(), join_kswitch(version, pid, out))


@dataclass(eq=False)
class KeySet:
    """One key holder's keys; ``secret`` is None on a public handle. Pickles as SEAL's serialisations."""

    context: SealContext
    public: sealapi.PublicKey
    secret: sealapi.SecretKey | None = None
    relin: sealapi.RelinKeys | None = None
    galois: sealapi.GaloisKeys | None = None

    @classmethod
    def generate(
        cls, context: SealContext, key_seed: KeySeed, *, relin: bool = False, galois_elts: Iterable[int] = ()
    ) -> KeySet:
        """The keys of the key holder whose secret is ``key_seed`` (a KeySeed; TypeError for anything else)."""
        key_seed = KeySeed.check(key_seed, "KeySet.generate")
        secret = sealapi.KeyGenerator(context.seeded(key_seed.child("secret"))).secret_key()
        public = sealapi.PublicKey()
        sealapi.KeyGenerator(context.seeded(key_seed.child("public")), secret).create_public_key(public)
        elts = list(galois_elts)
        return cls(
            context,
            public,
            secret,
            independent_kswitch(context, secret, key_seed.child("relin")) if relin else None,
            independent_kswitch(context, secret, key_seed.child("galois"), galois_elts=elts) if elts else None,
        )

    def without_secret(self) -> KeySet:
        return KeySet(self.context, self.public, None, self.relin, self.galois)

    def __getstate__(self) -> dict[str, object]:
        blobs = {k: None if v is None else self.context.save(v) for k, v in self._keys().items()}
        return {"context": self.context, **blobs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.context = state["context"]
        for name, kind in (("public", sealapi.PublicKey), ("secret", sealapi.SecretKey),
                           ("relin", sealapi.RelinKeys), ("galois", sealapi.GaloisKeys)):  # fmt: skip
            blob = state[name]
            setattr(self, name, None if blob is None else self.context.load(kind(), blob))

    def _keys(self) -> dict[str, Any]:
        return {"public": self.public, "secret": self.secret, "relin": self.relin, "galois": self.galois}
