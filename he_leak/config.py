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
from he_leak.records import LocalTraining
from he_leak.validation import CHOICES, check_use, validate

LAYOUTS = CHOICES["layout"]  # how a user's array is read (he_leak.data)
ROLES = CHOICES["role"]  # he-aggregate: the aggregator without the key, a key-holding client, or the colluder
HE_BACKENDS = CHOICES["he_backend"]  # he-aggregate: one key shared by every client, or threshold CKKS
SELECTIONS = CHOICES["select"]  # he-aggregate: which parameters the fraction encrypts
SENSITIVITIES = CHOICES["sensitivity"]  # he-aggregate: how the clients compute the sensitivity map
MODEL_MODES = CHOICES["model_mode"]  # how the client runs its model: running statistics, or the batch's (BatchNorm)
UPDATE_KINDS = CHOICES["update_kind"]  # what an --update file holds (docs/design.md, "Captured updates")
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
    # the model: its weights (a state_dict file), a training stage, and the mode the client runs it in
    weights: str | None = None  # .pt/.pth state_dict or .safetensors, loaded strictly (None: seeded initialisation)
    pretrain_epochs: int = 0  # train on the dataset without the attacked samples first (he_leak.models.local.pretrain)
    model_mode: str = "eval"  # train: BatchNorm uses batch statistics, its running buffers travel with the update
    # FedAvg: the client's local training (0 steps: it shares one gradient, FedSGD)
    local_steps: int = 0
    local_lr: float | None = None
    local_batch: int | None = None  # None: the whole batch in every step
    # a captured update (plain): the file, what it holds, and whether --data/--index/--batch are the client's batch
    update: str | None = None
    update_kind: str = "delta"
    update_truth: bool = False
    # attack options: unroll the local steps (dlg, idlg, ig), and ig's BatchNorm-statistics prior weight
    unroll: bool = True
    bn_prior: float = 0.0
    he_backend: str = "seal"  # one CKKS key shared by every client (SEAL), or threshold CKKS (OpenFHE, all shares)
    imprint: int = 0  # bins of a malicious server's imprint layer in front of the model (Fowl et al.); 0: none

    def __post_init__(self) -> None:
        """Types (coerced), ranges and use: an option that differs from its default and that the run's scenario,
        attack or model does not use is refused (he_leak.validation, he_leak.options)."""
        validate(self)
        self._check_federation()

    def _check_federation(self) -> None:
        """Ranges of the model-stage, local-training, captured-update and their attack options (which scenario and
        attack honour them is checked where they are used)."""
        if self.pretrain_epochs < 0 or self.local_steps < 0:
            raise ConfigError("pretrain_epochs and local_steps must be >= 0")
        if self.local_batch is not None and self.local_batch < 1:
            raise ConfigError(f"local_batch must be at least 1, got {self.local_batch}")
        if self.local_lr is not None and not (math.isfinite(self.local_lr) and self.local_lr > 0):
            raise ConfigError(f"local_lr must be a positive number, got {self.local_lr}")
        if not (math.isfinite(self.bn_prior) and self.bn_prior >= 0):
            raise ConfigError(f"bn_prior must be a weight >= 0, got {self.bn_prior}")
        if self.local_steps == 0 and (self.local_lr is not None or self.local_batch is not None):
            raise ConfigError("--local-lr and --local-batch describe local training: give --local-steps E (>= 1)")
        if self.local_steps and self.local_lr is None:
            raise ConfigError(f"--local-steps {self.local_steps}: state the client's learning rate with --local-lr")
        if self.local_steps and self.local_batch and self.local_steps * self.local_batch < self.batch:
            raise ConfigError(f"--local-steps {self.local_steps} of --local-batch {self.local_batch} use only "
                              f"{self.local_steps * self.local_batch} of the --batch {self.batch} samples; the others "
                              "take no part in the update: raise the steps or the local batch")  # fmt: skip
        if self.role == "colluder" and (self.local_steps or self.model_mode == "train"):
            raise ConfigError("--role colluder attacks one gradient without BatchNorm buffers: drop --local-steps and "
                              "--model-mode train (not modelled for the colluder)")  # fmt: skip
        if self.local_steps and self.dp_noise is not None:
            raise ConfigError("--dp-noise shares one DP-SGD step's gradient: drop --local-steps (or --dp-noise)")
        if not self.unroll and not self.local_steps:
            raise ConfigError("--no-unroll applies to an update of local steps (--local-steps); drop it")
        if self.update is None and (self.update_truth or self.update_kind != "delta"):
            raise ConfigError("--truth and --update-kind describe a captured update: give --update FILE")
        if self.update is not None and self.weights is None:
            raise ConfigError("--update needs --weights GLOBAL: the global model the client started its training from")
        if self.utility and (self.pretrain_epochs or self.update is not None):
            raise ConfigError("--utility trains the model on the dataset, which --pretrain-epochs already trained on "
                              "(its test split would not be held out) and which a captured --update does not "
                              "describe: drop --utility")  # fmt: skip
        if self.update_kind == "gradient" and self.local_steps:
            raise ConfigError("--update-kind gradient is one gradient (FedSGD): drop --local-steps, or give the "
                              "update as a delta or the client's weights")  # fmt: skip
        if self.update_kind in ("delta", "weights") and self.update is not None and not self.local_steps:
            raise ConfigError(f"--update-kind {self.update_kind}: state the client's local training (--local-steps "
                              "E --local-lr η [--local-batch b]); --update-kind gradient for a gradient")  # fmt: skip

    def local(self) -> LocalTraining | None:
        """The local training this config describes (None: the client shares one gradient)."""
        if not self.local_steps:
            return None
        return LocalTraining(steps=self.local_steps, lr=float(self.local_lr), batch=self.local_batch or self.batch,
                             clients=self.clients)  # fmt: skip

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
