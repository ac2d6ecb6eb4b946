"""The project's error hierarchy: the CLI turns every HeLeakError into one line on stderr and exit code 2."""


class HeLeakError(Exception):
    """Base class: a user-facing problem whose message names the fix."""


class ConfigError(HeLeakError, ValueError):
    """A bad name, option, TOML key or value."""


class DataError(HeLeakError, ValueError):
    """A missing, unreadable or ill-shaped data file or sample."""


class ParameterError(ConfigError):
    """Homomorphic-encryption parameters that are invalid or below 128-bit security."""


class CiphertextError(HeLeakError, ValueError):
    """A ciphertext (or its view) that cannot be parsed, reassembled or decrypted."""


class AttackFailed(HeLeakError, RuntimeError):
    """An attack diverged (NaN/inf) or could not run; recorded in the Result's ``error``, never dropped."""
