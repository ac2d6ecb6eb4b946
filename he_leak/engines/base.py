"""The engine interface: an engine takes chunks of runs from a Work queue, executes them somewhere and yields
events — finished runs' Records, runs lost with a dead worker, or a tick while nothing finished. The driver (he_leak.
sweep) stores the records and decides what to do with lost runs; engines never write results."""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from he_leak.config import RunConfig
from he_leak.records import Record
from he_leak.seeds import KeySeed
from he_leak.sweep.worker import Runner, Step, run_key_seed

TICK_SECONDS = 0.5  # how often an engine reports that it is still waiting (the live line and heartbeats)
CHUNK_SECONDS = 0.5  # target wall time of one chunk: per-task overhead (~ms) stays below 1% of the work
MAX_CHUNK = 256  # runs per chunk at most
BATCH_SECONDS = 0.1  # finished runs are delivered together at least this often (one write and fsync per batch)
TAIL_SHARE = 2  # a chunk takes at most 1/(TAIL_SHARE·slots) of what is left, so the last chunks stay balanced


@dataclass(frozen=True)
class Finished:
    """Runs finished (with a result or a failed row), delivered together so the driver stores them with one write."""

    records: tuple[Record, ...]


@dataclass(frozen=True)
class Lost:
    """Runs that did not finish because their worker died (killed, out of memory, a lost Ray task)."""

    configs: tuple[RunConfig, ...]
    reason: str


@dataclass(frozen=True)
class Tick:
    """Nothing finished for TICK_SECONDS: a chance to refresh the display."""


Event = Finished | Lost | Tick


class Work:
    """The runs still to hand out, in chunks sized from the wall time of the runs seen so far: one run per chunk
    until a run has finished, then about CHUNK_SECONDS of runs, so that cheap runs are not dominated by the
    engine's per-task overhead and slow runs still spread over every worker. Retried runs go first, one per chunk.
    `secret`: the sweep's folder secret, from which each run's key seed is derived (`keys`); None: fresh keys."""

    def __init__(self, configs: Sequence[RunConfig], *, slots: int, secret: KeySeed | None = None) -> None:
        self.secret = secret
        self.queue: deque[RunConfig] = deque(configs)
        self.retries: deque[RunConfig] = deque()
        self.slots = max(1, slots)
        self.seen = 0
        self.wall = 0.0

    def __len__(self) -> int:
        return len(self.queue) + len(self.retries)

    def chunk_size(self) -> int:
        """How many runs the next chunk holds."""
        if not self.seen:
            return 1
        mean = max(self.wall / self.seen, 1e-6)
        balanced = math.ceil(len(self.queue) / (TAIL_SHARE * self.slots))
        return max(1, min(MAX_CHUNK, int(CHUNK_SECONDS / mean), balanced))

    def take(self) -> tuple[RunConfig, ...] | None:
        """The next chunk, or None when nothing is left to hand out."""
        if self.retries:
            return (self.retries.popleft(),)
        if not self.queue:
            return None
        return tuple(self.queue.popleft() for _ in range(min(self.chunk_size(), len(self.queue))))

    def observe(self, record: Record) -> None:
        """A run finished: its wall time refines the chunk size."""
        self.seen += 1
        self.wall += record.wall

    def keys(self, chunk: Sequence[RunConfig]) -> tuple[KeySeed, ...] | None:
        """The key seeds of a chunk's runs, to send with it (the workers never see the folder secret)."""
        return None if self.secret is None else tuple(run_key_seed(self.secret, cfg) for cfg in chunk)

    def retry(self, cfg: RunConfig) -> None:
        """Hand this run out again, alone (it was lost with its worker)."""
        self.retries.append(cfg)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity where the system says, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def capped_workers(workers: int) -> tuple[int, int | None]:
    """`--workers` capped at the CPUs available: (workers to use, the number asked when capped, else None). More
    processes than CPUs only share them (and each holds its own copy of torch, ~0.7 GB)."""
    cpus = available_cpus()
    return (cpus, workers) if workers > cpus else (workers, None)


class Engine(ABC):
    """Executes runs. Built cheaply (options checked, nothing started); `run` starts workers on first use; `close`
    stops them (at once, also in the middle of a run, e.g. after Ctrl-C)."""

    name: str = "engine"
    slots: int = 1  # runs executing at once
    asked: int | None = None  # the --workers asked for when more than this machine's CPUs (capped at them)
    checks_local_devices: bool = True  # runs execute on this machine: its CUDA decides what device = "cuda" can do

    def __init__(self, *, runner: Runner | None = None) -> None:
        self.runner = runner

    @abstractmethod
    def run(self, work: Work, *, step: Step | None = None) -> Iterator[Event]:
        """Execute everything `work` hands out, yielding events as they happen; returns when work is empty and
        nothing is in flight. `step` receives an in-process attack's progress (engines that can report it)."""

    def fit(self, runs: int) -> str | None:
        """Before anything starts: use no more slots than `runs` (the runs to execute now). Returns the warning to
        show when fewer workers are used than were asked for (capped at the CPUs or at the runs), else None (also
        when nothing runs: --limit 0)."""
        asked = max(self.asked or 0, self.slots)
        self.resize(max(1, min(self.slots, runs)))
        if asked <= self.slots or runs == 0:
            return None
        return (f"--workers {asked}: {self.slots} used (at most this machine's {available_cpus()} CPUs and the "
                f"{runs} run{'s' if runs != 1 else ''} to execute)")  # fmt: skip

    def resize(self, slots: int) -> None:
        """Set the number of slots (called before any worker starts)."""
        self.slots = slots

    def close(self) -> None:  # noqa: B027  (an engine without workers has nothing to stop)
        """Stop the workers (idempotent)."""

    def describe(self) -> str:
        """e.g. ``local, 2 workers`` for the summary."""
        return f"{self.name}, {self.slots} worker{'s' if self.slots != 1 else ''}"

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
