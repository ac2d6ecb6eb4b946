"""Baselines without HE: identity, a secret permutation, a secret linear mask (keyless schemes: no public key)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from encryptors.base import ENCRYPTORS, Encryptor, MissingKeyError


@ENCRYPTORS.register("plain")
class PlainEncryptor(Encryptor):
    """No hiding at all: the view is the plaintext (the baseline)."""

    name = "plain"
    has_public_key: ClassVar[bool] = True

    def __init__(self, *, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

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

    def public(self) -> PlainEncryptor:
        return self

    def describe(self) -> dict[str, object]:
        return {"encryptor": self.name, "n": self.n, "view_size": self.view_size}


class SecretMapEncryptor(Encryptor):
    """A keyless scheme: hiding and unhiding both need the secret map drawn from ``seed``."""

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

    def public(self) -> SecretMapEncryptor:
        handle = object.__new__(type(self))
        handle.__dict__.update(self.__dict__, _secret=None)
        return handle

    def describe(self) -> dict[str, object]:
        return {
            "encryptor": self.name,
            "n": self.n,
            "seed": self.seed,
            "view_size": self.view_size,
            "public": self._secret is None,
        }


@ENCRYPTORS.register("permute")
class PermuteEncryptor(SecretMapEncryptor):
    """A secret fixed permutation of the n values."""

    name = "permute"

    def __init__(self, *, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._secret = (np.random.default_rng(seed).permutation(n),)

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

    def __init__(self, *, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        rng = np.random.default_rng(seed)
        self._secret = (random_orthogonal(n, rng), rng.uniform(-0.5, 0.5, n))
        # Public box: each row of an orthogonal A has unit norm, so |A_i·x| <= ||x||_2 <= sqrt(n) for x in [0,1]^n.
        self.view_bounds = (-(n**0.5) - 0.5, n**0.5 + 0.5)

    def encrypt(self, x: np.ndarray) -> np.ndarray:
        a, b = self._key()
        return a @ self._plaintext(x) + b

    def decrypt(self, hidden: np.ndarray) -> np.ndarray:
        a, b = self._key()
        return a.T @ (np.asarray(hidden, dtype=np.float64) - b)

    def unview(self, v: np.ndarray) -> np.ndarray:
        return self._view_vector(v)
