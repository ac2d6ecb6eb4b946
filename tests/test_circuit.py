"""CKKS circuits on SEAL: every operation against float64 numpy, depth and layout errors, reproducibility, key
components with independent randomness, and a one-hidden-layer forward + backward pass."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import tenseal as ts
from tenseal import sealapi

from encryptors import seal_format
from encryptors.circuit import CkksCircuit, Grid, Replicated, plan_circuit
from encryptors.circuit_layout import rotation_steps
from encryptors.seal_backend import decrypt_values
from encryptors.seal_keys import generate_kswitch, split_kswitch
from encryptors.security import SECURE_MAX_BITS
from he_leak.errors import ConfigError, ParameterError
from he_leak.models.losses import SIGMOID3
from he_leak.seeds import KeySeed

#: max |HE − numpy| of one or two operations at scale 2**40, N=8192, per unit of max(1, max |numpy|) (products carry
#: the operands' magnitude into the error): measured 2e-9 to 6e-7 on O(1) values, 2.4e-6 on a matvec reaching ~10
OP_ATOL = 2e-6
#: the training chain at scale 2**40: max |HE − numpy| / max |numpy| per quantity (the brief's bound)
CHAIN_RTOL = 1e-4
KEY_SEED = KeySeed.from_hex("42" * 32)  # test secrets
OTHER_KEY = KeySeed.from_hex("43" * 32)
PERIOD = 16


@pytest.fixture(scope="module")
def holder() -> CkksCircuit:
    """Depth 2 at 40-bit scale: N=8192, [60, 40, 40, 60]; Galois keys for periods 16 and 128."""
    return CkksCircuit(plan_circuit(depth=2, slots=128), key_seed=KEY_SEED, periods=(PERIOD, 128))


@pytest.fixture(scope="module")
def ev(holder: CkksCircuit):
    return holder.evaluator(seed=7)


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def close(got: np.ndarray, want: np.ndarray, atol: float = OP_ATOL) -> None:
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=atol * max(1.0, float(np.abs(want).max(initial=0))))


# --- planning ----------------------------------------------------------------------------------------------------
PLANS = [(1, 8, 4096), (2, 64, 8192), (3, 64, 16384), (7, 64, 16384), (8, 64, 32768), (2, 5000, 16384)]


@pytest.mark.parametrize(("depth", "slots", "degree"), [*PLANS, (2, 10000, 32768)])
def test_plan_picks_the_smallest_secure_degree(depth: int, slots: int, degree: int) -> None:
    if depth == 1:  # [60, 40, 60] = 160 bits exceeds 4096's 109: a smaller first/special prime fits
        plan = plan_circuit(depth=1, slots=slots, scale_bits=30, first_bits=40, special_bits=30)
    else:
        plan = plan_circuit(depth=depth, slots=slots)
    assert plan.poly_modulus_degree == degree and plan.slot_count >= slots
    bits = plan.coeff_mod_bit_sizes
    assert sum(bits) <= SECURE_MAX_BITS[degree] and len(bits) == depth + 2
    smaller = degree // 2
    assert smaller // 2 < slots or sum(bits) > SECURE_MAX_BITS.get(smaller, 0)
    assert plan.describe()["security"] == "128-bit"


def test_plan_refuses_what_no_secure_degree_holds() -> None:
    with pytest.raises(ParameterError, match="lower the depth"):
        plan_circuit(depth=20, slots=8)
    with pytest.raises(ParameterError, match="60 bits"):
        plan_circuit(depth=2, slots=8, scale_bits=40, first_bits=70)


# --- keys ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("galois", [False, True])
def test_every_key_component_is_what_seal_makes_from_its_own_seed(holder: CkksCircuit, galois: bool) -> None:
    """Component k equals component k of SEAL's own key generated in a context seeded with that component's seed,
    and no two components share their uniform part a (c1)."""
    keys = holder.evaluator(seed=1).keys
    tool = holder.context.seal.key_context_data().galois_tool()
    elt = tool.get_elt_from_step(1) if galois else None
    _, _, table = split_kswitch(holder.context.save(keys.galois if galois else keys.relin))
    row = table[sealapi.GaloisKeys.get_index(elt)] if galois else table[0]
    seed = KEY_SEED.child("galois" if galois else "relin")
    c1 = []
    for k, blob in enumerate(row):
        own = generate_kswitch(holder.context, holder._keys.secret, seed.child(elt or 0, k), elt)
        _, _, seal_table = split_kswitch(own)
        (seal_row,) = [r for r in seal_table if r]
        np.testing.assert_array_equal(seal_format.parse(blob).data, seal_format.parse(seal_row[k]).data)
        c1.append(seal_format.parse(blob).data[1])
    assert len(row) == 3 and not any(np.array_equal(c1[i], c1[j]) for i in range(3) for j in range(i))


def test_same_key_seed_same_bytes_after_evaluation(holder: CkksCircuit, rng: np.random.Generator) -> None:
    x, w = rng.random(PERIOD), rng.normal(size=(PERIOD, PERIOD))
    twin = CkksCircuit(holder.plan, key_seed=KEY_SEED, periods=(PERIOD,))
    other = CkksCircuit(holder.plan, key_seed=OTHER_KEY, periods=(PERIOD,))
    blobs = []
    for h in (holder, twin, other):
        e = h.evaluator(seed=3)
        y = e.multiply(e.matvec(w, h.encrypt(x)), e.add_plain(h.encrypt(x), 1.0))
        blobs.append(h.context.save(y.ciphertexts[0]))
    assert blobs[0] == blobs[1] != blobs[2]


def test_evaluator_holds_no_secret_key(holder: CkksCircuit) -> None:
    ev = pickle.loads(pickle.dumps(holder.evaluator(seed=1)))
    secret = holder.context.save(holder._keys.secret)
    blob = pickle.dumps(holder.evaluator(seed=1))
    assert ev.keys.secret is None and not hasattr(ev, "decrypt")
    assert all(secret[i : i + 32] not in blob for i in (100, len(secret) // 2))
    words = b"".join(w.to_bytes(8, "little") for w in KEY_SEED.prng_words())
    stream = holder._randomness.root.material  # the holder's encryption randomness, a child of the key seed
    assert stream in pickle.dumps(holder._randomness)
    for pattern in (KEY_SEED.material, KEY_SEED.hex().encode(), words[:16], stream):
        assert pattern not in blob


# --- operations ------------------------------------------------------------------------------------------------
def test_encrypt_decrypt_and_layouts(holder: CkksCircuit, rng: np.random.Generator) -> None:
    x = rng.normal(size=10)
    ct = holder.encrypt(x)
    assert ct.layout == Replicated(10, 16, 4096) and ct.level == 0
    close(holder.decrypt(ct), x)
    with pytest.raises(ConfigError, match="period"):
        holder.encrypt(x, period=12)


def test_linear_ops_align_levels_and_scales(holder: CkksCircuit, ev, rng: np.random.Generator) -> None:
    a, b, c = rng.normal(size=(3, PERIOD))
    ca, cb = holder.encrypt(a), holder.encrypt(b)
    deep = ev.mul_plain(ev.mul_plain(cb, c), 0.5)  # level 2
    assert deep.level == 2
    close(holder.decrypt(ev.add(ca, deep)), a + b * c * 0.5)
    close(holder.decrypt(ev.sub(deep, ca)), b * c * 0.5 - a)
    close(holder.decrypt(ev.add_plain(ca, c)), a + c)
    close(holder.decrypt(ev.sub_plain(deep, 3.0)), b * c * 0.5 - 3.0)
    close(holder.decrypt(ev.lower(ca, 2)), a)
    close(holder.decrypt(ev.sub(ca, ca)), np.zeros(PERIOD))  # SEAL refuses transparent results: a fresh zero
    close(holder.decrypt(ev.mul_plain(ca, 0.0)), np.zeros(PERIOD))


def test_products_and_polynomials(holder: CkksCircuit, ev, rng: np.random.Generator) -> None:
    a, b = rng.uniform(-2, 2, size=(2, PERIOD))
    ca, cb = holder.encrypt(a), holder.encrypt(b)
    close(holder.decrypt(ev.multiply(ca, cb)), a * b)
    close(holder.decrypt(ev.square(ca)), a * a)
    sig = ev.polyval(ca, SIGMOID3)
    assert sig.level == 2  # the degree-3 sigmoid in depth 2
    close(holder.decrypt(sig), np.polynomial.polynomial.polyval(a, SIGMOID3))
    close(holder.decrypt(ev.polyval(ca, (0.3, -1.0, 0.25))), 0.3 - a + 0.25 * a * a)
    close(holder.decrypt(ev.polyval(ca, (0.5, 0.0, 1.0))), 0.5 + a * a)
    with pytest.raises(ConfigError, match="degrees 1 to 3"):
        ev.polyval(ca, (1.0, 0, 0, 0, 1.0))


def test_depth_accounting_raises_a_parameter_error(holder: CkksCircuit, ev, rng: np.random.Generator) -> None:
    ca = holder.encrypt(rng.random(PERIOD))
    deep = ev.square(ev.square(ca))
    with pytest.raises(ParameterError, match="planned multiplicative depth 2"):
        ev.square(deep)
    with pytest.raises(ParameterError, match="depth"):
        ev.matvec(np.eye(PERIOD), deep)


@pytest.mark.parametrize(("rows", "out"), [(PERIOD, "replicated"), (5, "replicated"), (12, "grid")])
def test_matvec(holder: CkksCircuit, ev, rng: np.random.Generator, rows: int, out: str) -> None:
    m, x = rng.normal(size=(rows, 11)), rng.normal(size=11)
    y = ev.matvec(m, holder.encrypt(x, period=PERIOD), out=out)
    got = holder.decrypt(y)
    if out == "grid":  # y expanded: row i holds y_i in every column
        assert y.layout == Grid(rows, PERIOD, PERIOD, 4096)
        close(got, np.repeat((m @ x)[:, None], PERIOD, axis=1))
    else:
        close(got, m @ x)


def test_matvec_errors(holder: CkksCircuit, ev, rng: np.random.Generator) -> None:
    x = holder.encrypt(rng.random(8), period=32)  # no Galois key for period 32's giant step
    assert rotation_steps(32) == [1, 8] and 8 not in ev.steps
    with pytest.raises(ParameterError, match="periods=\\(32,\\)"):
        ev.matvec(np.eye(8), x)
    with pytest.raises(ConfigError, match="period >= 20"):
        ev.matvec(np.ones((20, 8)), holder.encrypt(rng.random(8), period=PERIOD))
    with pytest.raises(ConfigError, match="layouts"):
        ev.add(holder.encrypt(rng.random(4)), holder.encrypt(rng.random(4), period=PERIOD))


def test_outer_product_is_chunked_by_rows(holder: CkksCircuit, ev, rng: np.random.Generator) -> None:
    """100 × 50 with stride 128 needs 100·128 slots: four ciphertexts of 32 rows at N=8192."""
    u, v = rng.normal(size=100), rng.normal(size=50)
    g = ev.outer(holder.encrypt(u, period=128), holder.encrypt(v, period=128))
    assert g.layout == Grid(100, 50, 128, 4096) and len(g.ciphertexts) == 4 and g.level == 2
    close(holder.decrypt(g), np.outer(u, v))
    residues = 4 * 2 * 8192  # four ciphertexts of two polynomials, one 60-bit prime left at level 2
    assert 0.9 < ev.ciphertext_bytes(g) / (residues * 60 / 8) < 1.1


# --- a training step ---------------------------------------------------------------------------------------------
def test_one_hidden_layer_forward_and_backward_match_numpy() -> None:
    """x → z1 = W1x + b1 → a1 = z1² → z2 = W2a1 + b2 → δ2 = z2 − y → ∂W2 = δ2a1ᵀ, δ1 = (W2ᵀδ2) ⊙ 2z1, ∂W1 = δ1xᵀ,
    on digits-sized shapes (64 → 16 → 10), depth 7 at scale 2**40 (N=16384)."""
    rng = np.random.default_rng(1)
    d, h, c = 64, 16, 10
    x, y = rng.random(d), np.eye(c)[3]
    w1, b1 = rng.normal(size=(h, d)) / 8, rng.normal(size=h) / 10
    w2, b2 = rng.normal(size=(c, h)) / 4, rng.normal(size=c) / 10
    plan = plan_circuit(depth=7, slots=d)
    assert (plan.poly_modulus_degree, plan.coeff_mod_bit_sizes) == (16384, (60,) + (40,) * 7 + (60,))
    holder = CkksCircuit(plan, key_seed=OTHER_KEY, periods=(d,))
    ev = holder.evaluator(seed=6)
    cx, cy = holder.encrypt(x), holder.encrypt(y, period=d)
    z1 = ev.add_plain(ev.matvec(w1, cx), b1)
    a1 = ev.square(z1)
    d2 = ev.sub(ev.add_plain(ev.matvec(w2, a1), b2), cy)
    g2 = ev.outer(d2, a1)
    d1 = ev.multiply(ev.matvec(2 * w2.T, d2), z1)
    g1 = ev.outer(d1, cx)
    assert g1.level == 7
    rz1 = w1 @ x + b1
    rd2 = w2 @ rz1**2 + b2 - y
    rd1 = (w2.T @ rd2) * 2 * rz1
    for got, want in ((z1, rz1), (d2, rd2), (g2, np.outer(rd2, rz1**2)), (d1, rd1), (g1, np.outer(rd1, x))):
        out = holder.decrypt(got)
        assert out.shape == want.shape
        assert np.abs(out - want).max() <= CHAIN_RTOL * np.abs(want).max()


def test_tenseal_mm_is_not_reproducible() -> None:
    """The reason circuit evaluation is not TenSEAL's: same context, same vector, two mm calls, different bytes."""
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    ctx.global_scale = 2.0**40
    ctx.generate_galois_keys()
    vec = ts.ckks_vector(ctx, [0.5] * 8)
    w = np.ones((8, 4)).tolist()
    assert vec.mm(w).serialize() != vec.mm(w).serialize()


# --- noise flooding ----------------------------------------------------------------------------------------------
#: the sample standard deviation of n iid Gaussians is within 5 standard errors (1/√(2n)) of σ; n = N = 8192 here
STD_RTOL = 5 / np.sqrt(2 * 8192)


def _coefficients(holder: CkksCircuit, cipher: sealapi.Ciphertext) -> np.ndarray:
    """c0 of ``cipher`` out of NTT form, residues modulo the first prime, as signed integers."""
    out = sealapi.Ciphertext()
    holder.context.evaluator.transform_from_ntt(cipher, out)
    return seal_format.parse(holder.context.save(out)).data[0, 0].astype(np.int64)


@pytest.mark.parametrize("bits", [12, 30])
def test_flooding_adds_iid_gaussian_coefficients_of_std_2_to_the_b(holder: CkksCircuit, bits: int) -> None:
    """Measured through SEAL: c0 of the flooded ciphertext minus c0 of the original (out of NTT form) is the
    flooding polynomial, with coefficient std 2**B; its decoded slots have std 2**B·√(N/2)/Δ (flood_slot_std)."""
    x = np.linspace(-1, 1, PERIOD)
    ct = holder.encrypt(x)
    flooded = holder.flooded(ct, bits)
    q = holder.context.data_primes[0]
    diff = (_coefficients(holder, flooded.ciphertexts[0]) - _coefficients(holder, ct.ciphertexts[0])) % q
    coeffs = np.where(diff > q // 2, diff - q, diff).astype(np.float64)
    sigma = 2.0**bits
    assert abs(coeffs.std() / sigma - 1) < STD_RTOL and abs(coeffs.mean()) < 5 * sigma / np.sqrt(coeffs.size)
    assert abs(np.corrcoef(coeffs[:-1], coeffs[1:])[0, 1]) < 5 / np.sqrt(coeffs.size)  # no neighbour correlation
    encoder = sealapi.CKKSEncoder(holder.context.seal)
    slots = [decrypt_values(holder.context, holder._keys.secret, encoder, c.ciphertexts)[0] for c in (flooded, ct)]
    noise = slots[0] - slots[1]
    assert abs(noise.std() / holder.flood_slot_std(bits, 0) - 1) < STD_RTOL
    again = holder.decrypt(ct, flood_bits=bits)  # fresh noise on every decryption
    assert not np.array_equal(again, holder.decrypt(flooded)) and np.abs(again - x).max() < 8 * noise.std()


def test_flooding_is_reproducible_from_the_key_seed_and_bounded() -> None:
    plan = plan_circuit(depth=1, slots=8, scale_bits=30, first_bits=40, special_bits=30)
    x = np.arange(8) / 8
    runs = []
    for seed in (KEY_SEED, KEY_SEED, OTHER_KEY):
        holder = CkksCircuit(plan, key_seed=seed)
        runs.append(holder.decrypt(holder.encrypt(x), flood_bits=10))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    with pytest.raises(ParameterError, match="1 to 32"):
        holder.decrypt(holder.encrypt(x), flood_bits=33)
