"""The project's conclusions, guarded on every change: experiments/ci_expect.toml must pass `he-leak run --check`."""

import subprocess
import sys
from pathlib import Path

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
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 10


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
