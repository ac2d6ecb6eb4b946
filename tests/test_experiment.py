"""Experiment files: grid expansion, validation (one-line ConfigErrors), resuming, expectations, outputs."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from he_leak.attacks.base import ATTACKS, Attack
from he_leak.config import RunConfig
from he_leak.errors import ConfigError
from he_leak.experiment import (
    RESULTS_FILE,
    Expectation,
    load_experiment,
    read_results,
    run_experiment,
    run_hash,
    summary_csv,
)
from he_leak.records import RESULT_KEYS, Observation, Reconstruction, Result
from he_leak.runner import Outcome

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STUBS = ("stub-half", "stub-other")


class HalfAttack(Attack):
    """Truth-free stub: every input value 0.5."""

    name = "stub-half"
    default_iterations = 1

    def reconstruct(self, obs: Observation) -> Reconstruction:
        self.report(1, 0.0)
        return Reconstruction(inputs=torch.full((obs.batch, *obs.input_shape), 0.5), iterations=1)


@pytest.fixture(autouse=True)
def stub_attacks():
    """Register the stub attacks for the test (names are checked against the registry) and remove them after."""
    added = [name for name in STUBS if name not in ATTACKS]
    for name in added:
        ATTACKS[name] = HalfAttack
    yield
    for name in added:
        ATTACKS.pop(name, None)


class CountingRunner:
    """A fake run_one: deterministic numbers from the config, no model, counts its calls."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[RunConfig] = []
        self.fail_on = fail_on

    def __call__(self, cfg: RunConfig, progress=None) -> Outcome:
        self.calls.append(cfg)
        if progress is not None:
            progress(1, 1, 0.5)
        if self.fail_on is not None and cfg.index == self.fail_on:
            raise RuntimeError("diverged")
        psnr = 10.0 + 10 * cfg.index + (5.0 if cfg.attack == "stub-other" else 0.0)
        result = Result(
            scenario=cfg.scenario, encryptor=cfg.encryptor, model=cfg.model, attack=cfg.attack,
            data=cfg.data, index=cfg.index, seed=cfg.seed, batch=cfg.batch, device="cpu", seconds=0.01,
            plaintext_psnr=psnr, plaintext_ssim=psnr / 40, symbol_exact=1.0 if cfg.index else 0.5,
            decrypts=cfg.index > 0, success=psnr >= 30, config=cfg.key(),
        )  # fmt: skip
        truth = np.random.default_rng(cfg.index).random((cfg.batch, 1, 8, 8))
        return Outcome(result, {"truth": truth, "keyless": np.full_like(truth, 0.5)})


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


BASIC = """
name = "basic"
description = "two attacks on three images"

[fixed]
model = "mlp"
hidden = [8]

[[grid]]
scenario = ["plain"]
attack = ["stub-half", "stub-other"]
index = [0, 1, 2]

[[grid]]
scenario = ["plain"]
attack = ["stub-half"]
index = [2, 3]

[[expect]]
attack = "stub-other"
metric = "plaintext_psnr"
min = 20

[[expect]]
metric = "success"
aggregate = "rate"
min = 0.4
note = "at least 40% of the runs succeed"
"""


# --------------------------------------------------------------------------------------------------------- loading
def test_grid_expansion_union_product_fixed(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, BASIC))
    assert exp.name == "basic" and exp.description.startswith("two attacks")
    points = [(c.attack, c.index) for c in exp.runs]
    # first grid: product in key order (attack slowest); second grid adds only index 3 (index 2 is a duplicate)
    assert points == [
        ("stub-half", 0), ("stub-half", 1), ("stub-half", 2),
        ("stub-other", 0), ("stub-other", 1), ("stub-other", 2),
        ("stub-half", 3),
    ]  # fmt: skip
    assert all(c.model == "mlp" and c.hidden == (8,) for c in exp.runs)
    assert len(exp.expectations) == 2 and exp.expectations[0].aggregate == "median"


def test_grid_lists_of_lists_and_tables(tmp_path: Path) -> None:
    text = """
[[grid]]
attack = ["stub-half"]
hidden = [[4], [32, 16]]
encryptor_params = [{}, {poly_modulus_degree = 4096}]
"""
    exp = load_experiment(write(tmp_path, text))
    assert exp.name == "exp"  # defaults to the file stem
    assert [c.hidden for c in exp.runs] == [(4,), (4,), (32, 16), (32, 16)]
    assert exp.runs[1].encryptor_params == {"poly_modulus_degree": 4096}


def test_no_grid_means_one_run_of_fixed(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, '[fixed]\nattack = "stub-half"\nindex = 4\n'))
    assert len(exp.runs) == 1 and exp.runs[0].index == 4


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('nmae = "x"\n[[grid]]\nattack = ["stub-half"]\n', "unknown top-level key"),
        ('[fixed]\nmodle = "mlp"\n[[grid]]\nattack = ["stub-half"]\n', "modle"),
        ('[fixed]\nindex = "zero"\n[[grid]]\nattack = ["stub-half"]\n', "index"),
        ('[[grid]]\nattack = ["stub-half"]\nepochs = [1]\n', "unknown field 'epochs'"),
        ('[[grid]]\nattack = "stub-half"\n', "must be a list"),
        ('[[grid]]\nattack = []\n', "empty list"),
        ('[[grid]]\nattack = ["stub-half"]\nhidden = [4, 8]\n', "list of lists"),
        ('[[grid]]\nattack = ["stub-half"]\nindex = [-1]\n', "index must be >= 0"),
        ('[[grid]]\nattack = ["nope"]\n', "unknown attack 'nope'"),
        ('[[grid]]\nattack = ["stub-half"]\nscenario = ["ckks-inptu"]\n', "unknown scenario"),
        ('[[grid]]\nattack = ["stub-half"]\nmodel = ["resnet9000"]\n', "unknown model"),
        ('[[grid]]\nattack = ["stub-half"]\ndata = ["no/such/file.npz"]\n', "no such file"),
        ('name = 3\n[[grid]]\nattack = ["stub-half"]\n', "name must be a string"),
        ('[[grid]]\nattack = ["stub-half"]\n[[expect]]\nmetric = "psnr"\nmin = 1\n', "not a Result key"),
        ('[[grid]]\nattack = ["stub-half"]\n[[expect]]\nmin = 1\n', "metric is required"),
        ('[[grid]]\nattack = ["stub-half"]\n[[expect]]\nmetric = "success"\n', "min and/or max"),
        ('[[grid]]\nattack = ["stub-half"]\n[[expect]]\nmetric = "success"\nmin = "1"\n', "must be a number"),
        ('[[grid]]\nattack = ["stub-half"]\n[[expect]]\nmetric = "success"\nmin = 1\nfoo = 2\n', "unknown key"),
        ('[[grid]]\nattack = ["stub-half"]\n[[expect]]\nmetric = "input_psnr"\nmin = 1\naggregate = "p90"\n',
         "aggregate 'p90'"),
        ('[[grid]]\nattack = ["stub-half"]\n[[expect]]\nmetric = "input_psnr"\naggregate = "rate"\nmin = 0.5\n',
         "needs threshold"),
        ('[[grid]]\nattack = ["stub-half"]\n[[expect]]\nmetric = "success"\naggregate = "rate"\nmin = 5\n',
         "0..1"),
        ('[[grid]]\nattack = ["stub-half"]\n[[expect]]\nattack = "stub-other"\nmetric = "success"\nmin = 1\n',
         "matches none"),
        ('[[grid]]\nattack = ["stub-half"]\n[[expect]]\nindex = "x"\nmetric = "success"\nmin = 1\n', "index"),
        ("[[grid]\nattack = [\n", "invalid TOML"),
    ],
)  # fmt: skip
def test_bad_files_are_one_line_config_errors(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert fragment in message


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_experiment(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_experiment(tmp_path)
    bad = tmp_path / "binary.toml"
    bad.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ConfigError, match="cannot read"):
        load_experiment(bad)


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


def test_expectations_each_aggregate() -> None:
    rows = []
    for i, (psnr, ok) in enumerate([(10.0, False), (20.0, False), (40.0, True), (None, False)]):
        cfg = RunConfig(attack="stub-half", index=i)
        rows.append({"attack": "stub-half", "plaintext_psnr": psnr, "success": ok, "config": cfg.key()})

    def check(**kw) -> tuple[float | None, bool | None]:
        r = Expectation(**kw).evaluate(rows)
        return r.value, r.met

    assert check(metric="plaintext_psnr", min=19.0) == (20.0, True)  # median of 10, 20, 40 (None skipped)
    assert check(metric="plaintext_psnr", aggregate="mean", max=20.0) == (pytest.approx(70 / 3), False)
    assert check(metric="plaintext_psnr", aggregate="min", min=10.0) == (10.0, True)
    assert check(metric="plaintext_psnr", aggregate="max", max=39.0) == (40.0, False)
    assert check(metric="success", aggregate="rate", min=0.25, max=0.25) == (0.25, True)
    assert check(metric="plaintext_psnr", aggregate="rate", threshold=15.0, min=0.6) == (0.5, False)
    assert check(metric="plaintext_psnr", filters={"index": (2,)}, min=30.0) == (40.0, True)
    assert check(metric="plaintext_psnr", filters={"attack": ("other",)}, min=0.0) == (None, False)
    assert Expectation(metric="input_psnr", min=0.0).evaluate(rows, strict=False).met is None


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


def test_unmet_expectations_listed(tmp_path: Path) -> None:
    text = BASIC + '\n[[expect]]\nattack = "stub-half"\nmetric = "plaintext_psnr"\naggregate = "max"\nmax = 5\n'
    report = run_experiment(write(tmp_path, text), tmp_path / "out", runner=CountingRunner(), check=True)
    assert len(report.unmet) == 1 and not report.ok
    assert str(report.unmet[0]).startswith("unmet: max plaintext_psnr ≤ 5 where attack=stub-half")
    assert "**unmet**" in (tmp_path / "out" / "report.md").read_text()


def test_summary_csv_extra_keys() -> None:
    row = dataclasses.asdict(Result("plain", None, "mlp", "dlg", "digits", 0, 0, 1, "cpu", config={"hidden": [4]}))
    row["mean_psnr"] = 12.5
    text = summary_csv([row])
    header = text.splitlines()[0].split(",")
    assert header[: len(RESULT_KEYS)] == list(RESULT_KEYS)
    assert "mean_psnr" in header and header[-1] == "config.hidden"


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
        assert panels["truth"].shape == (1, 1, 8, 8) and "keyless" in panels.files
    assert (out / "figures" / "runs_plain_none_stub-half.png").read_bytes()[:8] == PNG_MAGIC


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    report = run_experiment(write(tmp_path, BASIC), tmp_path / "out", runner=CountingRunner(), console=console)
    assert report.ran == 7
    assert "[7/7] plain · stub-half · mlp · digits #3" in buffer.getvalue()


def test_preflight_catches_out_of_range_index(tmp_path: Path) -> None:
    path = write(tmp_path, '[[grid]]\nattack = ["stub-half"]\nindex = [0, 100000]\n')
    with pytest.raises(ConfigError) as info:
        run_experiment(path, tmp_path / "out")  # the real runner: datasets are checked before anything runs
    assert str(path) in str(info.value) and "100000" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_encryptor_filter_prefers_the_resolved_value() -> None:
    cfg = RunConfig(scenario="ckks-input", attack="stub-half")
    ckks_row = {"encryptor": "ckks", "config": cfg.key()}
    plain_row = {"encryptor": None, "config": RunConfig(attack="stub-half").key()}
    none = Expectation(metric="success", filters={"encryptor": (None,)}, min=0)
    assert not none.selects(ckks_row) and none.selects(plain_row)
    assert Expectation(metric="success", filters={"encryptor": ("ckks",)}, min=0).selects(ckks_row)


# --------------------------------------------------------------------------------------------------------- [[plot]]
PLOTS = """
[fixed]
model = "mlp"

[[grid]]
attack = ["stub-half", "stub-other"]
index = [0, 1, 2]
hidden = [[4], [8]]

[[plot]]
x = "config.index"
y = "plaintext_psnr"
group = "attack"
aggregate = "mean"
title = "psnr by index"

[[plot]]
name = "scatter"
kind = "scatter"
x = "plaintext_ssim"
y = "plaintext_psnr / index"
attack = "stub-other"

[[plot]]
name = "by_hidden"
x = "config.hidden"
y = "symbol_exact"
"""


def test_plot_tables_are_validated_and_named(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, PLOTS))
    first, scatter, hidden = exp.plots
    assert (first.name, first.x, first.y, first.group, first.kind, first.aggregate) == (
        "plaintext_psnr_vs_config.index", "config.index", "plaintext_psnr", "attack", "line", "mean",
    )  # fmt: skip
    assert (
        scatter.kind == "scatter"
        and scatter.y == "plaintext_psnr / index"
        and scatter.filters == {"attack": ("stub-other",)}
    )
    assert hidden.group is None and hidden.aggregate == "median"


def test_plot_series_aggregate_ratio_and_one_element_lists(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, PLOTS))
    runner = CountingRunner()
    rows = [runner(cfg).result.to_dict() for cfg in exp.runs]
    first, scatter, hidden = exp.plots
    # CountingRunner: psnr = 10 + 10·index (+5 for stub-other); each x has two runs (hidden 4 and 8)
    assert first.series(rows) == {
        "stub-half": [(0.0, 10.0), (1.0, 20.0), (2.0, 30.0)],
        "stub-other": [(0.0, 15.0), (1.0, 25.0), (2.0, 35.0)],
    }
    points = scatter.series(rows)[""]  # filtered to stub-other; index 0 has no ratio (division by zero)
    assert sorted(points) == sorted([(25 / 40, 25.0), (25 / 40, 25.0), (35 / 40, 17.5), (35 / 40, 17.5)])
    ((rho, n),) = scatter.correlations({"": points}).values()
    assert n == 4 and rho == pytest.approx(-1.0)
    assert hidden.series(rows) == {"": [(4.0, 1.0), (8.0, 1.0)]}  # [4] → 4; median of 0.5, 0.5, 1, 1, 1, 1


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


@pytest.mark.parametrize(
    ("plot", "fragment"),
    [
        ('y = "plaintext_psnr"\n', "x is required"),
        ('x = "config.index"\n', "y is required"),
        ('x = "config.epochs"\ny = "plaintext_psnr"\n', "no RunConfig field 'epochs'"),
        ('x = "config.index"\ny = "psnr"\n', "not a Result key"),
        ('x = "config.index"\ny = "a / b / c"\n', "ratio of two"),
        ('x = "config.index"\ny = "plaintext_psnr"\ngroup = "attack / index"\n', "use one field"),
        ('x = "config.index"\ny = "plaintext_psnr"\nkind = "bar"\n', "kind 'bar'"),
        ('x = "config.index"\ny = "plaintext_psnr"\naggregate = "max"\n', "aggregate 'max'"),
        ('x = "config.index"\ny = "plaintext_psnr"\nkind = "scatter"\naggregate = "mean"\n', "line plots"),
        ('x = "config.index"\ny = "plaintext_psnr"\ncolour = "red"\n', "unknown key(s) colour"),
        ('x = "config.index"\ny = "plaintext_psnr"\nname = "a b"\n', "name 'a b'"),
        ('x = "config.index"\ny = "plaintext_psnr"\ntitle = 3\n', "title must be a string"),
        ('x = "config.index"\ny = "plaintext_psnr"\nattack = "stub-zzz"\n', "match none"),
        ('x = 3\ny = "plaintext_psnr"\n', "x must be a field name"),
    ],
)
def test_bad_plots_are_one_line_config_errors(tmp_path: Path, plot: str, fragment: str) -> None:
    path = write(tmp_path, '[[grid]]\nattack = ["stub-half"]\n\n[[plot]]\n' + plot)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert "\n" not in str(info.value) and fragment in str(info.value) and str(path) in str(info.value)


def test_plot_names_must_differ(tmp_path: Path) -> None:
    text = '[[grid]]\nattack = ["stub-half"]\n' + '[[plot]]\nx = "config.index"\ny = "plaintext_psnr"\n' * 2
    with pytest.raises(ConfigError, match="already named"):
        load_experiment(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"\[\[plot\]\]"):
        load_experiment(write(tmp_path, 'plot = 3\n[[grid]]\nattack = ["stub-half"]\n'))
