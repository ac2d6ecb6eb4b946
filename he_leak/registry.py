"""One registry per extension point (scenario, encryptor, attack, model, dataset), keyed by the config/CLI name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from he_leak.errors import ConfigError

T = TypeVar("T")


class Registry(dict[str, T]):
    """A name -> factory dict filled by ``@registry.register("name")``; duplicates and unknown names are errors."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered (by {self[name]!r})")
            self[name] = obj
            return obj

        return add

    def __missing__(self, name: str) -> T:
        known = ", ".join(sorted(self)) or "none"
        raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}")

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(sorted(self))})"
