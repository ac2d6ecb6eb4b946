"""Comparative and worst-case [[expect]] rows (versus, worst), their validation in the experiment loader, and the line
numbers of the rows (he_leak.sweep.toml_lines), checked against tomllib."""

import tomllib
from pathlib import Path

import pytest
from stubs import NOISE_GRID

from he_leak.config import RunConfig
from he_leak.errors import ConfigError
from he_leak.report.expectations import Expectation
from he_leak.report.stats import difference_interval
from he_leak.sweep.experiment import load_experiment
from he_leak.sweep.toml_lines import table_lines

ROOT = Path(__file__).resolve().parents[1]


def _rows(gains, *, noise=0.0, first=0, batch=1, prior=10.0):
    """Result rows of plain analytic runs, one per gain (dB over a flat prior), samples index first + i."""
    out = []
    for i, gain in enumerate(gains):
        cfg = RunConfig(attack="analytic", index=first + i, seed=first + i, noise=noise, batch=batch).key()
        values = gain if isinstance(gain, list) else [gain] * batch
        out.append({"scenario": "plain", "attack": "analytic", "config": cfg, "batch": batch, "success": True,
                    "plaintext_psnr": prior + sum(values) / len(values), "recovered": 0,
                    "sample_psnrs": {"keyless": [prior + v for v in values], "prior": [prior] * batch}})  # fmt: skip
    return out


def test_versus_bounds_a_difference_of_aggregates():
    rows = _rows([1.0, 2.0, 3.0], noise=0.1) + _rows([100.0, 110.0, 120.0])
    row = Expectation(metric="plaintext_psnr", aggregate="mean", filters={"noise": (0.1,)}, versus={"noise": (0.0,)},
                      max=-20.0)  # fmt: skip
    result = row.evaluate(rows)
    assert result.value == pytest.approx(2.0 - 110.0) and result.met
    assert result.parts == pytest.approx((12.0, 120.0)) and (result.runs, result.baseline_runs) == (3, 3)
    assert "minus that where noise=0.0" in row.describe() and "12 here, 120 where noise=0.0" in result.measured()
    assert not Expectation(metric="plaintext_psnr", aggregate="mean", filters={"noise": (0.1,)},
                           versus={"noise": (0.0,)}, max=-120.0).evaluate(rows).met  # fmt: skip


def test_versus_gain_interval_pairs_samples_when_both_groups_hold_them():
    base = [30.0, 50.0, 70.0, 90.0, 110.0, 130.0]  # a wide per-image spread that pairing cancels
    rows = _rows([g - 5.0 for g in base], noise=0.1) + _rows(base)
    row = Expectation(metric="keyless_gain", aggregate="gain_high", filters={"noise": (0.1,)},
                      versus={"noise": (0.0,)}, max=-4.0)  # fmt: skip
    result = row.evaluate(rows)
    assert result.paired and result.value == pytest.approx(-5.0) and result.met  # every difference is -5 exactly
    unpaired = _rows([g - 5.0 for g in base], noise=0.1, first=50) + _rows(base)  # other images: no pairs
    wide = row.evaluate(unpaired)
    low, high = difference_interval([g - 5.0 for g in base], base, paired=False)
    assert wide.paired is False and wide.value == pytest.approx(high) and low < -5.0 < high
    assert wide.value > 10 and not wide.met  # the spread between images swamps a 5 dB difference


def test_worst_is_the_largest_per_sample_value_of_a_batch():
    rows = _rows([[0.0, 40.0], [1.0, 2.0]], batch=2)  # the run-level mean hides the 50 dB sample
    worst = Expectation(metric="plaintext_psnr", aggregate="worst", max=30.0).evaluate(rows)
    assert worst.value == pytest.approx(50.0) and not worst.met
    assert Expectation(metric="plaintext_psnr", aggregate="max", max=30.0).evaluate(rows).met  # 30 = mean of 10, 50
    assert Expectation(metric="keyless_gain", aggregate="worst", max=1.0).evaluate(rows).value == pytest.approx(40.0)


EXPERIMENT = 'name = "t"\n' + NOISE_GRID


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ('noise = 0.1\nversus = 3\nmetric = "plaintext_psnr"\nmax = 1', "versus must be a table of RunConfig fields"),
        ('noise = 0.1\nversus = {}\nmetric = "plaintext_psnr"\nmax = 1', "versus must be a table"),
        ('versus = {nois = 0}\nmetric = "plaintext_psnr"\nmax = 1', "versus: unknown field(s) nois"),
        ('noise = 0.1\nversus = {noise = 0.1}\nmetric = "plaintext_psnr"\nmax = 1', "selects the same runs"),
        ('noise = 0.1\nversus = {noise = 0.5}\nmetric = "plaintext_psnr"\nmax = 1', "versus matches none"),
        ('versus = {noise = 0}\nmetric = "recovered"\naggregate = "recovery_high"\nmax = 0.1', "do not subtract"),
        ('metric = "recovered"\naggregate = "worst"\nmax = 1', "applies to plaintext_psnr, keyless_gain"),
        ('noise = 0.1\nversus = {noise = 0}\nmetric = "success"\naggregate = "rate"\nmin = -2', "lie in -1..1"),
    ],
)
def test_bad_comparisons_are_one_line_errors(tmp_path, row, needle):
    path = tmp_path / "t.toml"
    path.write_text(EXPERIMENT + "[[expect]]\n" + row + "\n")
    with pytest.raises(ConfigError) as error:
        load_experiment(path)
    assert needle in str(error.value) and "\n" not in str(error.value) and "[[expect]] #1" in str(error.value)


def test_a_rate_difference_may_be_negative(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(EXPERIMENT + '[[expect]]\nnoise = 0.1\nversus = {noise = 0}\nmetric = "success"\n'
                                 'aggregate = "rate"\nmax = -0.5\n')  # fmt: skip
    (row,) = load_experiment(path).expectations
    assert row.versus == {"noise": (0.0,)} and row.line == len(EXPERIMENT.splitlines()) + 1


LINES = [
    ('[[expect]]\nmetric = "a"\n# [[expect]]\n[[ "expect" ]]  # spaced, quoted\nmetric = "b"\n', [1, 4]),
    ('d = """\n[[expect]]\n"""\n[[expect]]\nmetric = "a"\n', [4]),  # a header inside a multi-line string
    ("d = '''\n[[expect]]'''\n[[expect]]\nmetric = 'a'\n", [3]),
    ('x = [\n  [["expect"]],\n]\n[[expect]]\nmetric = "a"\n', [4]),  # an array of arrays, not a header
    ('s = "[[expect]] \\" [[expect]]"\n\n[[expect]]\nmetric = "a"\n', [3]),
    ('[[grid]]\na = 1\n[[expect]]\nmetric = "a"\n[[expect.x]]\nb = 2\n', [3]),  # a sub-table is no row
    ('expect = [\n  {metric = "a"},\n  { metric = "b", f = {g = 1} }, {metric = "c"}\n]\n[fixed]\nb = [{c = 1}]\n',
     [2, 3, 3]),  # fmt: skip
    ('d = """a \\\n[[expect]] """\r\n[[expect]]\r\nmetric = "a"\r\n', [3]),
]


@pytest.mark.parametrize(("text", "lines"), LINES)
def test_table_lines_skip_strings_comments_and_nested_arrays(text, lines):
    assert table_lines(text, "expect") == lines
    expects = tomllib.loads(text).get("expect", [])
    assert len([e for e in expects if "metric" in e]) == len(lines)


def test_every_committed_experiment_gets_a_line_per_row():
    for path in sorted((ROOT / "experiments").glob("*.toml")):
        text = path.read_text()
        lines = table_lines(text, "expect")
        assert len(lines) == len(tomllib.loads(text).get("expect", [])), path
        assert all(text.splitlines()[n - 1].strip().startswith("[[expect]]") for n in lines), path
