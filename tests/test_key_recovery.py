"""IND-CPA-D key recovery (encryptors.key_recovery): the ring arithmetic against naive references and SEAL, the
attack on fresh SEAL ciphertexts at N = 4096 (a 128-bit chain [40, 30, 30], the smallest ring degree a circuit
plans; the he-train parameters, N = 8192 and 16384, are measured in experiments/key_recovery.toml), what each
disclosure gives the attacker, flooding, and he-train's --key-recovery end to end (N = 8192)."""

from __future__ import annotations

import numpy as np
import pytest
from tenseal import sealapi

from encryptors import key_recovery as kr
from encryptors.circuit import CkksCircuit, plan_circuit
from encryptors.ring import Ntt, centered, conjugate, decode, reencode
from he_leak.config import RunConfig
from he_leak.errors import ConfigError
from he_leak.runner import run_one
from he_leak.seeds import KeySeed

#: SEAL decodes in float64: our decode of the same integer polynomial agrees to ~1e-15 on O(1) slots
DECODE_ATOL = 1e-9
#: a re-encoded exact decryption lies this close to integers (measured ~1e-7 at N = 4096, ~6e-6 at 16384)
ROUNDING_GAP = 1e-3
#: a fresh CKKS decryption read with the recovered key matches SEAL's own decryption to float64 rounding
READ_ATOL = 1e-9
KEY = KeySeed.from_hex("5a" * 32)


@pytest.fixture(scope="module")
def holder() -> CkksCircuit:
    return CkksCircuit(plan_circuit(depth=1, slots=8, scale_bits=30, first_bits=40, special_bits=30), key_seed=KEY,
                       periods=(8,))  # fmt: skip


@pytest.fixture(scope="module")
def vectors(holder: CkksCircuit):
    rng = np.random.default_rng(3)
    return [holder.encrypt(rng.normal(size=6), period=8) for _ in range(3)]


def views(holder: CkksCircuit, vectors, disclosure: str, *, flood_bits: int | None = None) -> list[kr.Disclosure]:
    """What the server holds of each vector under ``disclosure`` (batch 1)."""
    out = []
    for ct in vectors:
        shared = kr.share(ct.layout, holder.decrypt_slots(ct, flood_bits=flood_bits), disclosure, batch=1)
        out += kr.attacker_view(ct.layout, ct.ciphertexts, shared, disclosure, batch=1)
    return out


def test_ntt_multiplies_in_the_negacyclic_ring() -> None:
    q, n = 1099511480321, 64  # the 40-bit prime of the fixture's chain (q ≡ 1 mod 2n)
    ntt = Ntt(q, n)
    rng = np.random.default_rng(0)
    a = np.array([int(v) for v in rng.integers(0, q, n)], dtype=object)
    b = rng.integers(-1, 2, n).astype(object)
    full = np.convolve(a, b)
    naive = full[:n].copy()
    naive[: n - 1] -= full[n:]
    assert np.array_equal(ntt.multiply(a, b), naive % q)
    assert np.array_equal(ntt.inverse(ntt.forward(a)), a)
    assert np.array_equal(ntt.forward(conjugate(a) % q), ntt.forward(a)[ntt.conjugate_index()])


def test_embedding_is_seals(holder: CkksCircuit, vectors) -> None:
    """Our decode of m' = c0 + c1·s (true key) equals SEAL's decode; re-encoding gives back m' (complex slots) or
    m' + σ(m') (real parts), to far below half a unit."""
    ctx = holder.context
    secret = holder.secret_coefficients()
    assert set(np.unique(secret)) <= {-1, 0, 1}
    cipher = vectors[0].ciphertexts[0]
    c0, c1 = kr.ciphertext_coefficients(ctx, cipher)
    q0 = ctx.data_primes[0]
    m = centered(c0 + Ntt(q0, ctx.degree).multiply(c1, secret.astype(object)), q0)
    seal = holder.decrypt_slots(vectors[0])[0]
    np.testing.assert_allclose(decode(m, cipher.scale), seal, rtol=0, atol=DECODE_ATOL)
    m64 = m.astype(np.float64)
    assert np.abs(reencode(seal, cipher.scale, ctx.degree) - m64).max() < ROUNDING_GAP
    assert np.abs(2 * reencode(seal.real, cipher.scale, ctx.degree) - (m64 + conjugate(m64))).max() < ROUNDING_GAP
    assert np.array_equal(holder.decrypt(vectors[0]), vectors[0].layout.unpack([seal.real]))  # decode_double


@pytest.mark.parametrize(("disclosure", "used"), [("slots", 1), ("real", 2)])
def test_exact_disclosures_give_the_key(holder: CkksCircuit, vectors, disclosure: str, used: int) -> None:
    ctx = holder.context
    shared = views(holder, vectors, disclosure)[:used]
    rec = kr.recover_key(ctx, holder.evaluator(seed=1).keys.public, shared, disclosure)
    assert rec.recovered and np.array_equal(rec.secret, holder.secret_coefficients())
    assert rec.equations == ctx.degree and rec.rounding_gap < ROUNDING_GAP
    assert kr.reencoding_error(ctx, rec, shared, holder.secret_coefficients()) == 0.0
    other = holder.encrypt(np.linspace(-1, 1, 8), period=8)  # a ciphertext the attack never saw
    np.testing.assert_allclose(kr.decrypt(ctx, rec.secret, other.ciphertexts[0]),
                               holder.decrypt_slots(other)[0], rtol=0, atol=READ_ATOL)  # fmt: skip


def test_real_parts_of_one_ciphertext_are_not_enough(holder: CkksCircuit, vectors) -> None:
    with pytest.raises(ConfigError, match="two ciphertexts"):
        kr.recover_key(holder.context, holder.evaluator(seed=1).keys.public, views(holder, vectors, "real")[:1],
                       "real")  # fmt: skip


@pytest.mark.parametrize(("disclosure", "flood_bits"), [("entries", None), ("slots", 1), ("slots", 20)])
def test_inexact_disclosures_leave_noise_the_attack_cannot_remove(holder, vectors, disclosure, flood_bits) -> None:
    """Guessed slots (entries) or flooded ones (even 2^1) leave the re-encoded polynomial off the true one; the
    attacker's public-key check rejects its candidate, and it is not the key."""
    ctx, truth = holder.context, holder.secret_coefficients()
    shared = views(holder, vectors, disclosure, flood_bits=flood_bits)
    rec = kr.recover_key(ctx, holder.evaluator(seed=1).keys.public, shared, disclosure)
    assert not rec.recovered and rec.secret is None
    assert rec.residual_bits > np.log2(kr.PUBLIC_KEY_BOUND)
    assert kr.reencoding_error(ctx, rec, shared, truth) >= 1.0


def test_share_and_view(holder: CkksCircuit, vectors) -> None:
    ct = vectors[0]
    slots = holder.decrypt_slots(ct)
    (entries,) = kr.share(ct.layout, slots, "entries", batch=2)
    np.testing.assert_array_equal(entries, holder.decrypt(ct) / 2)
    (view,) = kr.attacker_view(ct.layout, ct.ciphertexts, [entries], "entries", batch=2)
    assert view.exact.sum() == ct.layout.length and view.slots.size == holder.plan.slot_count
    np.testing.assert_allclose(view.slots[8 : 8 + ct.layout.length], entries * 2)  # replicas guessed from entries
    with pytest.raises(ConfigError, match="disclosure"):
        kr.share(ct.layout, slots, "bytes", batch=1)
    assert sealapi.Ciphertext  # the views hold SEAL ciphertexts, which the attacker has anyway


HE_TRAIN = dict(scenario="he-train", attack="analytic", model="logreg", data="digits",
                encryptor_params={"scale_bits": 30})


def test_he_train_server_reads_the_inputs_with_the_recovered_key() -> None:
    """N = 8192 (logreg, 30-bit scale): every slot's real part shared → the key, and the client's inputs read
    exactly (a key holder's estimate, counted in key_holder_recovered); flooded with 2^20 → no key, no estimate."""
    cfg = RunConfig(**HE_TRAIN, key_recovery=True, disclosure="real", index=5)
    row = run_one(cfg, key_seed=KEY)
    kr_row = row.key_recovery
    assert row.he_params["poly_modulus_degree"] == 8192
    assert kr_row["recovered"] and kr_row["key_correct"] and kr_row["labels_correct"] == 1.0
    assert kr_row["inputs_max_error"] < 1e-4 and row.key_holder_recovered == 1 and row.key_plaintext_psnr > 60
    flooded = run_one(cfg.replace(flood_bits=20), key_seed=KEY).key_recovery
    assert not flooded["recovered"] and not flooded["key_correct"] and "inputs_max_error" not in flooded
    assert flooded["reencoding_error"] > 2.0**15


def test_he_train_refuses_what_it_would_ignore() -> None:
    with pytest.raises(ConfigError, match="--key-recovery"):
        run_one(RunConfig(**HE_TRAIN, disclosure="real"))
    with pytest.raises(ConfigError, match="decryption itself"):
        run_one(RunConfig(**HE_TRAIN, key_recovery=True, noise=1e-3))
    with pytest.raises(ConfigError, match="--key-recovery does not apply"):
        run_one(RunConfig(scenario="plain", attack="analytic", model="mlp", key_recovery=True))
