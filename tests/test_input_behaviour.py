"""Issue 22's inputs whose documented behaviour is not a refusal: resources capped, a results folder that refuses a
different experiment, and output a reader can trust (each readability item with its own row). The refusals are in
tests/test_bad_inputs.py."""

import io
import math

import pytest
from stubs import CHEAP, CountingRunner, cheap_grid, write

from he_leak.cli import main
from he_leak.errors import ConfigError

CHEAP_RUN = dict(scenario="plain", attack="analytic", model="mlp", hidden=(8,), data="digits")


def _workers_capped(tmp_path, capsys):
    """--workers 100000 on a 4-run grid: at most min(runs, CPUs) processes, said in one warning line."""
    import os

    from he_leak.engines import make_engine
    from he_leak.sweep.driver import run_experiment

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert make_engine("local", workers=100000).slots <= cpus  # decided before any process starts (else: no run)
    report = run_experiment(cheap_grid(tmp_path, indices=4), tmp_path / "out", workers=100000,
                            runner=CountingRunner(), quiet=True)  # fmt: skip
    slots = int(report.engine.split(", ")[1].split()[0])
    assert report.recorded == 4 and 1 <= slots <= min(4, cpus), report.engine
    assert "--workers 100000" in capsys.readouterr().err


def _workers_capped_engine(tmp_path, capsys):
    """The cap is decided before any process starts: the engine object holds no worker after it is built and fit."""
    from he_leak.engines import make_engine

    engine = make_engine("local", workers=100000)
    engine.fit(4)
    assert engine.slots <= 4 and not getattr(engine, "workers", [])


def _other_experiment_refused(tmp_path, capsys):
    out = tmp_path / "out"
    first = cheap_grid(tmp_path, indices=1, name="first.toml")
    assert main(["run", str(first), "--out", str(out), "--quiet"]) == 0
    other = write(tmp_path, CHEAP.replace('"cheap"', '"another"').format(indices=[5], seeds=[0]), "other.toml")
    capsys.readouterr()
    lines = (out / "results.jsonl").read_text()
    assert main(["run", str(other), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0] and "cheap" in err[0], err
    assert (out / "results.jsonl").read_text() == lines  # nothing written
    assert main(["run", str(other), "--out", str(out), "--quiet", "--force"]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 2


def _same_experiment_edited_resumes(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(cheap_grid(tmp_path, indices=1)), "--out", str(out), "--quiet"]) == 0
    assert main(["run", str(cheap_grid(tmp_path, indices=2)), "--out", str(out), "--quiet"]) == 0  # grid extended
    assert len((out / "results.jsonl").read_text().splitlines()) == 2


def _check_lists_expectations(tmp_path, capsys):
    text = CHEAP.format(indices=[0, 1], seeds=[0])
    grid = write(tmp_path, text + '[[expect]]\nmetric = "success"\naggregate = "rate"\nmin = 1.0\n')
    out = tmp_path / "out"
    assert main(["run", str(grid), "--out", str(out), "--check", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "1 expectation(s) checked, all met" in printed and "met: rate of success" in printed, printed
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "expectations: 1 met, 0 unmet" in status and "met: rate of success" in status, status


def _limit_progress_counts(tmp_path, capsys):
    """--limit: the progress line counts the experiment's runs (recorded of total) and this invocation's share."""
    from he_leak.sweep.progress import Lines

    stream = io.StringIO()
    display = Lines(stream, every=0.0)
    display.begin(6, 1, now=2)
    display.finished({"success": True}, "run a")
    assert "[2/6]" in stream.getvalue() and "1/2 now" in stream.getvalue(), stream.getvalue()


def _bench_not_cut_when_piped(tmp_path, capsys):
    from he_leak.bench.report import print_report, report_console
    from he_leak.bench.run import BenchReport, BenchRun, MethodSummary

    run = BenchRun("dlg", "cpu", "lenet", 0, 0, 44.123456, True, False, 12.5, 80, 7.5, 15.2, "a note " * 10)
    summary = MethodSummary("dlg", "cpu", "lenet", 1, 1, 1.0, 0, 12.5, 0.08, 44.123456, 7.5, 15.2)
    report = BenchReport("photos", 100, 300, 2e-4, 2, ((0, 0),), (run,), (summary,), {})
    buffer = io.StringIO()
    print_report(report, report_console(buffer))
    text = buffer.getvalue()
    assert "…" not in text and "44.12" in text and "oracle: median s to 40 dB" in text, text


def _peak_memory_seen_after_freed_memory(tmp_path, capsys):
    """The CPU probe sees a run's allocations even when the process still holds freed memory from earlier runs (the
    reason ig showed 0.0 MiB after dlg)."""
    import time

    import torch

    from he_leak.bench.methods import PeakMemory

    for _ in range(3):  # a freed 64 MiB block raises glibc's mmap threshold; 100 MiB of 1 MiB blocks stay in the heap
        big = torch.ones(64 * 2**20 // 4)
        del big
        parts = [torch.ones(2**20 // 4) for _ in range(100)]
        del parts
    with PeakMemory(torch.device("cpu")) as mem:
        parts = [torch.ones(2**20 // 4) for _ in range(32)]  # 32 MiB inside the probe (measured 0.03 MiB before)
        time.sleep(0.05)
        del parts
    assert mem.peak / 2**20 > 16, mem.peak / 2**20


def _seconds_say_what_is_timed(tmp_path, capsys):
    from he_leak import RunConfig, run_one
    from he_leak.report.markdown import format_result

    result = run_one(RunConfig(**CHEAP_RUN))
    assert result.run_seconds is not None and result.run_seconds >= result.seconds > 0
    table = format_result(result.to_dict())
    assert "s (attack only)" in table and "s (whole run)" in table, table


def _plain_figure_label(tmp_path, capsys):
    from he_leak import RunConfig
    from he_leak.report.figures import PANEL_LABELS
    from he_leak.runner import run_outcome

    plain = run_outcome(RunConfig(**CHEAP_RUN)).panels
    assert "keyless" not in plain and PANEL_LABELS["recovered"] == "recovered", sorted(plain)


def _keyless_gain_has_a_unit(tmp_path, capsys):
    from he_leak.report.markdown import format_result

    table = format_result({"scenario": "plain", "attack": "dlg", "success": True, "keyless_gain": 0.5,
                           "security_index": -0.0})  # fmt: skip
    assert "+0.50 dB" in table and "-0.0000" not in table, table


def _audit_no_negative_zero(tmp_path, capsys):
    assert main(["audit", "--model", "mlp", "--hidden", "8"]) == 0
    printed = capsys.readouterr().out
    assert "security index 0.0000" in printed and "-0.0000" not in printed, printed


def _library_types(tmp_path, capsys):
    from he_leak import RunConfig

    for bad, needle in (({"hidden": 32}, "hidden"), ({"batch": "2"}, "batch"), ({"seed": 2**64}, "seed"),
                        ({"success_psnr": math.nan}, "success_psnr"),
                        ({"model": "lenet", "hidden": (5,)}, "--hidden does not apply to model lenet"),
                        ({"attack": "dlg", "tv": 0.1}, "--tv does not apply to attack dlg")):  # fmt: skip
        with pytest.raises(ConfigError, match=needle):
            RunConfig(**bad)
    assert RunConfig(hidden=[32, 16], model="mlp").hidden == (32, 16)  # a list is read as the tuple it means


BEHAVIOUR = {
    "run --workers 100000 is capped": _workers_capped,
    "the cap is decided before a process starts": _workers_capped_engine,
    "a different experiment into --out needs --force": _other_experiment_refused,
    "the same experiment, extended, resumes": _same_experiment_edited_resumes,
    "a passing --check lists its expectations, status shows them": _check_lists_expectations,
    "--limit progress counts the experiment": _limit_progress_counts,
    "bench output is not cut at 80 columns when piped": _bench_not_cut_when_piped,
    "peak memory is seen after freed memory": _peak_memory_seen_after_freed_memory,
    "seconds say what is timed, run_seconds the whole run": _seconds_say_what_is_timed,
    "plain's figure says recovered": _plain_figure_label,
    "keyless_gain has a unit, no -0.0000": _keyless_gain_has_a_unit,
    "audit prints no -0.0000": _audit_no_negative_zero,
    "the library checks types, ranges and use": _library_types,
}


@pytest.mark.parametrize("name", sorted(BEHAVIOUR))
def test_issue22_documented_behaviour(name, tmp_path, capsys):
    BEHAVIOUR[name](tmp_path, capsys)
