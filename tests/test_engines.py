"""Engines (he_leak.engines): chunk sizing, the local process pool and Ray give the same rows as one process
(timings aside); a worker killed mid-run or a lost Ray task costs nothing (its runs are handed out again, each run is
recorded once); a run that kills every worker it meets is recorded as failed; errors are one line."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from pathlib import Path

import pytest
from rich.console import Console
from stubs import KillingRunner, cheap_grid, rows_by_config, without_timings

from he_leak.cli import main
from he_leak.config import RunConfig
from he_leak.engines import ENGINES, Work, make_engine
from he_leak.engines.base import CHUNK_SECONDS, MAX_CHUNK
from he_leak.engines.pool import WorkerError
from he_leak.errors import ConfigError
from he_leak.records import Record
from he_leak.sweep.driver import run_experiment
from he_leak.sweep.experiment import load_experiment
from he_leak.sweep.store import RESULTS_FILE, read_results
from he_leak.sweep.worker import execute

ROOT = Path(__file__).resolve().parents[1]



# One contract for every engine: the rows an engine records are the rows of the same runs executed directly, one
# by one, in this process (no engine at all), and an engine that can lose a worker loses no run when it does.
ENGINE_OPTIONS = {"serial": {"engine": "local", "workers": 1}, "pool": {"engine": "local", "workers": 2},
                  "ray": {"engine": "ray", "workers": 2}}  # fmt: skip
LOSES_WORKERS = {"pool": "died of SIGKILL", "ray": "Ray task lost"}  # what each says when a worker is killed


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """A 12-run cheap grid and the rows of its runs executed directly (he_leak.sweep.worker.execute), keyed like
    rows_by_config."""
    folder = tmp_path_factory.mktemp("reference")
    grid = cheap_grid(folder, indices=6, seeds=2)
    rows = {}
    for cfg in load_experiment(grid).runs:
        row = execute(cfg).row
        rows[json.dumps(row["config"], sort_keys=True)] = without_timings(json.loads(json.dumps(row)))
    return grid, rows


@pytest.fixture()
def engine_ready(request: pytest.FixtureRequest):
    """Whatever an engine needs running before a sweep (a local Ray for `ray`)."""
    if request.param == "ray":
        request.getfixturevalue("local_ray")
    return request.param


@pytest.mark.parametrize("engine_ready", list(ENGINE_OPTIONS), indirect=True)
def test_every_engine_records_the_rows_of_the_runs_executed_directly(tmp_path: Path, reference,
                                                                    engine_ready: str) -> None:  # fmt: skip
    grid, expected = reference
    report = run_experiment(grid, tmp_path / "out", quiet=True, **ENGINE_OPTIONS[engine_ready])
    assert rows_by_config(tmp_path / "out") == expected
    assert report.ran == 12 and report.failed == 0


@pytest.mark.parametrize("engine_ready", list(LOSES_WORKERS), indirect=True)
def test_an_engine_that_loses_a_worker_loses_no_run(tmp_path: Path, reference, engine_ready: str) -> None:
    grid, expected = reference
    buffer = io.StringIO()
    runner = KillingRunner(tmp_path / "killed", victim=3)  # the first time run #3 starts, its worker is SIGKILLed
    report = run_experiment(grid, tmp_path / "out", runner=runner, console=Console(file=buffer),
                            **ENGINE_OPTIONS[engine_ready])  # fmt: skip
    assert (tmp_path / "killed").exists(), "the worker was not killed: the test tested nothing"
    assert rows_by_config(tmp_path / "out") == expected and report.failed == 0
    assert LOSES_WORKERS[engine_ready] in buffer.getvalue()
    if engine_ready == "ray":
        import ray

        assert ray.is_initialized()  # a Ray the sweep did not start is left running


# --------------------------------------------------------------------------------------------------------- Work
def test_chunks_grow_with_fast_runs_and_shrink_for_the_tail() -> None:
    configs = [RunConfig(index=i) for i in range(1000)]
    work = Work(configs, slots=2)
    assert work.take() == (configs[0],)  # nothing measured yet: one run
    work.observe(Record({}, {}, wall=0.01))
    assert len(work.take()) == min(MAX_CHUNK, int(CHUNK_SECONDS / 0.01))  # about CHUNK_SECONDS of runs
    slow = Work(configs[:40], slots=2)
    slow.observe(Record({}, {}, wall=30.0))
    assert len(slow.take()) == 1  # slow runs: one per chunk
    tail = Work(configs[:10], slots=2)
    tail.observe(Record({}, {}, wall=1e-4))
    assert len(tail.take()) == 3  # at most remaining / (2 · slots), so both workers get a share of the tail
    tail.retry(configs[500])
    assert tail.take() == (configs[500],)  # retried runs first, alone
    while tail.take():
        pass
    assert len(tail) == 0 and tail.take() is None


# --------------------------------------------------------------------------------------------------------- errors
def test_engine_options_are_checked() -> None:
    assert set(ENGINES) >= {"local", "ray"}
    with pytest.raises(ConfigError, match="unknown engine 'spark'; known: local, ray"):
        make_engine("spark")
    with pytest.raises(ConfigError, match="--address names a Ray cluster"):
        make_engine("local", address="ray://x:10001")
    with pytest.raises(ConfigError, match="--workers must be at least 1"):
        make_engine("local", workers=0)
    assert make_engine("local").describe() == "local, 1 worker"


def test_ray_missing_is_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    out = tmp_path / "out"
    assert main(["run", str(cheap_grid(tmp_path, indices=2)), "--out", str(out), "--engine", "ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install -e .[ray]" in err[0]
    assert not out.exists()


# --------------------------------------------------------------------------------------------------------- pool
def test_a_run_that_kills_every_worker_is_recorded_as_failed(tmp_path: Path) -> None:
    grid = cheap_grid(tmp_path, indices=4)
    runner = KillingRunner(tmp_path / "killed", victim=2, always=True)
    report = run_experiment(grid, tmp_path / "out", workers=2, runner=runner, quiet=True)
    rows = {r["index"]: r for r in read_results(tmp_path / "out" / RESULTS_FILE)}
    assert sorted(rows) == [0, 1, 2, 3] and report.failed == 1
    assert rows[2]["success"] is False and rows[2]["error"].startswith("WorkerDied: worker pid")
    assert "SIGKILL, on each of 3 attempts" in rows[2]["error"]
    assert all(rows[i]["success"] for i in (0, 1, 3))


class Buggy:
    """A runner with a bug (KeyError is no run failure): the sweep must stop and show it, not record it."""

    def __call__(self, cfg: RunConfig, progress=None, key_seed=None):
        raise KeyError("no such thing")


def test_a_bug_in_a_worker_stops_the_sweep_with_its_traceback(tmp_path: Path) -> None:
    with pytest.raises(WorkerError, match="KeyError: 'no such thing'"):
        run_experiment(cheap_grid(tmp_path, indices=3), tmp_path / "out", workers=2, runner=Buggy(), quiet=True)
    assert read_results(tmp_path / "out" / RESULTS_FILE) == []


class Exiting:
    """A runner that ends its worker process with an exit code: a worker that cannot work, not a killed one."""

    def __call__(self, cfg: RunConfig, progress=None, key_seed=None):
        sys.exit(3)


def test_a_worker_that_exits_by_itself_stops_the_sweep_instead_of_failing_every_run(tmp_path: Path) -> None:
    with pytest.raises(WorkerError, match="exited with code 3"):
        run_experiment(cheap_grid(tmp_path, indices=3), tmp_path / "out", workers=2, runner=Exiting(), quiet=True)
    assert read_results(tmp_path / "out" / RESULTS_FILE) == []


# --------------------------------------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray with 2 CPUs whose workers import this checkout (and tests/stubs.py); shut down after."""
    ray = pytest.importorskip("ray")
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             runtime_env={"env_vars": {"PYTHONPATH": path}})  # fmt: skip
    yield ray
    ray.shutdown()


def test_ray_asks_for_a_gpu_only_when_there_is_one_and_a_run_may_use_it() -> None:
    pytest.importorskip("ray")
    from he_leak.engines.ray_engine import RayEngine

    asked: list[tuple[str, float]] = []

    class FakeTask:  # stands for ray.remote(...).options(num_cpus=1, max_retries=0)
        def __init__(self, num_gpus: float = 0.0) -> None:
            self.num_gpus = num_gpus

        def options(self, *, num_gpus: float) -> FakeTask:
            return FakeTask(num_gpus)

        def remote(self, chunk, runner, keys) -> object:
            asked.append((chunk[0].device, self.num_gpus))
            return object()

    engine = RayEngine(workers=4)
    engine.slots = 4  # four slots whatever this machine's CPUs (a local Ray's --workers is capped at them)
    engine.task = FakeTask()
    for gpus in (0.0, 1.0, 8.0):
        engine.gpus = gpus
        for device in ("cpu", "auto", "cuda"):
            engine.submit((RunConfig(device=device),))
    assert asked == [("cpu", 0), ("auto", 0), ("cuda", 0),  # no GPU in the cluster: never ask
                     ("cpu", 0), ("auto", 0.25), ("cuda", 0.25),  # 1 GPU, 4 slots: a quarter each
                     ("cpu", 0), ("auto", 1.0), ("cuda", 1.0)]  # fmt: skip


def test_an_unreachable_ray_address_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match=r"--address 127.0.0.1:1: no Ray cluster answers there"):
        run_experiment(cheap_grid(tmp_path, indices=2), tmp_path / "out", engine="ray", address="127.0.0.1:1")
    assert not (tmp_path / "out").exists()
