"""The `[[expect]]` verdicts of `he-leak run` as CI reads them: one JUnit test case per row (name: the row's note,
classname: the experiment's name; a failure says measured vs bound; <system-out> the run counts, the row's file and
line and the report's path), a step summary with the compact verdict table and the rows, and an ``::error``
annotation on the line of every unmet row."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from he_leak.ci import github
from he_leak.ci.junit import Case, junit_xml
from he_leak.report import protection
from he_leak.report.expectations import ExpectationResult
from he_leak.sweep.driver import EXPECTATIONS_FILE, ExperimentReport, experiment_rows
from he_leak.sweep.experiment import load_experiment
from he_leak.sweep.store import write_atomic
from he_leak.text import num


def where(report: ExperimentReport, result: ExpectationResult) -> str:
    """``experiments/ci_expect.toml:47`` (the file alone when the line is unknown)."""
    path = str(report.experiment or report.name)
    return path if result.expectation.line is None else f"{path}:{result.expectation.line}"


def case_name(index: int, result: ExpectationResult) -> str:
    """``#3 the keyless attacker does no better …``: the row's number (unique) and its note (or description)."""
    return f"#{index} {result.expectation.title}"


def expectation_cases(report: ExperimentReport) -> list[Case]:
    """One test case per [[expect]] row, in file order."""
    cases = []
    for index, result in enumerate(report.expectations, start=1):
        e = result.expectation
        output = (f"{e.describe()}\n{result.measured()}\nrow: {where(report, result)}\n{report.summary()}\n"
                  f"expectations: {report.out / EXPECTATIONS_FILE}")  # fmt: skip
        failure = details = skipped = None
        if result.met is False:
            failure = result.measured()
            details = f"{e.title}\n{e.describe()}\n{failure}\nat {where(report, result)}"
        elif result.met is None:
            skipped = "no selected run is recorded yet (run without --limit, or with --check to fail instead)"
        cases.append(Case(name=case_name(index, result), classname=report.name, failure=failure,
                          details=details or "", skipped=skipped, output=output))  # fmt: skip
    return cases


def step_summary(report: ExperimentReport, rows: Sequence[dict]) -> str:
    """Markdown for $GITHUB_STEP_SUMMARY: a headline, the compact verdict table, the [[expect]] rows."""
    results = report.expectations
    met = sum(r.met is True for r in results)
    lines = [f"### he-leak: {report.name} — {met} of {len(results)} expectations met", "", report.summary(), ""]
    table = protection.compact_table(protection.summarise(rows))
    if table:
        lines += [*table, ""]
    if results:
        lines += ["| | expectation | measured | bound | runs | row |", "|---|---|---|---|---|---|"]
        mark = {True: "✅", False: "❌", None: "⏳"}
        for result in results:
            cells = [mark[result.met], result.expectation.title, num(result.value), result.expectation.bound(),
                     str(result.runs), where(report, result)]  # fmt: skip
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def annotations(report: ExperimentReport) -> list[str]:
    """An ``::error`` command per unmet row, on the row's line in the experiment file."""
    out = []
    for index, result in enumerate(report.expectations, start=1):
        if result.met is False:
            file = github.repo_path(report.experiment) if report.experiment else None
            out.append(github.error(f"{result.expectation.title}: {result.measured()}", file=file,
                                    line=result.expectation.line, title=f"he-leak expectation #{index} unmet"))
    return out


def publish(report: ExperimentReport, *, junit: Path | None = None, say: Callable[[str], None] = print) -> None:
    """Write the JUnit file (when asked) and, inside GitHub Actions, the step summary and the annotations."""
    if junit is not None:
        text = junit_xml(report.name, expectation_cases(report), seconds=report.seconds, output=report.summary())
        write_atomic(junit, text)
    if not github.active():
        return
    rows = experiment_rows(load_experiment(report.experiment), report.out) if report.experiment else []
    github.append_summary(step_summary(report, rows))
    for line in annotations(report):
        say(line)
