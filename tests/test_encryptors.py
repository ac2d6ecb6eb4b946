"""One shared suite for every registered encryptor, plus ckks/bfv parameter and view checks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from tenseal import sealapi

from encryptors import ENCRYPTORS, SECURE_MAX_BITS, Encryptor, MissingKeyError, make_encryptor, seal_format
from he_leak.errors import CiphertextError, ConfigError, HeLeakError, ParameterError
from he_leak.seeds import KeySeed, PublicSeed

N_VALUES = 64 * 3 + 5  # not a multiple of anything; ckks at N=1024 (insecure) splits it into ciphertexts
KEY_SEED = KeySeed.from_hex("8123456789012345678" * 3 + "abcdefa")  # a test secret (64 hex digits, 256 bits)
OTHER_KEY = KeySeed.from_hex("f" * 64)
TEST_KEY = KeySeed.from_hex("0123456789abcdef" * 4)  # for tests where any key will do
ATTACKER_SEED = 99
#: decrypt(encrypt(x)) tolerance per encryptor: CKKS at scale 2**28 measures ~2e-5; BFV is 1/255 quantisation.
ATOL = {"plain": 0.0, "permute": 0.0, "linear-mask": 1e-12, "ckks": 1e-4, "bfv": 0.5 / 255 + 1e-12}
#: unview(view(h)) round-trip through float32: exact for HE bytes views, float32 rounding otherwise.
VIEW_ATOL = {"plain": 1e-7, "permute": 1e-7, "linear-mask": 1e-6, "ckks": 1e-4, "bfv": 0.5 / 255 + 1e-12}
UNIT_VIEWS = {"plain", "permute", "ckks", "bfv"}  # views in [0, 1]


@pytest.fixture(scope="module", params=sorted(ENCRYPTORS))
def enc(request: pytest.FixtureRequest) -> Encryptor:
    return make_encryptor(request.param, n=N_VALUES, key_seed=KEY_SEED)


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).random(N_VALUES)


def test_every_expected_encryptor_is_registered() -> None:
    assert set(ENCRYPTORS) == {"plain", "ckks", "bfv", "permute", "linear-mask"}


def test_decrypt_inverts_encrypt(enc: Encryptor, x: np.ndarray) -> None:
    out = enc.decrypt(enc.encrypt(x))
    assert out.dtype == np.float64 and out.shape == (N_VALUES,)
    np.testing.assert_allclose(out, x, rtol=0, atol=ATOL[enc.name])


def test_view_has_declared_size_dtype_and_range(enc: Encryptor, x: np.ndarray) -> None:
    v = enc.view(enc.encrypt(x))
    assert v.dtype == np.float32 and v.shape == (enc.view_size,)
    if enc.name in UNIT_VIEWS:
        assert v.min() >= 0 and v.max() <= 1
    else:
        assert np.abs(v).max() < 10  # O(1) values


def test_unview_of_view_decrypts_to_the_same(enc: Encryptor, x: np.ndarray) -> None:
    hidden = enc.encrypt(x)
    back = enc.public(seed=ATTACKER_SEED).unview(enc.view(hidden))
    np.testing.assert_allclose(enc.decrypt(back), enc.decrypt(hidden), rtol=0, atol=VIEW_ATOL[enc.name])
    if enc.name in ("ckks", "bfv"):  # bytes view is exact: the reassembled ciphertext is bit-identical
        np.testing.assert_array_equal(enc.view(back), enc.view(hidden))


def test_unview_rejects_wrong_length_and_nan(enc: Encryptor) -> None:
    with pytest.raises(CiphertextError, match="view"):
        enc.unview(np.zeros(enc.view_size + 1, dtype=np.float32))
    with pytest.raises(CiphertextError, match="NaN"):
        enc.unview(np.full(enc.view_size, np.nan, dtype=np.float32))


def test_encrypt_rejects_wrong_length(enc: Encryptor) -> None:
    with pytest.raises(ConfigError, match=str(N_VALUES)):
        enc.encrypt(np.zeros(N_VALUES - 1))


def test_public_handle_pickles_and_cannot_decrypt(enc: Encryptor, x: np.ndarray) -> None:
    hidden = enc.encrypt(x)
    handle = pickle.loads(pickle.dumps(enc.public(seed=ATTACKER_SEED)))
    assert handle.view_size == enc.view_size
    np.testing.assert_array_equal(handle.view(hidden), enc.view(hidden))
    if enc.name != "plain":  # plain has nothing secret
        with pytest.raises(MissingKeyError):
            handle.decrypt(hidden)
    if enc.has_public_key:
        np.testing.assert_allclose(enc.decrypt(handle.encrypt(x)), x, rtol=0, atol=ATOL[enc.name])
    else:
        with pytest.raises(HeLeakError, match="no public key"):
            handle.encrypt(x)


def test_pickled_public_handle_holds_no_secret(enc: Encryptor) -> None:
    handle = pickle.loads(pickle.dumps(enc.public(seed=ATTACKER_SEED)))
    if enc.name in ("ckks", "bfv"):
        assert handle.keys.secret is None and handle.is_public
        assert enc.keys.secret is not None  # public() did not strip the owner's key
    elif enc.name != "plain":
        assert handle._secret is None and enc._secret is not None


def test_private_handle_pickles_with_its_key(enc: Encryptor, x: np.ndarray) -> None:
    clone = pickle.loads(pickle.dumps(enc))
    np.testing.assert_allclose(clone.decrypt(enc.encrypt(x)), x, rtol=0, atol=ATOL[enc.name])


def test_describe_and_repr_name_the_setup(enc: Encryptor) -> None:
    info = enc.describe()
    assert info["encryptor"] == enc.name and info["n"] == N_VALUES
    assert enc.name in repr(enc)
    assert not any("seed" in key for key in info) and KEY_SEED.hex() not in repr(enc)


def test_linear_mask_is_orthogonal() -> None:
    a, _ = make_encryptor("linear-mask", n=N_VALUES, key_seed=OTHER_KEY)._secret
    np.testing.assert_allclose(a @ a.T, np.eye(N_VALUES), atol=1e-12)


def test_unknown_encryptor_and_param_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="known: bfv, ckks, linear-mask, permute, plain"):
        make_encryptor("rot13", n=4, key_seed=TEST_KEY)
    with pytest.raises(ConfigError, match="known: poly_modulus_degree, coeff_mod_bit_sizes, scale, view"):
        make_encryptor("ckks", n=4, key_seed=TEST_KEY, polymod=4096)
    with pytest.raises(ConfigError, match="known: bytes, residues"):
        make_encryptor("ckks", n=4, key_seed=TEST_KEY, view="pixels")


@pytest.mark.parametrize("name", ["ckks", "bfv"])
def test_security_table_refuses_weak_parameters(name: str) -> None:
    with pytest.raises(ParameterError, match="insecure = true"):
        make_encryptor(name, n=4, key_seed=TEST_KEY, poly_modulus_degree=4096, coeff_mod_bit_sizes=[40, 40, 40])
    assert SECURE_MAX_BITS[4096] == 109


@pytest.mark.parametrize("name", ["ckks", "bfv"])
def test_insecure_records_the_parameters_not_the_flag(name: str) -> None:
    """Secure parameters with insecure = true stay secure (128-bit context); only parameters beyond the table are
    recorded as insecure."""
    flagged = make_encryptor(name, n=4, key_seed=TEST_KEY, insecure=True).describe()
    assert flagged["insecure"] is False and flagged["security"] == "128-bit"
    weak = make_encryptor(name, n=4, key_seed=TEST_KEY, coeff_mod_bit_sizes=[50, 40, 30], insecure=True).describe()
    assert weak["insecure"] is True and weak["security"] == "none"


@pytest.mark.parametrize("name", ["ckks", "bfv"])
def test_insecure_parameters_run_on_seal_directly(name: str) -> None:
    """120 bits at N=4096 (above the 109-bit limit; TenSEAL refuses it): with insecure = true the scheme runs on SEAL
    at security level NONE — encrypt, view, unview, decrypt and a keyless public handle all work."""
    x = np.random.default_rng(3).random(N_VALUES)
    enc = make_encryptor(name, n=N_VALUES, key_seed=TEST_KEY, coeff_mod_bit_sizes=[50, 40, 30], insecure=True)
    assert enc.describe()["insecure"] is True and enc.describe()["security"] == "none"
    hidden = enc.encrypt(x)
    np.testing.assert_allclose(enc.decrypt(hidden), x, atol=ATOL[name])
    view = enc.view(hidden)
    chunks = enc.describe()["ciphertexts"]
    assert view.dtype == np.float32 and view.size == enc.view_size == chunks * 2 * 4096 * (7 + 5)
    np.testing.assert_allclose(enc.decrypt(enc.unview(view)), x, atol=ATOL[name])
    public = pickle.loads(pickle.dumps(enc.public(seed=ATTACKER_SEED)))
    assert public.keys.secret is None
    np.testing.assert_allclose(enc.decrypt(public.encrypt(x)), x, atol=ATOL[name])  # under the public key
    with pytest.raises(MissingKeyError):
        public.decrypt(hidden)


def test_ckks_refuses_120_bits_at_4096_and_unknown_degree() -> None:
    with pytest.raises(ParameterError, match="120 bits exceeds .* 109"):
        make_encryptor("ckks", n=4, key_seed=TEST_KEY, coeff_mod_bit_sizes=[40, 40, 40])
    with pytest.raises(ParameterError, match="no 128-bit security entry"):
        make_encryptor("ckks", n=4, key_seed=TEST_KEY, poly_modulus_degree=65536)


def test_seal_limits_come_before_the_security_table() -> None:
    """Parameters SEAL refuses whatever the security level are named as such, never answered with `insecure`."""
    for params, needle in (({"poly_modulus_degree": 3000}, "not a power of two"),
                           ({"coeff_mod_bit_sizes": [40, 20, 70]}, "2 to 60 bits")):  # fmt: skip
        for insecure in (False, True):
            with pytest.raises(ParameterError, match=needle) as info:
                make_encryptor("ckks", n=4, key_seed=TEST_KEY, insecure=insecure, **params)
            assert "insecure" not in str(info.value)


def test_seal_rejections_become_parameter_errors() -> None:
    """Two 17-bit primes ≡ 1 mod 2N do not exist for N = 32768 (65537 is the only one): SEAL's own refusal."""
    with pytest.raises(ParameterError, match="rejected by SEAL"):
        make_encryptor("ckks", n=4, key_seed=TEST_KEY, poly_modulus_degree=32768, coeff_mod_bit_sizes=[17, 17])


def test_ckks_splits_long_vectors_into_ciphertexts() -> None:
    n = 2 * 2048 + 5  # N = 4096 -> 2048 slots per ciphertext
    x = np.random.default_rng(1).random(n)
    enc = make_encryptor("ckks", n=n, key_seed=TEST_KEY)
    assert enc.describe()["ciphertexts"] == 3 and enc.view_size == 3 * 2 * 4096 * 8
    back = enc.public(seed=ATTACKER_SEED).unview(enc.view(enc.encrypt(x)))
    np.testing.assert_allclose(enc.decrypt(back), x, atol=ATOL["ckks"])


def test_seal_runtime_refusals_become_parameter_errors() -> None:
    """One 27-bit prime is within the table at N=1024, but the default scale 2**28 does not fit below it."""
    with pytest.raises(ParameterError, match="rejected by SEAL"):
        make_encryptor("ckks", n=4, key_seed=TEST_KEY, poly_modulus_degree=1024, coeff_mod_bit_sizes=[27])


@pytest.mark.parametrize(("n", "cts"), [(64, 1), (625, 1), (3072, 2)])
def test_ckks_default_view_sizes(n: int, cts: int) -> None:
    enc = make_encryptor("ckks", n=n, key_seed=TEST_KEY)
    # N = 4096, primes of 40 and 20 bits -> 5 + 3 bytes per coefficient, 2 polynomials per ciphertext
    assert enc.view_size == cts * 2 * 4096 * 8


@pytest.mark.parametrize("name", ["ckks", "bfv"])
def test_unview_rejects_residue_not_below_prime(name: str) -> None:
    enc = make_encryptor(name, n=8, key_seed=TEST_KEY)
    with pytest.raises(CiphertextError, match="residue"):
        enc.unview(np.ones(enc.view_size, dtype=np.float32))  # all bytes 0xFF: every residue >= q_j


@pytest.mark.parametrize("name", ["ckks", "bfv"])
def test_residues_view_is_lossy(name: str, x: np.ndarray) -> None:
    enc = make_encryptor(name, n=N_VALUES, key_seed=TEST_KEY, view="residues")
    hidden = enc.encrypt(x)
    v = enc.view(hidden)
    assert v.shape == (enc.view_size,) and v.min() >= 0 and v.max() <= 1
    err = np.abs(enc.decrypt(enc.unview(v)) - x).max()
    assert err > 1.0  # float32 keeps ~24 of 40 bits: the message (low bits) is destroyed


# --- reproducibility, fresh randomness, key hygiene, precision ------------------------------------------------------
def _secret_bytes(enc: Encryptor) -> bytes:
    """The key holder's secret as it is stored: SEAL's serialised secret key, or the keyless scheme's map."""
    if enc.name in ("ckks", "bfv"):
        return enc.context.save(enc.keys.secret)
    return b"".join(np.ascontiguousarray(part).tobytes() for part in enc._secret)


@pytest.mark.parametrize("name", sorted(set(ENCRYPTORS) - {"plain"}))
def test_public_handle_pickle_holds_no_key_seed_and_no_secret(name: str) -> None:
    enc = make_encryptor(name, n=N_VALUES, key_seed=KEY_SEED)
    public_blob = pickle.dumps(enc.public(seed=ATTACKER_SEED))
    secret = _secret_bytes(enc)
    slices = [secret[i : i + 32] for i in (len(secret) // 4, len(secret) // 2, 3 * len(secret) // 4)]
    assert all(part in pickle.dumps(enc) for part in slices)  # the search finds the secret where it is kept
    words = b"".join(w.to_bytes(8, "little") for w in KEY_SEED.prng_words())
    seeds = [KEY_SEED.material, KEY_SEED.hex().encode(), words[:16], words[-16:]]
    if name in ("ckks", "bfv"):  # the key holder's encryption randomness: a child of the key seed, kept by the holder
        stream = enc._randomness.root.material
        assert stream in pickle.dumps(enc)
        seeds.append(stream)
    for pattern in seeds + slices:
        assert pattern not in public_blob


@pytest.mark.parametrize("name", sorted(set(ENCRYPTORS) - {"plain"}))
def test_same_key_seed_same_ciphertexts_and_views(name: str, x: np.ndarray) -> None:
    a, b = (make_encryptor(name, n=N_VALUES, key_seed=KEY_SEED) for _ in range(2))
    other = make_encryptor(name, n=N_VALUES, key_seed=OTHER_KEY)
    va, vb, vo = (e.view(e.encrypt(x)) for e in (a, b, other))
    np.testing.assert_array_equal(va, vb)
    assert not np.array_equal(va, vo)
    if name in ("ckks", "bfv"):
        pk = [e.context.save(e.keys.public) for e in (a, b, other)]
        assert pk[0] == pk[1] != pk[2]
        assert [v.seal_bytes() for v in a.encrypt(x)] == [v.seal_bytes() for v in b.encrypt(x)]  # 2nd draws too
        # a public handle's own encryptions follow its seed, not the key seed
        views = [a.public(seed=s).view(a.public(seed=s).encrypt(x)) for s in (1, 1, 2)]
        np.testing.assert_array_equal(views[0], views[1])
        assert not np.array_equal(views[0], views[2])


@pytest.mark.parametrize("name", ["ckks", "bfv"])
def test_every_encryption_draws_fresh_randomness(name: str, x: np.ndarray) -> None:
    """One key holder's encryptions never share (u, e): the same message twice gives different c1. A single SEAL
    context seeded once (what a seeded PRNG factory alone gives) does share them: its two encryptions of different
    messages have identical c1, so they subtract to Δ·(m1 − m2) in the clear."""
    enc = make_encryptor(name, n=N_VALUES, key_seed=KEY_SEED)
    c1 = [seal_format.parse(enc.encrypt(x)[0].seal_bytes()).data[1] for _ in range(2)]
    assert not np.array_equal(c1[0], c1[1])
    once = sealapi.Encryptor(enc.context.seeded(PublicSeed(5)), enc.keys.public)
    shared = []
    for values in (x[:8], 1 - x[:8]):
        cipher = sealapi.Ciphertext()
        once.encrypt(enc._encode(values), cipher)
        shared.append(seal_format.parse(enc.context.save(cipher)).data[1])
    np.testing.assert_array_equal(shared[0], shared[1])


def test_precision_bounds_faithful_decryptions(enc: Encryptor) -> None:
    """``precision`` bounds the error of fresh and exactly recovered (view -> unview) hidden objects."""
    rng = np.random.default_rng(5)
    handle = enc.public(seed=ATTACKER_SEED)
    errors = []
    for _ in range(5):
        xs = rng.random(N_VALUES)
        hidden = enc.encrypt(xs)
        errors += [np.abs(enc.decrypt(h) - xs).max() for h in (hidden, handle.unview(enc.view(hidden)))]
    assert max(errors) <= enc.precision
