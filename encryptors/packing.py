"""CKKS packing of a flat float64 vector (a model gradient) for encrypted aggregation, as NVFlare deploys it: every
client holds the key pair and encrypts its gradient into as few ciphertexts as the slots allow; the server holds
only the public context, adds the clients' ciphertexts, and any client decrypts the aggregate.

Defaults are NVFlare's (N=8192, coeff_mod_bit_sizes [60, 40, 40], scale 2**40: 4096 values per ciphertext, one
plaintext multiplication available for weighted sums). Keys and encryption noise come from the key seed
(`encryptors.seal_backend`), a `he_leak.seeds.KeySeed`, so the same secret gives the same bytes.

Speed (`python -m experiments.bench_packing`, loaded 2-core machine, median of 5): an 85,036-value gradient (the DLG
LeNet on CIFAR-100) packs into 21 ciphertexts, 4.94 MB (TenSEAL's ``ckks_vector`` of it: the same 4.94 MB), at
~187k values/s against TenSEAL's ~246k (1 thread) / ~216k (2 threads): the seeded context each encryption needs
(`encryptors.seal_backend`) is the difference. The server adds 4 such gradients in ~15 ms.

Threads: SEAL's Python bindings hold the GIL during every call. Measured: a Python thread spinning a counter
advances 0 times during a 10 ms ``encode`` and at ~16% of its solo rate during a 239 ms ``encrypt`` (only between
the calls that make it up), and 16 encryptions take the same wall time on 1 or 2 threads. So encryption runs on
one thread; a process pool would have to pickle keys and ciphertexts (~130 kB per ciphertext) both ways, which on
the 2-core machine this targets is not worth it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tenseal import sealapi

from encryptors.seal_backend import Randomness, SealContext, SealParams, decrypt_values, encrypt
from encryptors.seal_keys import KeySet
from he_leak.errors import CiphertextError, ConfigError, ParameterError
from he_leak.seeds import KeySeed

#: |decrypt − x|·scale/N of one fresh CKKS encryption is at most ~1.9 measured (encryptors.ckks): 4 is the bound
FRESH_NOISE_PER_DEGREE = 4.0


@dataclass(frozen=True)
class PackingParams:
    """CKKS parameters of the packing (NVFlare's defaults); checked against the 128-bit table."""

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 40)
    scale: float = 2.0**40

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2


class Packed:
    """One party's packed vector: ``length`` values in ``len(ciphertexts)`` ciphertexts, the sum of ``count``
    fresh encryptions (weighted by at most ``weight`` in total). Pickles as SEAL's serialisations."""

    def __init__(self, context: SealContext, ciphertexts: Sequence[Any], *, length: int, count: int, weight: float):
        self.context, self.ciphertexts = context, tuple(ciphertexts)
        self.length, self.count, self.weight = length, count, weight

    @property
    def nbytes(self) -> int:
        """Bytes sent: SEAL's (zstd) serialisation of every ciphertext."""
        return sum(len(b) for b in self._blobs())

    def _blobs(self) -> list[bytes]:
        return [self.context.save(c) for c in self.ciphertexts]

    def __getstate__(self) -> dict[str, object]:
        state = {k: v for k, v in self.__dict__.items() if k != "ciphertexts"}
        return {**state, "blobs": self._blobs()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        blobs = state.pop("blobs")
        self.__dict__.update(state)
        self.ciphertexts = tuple(self.context.load(sealapi.Ciphertext(), b) for b in blobs)


class _PackingBase:
    """Context and keys shared by the key holder and the server."""

    def __init__(self, params: PackingParams, context: SealContext, keys: KeySet) -> None:
        self.params, self.context, self.keys = params, context, keys
        self._encoder = sealapi.CKKSEncoder(context.seal)

    @property
    def slots(self) -> int:
        return self.params.slots

    def ciphertexts_for(self, length: int) -> int:
        return -(-length // self.slots)

    def public_key_bytes(self) -> int:
        """Bytes of the public key (SEAL's serialisation): what a party is sent once; adding needs no other key."""
        return len(self.context.save(self.keys.public))

    def describe(self) -> dict[str, object]:
        return {
            "poly_modulus_degree": self.params.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.params.coeff_mod_bit_sizes),
            "scale": self.params.scale,
            "security": self.context.security,
        }


class PackingServer(_PackingBase):
    """The aggregator: the public key only (it cannot decrypt); adds the clients' packed vectors."""

    def sum(self, contributions: Sequence[Packed], *, weights: Sequence[float] | None = None) -> Packed:
        """Σ_k w_k x_k slot-wise; with ``weights`` each contribution is first multiplied by its scalar (uses the
        one level the default chain has)."""
        if not contributions:
            raise ConfigError("sum needs at least one packed vector")
        first = contributions[0]
        for packed in contributions:
            if (packed.length, len(packed.ciphertexts)) != (first.length, len(first.ciphertexts)):
                raise CiphertextError(
                    f"cannot add packed vectors of {packed.length} and {first.length} values; pack equal lengths"
                )
        ws = [1.0] * len(contributions) if weights is None else [float(w) for w in weights]
        if len(ws) != len(contributions):
            raise ConfigError(f"{len(ws)} weights for {len(contributions)} packed vectors")
        parts = [list(p.ciphertexts) for p in contributions]
        if weights is not None:
            parts = [[self._scaled(c, w) for c in cts] for cts, w in zip(parts, ws, strict=True)]
        out = []
        for column in zip(*parts, strict=True):
            total = sealapi.Ciphertext()
            self.context.evaluator.add_many(list(column), total)
            out.append(total)
        weight = sum(abs(w) * p.weight for w, p in zip(ws, contributions, strict=True))
        count = sum(p.count for p in contributions)
        return Packed(self.context, out, length=first.length, count=count, weight=weight)

    def _scaled(self, cipher: sealapi.Ciphertext, weight: float) -> sealapi.Ciphertext:
        data = self.context.seal.get_context_data(cipher.parms_id())
        if data.next_context_data() is None:
            raise ParameterError("weighted sums need one more prime in coeff_mod_bit_sizes (NVFlare's [60, 40, 40])")
        last = float(data.parms().coeff_modulus()[-1].value())  # rescaling by it restores the scale exactly
        plain = sealapi.Plaintext()
        self._encoder.encode(weight, cipher.parms_id(), last, plain)
        out = sealapi.Ciphertext()
        self.context.evaluator.multiply_plain(cipher, plain, out)
        self.context.evaluator.rescale_to_next_inplace(out)
        return out


class GradientPacker(_PackingBase):
    """A key holder (each client, in NVFlare's deployment): keys from ``key_seed`` (a KeySeed); packs, encrypts,
    decrypts. The `seal` aggregation backend (encryptors.aggregation): every party holds the same secret key, so one
    party alone decrypts anything (``shares_needed`` 1)."""

    backend = "seal"
    shares_needed = 1  # how many parties' keys a decryption takes: one shared key
    reproducible = True  # keys and encryption noise come from the KeySeed

    def __init__(self, params: PackingParams | None = None, *, key_seed: KeySeed) -> None:
        key_seed = KeySeed.check(key_seed, "GradientPacker")
        params = params or PackingParams()
        if not params.scale > 1:
            raise ConfigError(f"packing scale must be > 1, got {params.scale!r}")
        context = SealContext(
            SealParams("ckks", int(params.poly_modulus_degree), tuple(int(b) for b in params.coeff_mod_bit_sizes)),
            insecure=False, insecure_allowed=False,
        )
        super().__init__(params, context, KeySet.generate(context, key_seed))
        self._randomness = Randomness(key_seed.child("packing", "encrypt"))

    @property
    def precision(self) -> float:
        """Largest |decrypt − x| of one fresh packed vector (``FRESH_NOISE_PER_DEGREE``·N/scale)."""
        return FRESH_NOISE_PER_DEGREE * self.params.poly_modulus_degree / self.params.scale

    def error_bound(self, packed: Packed) -> float:
        """Bound on |decrypt − Σ w_k x_k|: (Σ|w_k| + K)·precision — each fresh noise scaled by its weight, plus one
        precision per term for the weight's encoding and rescaling (tests/test_packing.py measures it)."""
        return (packed.weight + packed.count) * self.precision

    def server(self) -> PackingServer:
        """The aggregator's handle: same parameters, public key only."""
        return PackingServer(self.params, self.context, self.keys.without_secret())

    def encrypt(self, x: np.ndarray) -> Packed:
        values = np.asarray(x, dtype=np.float64).reshape(-1)
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise ConfigError("packing needs a non-empty finite vector")
        out = []
        for start in range(0, values.size, self.slots):
            chunk = values[start : start + self.slots]
            plain = sealapi.Plaintext()
            try:
                self._encoder.encode(chunk.tolist(), self.params.scale, plain)
            except ValueError as err:  # SEAL: scale or values out of bounds for the primes
                raise ParameterError(f"cannot encode at scale {self.params.scale}: {err}") from err
            out.append(encrypt(self.context, self.keys.public, plain, self._randomness.next(chunk.tobytes())))
        return Packed(self.context, out, length=values.size, count=1, weight=1.0)

    def decrypt(self, packed: Packed) -> np.ndarray:
        """The float64 vector (length ``packed.length``); only a key holder can (the server has no decrypt)."""
        parts = decrypt_values(self.context, self.keys.secret, self._encoder, packed.ciphertexts)
        return np.concatenate(parts)[: packed.length]

    def decrypt_alone(self, packed: Packed, *, party: int) -> np.ndarray:
        """What one party decrypts with the key it holds, without the others: under one shared key, everything."""
        return self.decrypt(packed)

    def cost_bytes(self, contributions: Sequence[Packed]) -> int:
        """Bytes a round sends: each client's ciphertexts (the decryption needs no message)."""
        return int(sum(c.nbytes for c in contributions))
