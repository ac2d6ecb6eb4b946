"""How data is hidden (plain, ckks, bfv, permute, linear-mask) and viewed as model input; the only tenseal user
(SEAL through `tenseal.sealapi`, keys and noise reproducible from the key holder's key seed)."""

from encryptors import bfv, ckks, seal_format, simple  # noqa: F401  (registers the encryptors)
from encryptors.base import ENCRYPTORS, Encryptor, MissingKeyError, make_encryptor
from encryptors.security import SECURE_MAX_BITS, check_security

__all__ = [
    "ENCRYPTORS",
    "SECURE_MAX_BITS",
    "Encryptor",
    "MissingKeyError",
    "check_security",
    "make_encryptor",
    "seal_format",
]
