"""`he-leak diff`: cells matched by configuration, the change between the folders named, a regression only when the
interval of the difference lies above the tolerance; exit codes 0 / 1 / 2 and a JUnit file junitparser reads."""

import numpy as np
import pytest
from junitparser import Failure, JUnitXml, Skipped

from he_leak.ci.diff import LESS, MORE, SAME, diff_folders
from he_leak.cli import main
from he_leak.config import RunConfig
from he_leak.sweep.store import RESULTS_FILE, append_lines

PRIOR = 12.0


def _folder(path, gains_by_attack, *, noise=0.0, first=0, scenario="plain", visible=True):
    """A results folder of plain-MLP rows: per attack, one run per gain (dB over the prior), sample index first + i."""
    rows = []
    for attack, gains in gains_by_attack.items():
        for i, gain in enumerate(gains):
            cfg = RunConfig(scenario=scenario, attack=attack, model="mlp", hidden=(8,), index=first + i,
                            seed=first + i + 1, noise=noise).key()  # fmt: skip
            row = {"scenario": scenario, "attack": attack, "config": cfg, "batch": 1, "success": visible,
                   "sample_psnrs": {"prior": [PRIOR]}}  # fmt: skip
            if visible:
                row.update(recovered=int(PRIOR + gain >= 30),
                           sample_psnrs={"keyless": [PRIOR + gain], "prior": [PRIOR]})
            else:
                row.update(error="AttackFailed: nothing visible", visible_fraction=0.0)
            rows.append(row)
    path.mkdir()
    append_lines(path / RESULTS_FILE, rows)
    return path


def _spread(n, mean, sd, seed):
    return list(np.random.default_rng(seed).normal(mean, sd, n))


def test_identical_folders_are_unchanged_and_exit_0(tmp_path, capsys):
    gains = {"analytic": _spread(20, 30, 5, 1), "idlg": _spread(20, 10, 5, 2)}
    base, new = _folder(tmp_path / "a", gains), _folder(tmp_path / "b", gains)
    diff = diff_folders(base, new)
    assert [c.status for c in diff.cells] == [SAME, SAME] and all(c.paired for c in diff.cells)
    assert all(c.interval == (0.0, 0.0) for c in diff.cells) and not diff.changed
    assert main(["diff", str(base), str(new)]) == 0
    assert "no cell more leaky beyond noise" in capsys.readouterr().out


def test_a_removed_defence_is_a_regression_naming_the_cell(tmp_path, capsys):
    base = _folder(tmp_path / "noise", {"analytic": _spread(20, 30, 3, 1), "idlg": _spread(20, 5, 3, 2)}, noise=1e-3)
    new = _folder(tmp_path / "none", {"analytic": [188.0] * 20, "idlg": _spread(20, 5, 3, 3)})
    xml = tmp_path / "diff.xml"
    assert main(["diff", str(base), str(new), "--junit-xml", str(xml)]) == 1
    out = capsys.readouterr().out
    assert "changed between the folders: noise 0.001 → 0" in out
    assert "more leaky  plain · noise 0.001 → plain — sees the gradient (attack=analytic)" in out
    assert "1 cell(s) more leaky: plain · noise 0.001 → plain — sees the gradient (attack=analytic)" in out
    (suite,) = list(JUnitXml.fromfile(str(xml)))
    assert (suite.tests, suite.failures) == (2, 1)
    failed = [c for c in suite if any(isinstance(r, Failure) for r in c.result)]
    assert [c.name for c in failed] == ["plain · noise 0.001 → plain — sees the gradient (attack=analytic)"]
    assert "difference +1" in failed[0].result[0].message  # +158 dB, with its interval
    assert main(["diff", str(new), str(base)]) == 0  # the other way round it got less leaky: no regression
    assert f"{LESS}  plain → plain · noise 0.001" in capsys.readouterr().out


def test_noise_between_reruns_is_not_a_regression_but_a_shift_beyond_the_tolerance_is(tmp_path):
    base = _folder(tmp_path / "a", {"dlg": _spread(24, 40, 15, 1)})
    rerun = _folder(tmp_path / "b", {"dlg": [g + d for g, d in zip(_spread(24, 40, 15, 1), _spread(24, 0, 2, 9),
                                                                    strict=True)]})  # fmt: skip
    (cell,) = diff_folders(base, rerun).cells
    assert cell.status == SAME and cell.paired and cell.interval[0] <= 1.0  # within noise
    shifted = _folder(tmp_path / "c", {"dlg": [g + 0.5 for g in _spread(24, 40, 15, 1)]})
    assert diff_folders(base, shifted).cells[0].status == SAME  # +0.5 dB exactly: inside the 1 dB tolerance
    assert diff_folders(base, shifted, tolerance=0.2).cells[0].status == MORE


def test_other_samples_are_compared_unpaired(tmp_path):
    base = _folder(tmp_path / "a", {"dlg": _spread(24, 40, 10, 1)})
    new = _folder(tmp_path / "b", {"dlg": _spread(24, 80, 10, 2)}, first=100)
    (cell,) = diff_folders(base, new).cells
    assert cell.paired is False and cell.status == MORE and cell.samples == (24, 24)


def test_nothing_in_the_clear_turning_into_a_leak_is_a_regression(tmp_path):
    base = _folder(tmp_path / "a", {"analytic": [0.0] * 20}, scenario="he-aggregate", visible=False)
    new = _folder(tmp_path / "b", {"analytic": [150.0] * 20}, scenario="he-aggregate")
    (cell,) = diff_folders(base, new).cells
    assert cell.status == MORE and cell.base_gain == 0.0 and cell.recovered == (None, 20)


def test_single_sample_cells_are_judged_by_the_tolerance_alone(tmp_path):
    base, new = _folder(tmp_path / "a", {"dlg": [10.0]}), _folder(tmp_path / "b", {"dlg": [10.5]})
    (cell,) = diff_folders(base, new).cells
    assert cell.interval is None and cell.status == SAME and "tolerance only" in cell.line()


def test_unmatched_cells_are_listed_and_skipped_in_junit(tmp_path, capsys):
    base = _folder(tmp_path / "a", {"dlg": [10.0, 11.0], "idlg": [10.0, 11.0]})
    new = _folder(tmp_path / "b", {"dlg": [10.0, 11.0], "analytic": [10.0, 11.0]})
    xml = tmp_path / "d.xml"
    assert main(["diff", str(base), str(new), "--junit-xml", str(xml)]) == 0
    out = capsys.readouterr().out
    assert "only in base (not compared): plain — sees the gradient (attack=idlg)" in out
    (suite,) = list(JUnitXml.fromfile(str(xml)))
    assert (suite.tests, suite.failures, suite.skipped) == (3, 0, 2)
    assert sum(any(isinstance(r, Skipped) for r in c.result) for c in suite) == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["/no/such/folder", "/no/such/other"], "no results.jsonl"),
        (["A", "B", "--tolerance-db", "-1"], "--tolerance-db must be a finite number"),
        (["A", "C"], "no cell of"),
        (["A", "B", "--junit-xml", "/no/such/dir/x.xml"], "no folder /no/such/dir"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, needle):
    _folder(tmp_path / "A", {"dlg": [1.0, 2.0]})
    _folder(tmp_path / "B", {"dlg": [1.0, 2.0]})
    _folder(tmp_path / "C", {"analytic": [1.0], "idlg": [1.0]})  # other attacks only: no cell matches
    paths = [str(tmp_path / a) if a in ("A", "B", "C") else a for a in args]
    assert main(["diff", *paths]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
