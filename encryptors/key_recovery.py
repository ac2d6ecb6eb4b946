"""IND-CPA-D key recovery on SEAL's CKKS (Li & Micciancio, EUROCRYPT 2021) as the he-train server can run it: it
holds the gradient ciphertexts (c0, c1) it evaluated and receives what the key holder shares of their decryption.

CKKS decryption gives m' = c0 + c1·s mod q, an integer polynomial (the message times the scale plus the
ciphertext's noise), decoded to slot values z = τ(m')/Δ in float64. The attacker:

1. re-encodes the disclosed values (encryptors.ring.reencode): Δ·τ⁻¹(z) is m' up to the decoder's float64
   rounding, far below half a coefficient unit at these sizes (``rounding_gap`` records it), so rounding gives m'
   exactly — when every slot is disclosed exactly. What the key holder hands over decides how much (``DISCLOSURES``):
   - ``slots``: every slot, complex (the whole decoded vector: Li & Micciancio's setting): m' itself, N exact
     integer equations per ciphertext;
   - ``real``: the real part of every slot (SEAL's decode_double; TenSEAL's decrypt of a vector filling the slots):
     Re z = τ((m' + σ(m'))/2)/Δ with σ: X → X^(−1), so only m' + σ(m') comes back (coefficient i: m'_i − m'_(N−i)),
     N/2 exact equations per ciphertext: the imaginary half is lost, and one ciphertext is not enough;
   - ``entries``: the gradient's entries only (what he-train shares): the attacker fills every other slot with its
     best guess from the public layout (a replica copies its entry, padding is zero) and proceeds as for ``real``.
     The slots it guesses carry noise it does not know, so its rounded polynomial is off by that noise.
2. solves c1·s = m' − c0 over R_q0 (q0: the first prime, which every level keeps; s is ternary, so s mod q0 is s)
   in the NTT domain, where the ring product is pointwise and σ swaps point i with N − 1 − i. ``slots``:
   ŝ_i = (m̂'_i − ĉ0_i)/ĉ1_i from one ciphertext. ``real``: per conjugate pair (i, N−1−i) each ciphertext gives
   ĉ1_i ŝ_i + ĉ1_(N−1−i) ŝ_(N−1−i) = û_i − ĉ0_i − ĉ0_(N−1−i), so two ciphertexts give a 2 × 2 system per pair (a
   pair whose determinant vanishes mod q0 takes the next two ciphertexts).
3. checks the candidate with public data only: a SEAL secret key is ternary and the public key (b, a) has
   b + a·s = −e, e a Gaussian clipped at |e| ≤ 19; the candidate is accepted when it is ternary and
   max |b + a·s mod q0| ≤ PUBLIC_KEY_BOUND (a wrong one leaves residues spread over ±q0/2).

With the key, ``decrypt`` reads any ciphertext the server holds, the client's encrypted inputs included. Noise
flooding (encryptors.circuit) adds Gaussian noise of std 2^B to m' before decoding: the re-encoded polynomial is
m' + f with f unknown, rounding cannot remove it, and the solution of the system is not small — what is left is an
RLWE instance with error 2^B, which this linear attack does not solve (nor does it try lattice reduction).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tenseal import sealapi

from encryptors import seal_format
from encryptors.circuit_layout import Grid, Layout, Replicated
from encryptors.ring import Ntt, centered, conjugate, decode, reencode
from encryptors.seal_backend import SealContext
from he_leak.config import DISCLOSURES
from he_leak.errors import CiphertextError, ConfigError

PUBLIC_KEY_BOUND = 64  # |b + a·s| of the true key is SEAL's public-key error: a Gaussian clipped at 6σ ≈ 19.2


@dataclass(frozen=True, eq=False)
class Disclosure:
    """One ciphertext the server holds and the N/2 slot values it has of its decryption (complex for ``slots``,
    real otherwise; multiplied back by the batch), ``exact`` marking the values disclosed rather than guessed."""

    ciphertext: sealapi.Ciphertext
    slots: np.ndarray
    exact: np.ndarray


@dataclass(frozen=True, eq=False)
class KeyRecovery:
    """The attacker's outcome: ``recovered`` when its candidate passed its own public-key check."""

    disclosure: str
    recovered: bool
    seconds: float
    equations: int  # exact real equations the disclosed values give, over all ciphertexts used (N unknowns)
    rounding_gap: float  # largest distance of a re-encoded coefficient from an integer (≪ 0.5 when exact)
    residual_bits: float | None  # log2 of max |b + a·s mod q0| for the candidate (≤ log2 PUBLIC_KEY_BOUND: accepted)
    secret: np.ndarray | None  # the accepted candidate's coefficients (int8), None when rejected
    reencoded: tuple[np.ndarray, ...]  # the rounded polynomial per ciphertext (m', or m' + σ(m')), for scoring


# --- the key holder's side: what it hands over -------------------------------------------------------------------
def share(layout: Layout, slots: Sequence[np.ndarray], disclosure: str, *, batch: int) -> list[np.ndarray]:
    """What the key holder hands over of one decrypted vector (``slots``: each chunk's complex slot values), as the
    batch mean: the layout's entries (``entries``), every slot's real part, or every slot."""
    if disclosure not in DISCLOSURES:
        raise ConfigError(f"disclosure {disclosure!r}: use one of {', '.join(DISCLOSURES)}")
    if disclosure == "entries":
        return [layout.unpack([np.real(s) for s in slots]) / batch]
    return [(np.real(s) if disclosure == "real" else np.asarray(s)) / batch for s in slots]


def shared_mask(layout: Layout, chunk: int) -> np.ndarray:
    """Which slots of ``chunk`` hold an entry the key holder shares (replicas and padding do not)."""
    slot = np.arange(layout.slots)
    if isinstance(layout, Replicated):
        return slot < layout.length
    if isinstance(layout, Grid):
        row = chunk * layout.rows_per_chunk + slot // layout.stride
        return (row < layout.rows) & (slot % layout.stride < layout.cols)
    raise ConfigError(f"no shared mask for layout {layout}")


# --- the attacker's side -----------------------------------------------------------------------------------------
def attacker_view(layout: Layout, ciphertexts: Sequence[sealapi.Ciphertext], shared: Sequence[np.ndarray],
                  disclosure: str, *, batch: int) -> list[Disclosure]:  # fmt: skip
    """Every slot value the server has or guesses, per ciphertext of one vector (its layout is public)."""
    if disclosure == "entries":
        guesses = layout.pack(np.asarray(shared[0]) * batch)
        return [Disclosure(c, g, shared_mask(layout, k)) for k, (c, g) in enumerate(zip(ciphertexts, guesses,
                                                                                          strict=True))]  # fmt: skip
    return [Disclosure(c, np.asarray(v) * batch, np.ones(layout.slots, bool))
            for c, v in zip(ciphertexts, shared, strict=True)]  # fmt: skip


def first_prime_coefficients(context: SealContext, ntt_rows: np.ndarray) -> np.ndarray:
    """Coefficients mod q0 of polynomials given in SEAL's NTT form mod q0 (shape (k, N), k ≤ 2), through SEAL's own
    inverse NTT on a ciphertext at the last level (q0 alone); public arithmetic, no key."""
    rows = np.asarray(ntt_rows, dtype=np.uint64).reshape(-1, context.degree)
    data = np.zeros((2, 1, context.degree), dtype=np.uint64)
    data[: len(rows), 0] = rows
    if len(rows) == 1:
        data[1, 0] = rows[0]  # a transparent ciphertext (c1 = 0) would be refused
    version = seal_format.unwrap(context.save(sealapi.Ciphertext()))[0]
    fake = seal_format.SealCiphertext(tuple(context.seal.last_parms_id()), True, 2, context.degree, 1, 1.0, 1, data,
                                      version)  # fmt: skip
    cipher = context.load(sealapi.Ciphertext(), seal_format.dump(fake, compress=False))
    context.evaluator.transform_from_ntt_inplace(cipher)
    return seal_format.parse(context.save(cipher)).data[: len(rows), 0]


def ciphertext_coefficients(context: SealContext, cipher: sealapi.Ciphertext) -> tuple[np.ndarray, np.ndarray]:
    """(c0, c1) mod q0 in coefficient form."""
    if cipher.size() != 2:
        raise CiphertextError(f"key recovery needs a relinearised ciphertext (2 polynomials), got {cipher.size()}")
    parsed = seal_format.parse(context.save(cipher))
    rows = parsed.data[:, 0] if parsed.is_ntt_form else None
    c0, c1 = first_prime_coefficients(context, rows) if rows is not None else parsed.data[:, 0]
    return c0.astype(object), c1.astype(object)


def public_key_coefficients(context: SealContext, public_key: sealapi.PublicKey) -> tuple[np.ndarray, np.ndarray]:
    """(b, a) of the public key mod q0 (b + a·s = −e)."""
    parsed = seal_format.parse(context.save(public_key))
    b, a = first_prime_coefficients(context, parsed.data[:, 0])
    return b.astype(object), a.astype(object)


def _reencoded(d: Disclosure, complex_slots: bool, degree: int) -> tuple[np.ndarray, float]:
    """The rounded polynomial (m' for complex slots, m' + σ(m') for real ones) and the rounding gap."""
    values = reencode(d.slots if complex_slots else np.real(d.slots), d.ciphertext.scale, degree)
    values = values if complex_slots else 2 * values
    rounded = np.rint(values)
    return np.array([int(v) for v in rounded], dtype=object), float(np.abs(values - rounded).max())


def _solve_pairs(ntt: Ntt, rows: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
    """ŝ from per-ciphertext (ĉ1, rhs) with rhs_i = ĉ1_i ŝ_i + ĉ1_i* ŝ_i* (i* = N−1−i); None if some pair stays
    singular over every two ciphertexts."""
    q, n = ntt.q, ntt.n
    lo, hi = np.arange(n // 2), ntt.conjugate_index()[: n // 2]
    s_hat = np.empty(n, dtype=object)
    todo = np.ones(n // 2, dtype=bool)
    for r1 in range(len(rows)):
        for r2 in range(r1 + 1, len(rows)):
            (c1, y1), (c2, y2) = rows[r1], rows[r2]
            a1, b1, a2, b2 = c1[lo], c1[hi], c2[lo], c2[hi]
            det = (a1 * b2 - a2 * b1) % q
            ok = todo & (det != 0)
            inv = np.array([pow(int(d), -1, q) if good else 0 for d, good in zip(det, ok, strict=True)], dtype=object)
            s_hat[lo[ok]] = ((y1[lo] * b2 - y2[lo] * b1) * inv % q)[ok]
            s_hat[hi[ok]] = ((a1 * y2[lo] - a2 * y1[lo]) * inv % q)[ok]
            todo &= ~ok
            if not todo.any():
                return s_hat
    return None


def _candidate(ntt: Ntt, coeffs: list[tuple[np.ndarray, np.ndarray]], polys: list[np.ndarray],
               complex_slots: bool) -> np.ndarray | None:  # fmt: skip
    """The solution s (centered mod q0) of the linear system, or None when it is singular."""
    q, conj = ntt.q, ntt.conjugate_index()
    hats = [(ntt.forward(c0), ntt.forward(c1), ntt.forward(u)) for (c0, c1), u in zip(coeffs, polys, strict=True)]
    if complex_slots:
        for c0h, c1h, uh in hats:
            if all(v != 0 for v in c1h):
                inv = np.array([pow(int(v), -1, q) for v in c1h], dtype=object)
                return centered(ntt.inverse((uh - c0h) * inv % q), q)
        return None
    rows = [(c1h, (uh - c0h - c0h[conj]) % q) for c0h, c1h, uh in hats]
    s_hat = _solve_pairs(ntt, rows)
    return None if s_hat is None else centered(ntt.inverse(s_hat), q)


def recover_key(context: SealContext, public_key: sealapi.PublicKey, disclosures: Sequence[Disclosure],
                disclosure: str) -> KeyRecovery:  # fmt: skip
    """The attack of the module docstring on what the server holds (ciphertexts, the values disclosed of their
    decryption, the public key): no secret key, no truth."""
    start = time.perf_counter()
    q0 = context.data_primes[0]
    ntt = Ntt(q0, context.degree)
    complex_slots = disclosure == "slots"
    used = list(disclosures[:1] if complex_slots else disclosures[:2])
    if disclosure != "slots" and len(used) < 2:
        raise ConfigError(f"key recovery from {disclosure} disclosures needs two ciphertexts, got {len(used)}")
    polys, gaps = zip(*[_reencoded(d, complex_slots, context.degree) for d in used], strict=True)
    coeffs = [ciphertext_coefficients(context, d.ciphertext) for d in used]
    s = _candidate(ntt, coeffs, list(polys), complex_slots)
    residual = None
    if s is not None:
        b, a = public_key_coefficients(context, public_key)
        worst = int(np.abs(centered(b + ntt.multiply(a, s), q0)).max())
        residual = math.log2(worst) if worst else 0.0
    accepted = s is not None and bool(np.all(np.abs(s) <= 1)) and residual <= math.log2(PUBLIC_KEY_BOUND)
    per = [2 * int(d.exact.sum()) if complex_slots else int(d.exact.sum()) for d in used]
    return KeyRecovery(disclosure, accepted, time.perf_counter() - start, sum(per), max(gaps), residual,
                       s.astype(np.int8) if accepted else None, tuple(polys))  # fmt: skip


def decrypt(context: SealContext, secret: np.ndarray, cipher: sealapi.Ciphertext) -> np.ndarray:
    """The N/2 complex slot values of ``cipher`` decrypted with a recovered key ``secret`` (m' = c0 + c1·s mod q0,
    centered: exact while |m'| < q0/2, which holds for every ciphertext of a planned circuit)."""
    q0 = context.data_primes[0]
    c0, c1 = ciphertext_coefficients(context, cipher)
    m = centered(c0 + Ntt(q0, context.degree).multiply(c1, np.asarray(secret, dtype=object)), q0)
    return decode(m, cipher.scale)


# --- scoring (truth side: the key holder's secret) -----------------------------------------------------------------
def secret_coefficients(context: SealContext, secret_key: sealapi.SecretKey) -> np.ndarray:
    """The key holder's secret key as int8 coefficients (for scoring an attack, never for the attacker)."""
    residues = seal_format.plaintext_residues(context.save(secret_key), context.degree)
    return centered(first_prime_coefficients(context, residues[:1])[0], context.data_primes[0]).astype(np.int8)


def reencoding_error(context: SealContext, recovery: KeyRecovery, disclosures: Sequence[Disclosure],
                     secret: np.ndarray) -> float:  # fmt: skip
    """RMS (coefficient units) of the attacker's rounded polynomials minus the true ones (m' or m' + σ(m') with the
    true key): 0 when the disclosures determine them; the noise the attacker cannot remove otherwise."""
    q0 = context.data_primes[0]
    ntt = Ntt(q0, context.degree)
    errors = []
    for d, got in zip(disclosures, recovery.reencoded, strict=False):
        c0, c1 = ciphertext_coefficients(context, d.ciphertext)
        m = centered(c0 + ntt.multiply(c1, np.asarray(secret, dtype=object)), q0)
        if recovery.disclosure != "slots":
            m = m + conjugate(m)
        errors.append(np.asarray(got - m, dtype=np.float64))
    return float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))


__all__ = ["DISCLOSURES", "PUBLIC_KEY_BOUND", "Disclosure", "KeyRecovery", "attacker_view", "decrypt",
           "reencoding_error", "recover_key", "secret_coefficients", "share", "shared_mask"]
