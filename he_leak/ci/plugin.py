"""The pytest plugin (entry point ``pytest11``, loaded wherever he-leak is installed): ``pytest experiments/x.toml``
collects each ``[[expect]]`` row of an experiment file as a test item.

- Which files: a ``.toml`` named on the command line, or one whose name matches a pattern of the ini option
  ``he_leak_files`` (e.g. ``he_leak_files = ci_expect.toml``). No other TOML is touched, so ``pytest`` on a folder
  of experiments (or a project's own tests/) collects what it did before, and importing this module costs nothing
  (he-leak's code is imported when an experiment file is collected).
- The grid runs once per file, on the first of its items, into ``--he-leak-out DIR`` / ``<file stem>`` (default:
  pytest's cache folder, ``.pytest_cache/d/he-leak/``), and resumes from what that folder holds: a second invocation
  runs nothing and only re-evaluates the rows (clear it with ``--cache-clear`` or by deleting the folder).
- A failing row reports measured vs bound and its file:line; a run that cannot start fails every row of the file
  with its one-line reason.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import pytest

OUT_OPTION = "--he-leak-out"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("he-leak", "he-leak experiment files ([[expect]] rows as tests)")
    group.addoption(OUT_OPTION, default=None, metavar="DIR", dest="he_leak_out",
                    help="results folders of the experiment files (DIR/<file stem>), kept between invocations; "
                         "default: .pytest_cache/d/he-leak")  # fmt: skip
    group.addoption("--he-leak-workers", type=int, default=None, metavar="N", dest="he_leak_workers",
                    help="runs at once (local processes; default 1)")  # fmt: skip
    parser.addini("he_leak_files", type="args", default=[],
                  help="file name patterns of experiment files to collect without naming them (e.g. ci_expect.toml)")


def _named(path: Path, config: pytest.Config) -> bool:
    """Was this file given on the command line (possibly with ::item)?"""
    here = Path(config.invocation_params.dir)
    for arg in config.args:
        candidate = Path(str(arg).split("::", 1)[0])
        if (candidate if candidate.is_absolute() else here / candidate).resolve() == path.resolve():
            return True
    return False


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix != ".toml":
        return None
    patterns = parent.config.getini("he_leak_files")
    if _named(file_path, parent.config) or any(fnmatch.fnmatch(file_path.name, p) for p in patterns):
        return ExperimentFile.from_parent(parent, path=file_path)
    return None


def results_folder(config: pytest.Config, path: Path) -> Path:
    """Where a file's grid is recorded: --he-leak-out/<stem>, else pytest's cache, else .he-leak/ at the root."""
    base = config.getoption("he_leak_out")
    if base is not None:
        return Path(base) / path.stem
    cache = getattr(config, "cache", None)
    return (cache.mkdir("he-leak") if cache is not None else config.rootpath / ".he-leak") / path.stem


class ExperimentFile(pytest.File):
    """An experiment file: one item per [[expect]] row; the grid runs once, for the first item that needs it."""

    def collect(self) -> Any:
        from he_leak.errors import HeLeakError
        from he_leak.sweep.experiment import load_experiment

        try:
            experiment = load_experiment(self.path)
        except HeLeakError as e:
            raise self.CollectError(f"he-leak: {e}") from None
        if not experiment.expectations:
            raise self.CollectError(f"he-leak: {self.path} has no [[expect]] rows to test")
        self._outcome: Any = None
        for index, expectation in enumerate(experiment.expectations, start=1):
            title = " ".join(expectation.title.split())
            yield ExpectationItem.from_parent(self, name=f"#{index} {title}", index=index, line=expectation.line)

    def outcome(self) -> Any:
        """The ExperimentReport of this file's grid (run now or resumed), or the HeLeakError that stopped it."""
        if self._outcome is None:
            from he_leak.errors import HeLeakError
            from he_leak.sweep.driver import run_experiment

            try:
                self._outcome = run_experiment(self.path, results_folder(self.config, self.path), check=True,
                                               workers=self.config.getoption("he_leak_workers"), quiet=True)
            except HeLeakError as e:
                self._outcome = e
            self.config.stash.setdefault(_REPORTS, []).append(self._outcome)
        return self._outcome


_REPORTS = pytest.StashKey[list]()


class UnmetExpectation(AssertionError):
    """A row whose measured value is outside its bound."""


class ExpectationItem(pytest.Item):
    """One [[expect]] row."""

    def __init__(self, *, index: int, line: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index, self.line = index, line

    def runtest(self) -> None:
        from he_leak.errors import HeLeakError

        outcome = self.parent.outcome()  # type: ignore[union-attr]
        if isinstance(outcome, HeLeakError):
            raise UnmetExpectation(f"the grid did not run: {outcome}")
        result = outcome.expectations[self.index - 1]
        if result.met is not True:
            e = result.expectation
            raise UnmetExpectation(f"{result.measured()}\n  expect: {e.describe()}\n  report: {outcome.out}"
                                   f"/report.md")  # fmt: skip

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, UnmetExpectation):
            here = Path(self.config.invocation_params.dir)
            path = self.path.relative_to(here) if self.path.is_relative_to(here) else self.path
            where = f"{path}" + (f":{self.line}" if self.line else "")
            return f"{where}: [[expect]] {self.name}\n  {excinfo.value}"
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None if self.line is None else self.line - 1, f"[[expect]] {self.name}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """One line per experiment file run in this session: runs recorded, run now, where the report is."""
    for outcome in config.stash.get(_REPORTS, []):
        terminalreporter.write_line(f"he-leak: {outcome.summary() if hasattr(outcome, 'summary') else outcome}")
