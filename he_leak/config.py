"""RunConfig: everything that fixes one attack run, from the CLI or one point of an experiment grid."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from he_leak.errors import ConfigError
from he_leak.validation import CHOICES, check_use, validate

LAYOUTS = CHOICES["layout"]  # how a user's array is read (he_leak.data)
ROLES = CHOICES["role"]  # he-aggregate: the aggregator without the key, a key-holding client, or the colluder
HE_BACKENDS = CHOICES["he_backend"]  # he-aggregate: one key shared by every client, or threshold CKKS
SELECTIONS = CHOICES["select"]  # he-aggregate: which parameters the fraction encrypts
SENSITIVITIES = CHOICES["sensitivity"]  # he-aggregate: how the clients compute the sensitivity map
DISCLOSURES = CHOICES["disclosure"]  # he-train: the gradient's entries, every slot's real part, every slot


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One run: scenario × attack × model × data × index × seed, plus the options that shape it."""

    scenario: str = "plain"
    attack: str = "dlg"
    model: str = "lenet"
    data: str = "digits"
    index: int = 0
    seed: int = 0
    batch: int = 1
    iterations: int | None = None  # None: the attack's own default
    restarts: int = 1
    classes: int = 10
    device: str = "auto"
    hidden: tuple[int, ...] = (64, 32)
    width: int = 12
    stride: int = 2  # conv1's stride
    activation: str | None = None  # None: the scenario's default (square for he-train, sigmoid otherwise)
    encryptor: str | None = None  # scenario's default when None (ckks for ckks-input)
    encryptor_params: dict[str, Any] = field(default_factory=dict)
    insecure: bool = False
    loss: str | None = None  # None: the scenario's default (cross-entropy; mse for he-train)
    success_psnr: float = 30.0
    lr: float | None = None  # None: the attack's own default
    tv: float | None = None  # total-variation weight for ig
    # data: how a user's array is laid out, and whether out-of-range values may be rescaled (recorded)
    layout: str = "auto"
    normalize: bool = False
    # utility: train the scenario's model on the scenario's inputs and record its test accuracy
    utility: bool = False
    # defences between the client's gradient and what is shared (applied in this order: clip, prune, noise)
    clip: float | None = None  # L2 norm bound on the whole gradient
    prune: float = 0.0  # fraction of entries (smallest magnitude) set to zero
    noise: float = 0.0  # standard deviation of the Gaussian noise added to every entry
    # he-train: encrypted training steps after the attacked one; noise flooding 2**B of the shared decryption
    train_steps: int = 0
    flood_bits: int | None = None
    # he-train: what the key holder hands over of each decryption; the server's key-recovery attack on it
    disclosure: str = "entries"
    key_recovery: bool = False
    # DP-SGD on the client (Opacus): noise multiplier z (None: no DP-SGD), per-sample L2 clipping bound C
    dp_noise: float | None = None
    dp_clip: float = 1.0
    # he-aggregate: K clients with a batch each; who attacks; which parameters are encrypted
    clients: int = 1
    role: str = "server"
    encrypt_fraction: float = 1.0
    select: str = "sensitivity"
    encrypt_layers: str | None = None  # regular expression on parameter names (NVFlare's encrypt_layers)
    sensitivity: str = "exact"  # select = sensitivity: the exact map, or its Hutchinson estimate (16 probes/sample)
    sensitivity_samples: int = 32  # select = sensitivity: each client's own samples its map is computed on
    he_backend: str = "seal"  # one CKKS key shared by every client (SEAL), or threshold CKKS (OpenFHE, all shares)
    imprint: int = 0  # bins of a malicious server's imprint layer in front of the model (Fowl et al.); 0: none

    def __post_init__(self) -> None:
        """Types (coerced), ranges and use: an option that differs from its default and that the run's scenario,
        attack or model does not use is refused (he_leak.validation, he_leak.options)."""
        validate(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, where: str | None = "config") -> RunConfig:
        """Build from TOML/JSON-like values or command-line options: unknown keys, wrong types and bad ranges are
        refused, and so is every given option the run does not use, even at its default value (one ConfigError
        line, prefixed with `where` when given)."""
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(fields))
        try:
            if unknown:
                raise ConfigError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
            cfg = cls(**values)
            check_use(cfg, values)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}" if where else str(e)) from None
        return cfg

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def key(self) -> dict[str, Any]:
        """The identifying fields (what makes two runs 'the same run' for resuming an experiment)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


# -------------------------------------------------------------------------------------------------------- run ids
def jsonable(value: Any) -> Any:
    """JSON-safe: numpy scalars/arrays to Python, tuples to lists, non-finite floats to None, paths to strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


@functools.cache
def _default_key() -> dict[str, Any]:
    return RunConfig().key()


def config_id(key: Mapping[str, Any]) -> str:
    """Canonical JSON of a config key: two runs are the same run iff these strings are equal. Fields a row's config
    lacks (written before the field existed) take today's default, so older rows still match their runs."""
    return json.dumps(jsonable({**_default_key(), **key}), sort_keys=True, separators=(",", ":"))


def run_hash(key: Mapping[str, Any]) -> str:
    """Short stable hash of a config key: the run's panel file is runs/<hash>.npz."""
    return hashlib.sha256(config_id(key).encode()).hexdigest()[:16]
