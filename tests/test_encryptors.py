"""One shared suite for every registered encryptor, plus ckks/bfv parameter and view checks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from encryptors import ENCRYPTORS, SECURE_MAX_BITS, Encryptor, MissingKeyError, make_encryptor
from he_leak.errors import CiphertextError, ConfigError, HeLeakError, ParameterError

N_VALUES = 64 * 3 + 5  # not a multiple of anything; ckks at N=1024 (insecure) splits it into ciphertexts
#: decrypt(encrypt(x)) tolerance per encryptor: CKKS at scale 2**28 measures ~2e-5; BFV is 1/255 quantisation.
ATOL = {"plain": 0.0, "permute": 0.0, "linear-mask": 1e-12, "ckks": 1e-4, "bfv": 0.5 / 255 + 1e-12}
#: unview(view(h)) round-trip through float32: exact for HE bytes views, float32 rounding otherwise.
VIEW_ATOL = {"plain": 1e-7, "permute": 1e-7, "linear-mask": 1e-6, "ckks": 1e-4, "bfv": 0.5 / 255 + 1e-12}
UNIT_VIEWS = {"plain", "permute", "ckks", "bfv"}  # views in [0, 1]


@pytest.fixture(scope="module", params=sorted(ENCRYPTORS))
def enc(request: pytest.FixtureRequest) -> Encryptor:
    return make_encryptor(request.param, n=N_VALUES, seed=7)


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
    back = enc.public().unview(enc.view(hidden))
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
    handle = pickle.loads(pickle.dumps(enc.public()))
    assert handle.view_size == enc.view_size
    np.testing.assert_array_equal(handle.view(hidden), enc.view(hidden))
    if enc.name != "plain":  # plain has nothing secret
        with pytest.raises(HeLeakError):
            handle.decrypt(hidden)
    if enc.has_public_key:
        np.testing.assert_allclose(enc.decrypt(handle.encrypt(x)), x, rtol=0, atol=ATOL[enc.name])
    else:
        with pytest.raises(HeLeakError, match="no public key"):
            handle.encrypt(x)


def test_pickled_public_handle_holds_no_secret(enc: Encryptor) -> None:
    handle = pickle.loads(pickle.dumps(enc.public()))
    if enc.name in ("ckks", "bfv"):
        assert not handle._ctx.has_secret_key()
        assert enc._ctx.has_secret_key()  # public() did not strip the owner's key
    elif enc.name != "plain":
        assert handle._secret is None and enc._secret is not None


def test_private_handle_pickles_with_its_key(enc: Encryptor, x: np.ndarray) -> None:
    clone = pickle.loads(pickle.dumps(enc))
    np.testing.assert_allclose(clone.decrypt(enc.encrypt(x)), x, rtol=0, atol=ATOL[enc.name])


def test_describe_and_repr_name_the_setup(enc: Encryptor) -> None:
    info = enc.describe()
    assert info["encryptor"] == enc.name and info["n"] == N_VALUES
    assert enc.name in repr(enc)


def test_keyless_maps_are_deterministic_in_seed(x: np.ndarray) -> None:
    for name in ("permute", "linear-mask"):
        a, b = make_encryptor(name, n=N_VALUES, seed=1), make_encryptor(name, n=N_VALUES, seed=1)
        np.testing.assert_array_equal(a.encrypt(x), b.encrypt(x))
        assert not np.array_equal(a.encrypt(x), make_encryptor(name, n=N_VALUES, seed=2).encrypt(x))


def test_linear_mask_is_orthogonal() -> None:
    a, _ = make_encryptor("linear-mask", n=N_VALUES, seed=1)._secret
    np.testing.assert_allclose(a @ a.T, np.eye(N_VALUES), atol=1e-12)


def test_unknown_encryptor_and_param_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="known: bfv, ckks, linear-mask, permute, plain"):
        make_encryptor("rot13", n=4, seed=0)
    with pytest.raises(ConfigError, match="known: poly_modulus_degree, coeff_mod_bit_sizes, scale, view"):
        make_encryptor("ckks", n=4, seed=0, polymod=4096)
    with pytest.raises(ConfigError, match="known: bytes, residues"):
        make_encryptor("ckks", n=4, seed=0, view="pixels")


@pytest.mark.parametrize("name", ["ckks", "bfv"])
def test_security_table_refuses_weak_parameters(name: str) -> None:
    with pytest.raises(ParameterError, match="insecure = true"):
        make_encryptor(name, n=4, seed=0, poly_modulus_degree=4096, coeff_mod_bit_sizes=[40, 40, 40])
    assert make_encryptor(name, n=4, seed=0, insecure=True).describe()["insecure"] is True
    assert SECURE_MAX_BITS[4096] == 109


@pytest.mark.parametrize("name", ["ckks", "bfv"])
def test_insecure_parameters_run_on_seal_directly(name: str) -> None:
    """120 bits at N=4096 (above the 109-bit limit; TenSEAL refuses it): with insecure = true the scheme runs on SEAL
    at security level NONE — encrypt, view, unview, decrypt and a keyless public handle all work."""
    x = np.random.default_rng(3).random(N_VALUES)
    enc = make_encryptor(name, n=N_VALUES, seed=0, coeff_mod_bit_sizes=[50, 40, 30], insecure=True)
    assert enc.describe()["insecure"] is True and enc.describe()["backend"].startswith("seal")
    hidden = enc.encrypt(x)
    np.testing.assert_allclose(enc.decrypt(hidden), x, atol=ATOL[name])
    view = enc.view(hidden)
    chunks = enc.describe()["ciphertexts"]
    assert view.dtype == np.float32 and view.size == enc.view_size == chunks * 2 * 4096 * (7 + 5)
    np.testing.assert_allclose(enc.decrypt(enc.unview(view)), x, atol=ATOL[name])
    public = pickle.loads(pickle.dumps(enc.public()))
    assert not public._ctx.has_secret_key()
    np.testing.assert_allclose(enc.decrypt(public.encrypt(x)), x, atol=ATOL[name])  # under the public key
    with pytest.raises(MissingKeyError):
        public.decrypt(hidden)


def test_ckks_refuses_120_bits_at_4096_and_unknown_degree() -> None:
    with pytest.raises(ParameterError, match="120 bits exceeds .* 109"):
        make_encryptor("ckks", n=4, seed=0, coeff_mod_bit_sizes=[40, 40, 40])
    with pytest.raises(ParameterError, match="no 128-bit security entry"):
        make_encryptor("ckks", n=4, seed=0, poly_modulus_degree=3000)


def test_seal_rejections_become_parameter_errors() -> None:
    with pytest.raises(ParameterError, match="rejected by SEAL"):
        make_encryptor("ckks", n=4, seed=0, coeff_mod_bit_sizes=[40, 20, 70], insecure=True)


def test_ckks_splits_long_vectors_into_ciphertexts() -> None:
    n = 2 * 2048 + 5  # N = 4096 -> 2048 slots per ciphertext
    x = np.random.default_rng(1).random(n)
    enc = make_encryptor("ckks", n=n, seed=0)
    assert enc.describe()["ciphertexts"] == 3 and enc.view_size == 3 * 2 * 4096 * 8
    hidden = enc.encrypt(x)
    np.testing.assert_allclose(enc.decrypt(enc.public().unview(enc.view(hidden))), x, atol=ATOL["ckks"])


def test_tenseal_runtime_refusals_become_parameter_errors() -> None:
    with pytest.raises(ParameterError, match="rejected by SEAL"):
        make_encryptor("ckks", n=4, seed=0, poly_modulus_degree=1024, coeff_mod_bit_sizes=[27])


@pytest.mark.parametrize(("n", "cts"), [(64, 1), (625, 1), (3072, 2)])
def test_ckks_default_view_sizes(n: int, cts: int) -> None:
    enc = make_encryptor("ckks", n=n, seed=0)
    # N = 4096, primes of 40 and 20 bits -> 5 + 3 bytes per coefficient, 2 polynomials per ciphertext
    assert enc.view_size == cts * 2 * 4096 * 8


@pytest.mark.parametrize("name", ["ckks", "bfv"])
def test_unview_rejects_residue_not_below_prime(name: str) -> None:
    enc = make_encryptor(name, n=8, seed=0)
    with pytest.raises(CiphertextError, match="residue"):
        enc.unview(np.ones(enc.view_size, dtype=np.float32))  # all bytes 0xFF: every residue >= q_j


@pytest.mark.parametrize("name", ["ckks", "bfv"])
def test_residues_view_is_lossy(name: str, x: np.ndarray) -> None:
    enc = make_encryptor(name, n=N_VALUES, seed=0, view="residues")
    hidden = enc.encrypt(x)
    v = enc.view(hidden)
    assert v.shape == (enc.view_size,) and v.min() >= 0 and v.max() <= 1
    err = np.abs(enc.decrypt(enc.unview(v)) - x).max()
    assert err > 1.0  # float32 keeps ~24 of 40 bits: the message (low bits) is destroyed
