"""The local engine with N > 1 workers: a pool of worker processes, one pipe each.

Written here rather than with concurrent.futures because a dead worker must cost only its own runs: the driver
knows which chunk each worker holds and how many of its runs came back, so a worker killed mid-chunk loses exactly
the runs it had not returned (they are handed out again) and the other workers go on. A worker sends the Records of
its finished runs at least every BATCH_SECONDS (every run when runs are slower, one message per batch when they take
milliseconds); it ignores SIGINT (the driver handles Ctrl-C and stops it) and exits when the driver
is gone."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from he_leak.config import RunConfig
from he_leak.engines.base import BATCH_SECONDS, TICK_SECONDS, Engine, Event, Finished, Lost, Tick, Work
from he_leak.sweep.worker import Runner, Step, run_chunk

STOP_SECONDS = 5.0  # how long an idle worker may take to exit after being told to


class WorkerError(RuntimeError):
    """A worker raised something that is not a run's failure (a bug): the sweep stops and shows its traceback."""


@dataclass
class _Worker:
    process: Any  # multiprocessing.Process (spawn context)
    conn: Connection
    chunk: list[RunConfig] = field(default_factory=list)  # runs sent and not yet returned


class PoolEngine(Engine):
    """`workers` processes; torch, BLAS and OpenMP in each use cpu_count // workers threads."""

    name = "local"

    def __init__(self, *, workers: int, runner: Runner | None = None) -> None:
        super().__init__(runner=runner)
        self.resize(workers)
        # forkserver: workers fork from a clean server process that has imported the runner once, so (re)starting
        # one costs milliseconds instead of a fresh interpreter importing torch (~3 s here); forking this process
        # instead would be unsafe once torch's OpenMP thread pool has run.
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["he_leak.sweep.worker"])
        self.workers: list[_Worker] = []

    def resize(self, slots: int) -> None:
        self.slots = slots
        self.threads = max(1, (os.cpu_count() or 1) // slots)

    def _spawn(self) -> _Worker:
        parent, child = self.context.Pipe()
        process = self.context.Process(
            target=_serve, args=(child, self.runner, self.threads, os.getpid()), daemon=True, name="he-leak-worker"
        )
        process.start()
        child.close()
        return _Worker(process, parent)

    def run(self, work: Work, *, step: Step | None = None) -> Iterator[Event]:
        while len(self.workers) < self.slots:
            self.workers.append(self._spawn())
        while True:
            for number, worker in enumerate(self.workers):
                if not worker.chunk and not worker.process.is_alive():  # died while idle: nothing lost
                    worker.conn.close()
                    worker = self.workers[number] = self._spawn()
                if not worker.chunk and (chunk := work.take()) is not None:
                    worker.chunk = list(chunk)
                    with contextlib.suppress(OSError):  # it died just now: _drain reports the chunk lost
                        worker.conn.send((chunk, work.keys(chunk)))
            busy = [w for w in self.workers if w.chunk]
            if not busy:
                return
            waits = [w.conn for w in busy] + [w.process.sentinel for w in busy]
            if not multiprocessing.connection.wait(waits, timeout=TICK_SECONDS):
                yield Tick()
                continue
            for worker in busy:
                yield from self._drain(worker)

    def _drain(self, worker: _Worker) -> Iterator[Event]:
        """The records a worker has sent; if it died, its remaining runs are lost and it is replaced."""
        try:
            while worker.chunk and worker.conn.poll():
                kind, payload = worker.conn.recv()
                if kind == "error":
                    raise WorkerError(payload)
                del worker.chunk[: len(payload)]
                yield Finished(tuple(payload))
        except (EOFError, OSError):
            pass  # the pipe closed: the worker is gone
        if worker.chunk and not worker.process.is_alive():
            worker.process.join(1.0)
            code = worker.process.exitcode
            if code is not None and code >= 0:  # it exited by itself (failed to start, or sys.exit): not a kill
                raise WorkerError(
                    f"worker pid {worker.process.pid} exited with code {code} (see its messages above); "
                    'calling run_experiment from a script? put it under if __name__ == "__main__":'
                )
            lost, worker.chunk = tuple(worker.chunk), []
            reason = f"worker pid {worker.process.pid} died of {signal.Signals(-code).name if code else 'a signal'}"
            worker.conn.close()
            self.workers[self.workers.index(worker)] = self._spawn()
            yield Lost(lost, reason)

    def close(self) -> None:
        for worker in self.workers:
            if worker.chunk:  # in the middle of a run (Ctrl-C or an error): no point waiting for it
                worker.process.kill()
            else:
                try:
                    worker.conn.send(None)
                except OSError:
                    worker.process.kill()
        deadline = time.monotonic() + STOP_SECONDS
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self.workers = []


def _serve(conn: Connection, runner: Runner | None, threads: int, parent: int) -> None:
    """A worker's loop: receive (chunk, key seeds), send back ("runs", [Record, ...]) batches; None or a closed pipe
    ends it.
    `parent` is the driver's pid (a forkserver child's parent process is the server)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch
    from threadpoolctl import threadpool_limits

    # N workers × every core each would oversubscribe the machine: torch, BLAS and OpenMP get cores // N threads.
    torch.set_num_threads(threads)
    limits = threadpool_limits(limits=threads)  # noqa: F841  (kept for the life of the worker)
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        chunk, keys = message
        batch, sent = [], time.monotonic()
        records = run_chunk(chunk, runner, keys=keys)  # groups runs that share a batched objective
        while True:
            try:
                record = next(records, None)
            except Exception:  # noqa: BLE001  (not dropped: sent to the driver, which raises it as WorkerError)
                conn.send(("runs", batch))
                left = [c.key() for c in chunk]
                conn.send(("error", f"one of the runs {left} raised:\n{traceback.format_exc()}"))
                return
            if record is None:
                break
            batch.append(record)
            if time.monotonic() - sent >= BATCH_SECONDS:
                conn.send(("runs", batch))
                batch, sent = [], time.monotonic()
        if batch:
            conn.send(("runs", batch))


def _orphan_watch(driver: int) -> None:
    """Exit when the driver is gone (killed with SIGKILL): no worker outlives its sweep by more than a second."""
    while _alive(driver):
        time.sleep(1.0)
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed driver its parent has not reaped yet is a zombie: gone all the same
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
