"""What a worker does with a run: execute it and hand back a Record (its Result row and images). Workers never
write results; the sweep's driver stores the records it receives.

Keys: the driver derives each run's key seed from the sweep's folder secret and the run's config id
(`run_key_seed`) and sends it with the chunk, so a worker holds the key seeds of its own runs only, and the same
folder gives the same keys however the runs are chunked, retried or resumed."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from he_leak.attacks import ATTACKS
from he_leak.config import RunConfig, config_id, jsonable
from he_leak.errors import HeLeakError
from he_leak.records import Record, Result, versions
from he_leak.runner import RUN_FAILURES, Outcome, resolve_device, run_outcome, run_outcomes
from he_leak.seeds import KeySeed
from he_leak.sweep.experiment import resolved_encryptor
from he_leak.text import one_line

Runner = Callable[..., Outcome]  # runner(cfg, progress=callback, key_seed=KeySeed) -> Outcome, as run_outcome
Step = Callable[[int, int, float], None]  # an attack's progress: (iteration, iterations, loss)


def run_key_seed(secret: KeySeed, cfg: RunConfig) -> KeySeed:
    """A run's key seed: the sweep's secret's child for the run's config id (HMAC; he_leak.sweep.store.config_id)."""
    return KeySeed.check(secret, "run_key_seed").child("run", config_id(cfg.key()))


def execute(cfg: RunConfig, runner: Runner | None = None, progress: Step | None = None,
            key_seed: KeySeed | None = None) -> Record:  # fmt: skip
    """Run one config with the key holder's `key_seed` (None: fresh). A numerical failure or an input problem the
    preflight could not see becomes a failed row (success false, `error` naming it): recorded, never dropped, and it
    does not stop the other runs."""
    start = time.perf_counter()
    panels: dict[str, np.ndarray] = {}
    try:
        outcome = (runner or run_outcome)(cfg, progress=progress, key_seed=key_seed)
        result, panels = outcome.result, dict(outcome.panels or {})
        row = result.to_dict() if isinstance(result, Result) else dict(result)
    except (*RUN_FAILURES, HeLeakError) as e:
        row = failed_row(cfg, f"{type(e).__name__}: {one_line(e)}", time.perf_counter() - start)
    row["config"] = cfg.key()
    return Record(jsonable(row), panels, time.perf_counter() - start)


def run_chunk(
    chunk: Iterable[RunConfig], runner: Runner | None = None, progress: Step | None = None,
    keys: Sequence[KeySeed] | None = None,
) -> Iterator[Record]:  # fmt: skip
    """The records of a chunk of runs, as they finish, each with its key seed from `keys` (one per run, in order;
    None: fresh ones): with the default runner, runs that can share one batched objective (`group_runs`) run
    together, the others one by one."""
    chunk = list(chunk)
    seeds = [None] * len(chunk) if keys is None else list(keys)
    key_of = {id(cfg): key for cfg, key in zip(chunk, seeds, strict=True)}  # group_runs keeps the config objects
    if runner is not None:
        for cfg in chunk:
            yield execute(cfg, runner, progress, key_of[id(cfg)])
        return
    for group in group_runs(chunk):
        if len(group) > 1:
            yield from execute_group(group, [key_of[id(cfg)] for cfg in group])
        else:
            yield execute(group[0], None, progress, key_of[id(group[0])])


# Devices on which a sweep groups runs through one batched objective: none by default — a group's float32 rounding
# differs from a single run's, so rows would depend on how the engine chunks the grid (docs/measurements.md#grouping).
GROUP_DEVICES: tuple[str, ...] = ()


def group_runs(chunk: Sequence[RunConfig], *, devices: Sequence[str] = GROUP_DEVICES) -> list[list[RunConfig]]:
    """The chunk's runs in groups that may share one batched objective: same config but for index and seed, with a
    `batchable` attack (he_leak.attacks.base.Attack), on one of `devices`; groups in order of their first run, runs
    in chunk order."""
    groups: dict[Any, list[RunConfig]] = {}
    for k, cfg in enumerate(chunk):
        cls = ATTACKS.get(cfg.attack)
        shared = {n: v for n, v in cfg.key().items() if n not in ("index", "seed")}
        batch = cls is not None and cls.batchable and bool(devices) and _device_type(cfg.device) in devices
        key = repr(sorted(shared.items())) if batch else k
        groups.setdefault(key, []).append(cfg)
    return list(groups.values())


def _device_type(name: str) -> str | None:
    """The run's device type, or None when this machine cannot resolve it (the run then fails alone in `execute`)."""
    try:
        return resolve_device(name).type
    except HeLeakError:
        return None


def execute_group(group: Sequence[RunConfig], keys: Sequence[KeySeed | None] | None = None) -> list[Record]:
    """Run a group from `group_runs` through one batched objective (he_leak.runner.run_outcomes; `keys`: one key
    seed per run); if the group cannot be set up together (an input problem in one of its runs), one by one, so each
    failure stays its own."""
    start = time.perf_counter()
    keys = [None] * len(group) if keys is None else list(keys)
    try:
        outcomes = run_outcomes(group, key_seeds=keys)
    except (*RUN_FAILURES, HeLeakError):
        return [execute(cfg, key_seed=key) for cfg, key in zip(group, keys, strict=True)]
    wall = (time.perf_counter() - start) / len(group)
    records = []
    for cfg, outcome in zip(group, outcomes, strict=True):
        row = outcome.result.to_dict() if isinstance(outcome.result, Result) else dict(outcome.result)
        row["config"] = cfg.key()
        records.append(Record(jsonable(row), dict(outcome.panels or {}), wall))
    return records


def failed_row(cfg: RunConfig, error: str, seconds: float | None) -> dict[str, Any]:
    """The Result row of a run that ended without a result: the config's identifying fields, success false."""
    names = {f.name for f in dataclasses.fields(Result)}
    values = {k: v for k, v in cfg.key().items() if k in names and k not in ("config", "success", "error", "seconds")}
    values["encryptor"] = resolved_encryptor(cfg)
    result = Result(**values, run_seconds=seconds, success=False, error=error, versions=versions())
    return result.to_dict()
