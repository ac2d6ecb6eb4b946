"""Sweeps (he_leak.sweep.driver) with a fake runner: resuming, limits, failed rows, outputs, expectations, progress, the
checks before the first run, and Ctrl-C."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from stubs import BASIC, PLOTS, PNG_MAGIC, CountingRunner, write

from he_leak.config import run_hash
from he_leak.errors import ConfigError, DataError
from he_leak.records import RESULT_KEYS
from he_leak.sweep.driver import SweepInterrupted, run_experiment
from he_leak.sweep.lock import LOCK_FILE, FolderLock, lock_holder
from he_leak.sweep.store import RESULTS_FILE, read_results

pytestmark = pytest.mark.usefixtures("stub_attacks")


def test_bad_file_writes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, '[[grid]]\nattack = ["stub-half"]\nindex = [0, -3]\n')
    runner = CountingRunner()
    with pytest.raises(ConfigError):
        run_experiment(path, tmp_path / "out", runner=runner)
    assert runner.calls == [] and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------------- running
def test_resume_skips_recorded_runs(tmp_path: Path) -> None:
    path, out = write(tmp_path, BASIC), tmp_path / "out"
    first = CountingRunner()
    report = run_experiment(path, out, runner=first)
    assert (report.total, report.skipped, report.ran, report.failed) == (7, 0, 7, 0)
    assert len(first.calls) == 7
    lines = (out / RESULTS_FILE).read_text().splitlines()
    assert len(lines) == 7 and all(json.loads(line)["config"] for line in lines)

    second = CountingRunner()
    again = run_experiment(path, out, runner=second)
    assert second.calls == [] and (again.skipped, again.ran) == (7, 0)
    assert len((out / RESULTS_FILE).read_text().splitlines()) == 7


def test_limit_and_expectations_pending(tmp_path: Path) -> None:
    path, out = write(tmp_path, BASIC), tmp_path / "out"
    runner = CountingRunner()
    report = run_experiment(path, out, runner=runner, limit=2)
    assert (report.ran, report.pending) == (2, 5)
    # only stub-half runs so far: the stub-other expectation has nothing to evaluate
    assert report.expectations[0].met is None and report.expectations[0].runs == 0
    strict = run_experiment(path, out, runner=runner, limit=0, check=True)
    assert strict.ran == 0 and strict.expectations[0].met is False
    assert strict.expectations[0] in strict.unmet
    done = run_experiment(path, out, runner=runner)
    assert done.ran == 5 and len(runner.calls) == 7


def test_partial_trailing_line_is_dropped_and_redone(tmp_path: Path) -> None:
    path, out = write(tmp_path, BASIC), tmp_path / "out"
    run_experiment(path, out, runner=CountingRunner())
    results = out / RESULTS_FILE
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # a writer killed mid-line
    assert len(read_results(results)) == 6
    runner = CountingRunner()
    report = run_experiment(path, out, runner=runner)
    assert report.ran == 1 and len(runner.calls) == 1
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(rows) == 7


def test_whole_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path, out = write(tmp_path, BASIC), tmp_path / "out"
    run_experiment(path, out, runner=CountingRunner())
    results = out / RESULTS_FILE
    results.write_text(results.read_text().rstrip("\n"))
    runner = CountingRunner()
    assert run_experiment(path, out, runner=runner).ran == 0
    assert results.read_text().endswith("\n")


def test_runner_exception_is_a_failed_row(tmp_path: Path) -> None:
    path, out = write(tmp_path, BASIC), tmp_path / "out"
    report = run_experiment(path, out, runner=CountingRunner(fail_on=1))
    assert report.ran == 7 and report.failed == 2
    rows = read_results(out / RESULTS_FILE)
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 2 and all(r["success"] is False and "diverged" in r["error"] for r in failed)
    assert {k for k in RESULT_KEYS} <= set(failed[0])
    # failed runs are recorded, so a rerun skips them
    assert run_experiment(path, out, runner=CountingRunner()).ran == 0


def test_outputs_written(tmp_path: Path) -> None:
    path, out = write(tmp_path, BASIC), tmp_path / "out"
    report = run_experiment(path, out, runner=CountingRunner())
    with open(out / "summary.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0][: len(RESULT_KEYS)] == list(RESULT_KEYS)
    assert "config.hidden" in table[0] and len(table) == 8
    header = table[0]
    assert table[1][header.index("input_psnr")] == ""  # None → empty cell
    assert table[1][header.index("success")] in ("true", "false")
    rows = read_results(out / RESULTS_FILE)
    for row in rows:
        assert (out / "runs" / f"{run_hash(row['config'])}.npz").exists()
    md = (out / "report.md").read_text()
    assert "# basic" in md and "## Verdict" in md and "## Expectations" in md
    pngs = sorted((out / "figures").glob("*.png"))
    assert {p.name for p in pngs} >= {"plaintext_psnr.png", "runs_plain_none_stub-half.png"}
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in pngs)
    assert set(report.files) >= {out / "summary.csv", out / "report.md", *pngs}


def test_expectation_filter_on_resolved_encryptor(tmp_path: Path) -> None:
    text = """
[[grid]]
attack = ["stub-half"]
index = [0, 1]
[[expect]]
encryptor = "none"
metric = "symbol_exact"
aggregate = "max"
min = 1.0
"""
    report = run_experiment(write(tmp_path, text), tmp_path / "out", runner=CountingRunner(), check=True)
    assert report.expectations[0].runs == 2 and report.ok, [str(e) for e in report.expectations]


def test_filters_on_local_training_fields_that_only_make_sense_together(tmp_path: Path) -> None:
    """`unroll`, `local_batch`, `local_lr` and `local_steps` alone are refused by RunConfig; a filter on each works."""
    from he_leak.sweep.experiment import load_experiment

    text = """
[fixed]
batch = 2
[[grid]]
local_lr = [0.1]
local_steps = [2]
local_batch = [1]
unroll = [true, false]
[[expect]]
unroll = false
local_batch = 1
local_steps = [2, 5]
local_lr = 0.1
metric = "plaintext_psnr"
min = 0
"""
    (expect,) = load_experiment(write(tmp_path, text)).expectations
    assert expect.filters == {"unroll": (False,), "local_batch": (1,), "local_steps": (2, 5), "local_lr": (0.1,)}


def test_unmet_expectations_listed(tmp_path: Path) -> None:
    text = BASIC + '\n[[expect]]\nattack = "stub-half"\nmetric = "plaintext_psnr"\naggregate = "max"\nmax = 5\n'
    report = run_experiment(write(tmp_path, text), tmp_path / "out", runner=CountingRunner(), check=True)
    assert len(report.unmet) == 1 and not report.ok
    assert str(report.unmet[0]).startswith("unmet: max plaintext_psnr ≤ 5 where attack=stub-half")
    assert "**unmet**" in (tmp_path / "out" / "report.md").read_text()


def test_real_runner_with_stub_attack(tmp_path: Path) -> None:
    """End to end through run_one (plain scenario, digits, small mlp) with the truth-free 0.5 attack."""
    text = """
name = "smoke"
[fixed]
model = "mlp"
hidden = [8]
device = "cpu"
[[grid]]
attack = ["stub-half"]
index = [0, 1]
[[expect]]
metric = "plaintext_psnr"
max = 25
"""
    out = tmp_path / "out"
    report = run_experiment(write(tmp_path, text), out, check=True)
    assert report.ran == 2 and report.ok, [str(e) for e in report.expectations]
    rows = read_results(out / RESULTS_FILE)
    assert all(r["success"] is False and r["plaintext_psnr"] < 25 for r in rows)
    with np.load(out / "runs" / f"{run_hash(rows[0]['config'])}.npz") as panels:
        assert panels["truth"].shape == (1, 1, 8, 8) and "recovered" in panels.files
    assert (out / "figures" / "runs_plain_none_stub-half.png").read_bytes()[:8] == PNG_MAGIC


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    report = run_experiment(write(tmp_path, BASIC), tmp_path / "out", runner=CountingRunner(), console=console)
    assert report.ran == 7
    text = buffer.getvalue()
    assert "[7/7] 3 ok, 0 failed" in text and "plain · stub-half · mlp · digits #3" in text  # the last run's line
    assert "runs" in text and "7/7" in text  # the live bar


def test_preflight_catches_out_of_range_index(tmp_path: Path) -> None:
    path = write(tmp_path, '[[grid]]\nattack = ["stub-half"]\nindex = [0, 100000]\n')
    with pytest.raises(ConfigError) as info:
        run_experiment(path, tmp_path / "out")  # the real runner: datasets are checked before anything runs
    assert str(path) in str(info.value) and "100000" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_plot_figures_written_and_listed(tmp_path: Path) -> None:
    path = write(tmp_path, PLOTS)
    out = tmp_path / "out"
    run_experiment(path, out, runner=CountingRunner())
    for name in ("plaintext_psnr_vs_config.index", "scatter", "by_hidden"):
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC
    text = (out / "report.md").read_text()
    assert "![scatter](figures/scatter.png)" in text
    assert "Spearman ρ = -1 (n = 4)" in text  # the scatter's caption under its figure
    assert "psnr by index: plaintext_psnr against config.index by attack" in text


def test_plot_with_no_data_draws_nothing(tmp_path: Path) -> None:
    text = PLOTS.split("[[plot]]")[0] + '[[plot]]\nname = "none"\nx = "config.index"\ny = "key_plaintext_psnr"\n'
    out = tmp_path / "out"
    run_experiment(write(tmp_path, text), out, runner=CountingRunner())
    assert not (out / "figures" / "none.png").exists()


# --------------------------------------------------------------------------------------------------------- checks first
HE_GRID = """
[fixed]
scenario = "ckks-input"
attack = "analytic"
model = "mlp"
hidden = [8]
[[grid]]
index = [0, 1]
encryptor_params = [{{}}, {bad}]
"""


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ('{poly_modulus_degree = "abc"}', "poly_modulus_degree must be int"),
        ('{coeff_mod_bit_sizes = "abc"}', "coeff_mod_bit_sizes must be a list of integers"),
        ("{poly_modulus_degree = 4096, coeff_mod_bit_sizes = [60, 60, 60]}", "128-bit"),
        ('{view = "pixels"}', "unknown ciphertext view"),
        ("{colour = 1}", "unknown parameter(s) colour"),
    ],
)
def test_bad_he_parameters_fail_before_the_first_run(tmp_path: Path, bad: str, fragment: str) -> None:
    path, out = write(tmp_path, HE_GRID.format(bad=bad)), tmp_path / "out"
    with pytest.raises(ConfigError) as info:
        run_experiment(path, out)
    message = str(info.value)
    assert str(path) in message and fragment in message and "\n" not in message
    assert "run ckks-input · analytic" in message
    assert not out.exists()  # nothing ran, nothing was written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_fails_before_the_first_run(tmp_path: Path) -> None:
    path, out = write(tmp_path, '[[grid]]\nattack = ["stub-half"]\nindex = [0, 1]\ndevice = ["cuda"]\n'), tmp_path / "o"
    with pytest.raises(ConfigError) as info:
        run_experiment(path, out)
    assert '2 run(s) ask for device = "cuda"' in str(info.value) and str(path) in str(info.value)
    assert not out.exists()


def test_output_folder_is_checked_first(tmp_path: Path) -> None:
    path = write(tmp_path, BASIC)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out, fragment in ((blocker, "is a file, not a folder"), (blocker / "sub", "is not a folder"),
                          (Path("/proc/sys/he-leak-test/out"), "cannot create it")):  # fmt: skip
        runner = CountingRunner()
        with pytest.raises(ConfigError, match=fragment):
            run_experiment(path, out, runner=runner)
        assert runner.calls == []
    assert blocker.read_text() == "x"


def test_a_locked_folder_is_refused_and_a_stale_lock_taken_over(tmp_path: Path) -> None:
    path, out = write(tmp_path, BASIC), tmp_path / "out"
    out.mkdir()
    runner = CountingRunner()
    with FolderLock(out), pytest.raises(ConfigError, match=f"in use by another he-leak run \\(pid {os.getpid()}"):
        run_experiment(path, out, runner=runner)
    assert runner.calls == [] and not (out / RESULTS_FILE).exists()
    (out / LOCK_FILE).write_text('{"pid": 999999, "host": "elsewhere", "started": "yesterday"}')  # never released
    buffer = io.StringIO()
    run_experiment(path, out, runner=runner, console=Console(file=buffer))
    assert "took over the lock of a sweep that did not finish (pid 999999 on elsewhere" in buffer.getvalue()


# --------------------------------------------------------------------------------------------------------- running
def test_an_input_error_in_one_run_is_a_failed_row_not_the_end(tmp_path: Path) -> None:
    class Picky(CountingRunner):
        def __call__(self, cfg, progress=None, key_seed=None):
            if cfg.index == 2:
                raise DataError("sample 2 is unreadable; fix the file")
            return super().__call__(cfg, progress, key_seed)

    report = run_experiment(write(tmp_path, BASIC), tmp_path / "out", runner=Picky())
    assert report.ran == 7 and report.failed == 2
    failed = [r for r in read_results(tmp_path / "out" / RESULTS_FILE) if r["error"]]
    assert {r["error"] for r in failed} == {"DataError: sample 2 is unreadable; fix the file"}
    assert all(r["versions"]["he-leak"] for r in failed)


def test_ctrl_c_stops_with_whole_lines_and_resumes(tmp_path: Path) -> None:
    class Interrupting(CountingRunner):
        def __call__(self, cfg, progress=None, key_seed=None):
            if len(self.calls) == 3:
                raise KeyboardInterrupt
            return super().__call__(cfg, progress, key_seed)

    path, out = write(tmp_path, BASIC), tmp_path / "out"
    with pytest.raises(SweepInterrupted) as info:
        run_experiment(path, out, runner=Interrupting(), quiet=True)
    done = len(read_results(out / RESULTS_FILE))  # runs finished in an undelivered batch are redone, never half-kept
    assert 1 <= done <= 3 and str(info.value) == f"interrupted after {done} of 7 runs; rerun to resume"
    assert (out / RESULTS_FILE).read_bytes().endswith(b"\n") and lock_holder(out) is None
    runner = CountingRunner()
    assert run_experiment(path, out, runner=runner).ran == 7 - done and len(runner.calls) == 7 - done
    keys = [json.dumps(r["config"], sort_keys=True) for r in read_results(out / RESULTS_FILE)]
    assert len(keys) == len(set(keys)) == 7


def test_log_lines_are_throttled_failures_named_and_summary_names_the_report(tmp_path: Path) -> None:
    buffer = io.StringIO()
    path, out = write(tmp_path, BASIC), tmp_path / "out"
    report = run_experiment(path, out, runner=CountingRunner(fail_on=1), console=Console(file=buffer))
    lines = buffer.getvalue().splitlines()
    # fast runs: no line per run; the two failures by name, then the final count
    assert len(lines) == 3, lines
    assert "failed: plain · stub-half · mlp · digits #1" in lines[0] and "RuntimeError: diverged" in lines[0]
    assert lines[-1].startswith("[7/7] 3 ok, 2 failed")
    summary = report.summary()
    assert summary.startswith("basic: 7 of 7 runs recorded (7 run now: 3 succeeded, 2 failed)")
    assert summary.endswith(f"report: {out / 'report.md'}") and "local, 1 worker" in summary


def test_quiet_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_experiment(write(tmp_path, BASIC), tmp_path / "out", runner=CountingRunner(fail_on=1), quiet=True)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_results_record_versions_and_device(tmp_path: Path) -> None:
    text = '[fixed]\nattack = "analytic"\nmodel = "mlp"\nhidden = [8]\n[[grid]]\nindex = [0]\n'
    run_experiment(write(tmp_path, text), tmp_path / "out", quiet=True)
    (row,) = read_results(tmp_path / "out" / RESULTS_FILE)
    assert set(row["versions"]) == {"he-leak", "python", "numpy", "torch", "tenseal"}
    assert row["versions"]["torch"] == torch.__version__ and row["device"] in ("cpu", "cuda")


# --------------------------------------------------------------------------------------------------------- CLI
def test_cli_run_ends_with_a_summary_naming_the_report_and_status_reads_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from he_leak.cli import main

    text = '[fixed]\nattack = "analytic"\nmodel = "mlp"\nhidden = [8]\n[[grid]]\nindex = [0, 1]\n'
    path, out = write(tmp_path, text), tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--limit", "1"]) == 0
    captured = capsys.readouterr()
    (line,) = captured.out.strip().splitlines()
    assert line.startswith("exp: 1 of 2 runs recorded (1 run now: 1 succeeded, 0 failed; 1 pending (--limit))")
    assert line.endswith(f"report: {out / 'report.md'}") and captured.err == ""
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert f"experiment: {path.resolve()}" in status and "1 done (1 succeeded, 0 failed), 1 pending" in status
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert "no such results folder" in capsys.readouterr().err


def test_cli_version_and_help_for_every_run_and_status_option(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from he_leak import __version__
    from he_leak.cli import build_parser, main

    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"he-leak {__version__}"
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("run", "status"):
        for action in subparsers.choices[name]._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"
    assert all(a.help for a in parser._actions if a.option_strings), "a top-level option has no help text"


def test_log_display_prints_each_slow_run_and_a_heartbeat_during_a_long_one() -> None:
    from he_leak.sweep.progress import HEARTBEAT_SECONDS, LINE_SECONDS, Lines

    buffer = io.StringIO()
    display = Lines(buffer)
    display.begin(total=3, done=0)
    display.tick()
    assert buffer.getvalue() == ""  # nothing to say yet
    display.last_line -= HEARTBEAT_SECONDS  # a long run: no news for HEARTBEAT_SECONDS
    display.tick()
    assert buffer.getvalue().splitlines() == ["[0/3] 0 ok, 0 failed · still running"]
    row = {"success": True, "plaintext_psnr": 31.0, "seconds": 7.0}
    display.last_line -= LINE_SECONDS  # a run slower than LINE_SECONDS: it gets its own line
    display.finished(row, "plain · dlg · lenet · digits #0 · seed 0")
    assert buffer.getvalue().splitlines()[-1].startswith("[1/3] 1 ok, 0 failed · last: plain · dlg")
    display.finished(row, "next")  # right after a line: nothing
    assert len(buffer.getvalue().splitlines()) == 2
