"""The checks of one run's options, shared by the library (RunConfig), the command line and experiment files:

- types: each value is coerced to its field's type or refused (a string is not a number, a bool not an integer, a
  number not a list; numpy scalars are read as the Python numbers they are);
- ranges: counts at least 1, seeds within 64 bits, fractions in [0, 1], no NaN or infinity, …;
- use: every option the run sets is used by its scenario, attack and model (the table in he_leak.options), else one
  line naming it. RunConfig checks the options that differ from their defaults; the command line and experiment
  files also pass the options the user gave (`given`), so one given at its default value is checked too.

Every problem is a ConfigError of one line naming the option and the fix."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Iterable
from typing import Any

from he_leak.errors import ConfigError
from he_leak.options import OPTIONS, why_unused

SEED_MAX = 2**64 - 1  # torch's and numpy's generators take seeds up to 64 bits
INT_MAX = 2**63 - 1  # any other integer option must fit a signed 64-bit integer (torch, numpy)
PSNR_CAP = 200.0  # he_leak.scoring.metrics caps PSNR here: a higher success threshold is never reached
CHOICES = {
    "device": ("auto", "cpu", "cuda"),
    "layout": ("auto", "hw", "hwc", "chw", "nhw", "nhwc", "nchw"),  # how a user's array is read (he_leak.data)
    # he-aggregate: the aggregator without the key, a key-holding client, or a key holder the server controls and
    # forwards every client's own ciphertext to (a sybil or a compromised participant)
    "role": ("server", "client", "colluder"),
    "he_backend": ("seal", "openfhe-threshold"),  # he-aggregate: one key shared by every client, or threshold CKKS
    "select": ("sensitivity", "random", "magnitude"),  # he-aggregate: which parameters the fraction encrypts
    "sensitivity": ("exact", "hutchinson"),  # he-aggregate: how the clients compute the sensitivity map
    "model_mode": ("eval", "train"),  # how the client runs its model: running statistics, or BatchNorm's batch's
    "update_kind": ("delta", "weights", "gradient"),  # what an --update file holds (docs/design.md)
    "disclosure": ("entries", "real", "slots"),  # he-train: the gradient's entries, every slot's real part, every slot
}
AT_LEAST_ONE = ("batch", "restarts", "classes", "width", "stride", "sensitivity_samples", "clients")


# ---------------------------------------------------------------------------------------------------------- types
def coerce(value: Any, hint: Any, name: str) -> Any:
    """`value` as the type hint says (int, float, str, bool, tuple[int, ...], dict, X | None) or a ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(hint) if o is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        return coerce(value, options[0], name)
    if origin is tuple:
        return _int_tuple(value, name)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a table of KEY = VALUE, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    return value


def _int_tuple(value: Any, name: str) -> tuple[int, ...]:
    """A list of integers (or the text "64,32"); an empty entry ("32,,16") is refused, not skipped."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if not all(p.lstrip("-").isdigit() for p in parts):
            raise ConfigError(f"{name} {value!r}: give comma-separated integers, e.g. 64,32 (no empty entry)")
        value = [int(p) for p in parts]
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{name} must be a list of integers, e.g. [64, 32], got {value!r}")
    return tuple(coerce(v, int, name) for v in value)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def normalise(cfg: Any) -> None:
    """Coerce every field of the frozen dataclass `cfg` to its type in place (ConfigError when impossible)."""
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        clean = coerce(value, hints[f.name], f.name)
        if clean is not value:
            object.__setattr__(cfg, f.name, clean)


# --------------------------------------------------------------------------------------------------------- ranges
def check_ranges(cfg: Any) -> None:
    """Numeric ranges and choices (ConfigError naming the option and the range)."""
    _integers(cfg)
    _floats(cfg)
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"{name} {getattr(cfg, name)!r}: use one of {', '.join(allowed)}")


def _integers(cfg: Any) -> None:
    for name in AT_LEAST_ONE:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if not 0 <= cfg.seed <= SEED_MAX:
        raise ConfigError(f"seed {cfg.seed}: a seed lies in 0 … 2**64 - 1 ({SEED_MAX})")
    if cfg.index < 0:
        raise ConfigError(f"index must be >= 0, got {cfg.index}")
    if cfg.iterations is not None and cfg.iterations < 1:
        raise ConfigError(f"iterations must be at least 1, got {cfg.iterations}")
    if cfg.imprint < 0 or cfg.imprint == 1:
        raise ConfigError(f"imprint must be 0 (none) or at least 2 bins, got {cfg.imprint}")
    if cfg.train_steps < 0:
        raise ConfigError(f"train_steps must be >= 0, got {cfg.train_steps}")
    if cfg.flood_bits is not None and cfg.flood_bits < 1:
        raise ConfigError(f"flood_bits must be at least 1 (noise of std 2**B), got {cfg.flood_bits}")
    if not cfg.hidden or min(cfg.hidden) < 1:
        raise ConfigError(f"hidden {list(cfg.hidden)}: give one or more positive layer widths, e.g. [64, 32]")
    for f in dataclasses.fields(cfg):
        values = getattr(cfg, f.name)
        values = values if isinstance(values, tuple) else (values,)
        if f.name != "seed" and any(type(v) is int and abs(v) > INT_MAX for v in values):
            raise ConfigError(f"{f.name} {getattr(cfg, f.name)} is beyond 64-bit integers; give a smaller value")


def _floats(cfg: Any) -> None:
    for name in ("lr", "tv", "clip", "success_psnr", "noise", "prune", "encrypt_fraction", "dp_noise", "dp_clip"):
        value = getattr(cfg, name)
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value}")
    for name in ("lr", "clip"):
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be positive, got {value}")
    if cfg.tv is not None and cfg.tv < 0:
        raise ConfigError(f"tv must be >= 0, got {cfg.tv}")
    if cfg.dp_noise is not None and cfg.dp_noise <= 0:
        raise ConfigError(f"dp_noise must be a noise multiplier > 0, got {cfg.dp_noise}")
    if cfg.dp_clip <= 0:
        raise ConfigError(f"dp_clip must be a per-sample norm bound > 0, got {cfg.dp_clip}")
    if cfg.noise < 0:
        raise ConfigError(f"noise must be a standard deviation >= 0, got {cfg.noise}")
    if not 0 < cfg.success_psnr <= PSNR_CAP:
        raise ConfigError(f"success_psnr {cfg.success_psnr:g}: a PSNR threshold in dB above 0 and at most "
                          f"{PSNR_CAP:g} (the PSNR cap), e.g. 30")  # fmt: skip
    for name in ("prune", "encrypt_fraction"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ConfigError(f"{name} must be a fraction in [0, 1], got {getattr(cfg, name)}")
    if cfg.prune >= 1:
        raise ConfigError(f"prune {cfg.prune}: pruning every entry leaves nothing to share; use a fraction < 1")


# ------------------------------------------------------------------------------------------------------------ use
def check_use(cfg: Any, given: Iterable[str] = ()) -> None:
    """Refuse (one line naming it) an option the run's scenario, attack or model does not use: any option that
    differs from its default, and every option in `given` (what the user wrote, default values included)."""
    given = set(given)
    for f in dataclasses.fields(cfg):
        if f.name in given or getattr(cfg, f.name) != _default(f):
            reason = why_unused(f.name, cfg)
            if reason:
                raise ConfigError(f"{OPTIONS[f.name].flag} does not apply {reason}; drop it")


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def validate(cfg: Any, given: Iterable[str] = ()) -> None:
    """Types, ranges and use of a RunConfig (see the module docstring)."""
    normalise(cfg)
    check_ranges(cfg)
    check_use(cfg, given)
