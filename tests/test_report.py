"""report.md (tables, verdict from the numbers, expectations), the single-run table and the figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from he_leak.config import RunConfig, run_hash
from he_leak.records import Result
from he_leak.report.figures import experiment_figures, save_run_figure, to_images
from he_leak.report.markdown import format_result, verdict, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(scenario: str, attack: str, index: int, **metrics) -> dict:
    cfg = RunConfig(scenario=scenario, attack=attack, index=index)
    encryptor = metrics.pop("encryptor", None)
    base = Result(scenario, encryptor, "mlp", attack, "digits", index, 0, 1, "cpu", seconds=1.0, config=cfg.key())
    out = base.to_dict()
    out.update(metrics)
    return out


@pytest.fixture()
def rows() -> list[dict]:
    out = []
    for i in range(3):
        base = dict(mean_psnr=11.0, prior_psnr=12.0)
        out.append(row("plain", "dlg", i, plaintext_psnr=35.0 + i, plaintext_ssim=0.95, success=True, recovered=1,
                       **base))  # fmt: skip
        out.append(row("plain", "ig", i, plaintext_psnr=20.0 + i, plaintext_ssim=0.5, success=False, recovered=0,
                       **base))  # fmt: skip
        out.append(
            row(
                "ckks-input", "analytic", i, encryptor="ckks", symbol_exact=1.0, input_psnr=99.0, decrypts=True,
                key_plaintext_psnr=60.0, key_plaintext_ssim=0.999, plaintext_psnr=11.2, plaintext_ssim=0.1,
                mean_psnr=11.0, prior_psnr=11.5, success=True, recovered=1, keyless_recovered=0,
            )
        )  # fmt: skip
        failed = i == 0  # a run without an estimate: counted as failed, not as a sample at the prior
        out.append(
            row(
                "ckks-input", "dlg", i, encryptor="ckks", symbol_exact=None if failed else 0.4,
                input_psnr=None if failed else 12.0, decrypts=None if failed else False,
                plaintext_psnr=None if failed else 10.5, key_plaintext_psnr=None if failed else 9.0,
                mean_psnr=11.0, prior_psnr=11.5, success=False, recovered=None if failed else 0,
                keyless_recovered=None if failed else 0, error="AttackFailed: NaN" if failed else None,
            )
        )  # fmt: skip
    return out


def test_report_tables_and_verdict(tmp_path: Path, rows: list[dict]) -> None:
    expectations = [
        {"expect": "median symbol_exact ≥ 0.999 where attack=analytic", "value": 1.0, "runs": 3, "met": True,
         "note": "exact"},
        {"expect": "median plaintext_psnr ≤ 12 where attack=dlg", "value": 20.0, "runs": 3, "met": False, "note": ""},
    ]  # fmt: skip
    path = write_report(rows, tmp_path, title="HE question", description="Does it leak?", expectations=expectations,
                        headline="figures/protection.png")  # fmt: skip
    md = path.read_text()
    assert path == tmp_path / "report.md"
    # the first screen is the answer: the compact table, its legend and the protection figure; the prose follows
    order = ["# HE question", "## Which protection stops which attacker", "| protection | attacker | verdict |",
             "Clopper–Pearson", "![protection](figures/protection.png)", "## About this experiment\n\nDoes it leak?",
             "## Verdict", "## Expectations", "## Results"]  # fmt: skip
    positions = [md.index(text) for text in order]
    assert positions == sorted(positions)
    assert "| plain | sees the gradient | does not stop | dlg | 3/3 (0.29–1.00) | 36.0 / 37.0 | 12.0 |" in md
    assert "| ckks-input · ckks | keyless | inconclusive | analytic | 0/3 (0.00–0.71) | 11.2 / 11.2 | 11.5 |" in md
    assert "| ckks-input · ckks | key holder | does not stop | analytic | 3/3 (0.29–1.00) | 60.0 / 60.0 |" in md
    assert "### plain · encryptor none" in md and "### ckks-input · encryptor ckks" in md
    assert "| attack | runs | success | plaintext PSNR (dB) | prior PSNR (dB) |" in md
    assert "| dlg | 3 | 3/3 (100%) | 36.00 | 12.00 | 0.950 |" in md
    assert "| analytic | 3 | 3/3 (100%) | 11.20 | 11.50 | 0.100 | 99.00 | 1.0000 | 3/3 (100%) | 60.00 |" in md
    assert "| ig | 3 | 0/3 (0%) | 21.00 | 12.00 | 0.500 | — |" in md  # no input_psnr → —
    assert "1 of 1 met" not in md and "1 of 2 met." in md and "**unmet**" in md


def test_verdict_is_written_per_protection_and_attacker(rows: list[dict]) -> None:
    plain, keyless, holder = verdict(rows)
    assert plain.startswith("- **plain — sees the gradient**: does not stop: 3/3 samples recovered (dlg).")
    assert "Best attack dlg (2 tried): 3/3 recovered (0.29–1.00), PSNR median 36.0 dB, worst 37.0 dB" in plain
    assert "Others: ig 0/3, median 21.0 dB" in plain
    assert keyless.startswith("- **ckks-input · ckks — keyless**: inconclusive: too few samples: 0/3 recovered")
    assert "60.0" not in keyless and "decrypts" not in keyless  # the key holder's numbers stay on its own line
    assert "dlg 0/2, median 10.5 dB, gain -1.0 dB, 1 of 3 runs failed" in keyless
    assert "The model input (ciphertext view) is recovered: best median symbol_exact 1.0000 (analytic)" in keyless
    assert holder.startswith("- **ckks-input · ckks — key holder**: does not stop: 3/3 samples recovered (analytic).")
    assert "PSNR median 60.0 dB" in holder
    assert "A key holder can read it: the recovered input decrypts in 3 of 3 runs (analytic)" in holder
    assert "1 of 6 runs ended with an error (first: AttackFailed: NaN)" in holder


def test_verdict_when_no_attack_produced_an_estimate() -> None:
    rows = [row("ckks-input", "dlg", i, encryptor="ckks", prior_psnr=11.0, error="AttackFailed: diverged")
            for i in range(2)]  # fmt: skip
    keyless, holder = verdict(rows)
    for line in (keyless, holder):
        assert "attack failed — the attacker keeps its prior" in line and "stops" not in line
        assert "2 of 2 runs ended with an error (first: AttackFailed: diverged)" in line


def test_empty_report(tmp_path: Path) -> None:
    md = write_report([], tmp_path / "r.md", title="t").read_text()
    assert "No runs recorded yet." in md


def test_format_result() -> None:
    text = format_result(row("plain", "dlg", 0, plaintext_psnr=31.234, success=True, label_correct=1.0))
    assert "plaintext_psnr" in text and "31.23 dB" in text and "yes" in text
    assert "input_ssim" not in text  # None values are left out
    assert "\x1b[" not in text  # no colour codes


def test_to_images_shapes() -> None:
    grey = to_images(np.zeros((2, 1, 5, 6)))
    assert len(grey) == 2 and grey[0].shape == (5, 6)
    rgb = to_images(np.ones((1, 3, 4, 4)) * 2)  # clipped to 1
    assert rgb[0].shape == (4, 4, 3) and rgb[0].max() == 1.0
    assert to_images(np.zeros((1, 7, 9)))[0].shape == (7, 9)  # a flat view given as 1×H×W
    assert to_images(np.zeros(10))[0].shape == (4, 4)
    assert to_images(np.full((1, 1, 2, 2), np.nan))[0].max() == 0.0


def test_save_run_figure(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    panels = {
        "keyless": rng.random((2, 3, 8, 8)),
        "truth": rng.random((2, 3, 8, 8)),
        "view": rng.random((2, 1, 10, 12)),
        "recovered_view": rng.random((1, 10, 12)),
        "decrypted": rng.random((2, 3, 8, 8)),
    }
    path = save_run_figure(panels, tmp_path / "sub" / "run.png", title="ckks-input · dlg")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert not list(tmp_path.glob("sub/*.tmp*"))
    grey = save_run_figure({"truth": rng.random((1, 1, 8, 8))}, tmp_path / "grey.png")
    assert grey.read_bytes()[:8] == PNG_MAGIC


def test_experiment_figures(tmp_path: Path, rows: list[dict]) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    rng = np.random.default_rng(1)
    for r in rows[:4]:
        np.savez(
            runs / f"{run_hash(r['config'])}.npz", truth=rng.random((1, 1, 8, 8)), keyless=rng.random((1, 1, 8, 8))
        )
    paths = experiment_figures(rows, runs, tmp_path / "figures")
    names = {p.name for p in paths}
    assert names == {
        "runs_plain_none_dlg.png", "runs_plain_none_ig.png", "runs_ckks-input_ckks_analytic.png",
        "runs_ckks-input_ckks_dlg.png", "plaintext_psnr.png",
    }  # fmt: skip
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in paths)
