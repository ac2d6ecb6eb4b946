"""A sweep: the runs an experiment file asks for, minus those its results folder already holds, through an engine,
into the folder, then summarised (summary.csv, report.md, figures) and checked against the expectations.

    experiment ─ todo ─▶ engine (he_leak.engines) ─ records ─▶ store ─ rows ─▶ he_leak.report (markdown, figures)

Everything that can be checked is checked before the first run (he_leak.sweep.preflight). Only this driver writes the
results folder; workers return records. A run is recorded once, whole, as soon as its record arrives, so a sweep
stopped in any way (Ctrl-C, SIGKILL, a dead worker, a lost Ray task) resumes where it stopped when run again."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from he_leak.config import RunConfig, config_id
from he_leak.engines import Engine, Finished, Lost, Work, make_engine
from he_leak.errors import ConfigError
from he_leak.report import figures, frontier, markdown, protection
from he_leak.report.expectations import ExpectationResult
from he_leak.sweep.experiment import Experiment, load_experiment
from he_leak.sweep.preflight import check_output, check_runs
from he_leak.sweep.progress import Display, clock, make_display
from he_leak.sweep.store import (
    EXPECTATIONS_FILE,
    RESULTS_FILE,
    RUNS_DIR,
    SUMMARY_FILE,
    ResultStore,
    latest_by_config,
    read_meta,
    read_results,
    summary_csv,
    write_atomic,
    write_meta,
)
from he_leak.sweep.worker import Runner, failed_row
from he_leak.text import describe_run, varying_fields

REPORT_FILE = "report.md"
FIGURES_DIR = "figures"
MAX_ATTEMPTS = 3  # a run whose worker dies this many times is recorded as failed (e.g. it runs out of memory)


@dataclass(frozen=True)
class ExperimentReport:
    """What run_experiment did. `unmet` lists the expectations that failed (and, in check mode, those with no
    value to evaluate); the CLI exits 1 when it is non-empty under --check."""

    name: str
    out: Path
    total: int  # runs in the experiment
    skipped: int  # already recorded in results.jsonl
    ran: int  # run now
    failed: int  # of those run now, how many ended with success=False and an error
    pending: int  # not run because of `limit`
    expectations: tuple[ExpectationResult, ...]
    unmet: tuple[ExpectationResult, ...]
    files: tuple[Path, ...] = ()
    succeeded: int = 0  # of those run now, how many succeeded
    seconds: float = 0.0  # wall time of the sweep
    engine: str = ""  # e.g. "local, 2 workers"
    experiment: Path | None = None  # the experiment file (its [[expect]] rows carry their line numbers)

    @property
    def ok(self) -> bool:
        return not self.unmet

    @property
    def recorded(self) -> int:
        return self.skipped + self.ran

    def summary(self) -> str:
        """The line `he-leak run` ends with, naming report.md."""
        now = f"{self.ran} run now: {self.succeeded} succeeded, {self.failed} failed"
        pending = f"; {self.pending} pending (--limit)" if self.pending else ""
        return (f"{self.name}: {self.recorded} of {self.total} runs recorded ({now}{pending}) in "
                f"{clock(self.seconds)} on {self.engine}; report: {self.out / REPORT_FILE}")  # fmt: skip


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep, after the workers were stopped: every finished run is recorded, whole."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"interrupted after {done} of {total} runs; rerun to resume")
        self.done, self.total = done, total


def run_experiment(
    path: Path | str,
    out: Path | str,
    *,
    check: bool = False,
    console: Any = None,
    runner: Runner | None = None,
    limit: int | None = None,
    engine: str = "local",
    workers: int | None = None,
    address: str | None = None,
    quiet: bool = False,
    force: bool = False,
) -> ExperimentReport:
    """Run every not-yet-recorded run of the experiment at `path` into `out`, then write summary.csv, report.md and
    figures and evaluate the expectations.

    `limit` caps how many runs are executed now (0: only rebuild the summaries). `check`: expectations with no value
    to evaluate (no matching run recorded) count as unmet. `engine`, `workers`, `address`: where runs execute (see
    he_leak.engines; more workers than this machine's CPUs or the pending runs are capped, with a warning).
    `runner` replaces he_leak.runner.run_outcome (tests; the data/device/HE preflight is then skipped). `console`: a
    rich Console for progress (default stderr); `quiet`: warnings only. `force`: run into a folder that holds
    another experiment (by name), which is otherwise refused.
    Raises a one-line HeLeakError before anything is written when the file, a run or the folder is bad, and
    SweepInterrupted on Ctrl-C."""
    started, out = time.monotonic(), Path(out)
    experiment, executor = _preflight(path, out, limit=limit, force=force, engine=engine, workers=workers,
                                      address=address, runner=runner)  # fmt: skip
    display = make_display(quiet=quiet, console=console)
    store = ResultStore(out)
    try:
        recorded = store.open(warn=display.warn)
        write_meta(out, experiment=experiment.path, digest=experiment.digest, name=experiment.name,
                   runs=len(experiment.runs))  # fmt: skip
        todo = [cfg for cfg in experiment.runs if config_id(cfg.key()) not in recorded]
        skipped = len(experiment.runs) - len(todo)
        pending = max(0, len(todo) - limit) if limit is not None else 0
        todo = todo[: len(todo) - pending]
        if capped := executor.fit(len(todo)):
            display.warn(capped)
        display.begin(len(experiment.runs), skipped, now=len(todo))
        try:
            ran = _sweep(experiment, todo, executor, store, display)
        except KeyboardInterrupt:
            done = sum(config_id(cfg.key()) in recorded for cfg in experiment.runs)
            raise SweepInterrupted(done, len(experiment.runs)) from None
        finally:
            display.end()
        rows = [recorded[k] for k in (config_id(c.key()) for c in experiment.runs) if k in recorded]
        evaluated, files = _write_outputs(experiment, out, rows, check)
    finally:
        store.close()
    return ExperimentReport(
        name=experiment.name, out=out, total=len(experiment.runs), skipped=skipped, ran=len(ran),
        failed=sum(bool(r.get("error")) and not r.get("success") for r in ran), pending=pending,
        expectations=evaluated, unmet=tuple(e for e in evaluated if e.met is False), files=tuple(files),
        succeeded=sum(r.get("success") is True for r in ran), seconds=time.monotonic() - started,
        engine=executor.describe(), experiment=experiment.path,
    )  # fmt: skip


def _preflight(path: Path | str, out: Path, *, limit: int | None, force: bool, engine: str, workers: int | None,
               address: str | None, runner: Runner | None) -> tuple[Experiment, Engine]:  # fmt: skip
    """Everything checked before the folder is touched: the file and its runs, --limit, the output folder (probed),
    the experiment it holds, the engine's options."""
    experiment = load_experiment(path)
    if limit is not None and limit < 0:
        raise ConfigError(f"--limit must be >= 0, got {limit}")
    check_output(out)
    check_same_experiment(out, experiment, force=force)
    executor = make_engine(engine, workers=workers, address=address, runner=runner)
    if runner is None:
        check_runs(experiment, devices=executor.checks_local_devices)
    return experiment, executor


def check_same_experiment(out: Path, experiment: Experiment, *, force: bool = False) -> None:
    """A results folder holds one experiment (by name; the file may change, e.g. a grid extended): another one is
    refused unless `force`, so that its rows do not mix silently with the folder's."""
    before = read_meta(out).get("name")
    if before is not None and before != experiment.name and not force:
        raise ConfigError(f"--out {out} holds the experiment {before!r}, not {experiment.name!r}; run it into a new "
                          f"folder, or pass --force to add its runs there")  # fmt: skip


def _sweep(
    experiment: Experiment, todo: list[RunConfig], executor: Engine, store: ResultStore, display: Display
) -> list[dict[str, Any]]:
    """Drive the engine over `todo`: record each finished run at once, hand lost runs out again (alone) up to
    MAX_ATTEMPTS times, then record them as failed. Returns the rows recorded now."""
    varying = varying_fields(experiment.runs)
    by_id = {config_id(cfg.key()): cfg for cfg in todo}
    attempts: dict[str, int] = {}
    ran: list[dict[str, Any]] = []

    def keep(records: list[tuple[dict[str, Any], Any]]) -> None:
        store.record(records)  # also enters them in `recorded` (store.recorded)
        for row, _ in records:
            key = config_id(row["config"])
            ran.append(row)
            display.finished(row, describe_run(by_id[key], varying) if key in by_id else "a run")

    if not todo:
        return ran
    work = Work(todo, slots=executor.slots, secret=store.secret)
    with executor:
        for event in executor.run(work, step=display.step):
            if isinstance(event, Finished):
                for record in event.records:
                    work.observe(record)
                keep([(record.row, record.panels) for record in event.records])
            elif isinstance(event, Lost):
                again = 0
                for cfg in event.configs:
                    key = config_id(cfg.key())
                    attempts[key] = attempts.get(key, 0) + 1
                    if attempts[key] < MAX_ATTEMPTS:
                        work.retry(cfg)
                        again += 1
                    else:
                        error = f"WorkerDied: {event.reason}, on each of {MAX_ATTEMPTS} attempts"
                        keep([({**failed_row(cfg, error, None), "config": cfg.key()}, None)])
                if again:
                    display.warn(f"{event.reason}; its {again} unfinished run(s) are handed out again")
            else:
                display.tick()
    return ran


def _write_outputs(
    experiment: Experiment, out: Path, rows: list[dict[str, Any]], check: bool
) -> tuple[tuple[ExpectationResult, ...], list[Path]]:
    """summary.csv, figures and report.md from the recorded rows; the evaluated expectations."""
    files = [write_atomic(out / SUMMARY_FILE, summary_csv(rows))]
    figure_paths = figures.experiment_figures(rows, out / RUNS_DIR, out / FIGURES_DIR) if rows else []
    captions: dict[str, str] = {}
    cells = protection.summarise(rows) if rows else []
    headline = protection.figure(cells, out / FIGURES_DIR / "protection.png") if rows else None
    front = frontier.figure(cells, out / FIGURES_DIR / "frontier.png") if rows else None
    for plot in experiment.plots:
        series = plot.series(rows)
        drawn = figures.plot_figure(plot, series, out / FIGURES_DIR / f"{plot.name}.png") if series else None
        if drawn is not None:
            figure_paths.append(drawn)
            captions[drawn.relative_to(out).as_posix()] = plot.caption(series)
    evaluated = tuple(e.evaluate(rows, strict=check) for e in experiment.expectations)
    document = expectations_document(experiment, evaluated, recorded=len(rows), check=check)
    files.append(write_atomic(out / EXPECTATIONS_FILE, json.dumps(document, indent=2, allow_nan=False) + "\n"))
    files.append(
        markdown.write_report(
            rows, out / REPORT_FILE, title=experiment.name, description=experiment.description,
            expectations=[e.as_row() for e in evaluated], figures=[p.relative_to(out) for p in figure_paths],
            runs_total=len(experiment.runs), captions=captions,
            headline=None if headline is None else headline.relative_to(out),
            frontier_figure=None if front is None else front.relative_to(out),
        )
    )  # fmt: skip
    return evaluated, files + figure_paths + [p for p in (headline, front) if p]


def expectations_document(
    experiment: Experiment, evaluated: Sequence[ExpectationResult], *, recorded: int, check: bool
) -> dict[str, Any]:
    """expectations.json: the experiment, how many of its runs are recorded, and every evaluated [[expect]] row
    (status met / unmet / pending, value, bound, the runs behind it, the file's line of the row)."""
    return {
        "experiment": experiment.name, "file": str(experiment.path), "sha256": experiment.digest,
        "runs": len(experiment.runs), "recorded": recorded, "check": check, "report": REPORT_FILE,
        "met": sum(e.met is True for e in evaluated), "unmet": sum(e.met is False for e in evaluated),
        "pending": sum(e.met is None for e in evaluated),
        "expectations": [{"index": i, **e.as_json()} for i, e in enumerate(evaluated, start=1)],
    }  # fmt: skip


def experiment_rows(experiment: Experiment, out: Path | str) -> list[dict[str, Any]]:
    """The recorded rows of this experiment's runs (latest per run, in run order), without running anything."""
    recorded = latest_by_config(read_results(Path(out) / RESULTS_FILE))
    return [recorded[k] for k in (config_id(c.key()) for c in experiment.runs) if k in recorded]
