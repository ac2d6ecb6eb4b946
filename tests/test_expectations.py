"""The project's conclusions, guarded on every change: experiments/ci_expect.toml must pass `he-leak run --check`;
expectations can bound confidence limits and fail when the data says otherwise."""

import subprocess
import sys
from pathlib import Path

import pytest

from he_leak.config import RunConfig
from he_leak.report.expectations import Expectation
from he_leak.report.stats import recovery_interval
from he_leak.runner import run_one
from he_leak.sweep.experiment import load_experiment

ROOT = Path(__file__).resolve().parents[1]


def test_ci_expectations_hold(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "he_leak", "run", str(ROOT / "experiments/ci_expect.toml"), "--out", str(tmp_path),
         "--check"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    assert "Verdict" in report or "verdict" in report
    runs = load_experiment(ROOT / "experiments/ci_expect.toml").runs
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == len(runs) >= 10


def test_check_fails_on_unmet_expectation(tmp_path):
    toml = tmp_path / "strict.toml"
    toml.write_text(
        '[fixed]\nscenario = "ckks-input"\nencryptor = "permute"\nmodel = "mlp"\nhidden = [8]\nattack = "analytic"\n'
        '[[expect]]\nmetric = "plaintext_psnr"\nmax = 10.0\nnote = "impossible: a permutation does not hide"\n'
    )
    proc = subprocess.run([sys.executable, "-m", "he_leak", "run", str(toml), "--out", str(tmp_path / "o"), "--check"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 1
    assert "plaintext_psnr" in proc.stderr and "impossible" in proc.stderr


@pytest.mark.parametrize(("fraction", "met"), [(1.0, True), (0.9, False)])
def test_nothing_visible_is_an_expectation_that_can_fail(fraction, met):
    """`max visible_fraction <= 0` holds for a fully encrypted aggregation and fails once a mask leaves 10% clear."""
    result = run_one(RunConfig(scenario="he-aggregate", role="server", encrypt_fraction=fraction, attack="analytic",
                               model="mlp", hidden=(8,)))  # fmt: skip
    evaluated = Expectation(metric="visible_fraction", aggregate="max", max=0.0).evaluate([result.to_dict()])
    assert evaluated.met is met
    assert evaluated.value == pytest.approx(1 - fraction, abs=0.01)


def _rows(recovered: list[int], gains: list[float], batch: int = 1) -> list[dict]:
    out = []
    for i, (k, g) in enumerate(zip(recovered, gains, strict=True)):
        prior = [10.0] * batch
        out.append({"attack": "dlg", "config": RunConfig(attack="dlg", index=i).key(), "batch": batch,
                    "recovered": k, "sample_psnrs": {"keyless": [10.0 + g] * batch, "prior": prior}})  # fmt: skip
    return out


def test_interval_aggregates_bound_confidence_limits():
    rows = _rows([0] * 24, [0.2, -0.1, 0.4, 0.0] * 6)
    high = Expectation(metric="recovered", aggregate="recovery_high", max=0.15).evaluate(rows)
    assert high.met and high.value == pytest.approx(recovery_interval(0, 24)[1])
    assert not Expectation(metric="recovered", aggregate="recovery_high", max=0.15).evaluate(rows[:10]).met
    low = Expectation(metric="recovered", aggregate="recovery_low", min=0.5).evaluate(_rows([2] * 12, [0] * 12, 2))
    assert low.met and low.value == pytest.approx(recovery_interval(24, 24)[0])  # k and n count samples, not runs
    gain_high = Expectation(metric="keyless_gain", aggregate="gain_high", max=1.0).evaluate(rows)
    gain_low = Expectation(metric="plaintext_psnr", aggregate="gain_low", min=-1.0).evaluate(rows)
    assert gain_high.met and gain_low.met and gain_low.value < 0.125 < gain_high.value  # around the mean gain
    leaky = _rows([0] * 24, [0.0] * 20 + [15.0] * 4)  # the median gain is 0, the mean is not
    assert not Expectation(metric="keyless_gain", aggregate="gain_high", max=1.0).evaluate(leaky).met
    assert Expectation(metric="key_plaintext_psnr", aggregate="gain_high", max=1.0).evaluate(rows).value is None
