"""Threshold (multiparty) CKKS for encrypted aggregation, with OpenFHE's Python wrapper: the ``openfhe-threshold``
backend of `encryptors.aggregation`, behind GradientPacker's interface (encrypt / server sum / decrypt).

n-out-of-n: party 0 runs OpenFHE's ``KeyGen``, party i its ``MultipartyKeyGen`` on party i−1's public key, so each
party holds one share s_i of the secret s = Σ s_i and the last public key is the joint one (b = −a·s + e) that every
client encrypts under. The aggregator adds ciphertexts with no key. A decryption of c = (c0, c1) needs every share:
the lead party sends c0 + s_0·c1 + e_0 (``MultipartyDecryptLead``), each other party s_i·c1 + e_i
(``MultipartyDecryptMain``), and ``MultipartyDecryptFusion`` adds them to c0 + s·c1 + Σ e_i. OpenFHE's CKKS
multiparty mode is FIXED_NOISE_MULTIPARTY (NOISE_FLOODING_MULTIPARTY is refused for CKKS): each partial decryption
carries Gaussian noise of standard deviation 2^20 (OpenFHE's NoiseFlooding::MP_SD) in the coefficients: at N = 8192
and scale 2^40 that is ~8.6e-5·√n per decrypted value for n parties, against SEAL's ~1e-8 (PARTIAL_NOISE_SD).

One party alone (``decrypt_alone``): its share used as if it were the key, c0 + s_j·c1 + e_j = m + e − Σ_{i≠j} s_i·c1,
which is m plus a polynomial that looks uniform without the other shares — it decodes to noise, or OpenFHE refuses to
decode it (its CKKS decoder checks the approximation error); either is recorded, never dropped.

Parameters: `encryptors.packing.PackingParams` mapped onto OpenFHE's CKKS: ring dimension N, the first prime's bits,
scaling primes of log2(scale) bits (one per middle entry of coeff_mod_bit_sizes; NVFlare's [60, 40, 40] is depth 1),
manual rescaling (FIXEDMANUAL) and OpenFHE's own 128-bit check (HEStd_128_classic); the key-switching primes are
OpenFHE's choice (aggregation never switches keys). Ciphertext bytes: OpenFHE's binary serialisation compressed with
zstd, as SEAL compresses its own (encryptors.packing), so the two backends' bytes compare like with like.

Seeds: OpenFHE draws keys and noise from its own PRNG, seeded inside the C++ library from std::random_device and the
clock (blake2engine.cpp); the Python wrapper offers no way to seed it (only a C++ PRNG library loaded by path could).
So this backend does not use the key holder's KeySeed, its runs are NOT byte-reproducible (``reproducible`` False,
recorded in he_params), and no public value leads to its keys either.

Threads: OpenFHE parallelises with OpenMP; every call here runs on one thread (threadpoolctl), like SEAL, so the two
backends' seconds compare like with like.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import zstandard
from threadpoolctl import threadpool_limits

from encryptors.packing import FRESH_NOISE_PER_DEGREE, PackingParams
from he_leak.errors import CiphertextError, ConfigError, ParameterError
from he_leak.seeds import KeySeed

INSTALL = "pip install -e '.[threshold]'"
PARTIAL_NOISE_SD = 2.0**20  # OpenFHE's NoiseFlooding::MP_SD: each partial decryption's Gaussian, coefficient domain
# In a slot the fused noise of n parties has standard deviation 2^20·√(N·n)/Δ: measured (4096 slots, N = 8192,
# scale 2^40, n = 1, 2, 5, 9) at 1.00–1.02 times that, i.e. 8.6e-5·√n. |decrypt − x| is bounded by the fresh bound of
# encryptors.packing per summed term plus PARTIAL_SIGMAS of those standard deviations (the largest of 4096 slots was
# 3.5–3.8 of them)
PARTIAL_SIGMAS = 6.0


def load_openfhe() -> Any:
    """The ``openfhe`` module, or a one-line ConfigError naming the install."""
    try:
        import openfhe
    except ImportError as err:
        raise ConfigError(
            f"--he-backend openfhe-threshold needs OpenFHE's Python wrapper, not importable here ({err}): {INSTALL} "
            "(PyPI's openfhe wheels hold a CPython 3.10 or 3.12 binary; on other Pythons build openfhe-python from "
            "source)"
        ) from None
    return openfhe


def openfhe_version(module: Any) -> str:
    """The wrapper's version: its ``__version__`` (PyPI's wheels), else its package metadata, else "unknown" (a
    wrapper built from source and copied in has neither)."""
    if hasattr(module, "__version__"):
        return str(module.__version__)
    try:
        return importlib.metadata.version("openfhe")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def one_thread() -> threadpool_limits:
    return threadpool_limits(limits=1, user_api="openmp")


class ThresholdPacked:
    """One party's packed vector under the joint public key: ``length`` values in ``len(ciphertexts)`` OpenFHE
    ciphertexts, the sum of ``count`` fresh encryptions."""

    def __init__(self, ciphertexts: Sequence[Any], *, length: int, count: int) -> None:
        self.ciphertexts, self.length, self.count = tuple(ciphertexts), length, count
        self.weight = float(count)

    @property
    def nbytes(self) -> int:
        """Bytes sent: zstd of OpenFHE's binary serialisation of every ciphertext."""
        return sum(serialized_bytes(c) for c in self.ciphertexts)


def serialized_bytes(obj: Any) -> int:
    """zstd-compressed size of OpenFHE's binary serialisation of ``obj``."""
    ofhe = load_openfhe()
    return len(zstandard.ZstdCompressor().compress(ofhe.Serialize(obj, ofhe.BINARY)))


class ThresholdServer:
    """The aggregator: the crypto context and nothing secret; adds packed vectors slot-wise."""

    def __init__(self, context: Any) -> None:
        self.context = context

    def sum(self, contributions: Sequence[ThresholdPacked], *, weights: Sequence[float] | None = None) -> Any:
        if weights is not None:
            raise ConfigError("the threshold backend adds unweighted sums only (he-aggregate's mean divides after)")
        if not contributions:
            raise ConfigError("sum needs at least one packed vector")
        first = contributions[0]
        if any((p.length, len(p.ciphertexts)) != (first.length, len(first.ciphertexts)) for p in contributions):
            raise CiphertextError("cannot add packed vectors of different lengths; pack equal lengths")
        out = []
        with one_thread():
            for column in zip(*(p.ciphertexts for p in contributions), strict=True):
                total = column[0]
                for cipher in column[1:]:
                    total = self.context.EvalAdd(total, cipher)
                out.append(total)
        return ThresholdPacked(out, length=first.length, count=sum(p.count for p in contributions))


class ThresholdPacker:
    """All parties of an n-out-of-n threshold CKKS aggregation, simulated in one process: party i holds share i."""

    backend = "openfhe-threshold"
    reproducible = False  # OpenFHE's PRNG cannot be seeded from Python (module docstring)

    def __init__(self, params: PackingParams | None = None, *, parties: int, key_seed: KeySeed) -> None:
        KeySeed.check(key_seed, "ThresholdPacker")  # taken for the interface; OpenFHE cannot use it (docstring)
        self.ofhe = load_openfhe()
        self.params = params or PackingParams()
        if parties < 1:
            raise ConfigError(f"threshold CKKS needs at least one party, got {parties}")
        self.parties = self.shares_needed = int(parties)
        with one_thread():
            self.context = self._context()
            pairs = [self.context.KeyGen()]
            for _ in range(1, self.parties):
                pairs.append(self.context.MultipartyKeyGen(pairs[-1].publicKey))
        self.public_key = pairs[-1].publicKey
        self._shares = tuple(p.secretKey for p in pairs)

    def _context(self) -> Any:
        ofhe, p = self.ofhe, self.params
        bits = tuple(int(b) for b in p.coeff_mod_bit_sizes)
        scale_bits = math.log2(p.scale) if p.scale > 1 else math.nan
        if len(bits) < 3 or not scale_bits.is_integer() or any(b != scale_bits for b in bits[1:-1]):
            raise ParameterError(
                f"the threshold backend maps coeff_mod_bit_sizes [first, log2(scale) × depth, special] onto OpenFHE; "
                f"got {list(bits)} with scale 2^{scale_bits:g}: use e.g. [60, 40, 40] with scale 2**40"
            )
        cp = ofhe.CCParamsCKKSRNS()
        cp.SetRingDim(int(p.poly_modulus_degree))
        cp.SetBatchSize(int(p.poly_modulus_degree) // 2)
        cp.SetFirstModSize(bits[0])
        cp.SetScalingModSize(int(scale_bits))
        cp.SetMultiplicativeDepth(len(bits) - 2)
        cp.SetScalingTechnique(ofhe.FIXEDMANUAL)
        cp.SetSecurityLevel(ofhe.HEStd_128_classic)
        try:
            context = ofhe.GenCryptoContext(cp)
        except RuntimeError as err:
            raise ParameterError(f"OpenFHE rejects the threshold parameters: {err}".splitlines()[0]) from None
        for feature in (ofhe.PKESchemeFeature.PKE, ofhe.PKESchemeFeature.LEVELEDSHE, ofhe.PKESchemeFeature.MULTIPARTY):
            context.Enable(feature)
        return context

    @property
    def slots(self) -> int:
        return self.params.slots

    def ciphertexts_for(self, length: int) -> int:
        return -(-length // self.slots)

    @property
    def decryption_noise(self) -> float:
        """Standard deviation, per slot, of the noise every party's partial decryption adds (see PARTIAL_NOISE_SD)."""
        return PARTIAL_NOISE_SD * math.sqrt(self.params.poly_modulus_degree * self.parties) / self.params.scale

    @property
    def precision(self) -> float:
        """Largest |decrypt − x| of one fresh packed vector, partial-decryption noise of every party included."""
        return self.error_bound(ThresholdPacked((), length=0, count=1))

    def error_bound(self, packed: ThresholdPacked) -> float:
        """Bound on |decrypt − Σ x_k|: one fresh bound per term plus PARTIAL_SIGMAS of the decryption's noise."""
        fresh = FRESH_NOISE_PER_DEGREE * self.params.poly_modulus_degree / self.params.scale
        return packed.count * fresh + PARTIAL_SIGMAS * self.decryption_noise

    def server(self) -> ThresholdServer:
        return ThresholdServer(self.context)

    def encrypt(self, x: np.ndarray) -> ThresholdPacked:
        values = np.asarray(x, dtype=np.float64).reshape(-1)
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise ConfigError("packing needs a non-empty finite vector")
        out = []
        with one_thread():
            for start in range(0, values.size, self.slots):
                plain = self.context.MakeCKKSPackedPlaintext(values[start : start + self.slots].tolist())
                out.append(self.context.Encrypt(self.public_key, plain))
        return ThresholdPacked(out, length=values.size, count=1)

    def partials(self, cipher: Any, parties: Sequence[int]) -> list[Any]:
        """The partial decryptions of ``cipher`` by ``parties`` (the first one leads: it adds c0)."""
        lead, *rest = parties
        out = self.context.MultipartyDecryptLead([cipher], self._shares[lead])
        return out + [self.context.MultipartyDecryptMain([cipher], self._shares[i])[0] for i in rest]

    def decrypt_with(self, packed: ThresholdPacked, parties: Sequence[int]) -> np.ndarray | None:
        """The fused decryption from the partial decryptions of ``parties`` only (the first leads); None when OpenFHE
        refuses to decode the result (its CKKS decoder's approximation-error check) — what fewer than all shares
        give."""
        parts = []
        try:
            with one_thread():
                for cipher in packed.ciphertexts:
                    plain = self.context.MultipartyDecryptFusion(self.partials(cipher, parties))
                    plain.SetLength(self.slots)
                    parts.append(np.asarray(plain.GetRealPackedValue(), np.float64))
        except RuntimeError as err:
            if "approximation error" not in str(err) or len(parties) == self.parties:
                raise
            return None
        return np.concatenate(parts)[: packed.length]

    def decrypt(self, packed: ThresholdPacked) -> np.ndarray:
        """The protocol's decryption: every party's partial decryption, fused."""
        return self.decrypt_with(packed, range(self.parties))

    def decrypt_alone(self, packed: ThresholdPacked, *, party: int) -> np.ndarray | None:
        """What ``party`` reads with its share alone (its partial decryption as lead, fused on its own; None when
        OpenFHE refuses to decode it)."""
        return self.decrypt_with(packed, [party])

    def cost_bytes(self, contributions: Sequence[ThresholdPacked]) -> int:
        """Bytes a round sends: each client's ciphertexts plus every party's partial decryption of the sum."""
        total = self.server().sum(contributions)
        with one_thread():
            partial = sum(serialized_bytes(p) for c in total.ciphertexts for p in self.partials(c, range(self.parties)))
        return int(sum(c.nbytes for c in contributions) + partial)

    def public_key_bytes(self) -> int:
        """Bytes of the joint public key (what every client is sent once)."""
        return serialized_bytes(self.public_key)

    def describe(self) -> dict[str, object]:
        return {
            "poly_modulus_degree": self.params.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.params.coeff_mod_bit_sizes),
            "scale": self.params.scale,
            "security": "128-bit",  # OpenFHE's HEStd_128_classic check at context creation
            "backend": self.backend, "parties": self.parties, "shares_needed": self.shares_needed,
            "multiparty_mode": "FIXED_NOISE_MULTIPARTY", "partial_noise_sd": PARTIAL_NOISE_SD,
            "decryption_noise_per_value": self.decryption_noise,
            "reproducible": self.reproducible, "openfhe": openfhe_version(self.ofhe),
        }  # fmt: skip
