"""What a worker does with a run: execute it and hand back a Record (its Result row and images). Workers never
write results; the sweep's driver stores the records it receives."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from he_leak.config import RunConfig
from he_leak.errors import HeLeakError
from he_leak.records import Result
from he_leak.runner import RUN_FAILURES, Outcome, run_outcome
from he_leak.spec import resolved_encryptor
from he_leak.store import jsonable
from he_leak.text import one_line
from he_leak.versions import versions

Runner = Callable[..., Outcome]  # runner(cfg, progress=callback) -> Outcome, as he_leak.runner.run_outcome
Step = Callable[[int, int, float], None]  # an attack's progress: (iteration, iterations, loss)


@dataclass(frozen=True)
class Record:
    """A finished run: its Result row (JSON-ready, with the run's config) and its images, and the wall time the
    worker spent on it (for chunk sizing and rates; the row's own `seconds` is the attack's time)."""

    row: dict[str, Any]
    panels: dict[str, np.ndarray]
    wall: float = 0.0

    @property
    def failed(self) -> bool:
        """Ended with an error (a numerical failure, an input problem or a dead worker) rather than a result."""
        return bool(self.row.get("error")) and not self.row.get("success")


def execute(cfg: RunConfig, runner: Runner | None = None, progress: Step | None = None) -> Record:
    """Run one config. A numerical failure or an input problem the preflight could not see becomes a failed row
    (success false, `error` naming it): recorded, never dropped, and it does not stop the other runs."""
    start = time.perf_counter()
    panels: dict[str, np.ndarray] = {}
    try:
        outcome = (runner or run_outcome)(cfg, progress=progress)
        result, panels = outcome.result, dict(outcome.panels or {})
        row = result.to_dict() if isinstance(result, Result) else dict(result)
    except (*RUN_FAILURES, HeLeakError) as e:
        row = failed_row(cfg, f"{type(e).__name__}: {one_line(e)}", time.perf_counter() - start)
    row["config"] = cfg.key()
    return Record(jsonable(row), panels, time.perf_counter() - start)


def run_chunk(chunk: Iterable[RunConfig], runner: Runner | None = None) -> Iterator[Record]:
    """The records of a chunk of runs, one as each finishes."""
    for cfg in chunk:
        yield execute(cfg, runner)


def failed_row(cfg: RunConfig, error: str, seconds: float | None) -> dict[str, Any]:
    """The Result row of a run that ended without a result: the config's identifying fields, success false."""
    names = {f.name for f in dataclasses.fields(Result)}
    values = {k: v for k, v in cfg.key().items() if k in names and k not in ("config", "success", "error", "seconds")}
    values["encryptor"] = resolved_encryptor(cfg)
    result = Result(**values, seconds=seconds, success=False, error=error, versions=versions())
    return result.to_dict()
