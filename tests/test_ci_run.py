"""[[expect]] rows in a user's CI: `he-leak run --check --junit-xml` (read back with junitparser), expectations.json,
GitHub's step summary and ::error annotations on the row's line, the pytest plugin (one item per row, the grid run
once and resumed) and the `leakage()` helper's failure message. One tiny grid: plain closed form on an 8-unit MLP."""

import json
import subprocess
import sys

import pytest
from junitparser import Failure, JUnitXml
from stubs import NOISE_GRID

from he_leak.cli import main
from he_leak.sweep.driver import run_experiment

TINY = """\
name = "tiny"
description = "plain closed form on two digits, with and without noise"

""" + NOISE_GRID + """\
index = [0, 1]
seed = [1, 2]
paired = ["index", "seed"]

[[expect]]
noise = 0.0
metric = "recovered"
aggregate = "min"
min = 1
note = "the closed form recovers a plaintext digit"

[[expect]]  # comparative: noise against none, on the same digits
noise = 0.1
versus = {noise = 0.0}
metric = "plaintext_psnr"
aggregate = "gain_high"
max = -20.0
note = "noise of 0.1 costs the attacker at least 20 dB"

[[expect]]
noise = 0.1
metric = "plaintext_psnr"
aggregate = "worst"
max = 30.0
note = "no noisy digit reaches 30 dB"

[[expect]]
noise = 0.0
metric = "plaintext_psnr"
aggregate = "max"
max = 20.0
note = "deliberately broken: the plaintext is hidden"
"""
BROKEN_LINE = TINY.splitlines().index('note = "deliberately broken: the plaintext is hidden"') - 4  # its [[expect]]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The experiment file and its recorded results folder (named after the file, as the plugin keeps it)."""
    root = tmp_path_factory.mktemp("ci")
    toml = root / "tiny.toml"
    toml.write_text(TINY)
    run_experiment(toml, root / "results" / "tiny", quiet=True)
    return toml, root / "results" / "tiny"


def test_junit_has_a_case_per_row_and_a_failure_per_unmet_row(grid, tmp_path, capsys):
    toml, out = grid
    xml = tmp_path / "he-leak.xml"
    assert main(["run", str(toml), "--out", str(out), "--check", "--quiet", "--junit-xml", str(xml)]) == 1
    (suite,) = list(JUnitXml.fromfile(str(xml)))
    document = json.loads((out / "expectations.json").read_text())
    assert (suite.name, suite.tests, suite.failures, suite.errors) == ("tiny", 4, 1, 0)
    assert suite.failures == document["unmet"] == 1 and document["met"] == 3
    assert [c.classname for c in suite] == ["tiny"] * 4
    assert [c.name for c in suite][:2] == ["#1 the closed form recovers a plaintext digit",
                                           "#2 noise of 0.1 costs the attacker at least 20 dB"]  # fmt: skip
    (failed,) = [c for c in suite if not c.is_passed]
    (failure,) = [r for r in failed.result if isinstance(r, Failure)]
    assert failure.message == "measured 200, bound ≤ 20 over 2 run(s)"  # PSNR is capped at 200 dB
    assert f"at {toml}:{BROKEN_LINE}" in failure.text
    assert f"report: {out / 'report.md'}" in failed.system_out and "4 of 4 runs recorded" in failed.system_out
    rows = {e["index"]: e for e in document["expectations"]}
    assert rows[4]["status"] == "unmet" and rows[4]["line"] == BROKEN_LINE and rows[4]["value"] == 200.0
    assert rows[2]["paired"] is True and rows[2]["value"] < -20 and rows[2]["versus"] == {"noise": [0.0]}
    assert "1 expectation(s) not met" in capsys.readouterr().err


def test_github_gets_the_verdict_table_and_an_annotation_on_the_row(grid, tmp_path, monkeypatch, capsys):
    toml, out = grid
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_WORKSPACE", str(toml.parent))
    assert main(["run", str(toml), "--out", str(out), "--check", "--quiet"]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("::error")]
    assert lines == [f"::error file=tiny.toml,line={BROKEN_LINE},title=he-leak expectation #4 unmet::deliberately "
                     f"broken: the plaintext is hidden: measured 200, bound ≤ 20 over 2 run(s)"]  # fmt: skip
    text = summary.read_text()
    assert "### he-leak: tiny — 3 of 4 expectations met" in text
    assert "| protection | attacker | verdict | best attack | recovered (95% CI) |" in text
    assert "| plain · noise 0.1 | sees the gradient |" in text and "| ❌ | deliberately broken" in text


def test_junit_path_is_checked_before_anything_runs(grid, tmp_path, capsys):
    toml, _ = grid
    assert main(["run", str(toml), "--out", str(tmp_path / "o"), "--junit-xml", str(tmp_path / "no" / "x.xml")]) == 2
    assert "no folder" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_pytest_collects_each_row_and_reuses_the_results(grid, pytester, tmp_path):
    toml, _ = grid
    args = ["-p", "he_leak.ci.plugin", str(toml), "--he-leak-out", str(tmp_path), "-p", "no:cacheprovider"]
    first = pytester.runpytest(*args)
    first.assert_outcomes(passed=3, failed=1)
    first.stdout.fnmatch_lines([f"{toml}:{BROKEN_LINE}: [[expect]] #4 deliberately broken: the plaintext is hidden",
                                "  measured 200, bound ≤ 20 over 2 run(s)", "*tiny: 4 of 4 runs recorded (4 run now*"])
    second = pytester.runpytest(*args)
    second.assert_outcomes(passed=3, failed=1)
    second.stdout.fnmatch_lines(["*tiny: 4 of 4 runs recorded (0 run now*"])


def test_the_plugin_collects_no_toml_it_was_not_given(grid, pytester):
    toml, _ = grid
    pytester.makefile(".toml", exp=toml.read_text())
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    plain = pytester.runpytest("-p", "he_leak.ci.plugin", "--collect-only", "-q")
    plain.stdout.fnmatch_lines(["test_a.py::test_a", "1 test collected*"])
    pytester.makeini("[pytest]\nhe_leak_files = exp.toml\n")
    chosen = pytester.runpytest("-p", "he_leak.ci.plugin", "--collect-only", "-q")
    chosen.stdout.fnmatch_lines(["exp.toml::#1 the closed form recovers a plaintext digit", "5 tests collected*"])


def test_a_broken_experiment_file_is_a_one_line_collection_error(pytester):
    bad = pytester.makefile(".toml", bad='[fixed]\nmodel = "nope"\n[[expect]]\nmetric = "success"\nmin = 1\n')
    result = pytester.runpytest("-p", "he_leak.ci.plugin", str(bad))
    result.stdout.fnmatch_lines(["*he-leak: *bad.toml: unknown model 'nope'; known:*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error stops the session


def test_importing_the_plugin_imports_no_torch():
    code = "import sys, he_leak.ci.plugin; print(sorted(m for m in ('torch', 'he_leak.runner') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_leakage_failures_show_the_measurement(pytester):
    pytester.makepyfile(test_leak="""
        from he_leak.ci import leakage

        def test_plain_gradient():
            assert leakage(model="mlp", hidden=[8], samples=2, attacks=["analytic"]).gain_db <= 1.0

        def test_encrypted_aggregate_server():
            leak = leakage(scenario="he-aggregate", role="server", model="mlp", hidden=[8], samples=2,
                           attacks=["analytic"])
            assert leak.gain_db <= 1.0 and leak.verdict == "nothing in the clear"
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*assert 1*.* <= 1.0", "*where 1*.* = Leakage(plain — sees the gradient: does not "
                                 "stop; analytic 2/2 recovered, mean gain +1*.* dB [[]*[]] over a *dB prior, worst "
                                 "PSNR 200.0 dB).gain_db"])  # fmt: skip


@pytest.mark.parametrize(("options", "needle"), [({"samples": 0}, "samples must be at least 1"),
                                                 ({"seed": 3}, "sets seed per run itself"),
                                                 ({"attacks": ()}, "attacks is empty"),
                                                 ({"hiden": [8]}, "unknown key(s) hiden")])  # fmt: skip
def test_leakage_refuses_bad_options_in_one_line(options, needle):
    from he_leak.ci import leakage
    from he_leak.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        leakage(**options)
    assert needle in str(error.value) and "\n" not in str(error.value)
