"""The encryptor interface: how a flat [0,1] vector is hidden, viewed as model input, and recovered."""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from he_leak.errors import CiphertextError, ConfigError, HeLeakError
from he_leak.registry import Registry
from he_leak.seeds import KeySeed, PublicSeed

ENCRYPTORS: Registry = Registry("encryptor")


class MissingKeyError(HeLeakError, PermissionError):
    """An operation needs a key (secret, or the secret map of a keyless scheme) that this handle does not hold."""


class Encryptor(ABC):
    """Hides a flat float64 vector x in [0,1] of fixed length n.

    ``view`` turns a hidden object into the float32 vector a model is trained on; ``unview`` is its inverse for
    recovered (possibly noisy) views. ``public(seed=...)`` is the attacker's handle: it can view/unview, encrypt
    (with its own randomness ``seed``, a public seed: an int or a PublicSeed, never a KeySeed) only when the scheme
    has a public key, and never decrypt. The key holder's secrets come from its ``key_seed``, a
    `he_leak.seeds.KeySeed` (>= 128 bits of secret entropy), which no handle, ``describe()`` or pickle of a public
    handle contains.
    ``precision`` bounds |decrypt(h) − x| for a faithful h (fresh, or recovered exactly from its view).
    """

    name: ClassVar[str]
    has_public_key: ClassVar[bool]
    n: int
    view_bounds: tuple[float, float] = (0.0, 1.0)  # public box every view value lies in
    view_quantum: float | None = None  # views are known multiples of this (None: continuous)
    precision: float  # largest |decrypt − plaintext| of a faithful hidden object (see each scheme)

    @property
    @abstractmethod
    def view_size(self) -> int:
        """Length of the ``view`` output."""

    @abstractmethod
    def encrypt(self, x: np.ndarray) -> Any:
        """Hide ``x`` (length n); the result is opaque to callers."""

    @abstractmethod
    def decrypt(self, hidden: Any) -> np.ndarray:
        """Recover the float64 plaintext (length n); needs the secret key."""

    @abstractmethod
    def view(self, hidden: Any) -> np.ndarray:
        """The float32 model input ("ciphertext view") of length ``view_size``."""

    @abstractmethod
    def unview(self, v: np.ndarray) -> Any:
        """Round/clamp a recovered view back into a hidden object ``decrypt`` accepts; CiphertextError if invalid."""

    @abstractmethod
    def public(self, *, seed: PublicSeed | int) -> Encryptor:
        """A handle without the secret key or key seed (picklable, secret-free); ``seed`` is the randomness of its
        own encryptions (public-key schemes)."""

    @abstractmethod
    def describe(self) -> dict[str, object]:
        """Parameters for the run record."""

    def public_key_bytes(self) -> int | None:
        """Bytes of the public key a party is sent once (None: the scheme has none)."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "encryptor")
        return f"{type(self).__name__}[{self.name}]({args})"

    def _plaintext(self, x: np.ndarray) -> np.ndarray:
        """``x`` as a flat float64 array of length n, or ConfigError."""
        arr = np.asarray(x, dtype=np.float64).reshape(-1)
        if arr.size != self.n:
            raise ConfigError(f"{self.name} encryptor expects {self.n} values, got {arr.size}; set n to the data size")
        if not np.all(np.isfinite(arr)):
            raise ConfigError(f"{self.name} encryptor got NaN/inf in the plaintext")
        return arr

    def _view_vector(self, v: np.ndarray) -> np.ndarray:
        """``v`` as a finite flat float64 array of length view_size, or CiphertextError."""
        arr = np.asarray(v, dtype=np.float64).reshape(-1)
        if arr.size != self.view_size:
            raise CiphertextError(f"{self.name} view must have {self.view_size} values, got {arr.size}")
        if not np.all(np.isfinite(arr)):
            raise CiphertextError(f"{self.name} view contains NaN/inf; it cannot be reassembled into a ciphertext")
        return arr


def known_params(cls: type[Encryptor]) -> list[str]:
    """The keyword-only constructor parameters of ``cls`` other than n and key_seed."""
    sig = inspect.signature(cls.__init__)
    return [p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY and p.name not in ("n", "key_seed")]


def make_encryptor(name: str, *, n: int, key_seed: KeySeed, **params: object) -> Encryptor:
    """Build the registered encryptor ``name`` for the key holder whose secrets come from ``key_seed`` (a KeySeed;
    TypeError for anything else, an int above all); unknown names or parameters raise ConfigError."""
    cls = ENCRYPTORS[name]
    known = known_params(cls)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)} for encryptor {name!r}; known: {', '.join(known)}"
        )
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"encryptor n must be a positive integer, got {n!r}")
    hints = typing.get_type_hints(cls.__init__)
    for key, value in params.items():
        check_type(f"{name} parameter {key}", value, hints.get(key, object))
    return cls(n=int(n), key_seed=KeySeed.check(key_seed, f"encryptor {name}"), **params)


def check_type(what: str, value: object, hint: object) -> None:
    """ConfigError unless `value` fits a simple annotation: int, float, str, bool, Sequence[int], X | None."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        origin = typing.get_origin(option)
        if option is type(None) and value is None:
            return
        if option is bool and isinstance(value, bool):
            return
        if option is int and isinstance(value, int | np.integer) and not isinstance(value, bool):
            return
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return
        if option is str and isinstance(value, str):
            return
        if origin in (collections.abc.Sequence, list, tuple) and isinstance(value, list | tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            return
        if option is object:
            return
    names = " or ".join("a list of integers" if typing.get_origin(o) else getattr(o, "__name__", str(o))
                        for o in options)  # fmt: skip
    raise ConfigError(f"{what} must be {names}, got {value!r}")
