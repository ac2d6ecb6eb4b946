"""Experiment files (he_leak.sweep.experiment): grid expansion, validation as one-line ConfigErrors naming the file, and
the statistics of [[expect]] and [[plot]] (he_leak.report.expectations)."""

from __future__ import annotations

from pathlib import Path

import pytest
from stubs import BASIC, PLOTS, CountingRunner, write

from he_leak.config import RunConfig
from he_leak.errors import ConfigError
from he_leak.report.expectations import Expectation
from he_leak.sweep.experiment import load_experiment

pytestmark = pytest.mark.usefixtures("stub_attacks")


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
scenario = ["ckks-input"]
attack = ["stub-half"]
model = ["mlp"]
hidden = [[4], [32, 16]]
encryptor_params = [{}, {poly_modulus_degree = 4096}]
"""
    exp = load_experiment(write(tmp_path, text))
    assert exp.name == "exp"  # defaults to the file stem
    assert [c.hidden for c in exp.runs] == [(4,), (4,), (32, 16), (32, 16)]
    assert exp.runs[1].encryptor_params == {"poly_modulus_degree": 4096}


def test_paired_lists_advance_together(tmp_path: Path) -> None:
    path = write(tmp_path, '[[grid]]\nattack = ["stub-half", "stub-other"]\nindex = [4, 8, 12]\nseed = [1, 2, 3]\n'
                           'paired = ["index", "seed"]\n')  # fmt: skip
    runs = load_experiment(path, check_names=False).runs
    assert [(r.attack, r.index, r.seed) for r in runs] == [
        (a, i, s) for a in ("stub-half", "stub-other") for i, s in ((4, 1), (8, 2), (12, 3))
    ]


def test_no_grid_means_one_run_of_fixed(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, '[fixed]\nattack = "stub-half"\nindex = 4\n'))
    assert len(exp.runs) == 1 and exp.runs[0].index == 4


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "no runs"),
        ('name = "nothing"\ndescription = "no fixed, no grid"\n', "no runs"),
        ("[fixed]\n", "no runs"),
        ('grid = []\n[fixed]\nattack = "stub-half"\n', "grid = [] lists no runs"),
        ('[[grid]]\nattack = ["stub-half"]\n[[grid]]\n', "[[grid]] #2 is empty"),
    ],
)
def test_files_without_runs_are_refused(tmp_path: Path, text: str, fragment: str) -> None:
    """An empty file, `grid = []` or an empty [[grid]] table used to run one default run without a word."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert fragment in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_digest_is_the_files_sha256(tmp_path: Path) -> None:
    import hashlib

    path = write(tmp_path, '[fixed]\r\nattack = "stub-half"\r\n')  # CRLF: hashed as stored, not as decoded
    assert load_experiment(path).digest == hashlib.sha256(path.read_bytes()).hexdigest()


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
        ('[[grid]]\nattack = ["stub-half"]\n[[expect]]\nmetric = "plaintext_psnr"\naggregate = "recovery_high"\n'
         'max = 0.1\n', "applies to recovered, keyless_recovered"),
        ('[[grid]]\nattack = ["stub-half"]\n[[expect]]\nmetric = "recovered"\naggregate = "gain_high"\nmax = 1\n',
         "applies to plaintext_psnr"),
        ('[[grid]]\nattack = ["stub-half"]\n[[expect]]\nmetric = "recovered"\naggregate = "recovery_high"\n'
         'max = 2\n', "0..1"),
        ('[[grid]]\nattack = ["stub-half"]\nindex = [1, 2]\nseed = [1]\npaired = ["index", "seed"]\n',
         "same length"),
        ('[[grid]]\nattack = ["stub-half"]\nindex = [1, 2]\npaired = ["index", "seed"]\n', "paired must list"),
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


def test_encryptor_filter_prefers_the_resolved_value() -> None:
    cfg = RunConfig(scenario="ckks-input", attack="stub-half")
    ckks_row = {"encryptor": "ckks", "config": cfg.key()}
    plain_row = {"encryptor": None, "config": RunConfig(attack="stub-half").key()}
    none = Expectation(metric="success", filters={"encryptor": (None,)}, min=0)
    assert not none.selects(ckks_row) and none.selects(plain_row)
    assert Expectation(metric="success", filters={"encryptor": ("ckks",)}, min=0).selects(ckks_row)


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
