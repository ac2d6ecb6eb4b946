"""Engine `ray`: each chunk of runs is one Ray task that returns its Records. Ray is imported only when this engine
is chosen (`pip install -e .[ray]`). Without `--address` a local Ray is started with `--workers` CPUs (default: all)
and shut down at the end; with `--address` the sweep joins an existing cluster, whose Python must have the same
he-leak installed (each Result records its versions).

Tasks are not retried by Ray (max_retries=0): a task lost with its worker or node comes back to the driver as Lost,
which hands its runs out again one by one, so a run is never executed twice into the results. A GPU is requested
per task only when the cluster has GPUs and the chunk has a run that may use one (device auto or cuda)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from he_leak.config import RunConfig
from he_leak.engines.base import TICK_SECONDS, Engine, Event, Finished, Lost, Tick, Work, capped_workers
from he_leak.engines.pool import WorkerError
from he_leak.errors import ConfigError
from he_leak.records import Record
from he_leak.seeds import KeySeed
from he_leak.sweep.worker import Runner, Step, run_chunk
from he_leak.text import one_line

CONNECT_SECONDS = 5.0  # how long a cluster address may take to accept a connection
INSTALL_HINT = "--engine ray needs Ray, which is not installed here; install it with: pip install -e .[ray]"


def ray_chunk(chunk: tuple[RunConfig, ...], runner: Runner | None, keys: tuple[KeySeed, ...] | None) -> list[Record]:
    """The body of one Ray task: the chunk's records, in order (`keys`: the runs' key seeds)."""
    return list(run_chunk(chunk, runner, keys=keys))


class RayEngine(Engine):
    """Chunks as Ray tasks, at most `slots` in flight."""

    name = "ray"

    def __init__(self, *, workers: int | None = None, address: str | None = None, runner: Runner | None = None):
        super().__init__(runner=runner)
        try:
            import ray
        except ImportError:
            raise ConfigError(INSTALL_HINT) from None
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        if address is not None:
            _check_reachable(address)
        self.ray = ray
        self.address = address
        if workers is not None and address is None:  # a local Ray: at most this machine's CPUs
            workers, self.asked = capped_workers(workers)
        self.workers = workers
        self.slots = workers or os.cpu_count() or 1
        self.limit: int | None = None  # the runs pending (fit), a cap on a cluster's slots
        self.checks_local_devices = address is None
        self.started = False  # we started Ray (and shut it down in close)
        self.task: Any = None
        self.gpus = 0.0
        self.inflight: dict[Any, tuple[RunConfig, ...]] = {}

    def _start(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "logging_level": logging.ERROR, "configure_logging": True}  # fmt: skip
            if self.address is None:
                root = str(Path(__file__).resolve().parents[2])  # workers import this checkout's he_leak
                path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
                options.update(num_cpus=self.slots, runtime_env={"env_vars": {"PYTHONPATH": path}})
            else:
                options["address"] = self.address
            try:
                ray.init(**options)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
                raise ConfigError(f"cannot start {where}: {one_line(e)}; check --address and `ray status`") from None
            self.started = True
        resources = ray.cluster_resources()
        if self.address is not None and self.workers is None:
            self.slots = max(1, min(int(resources.get("CPU", 1)), self.limit or int(resources.get("CPU", 1))))
        self.gpus = float(resources.get("GPU", 0))
        self.task = ray.remote(ray_chunk).options(num_cpus=1, max_retries=0)

    def fit(self, runs: int) -> str | None:
        self.limit = max(1, runs)  # a cluster's CPUs are known only once joined (_start)
        return super().fit(runs)

    def submit(self, chunk: tuple[RunConfig, ...], keys: tuple[KeySeed, ...] | None = None) -> None:
        """One chunk as a task: 1 CPU, and a share of a GPU (a whole one when there are as many as slots) when the
        cluster has GPUs and a run of the chunk may use one."""
        wants_gpu = self.gpus > 0 and any(cfg.device != "cpu" for cfg in chunk)
        share = min(1.0, self.gpus / self.slots) if wants_gpu else 0
        task = self.task.options(num_gpus=share) if share else self.task
        self.inflight[task.remote(chunk, self.runner, keys)] = chunk

    def run(self, work: Work, *, step: Step | None = None) -> Iterator[Event]:
        if self.task is None:
            self._start()
        ray = self.ray
        while True:
            while len(self.inflight) < self.slots and (chunk := work.take()) is not None:
                self.submit(chunk, work.keys(chunk))
            if not self.inflight:
                return
            done, _ = ray.wait(list(self.inflight), num_returns=1, timeout=TICK_SECONDS)
            if not done:
                yield Tick()
                continue
            for ref in done:
                chunk = self.inflight.pop(ref)
                try:
                    records = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # a bug in a run, not a lost worker: stop the sweep
                    raise WorkerError(str(e)) from None
                except ray.exceptions.RuntimeEnvSetupError as e:
                    raise ConfigError(f"Ray could not set up the workers' environment: {one_line(e)}") from None
                except ray.exceptions.RayError as e:  # worker or node died, object lost: hand the runs out again
                    yield Lost(chunk, f"Ray task lost ({type(e).__name__})")
                    continue
                yield Finished(tuple(records))

    def close(self) -> None:
        for ref in self.inflight:
            self.ray.cancel(ref, force=True)
        self.inflight = {}
        if self.started:
            self.ray.shutdown()
            self.started = False

    def describe(self) -> str:
        where = self.address or "local"
        return f"ray ({where}), {self.slots} CPU{'s' if self.slots != 1 else ''}" + (
            f", {self.gpus:g} GPU(s)" if self.gpus else ""
        )


def _check_reachable(address: str) -> None:
    """Fail in one line, before anything is written, when a host:port cluster address does not answer (ray.init
    itself retries for minutes). `auto` and addresses without a port are left to Ray."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as e:
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({one_line(e)}); check the address "
                          f"(`ray status` on the head node prints it)") from None  # fmt: skip


def make_ray(*, workers: int | None = None, address: str | None = None, runner: Runner | None = None) -> Engine:
    """The Ray engine (fails in one line naming the install command when Ray is missing)."""
    return RayEngine(workers=workers, address=address, runner=runner)
