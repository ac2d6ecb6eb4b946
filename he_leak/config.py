"""RunConfig: everything that fixes one attack run, from the CLI or one point of an experiment grid."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from he_leak.errors import ConfigError


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
    activation: str = "sigmoid"
    encryptor: str | None = None  # scenario's default when None (ckks for ckks-input)
    encryptor_params: dict[str, Any] = field(default_factory=dict)
    insecure: bool = False
    success_psnr: float = 30.0
    success_symbol_exact: float = 0.999
    lr: float | None = None  # None: the attack's own default
    tv: float | None = None  # total-variation weight for ig

    def __post_init__(self) -> None:
        for name in ("batch", "restarts", "classes", "width", "stride"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.index < 0:
            raise ConfigError(f"index must be >= 0, got {self.index}")
        if self.iterations is not None and self.iterations < 1:
            raise ConfigError(f"iterations must be at least 1, got {self.iterations}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device {self.device!r}: use auto, cpu or cuda")

    @classmethod
    def from_mapping(cls, values: dict[str, Any], *, where: str = "config") -> RunConfig:
        """Build from TOML/JSON-like values, refusing unknown keys and wrong types with a ConfigError."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
        clean = {k: _coerce(v, hints[k], f"{where}: {k}") for k, v in values.items()}
        return cls(**clean)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def key(self) -> dict[str, Any]:
        """The identifying fields (what makes two runs 'the same run' for resuming an experiment)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a simple type hint (int, float, str, bool, tuple[int, ...], dict, X | None)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, opt, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list of integers, got {value!r}")
        return tuple(_coerce(v, int, where) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value)
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value
