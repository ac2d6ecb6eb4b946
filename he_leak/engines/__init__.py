"""Execution engines, one registry keyed by the name `he-leak run --engine NAME` takes.

An engine factory takes ``workers`` (parallel runs), ``address`` (a cluster, for engines that have one) and
``runner`` (what executes a config; default he_leak.runner.run_outcome) and returns an Engine. Add one with
``@ENGINES.register("name")`` on a factory; see he_leak/engines/base.py for the interface."""

from __future__ import annotations

from he_leak.engines.base import Engine, Event, Finished, Lost, Tick, Work
from he_leak.engines.local import make_local
from he_leak.engines.ray_engine import make_ray
from he_leak.registry import Registry
from he_leak.sweep.worker import Runner

ENGINES: Registry = Registry("engine")
ENGINES.register("local")(make_local)
ENGINES.register("ray")(make_ray)


def make_engine(
    name: str = "local", *, workers: int | None = None, address: str | None = None, runner: Runner | None = None
) -> Engine:
    """Build the engine `name` (options checked; nothing starts until it runs)."""
    return ENGINES[name](workers=workers, address=address, runner=runner)


__all__ = ["ENGINES", "Engine", "Event", "Finished", "Lost", "Tick", "Work", "make_engine"]
