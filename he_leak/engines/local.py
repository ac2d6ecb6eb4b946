"""Engine `local`: runs on this machine. One worker runs in this process, one run after another (an attack's own
progress shows on the live line); N > 1 workers are a process pool (he_leak.engines.pool)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from he_leak.engines.base import BATCH_SECONDS, Engine, Event, Finished, Work, capped_workers
from he_leak.errors import ConfigError
from he_leak.sweep.worker import Runner, Step, run_chunk


class SerialEngine(Engine):
    """Every run in this process, in order: no start-up cost, and a custom runner need not be picklable."""

    name = "local"
    slots = 1

    def run(self, work: Work, *, step: Step | None = None) -> Iterator[Event]:
        while (chunk := work.take()) is not None:
            batch, sent = [], time.monotonic()
            for record in run_chunk(chunk, self.runner, step, work.keys(chunk)):  # groups runs sharing a pass
                batch.append(record)
                if time.monotonic() - sent >= BATCH_SECONDS:  # every run when runs are slow
                    yield Finished(tuple(batch))
                    batch, sent = [], time.monotonic()
            if batch:
                yield Finished(tuple(batch))


def make_local(*, workers: int | None = None, address: str | None = None, runner: Runner | None = None) -> Engine:
    """The local engine for `workers` processes (default 1: in this process; capped at the CPUs available)."""
    if address is not None:
        raise ConfigError("--address names a Ray cluster; use it with --engine ray")
    workers = 1 if workers is None else workers
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    workers, asked = capped_workers(workers)
    if workers == 1:
        engine: Engine = SerialEngine(runner=runner)
    else:
        from he_leak.engines.pool import PoolEngine

        engine = PoolEngine(workers=workers, runner=runner)
    engine.asked = asked
    return engine
