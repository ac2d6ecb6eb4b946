"""Baselines without HE: identity, a secret permutation, a secret linear mask (keyless schemes: no public key).

The secret maps are drawn from the key holder's secret ``key_seed`` (a `he_leak.seeds.KeySeed`, all its bits through
numpy's SeedSequence); public handles hold neither the map nor the seed."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from encryptors.base import ENCRYPTORS, Encryptor, MissingKeyError
from he_leak.seeds import KeySeed, PublicSeed

#: float32 rounding of a view value v: |v − float32(v)| <= |v|·2**-24 (round to nearest, 24-bit significand)
FLOAT32_ROUNDING = 2.0**-24


def secret_rng(key_seed: KeySeed, purpose: str) -> np.random.Generator:
    """numpy's generator for a secret map, from the key seed's child for `purpose` (a 256-bit SeedSequence pool:
    every bit of the seed counts)."""
    child = KeySeed.check(key_seed, "secret map").child(purpose)
    return np.random.default_rng(np.random.SeedSequence(child.entropy(), pool_size=8))


@ENCRYPTORS.register("plain")
class PlainEncryptor(Encryptor):
    """No hiding at all: the view is the plaintext (the baseline)."""

    name = "plain"
    has_public_key: ClassVar[bool] = True
    precision = FLOAT32_ROUNDING  # views of values in [0, 1] are float32: |error| <= 2**-24

    def __init__(self, *, n: int, key_seed: KeySeed) -> None:
        self.n = n  # nothing secret: key_seed is not used

    @property
    def view_size(self) -> int:
        return self.n

    def encrypt(self, x: np.ndarray) -> np.ndarray:
        return self._plaintext(x).copy()

    def decrypt(self, hidden: np.ndarray) -> np.ndarray:
        return np.asarray(hidden, dtype=np.float64).copy()

    def view(self, hidden: np.ndarray) -> np.ndarray:
        return np.asarray(hidden, dtype=np.float32)

    def unview(self, v: np.ndarray) -> np.ndarray:
        return np.clip(self._view_vector(v), 0.0, 1.0)

    def public(self, *, seed: PublicSeed | int) -> PlainEncryptor:
        return self

    def describe(self) -> dict[str, object]:
        return {"encryptor": self.name, "n": self.n, "view_size": self.view_size}


class SecretMapEncryptor(Encryptor):
    """A keyless scheme: hiding and unhiding both need the secret map drawn from ``key_seed``."""

    has_public_key: ClassVar[bool] = False
    _secret: tuple[np.ndarray, ...] | None

    @property
    def view_size(self) -> int:
        return self.n

    def _key(self) -> tuple[np.ndarray, ...]:
        if self._secret is None:
            raise MissingKeyError(
                f"this {self.name} handle is public: {self.name} has no public key, so only the "
                "key holder can encrypt or decrypt"
            )
        return self._secret

    def view(self, hidden: np.ndarray) -> np.ndarray:
        return np.asarray(hidden, dtype=np.float32)

    def public(self, *, seed: PublicSeed | int) -> SecretMapEncryptor:
        """The map's public shape only: no secret map, no seed (there are no public-key encryptions to randomise)."""
        handle = object.__new__(type(self))
        handle.__dict__.update(self.__dict__, _secret=None)
        return handle

    def describe(self) -> dict[str, object]:
        return {"encryptor": self.name, "n": self.n, "view_size": self.view_size, "public": self._secret is None}


@ENCRYPTORS.register("permute")
class PermuteEncryptor(SecretMapEncryptor):
    """A secret fixed permutation of the n values."""

    name = "permute"
    precision = FLOAT32_ROUNDING  # a permuted float32 view of values in [0, 1]

    def __init__(self, *, n: int, key_seed: KeySeed) -> None:
        self.n = n
        self._secret = (secret_rng(key_seed, "permutation").permutation(n),)

    def encrypt(self, x: np.ndarray) -> np.ndarray:
        (perm,) = self._key()
        return self._plaintext(x)[perm]

    def decrypt(self, hidden: np.ndarray) -> np.ndarray:
        (perm,) = self._key()
        out = np.empty(self.n)
        out[perm] = np.asarray(hidden, dtype=np.float64)
        return out

    def unview(self, v: np.ndarray) -> np.ndarray:
        return np.clip(self._view_vector(v), 0.0, 1.0)


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix (dense, orthogonal, O(n^2) to build)."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    c = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    c[0] /= np.sqrt(2.0)
    return c


def random_orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """A dense secret orthogonal matrix D2 C P2 D1 C P1 (C: DCT, D: random signs, P: random permutations).

    Structured instead of Haar (QR of a Gaussian) because QR at n = 3072 takes ~20 s; this costs one matmul.
    """
    c = _dct_matrix(n)
    m = np.empty_like(c)
    m[:, rng.permutation(n)] = c  # C P1
    m = (rng.choice((-1.0, 1.0), n)[:, None] * m)[rng.permutation(n)]  # P2 D1 C P1
    return rng.choice((-1.0, 1.0), n)[:, None] * (c @ m)


@ENCRYPTORS.register("linear-mask")
class LinearMaskEncryptor(SecretMapEncryptor):
    """view = A x + b with a secret random orthogonal A and offset b in [-0.5, 0.5] (values stay O(1))."""

    name = "linear-mask"

    def __init__(self, *, n: int, key_seed: KeySeed) -> None:
        self.n = n
        rng = secret_rng(key_seed, "linear-mask")
        self._secret = (random_orthogonal(n, rng), rng.uniform(-0.5, 0.5, n))
        # Public box: each row of an orthogonal A has unit norm, so |A_i·x| <= ||x||_2 <= sqrt(n) for x in [0,1]^n.
        self.view_bounds = (-(n**0.5) - 0.5, n**0.5 + 0.5)
        # decrypt = Aᵀ(v − b) of the float32 view v: the error Aᵀδ has |(Aᵀδ)_i| <= ||δ||_2 (unit rows), and
        # |δ_j| <= |v_j|·2**-24 <= (sqrt(n) + 0.5)·2**-24, so ||δ||_2 <= sqrt(n)·(sqrt(n) + 0.5)·2**-24.
        self.precision = n**0.5 * (n**0.5 + 0.5) * FLOAT32_ROUNDING

    def encrypt(self, x: np.ndarray) -> np.ndarray:
        a, b = self._key()
        return a @ self._plaintext(x) + b

    def decrypt(self, hidden: np.ndarray) -> np.ndarray:
        a, b = self._key()
        return a.T @ (np.asarray(hidden, dtype=np.float64) - b)

    def unview(self, v: np.ndarray) -> np.ndarray:
        return self._view_vector(v)
