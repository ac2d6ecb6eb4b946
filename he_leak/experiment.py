"""Experiments: a TOML grid of RunConfigs, run resumably into results.jsonl, then summarised and checked.

File format (every key is validated before anything runs)::

    name = "ckks-input"                       # optional, defaults to the file's stem
    description = "Does DLG recover a CKKS ciphertext, and does that help without the key?"

    [fixed]                                   # RunConfig fields shared by every run
    model = "mlp"
    hidden = [32]

    [[grid]]                                  # lists, expanded as a Cartesian product over [fixed]
    scenario = ["ckks-input"]
    attack = ["dlg", "analytic"]
    index = [0, 1, 2]

    [[grid]]                                  # the run list is the union of all grids, duplicates removed
    scenario = ["plain"]
    attack = ["dlg"]

    [[expect]]                                # filters on RunConfig fields (a list means any of them) ...
    scenario = "ckks-input"
    attack = "analytic"
    metric = "symbol_exact"                   # ... a Result key,
    aggregate = "median"                      # median (default) | mean | min | max | rate
    min = 0.999                               # bounds on the aggregate: min and/or max
    note = "the analytic attack recovers the ciphertext view exactly"

For ``aggregate = "rate"`` the value is the fraction of matching runs where the metric is true (boolean metrics) or
at least ``threshold`` (numeric metrics, where ``threshold`` is required); a run without the metric counts as no.

Figures beyond the default ones::

    [[plot]]
    x = "config.hidden"                       # a Result key (e.g. recovered) or config.<RunConfig field>
    y = "recovered / batch"                   # the same, or a ratio of two of them
    group = "batch"                           # optional: one line (or colour) per value
    kind = "line"                             # line (default): the aggregate of y per x | scatter: one point per run
    aggregate = "median"                      # median (default) | mean; line plots only
    title = "fraction of the batch recovered"
    name = "batch_vs_hidden"                  # optional file name: figures/<name>.png (default: y_vs_x)
    attack = "analytic"                       # optional filters on RunConfig fields, as in [[expect]]

A list value with one element (``hidden = [32]``) counts as that number; other non-numbers are categories on x.
Scatter plots give Spearman's rank correlation per group in the legend and under the figure in report.md.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import statistics
import sys
import time
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from he_leak.config import RunConfig
from he_leak.errors import ConfigError, HeLeakError
from he_leak.records import RESULT_KEYS, Result
from he_leak.runner import RUN_FAILURES, Outcome, run_one

Runner = Callable[..., Outcome]  # runner(cfg, progress=callback) -> Outcome

TOP_KEYS = ("name", "description", "fixed", "grid", "expect", "plot")
PLOT_KEYS = ("x", "y", "group", "kind", "aggregate", "title", "name")
PLOT_KINDS = ("line", "scatter")
PLOT_AGGREGATES = ("median", "mean")
AGGREGATES = ("median", "mean", "min", "max", "rate")
EXPECT_KEYS = ("metric", "aggregate", "min", "max", "threshold", "note")
RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.csv"
REPORT_FILE = "report.md"
RUNS_DIR = "runs"
FIGURES_DIR = "figures"

_CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_CONFIG_HINTS = typing.get_type_hints(RunConfig)
_RESULT_FIELDS = [f.name for f in dataclasses.fields(Result)]
_RESULT_HINTS = typing.get_type_hints(Result)


# --------------------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Expectation:
    """One ``[[expect]]`` row: which runs (filters on RunConfig fields), which metric, how aggregated, what bounds."""

    metric: str
    filters: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # field -> accepted values (JSON form)
    aggregate: str = "median"
    min: float | None = None
    max: float | None = None
    threshold: float | None = None  # per-run condition for `rate` on a numeric metric
    note: str = ""

    def describe(self) -> str:
        """e.g. ``median symbol_exact ≥ 0.999 where scenario=ckks-input, attack=analytic``."""
        what = f"{self.aggregate} {self.metric}"
        if self.aggregate == "rate" and self.threshold is not None:
            what = f"rate of {self.metric} ≥ {_num(self.threshold)}"
        elif self.aggregate == "rate":
            what = f"rate of {self.metric}"
        where = ", ".join(f"{k}={'|'.join(_show(v) for v in vs)}" for k, vs in self.filters.items())
        return f"{what} {self.bound()}" + (f" where {where}" if where else " (all runs)")

    def bound(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"≥ {_num(self.min)}")
        if self.max is not None:
            parts.append(f"≤ {_num(self.max)}")
        return " and ".join(parts)

    def selects(self, row: Mapping[str, Any]) -> bool:
        """Does a result row belong to this expectation? A filter is compared with the value the Result records
        when it has one (the resolved encryptor, device, iterations), else with the run's config value."""
        config = row.get("config") or {}
        for name, accepted in self.filters.items():
            candidates = [row[name]] if row.get(name) is not None else [config.get(name)]
            if name == "encryptor":  # "none" and None both mean: no encryption
                candidates = [None if c in ("", "none") else c for c in candidates]
            if name == "device":  # `device = "auto"` also selects runs configured that way
                candidates.append(config.get(name))
            if not any(c in accepted for c in candidates):
                return False
        return True

    def may_select(self, cfg: RunConfig) -> bool:
        """Before running: could this run match? A None (scenario/attack default) or `auto` may resolve to anything."""
        key = cfg.key()
        for name, accepted in self.filters.items():
            value = key[name]
            if value is None or (name == "device" and value == "auto"):
                continue
            if value not in accepted:
                return False
        return True

    def evaluate(self, rows: Sequence[Mapping[str, Any]], *, strict: bool = True) -> ExpectationResult:
        """Aggregate the metric over the selected rows and compare with the bounds."""
        chosen = [r for r in rows if self.selects(r)]
        value: float | None
        if self.aggregate == "rate":
            hits = [self._hit(r.get(self.metric)) for r in chosen]
            value = sum(hits) / len(hits) if hits else None
        else:
            values = [v for v in (_as_number(r.get(self.metric)) for r in chosen) if v is not None]
            value = _aggregate(self.aggregate, values) if values else None
        if value is None:
            met = False if strict else None
        else:
            met = (self.min is None or value >= self.min) and (self.max is None or value <= self.max)
        return ExpectationResult(self, value, len(chosen), met)

    def _hit(self, value: Any) -> bool:
        if self.threshold is None:
            return value is True or (isinstance(value, int | float) and not isinstance(value, bool) and value > 0)
        number = _as_number(value)
        return number is not None and number >= self.threshold


@dataclass(frozen=True)
class ExpectationResult:
    """An evaluated expectation: the aggregate value (None when no run had the metric), how many runs, met or not
    (None: nothing to evaluate yet, only outside check mode)."""

    expectation: Expectation
    value: float | None
    runs: int
    met: bool | None

    def as_row(self) -> dict[str, Any]:
        """Plain data for report.write_report."""
        e = self.expectation
        return {
            "expect": e.describe(), "metric": e.metric, "aggregate": e.aggregate, "bound": e.bound(),
            "value": self.value, "runs": self.runs, "met": self.met, "note": e.note,
        }  # fmt: skip

    def __str__(self) -> str:
        return self.line()

    def line(self) -> str:
        """One line for the CLI, e.g. ``unmet: median symbol_exact ≥ 0.999 where … — got 0.41 over 3 runs``."""
        status = {True: "met", False: "unmet", None: "pending"}[self.met]
        got = "no value" if self.value is None else _num(self.value)
        note = f" ({self.expectation.note})" if self.expectation.note else ""
        return f"{status}: {self.expectation.describe()} — got {got} over {self.runs} run(s){note}"


@dataclass(frozen=True)
class Plot:
    """One ``[[plot]]`` table: y against x over the selected runs, one series per `group` value."""

    name: str
    x: str  # a field spec: a Result key, config.<field>, or "a / b" of two of them
    y: str
    group: str | None = None
    kind: str = "line"
    aggregate: str = "median"
    title: str = ""
    filters: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def series(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[Any, float]]]:
        """Group label → points.  Line: (x, aggregate of y) per x, sorted by x; scatter: one (x, y) per run.  Runs
        without a numeric y or any x are left out.  Numeric x values stay floats; otherwise all are category strings."""
        selector = Expectation(metric=self.y, filters=self.filters)
        raw: list[tuple[str, Any, float]] = []
        for row in rows:
            if not selector.selects(row):
                continue
            x, y = _field_value(row, self.x), _field_value(row, self.y)
            if x is None or not isinstance(y, float):
                continue
            label = "" if self.group is None else _label(_field_value(row, self.group))
            raw.append((label, x, y))
        if not all(isinstance(x, float) for _, x, _ in raw):
            raw = [(g, x if isinstance(x, str) else _label(x), y) for g, x, y in raw]
        out: dict[str, list[tuple[Any, float]]] = {}
        if self.kind == "scatter":
            for g, x, y in raw:
                out.setdefault(g, []).append((x, y))
            return out
        by_point: dict[str, dict[Any, list[float]]] = {}
        for g, x, y in raw:
            by_point.setdefault(g, {}).setdefault(x, []).append(y)
        for g, points in by_point.items():
            xs = sorted(points) if all(isinstance(x, float) for x in points) else list(points)
            out[g] = [(x, _aggregate(self.aggregate, points[x])) for x in xs]
        return out

    def correlations(self, series: Mapping[str, Sequence[tuple[Any, float]]]) -> dict[str, tuple[float | None, int]]:
        """Spearman's rank correlation of y with x per group, and the number of points (None where undefined:
        fewer than 3 points, a constant axis or categorical x)."""
        from scipy.stats import spearmanr

        out: dict[str, tuple[float | None, int]] = {}
        for g, points in series.items():
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            rho = None
            if len(points) >= 3 and all(isinstance(x, float) for x in xs) and len(set(xs)) > 1 and len(set(ys)) > 1:
                value = float(spearmanr(xs, ys).statistic)
                rho = value if math.isfinite(value) else None
            out[g] = (rho, len(points))
        return out

    def caption(self, series: Mapping[str, Sequence[tuple[Any, float]]]) -> str:
        """A line for report.md: the plot and, for scatter plots, Spearman's ρ per group."""
        text = f"{self.title or self.name}: {self.y} against {self.x}"
        if self.group:
            text += f" by {self.group}"
        if self.kind == "scatter":
            parts = [
                f"{g + ' ' if g else ''}ρ = {_num(rho)} (n = {n})" for g, (rho, n) in self.correlations(series).items()
            ]
            text += "; Spearman " + ", ".join(parts) if parts else ""
        return text


def _field_value(row: Mapping[str, Any], spec: str) -> Any:
    """The value of a field spec in a result row: a float for numbers (and one-number lists), a string or list for
    others, None where absent; "a / b" is a float ratio (None when either is missing or b is 0)."""
    if "/" in spec:
        top, bottom = (_field_value(row, s.strip()) for s in spec.split("/", 1))
        if isinstance(top, float) and isinstance(bottom, float) and bottom != 0:
            return top / bottom
        return None
    config = row.get("config") or {}
    value = config.get(spec[len("config.") :]) if spec.startswith("config.") else row.get(spec)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    number = _as_number(value)
    if number is not None:
        return number
    return value


def _label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file: its runs (in a stable order, no duplicates) and expectations."""

    path: Path
    name: str
    description: str
    runs: tuple[RunConfig, ...]
    expectations: tuple[Expectation, ...]
    plots: tuple[Plot, ...] = ()


@dataclass(frozen=True)
class ExperimentReport:
    """What run_experiment did. `unmet` lists the expectations that failed (and, in check mode, those with no
    value to evaluate); the CLI exits 1 when it is non-empty under --check."""

    name: str
    out: Path
    total: int  # runs in the experiment
    skipped: int  # already recorded in results.jsonl
    ran: int  # run now
    failed: int  # of those run now, how many ended with success=False and an error
    pending: int  # not run because of `limit`
    expectations: tuple[ExpectationResult, ...]
    unmet: tuple[ExpectationResult, ...]
    files: tuple[Path, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.unmet


# --------------------------------------------------------------------------------------------------------- loading
def load_experiment(path: Path | str, *, check_names: bool = True) -> Experiment:
    """Read and validate an experiment file; every problem is a ConfigError of one line naming the file and the fix.

    `check_names`: also check scenario/attack/model/activation/encryptor/data names against the registries.
    """
    path = Path(path)
    data = _read_toml(path)
    where = str(path)
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {', '.join(unknown)}; allowed: {', '.join(TOP_KEYS)}")
    name = data.get("name", path.stem)
    description = data.get("description", "")
    for key, value in (("name", name), ("description", description)):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
    fixed = data.get("fixed", {})
    if not isinstance(fixed, dict):
        raise ConfigError(f"{where}: fixed must be a table ([fixed] followed by key = value lines)")
    _build(fixed, f"{where} [fixed]")
    grids = data.get("grid", [])
    if not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids):
        raise ConfigError(f"{where}: grid must be an array of tables, written [[grid]]")
    runs = _expand(fixed, grids, where) if grids else [_build(fixed, f"{where} [fixed]")]
    if check_names:
        _check_names(runs, where)
    expects = data.get("expect", [])
    if not isinstance(expects, list) or not all(isinstance(e, dict) for e in expects):
        raise ConfigError(f"{where}: expect must be an array of tables, written [[expect]]")
    expectations = tuple(_expectation(e, f"{where} [[expect]] #{i + 1}", runs) for i, e in enumerate(expects))
    raw_plots = data.get("plot", [])
    if not isinstance(raw_plots, list) or not all(isinstance(p, dict) for p in raw_plots):
        raise ConfigError(f"{where}: plot must be an array of tables, written [[plot]]")
    plots = tuple(_plot(p, f"{where} [[plot]] #{i + 1}", runs) for i, p in enumerate(raw_plots))
    seen: set[str] = set()
    for number, plot in enumerate(plots, start=1):
        if plot.name in seen:
            raise ConfigError(f"{where} [[plot]] #{number}: another plot is already named {plot.name!r}; "
                              f"give each plot its own name = \"...\"")  # fmt: skip
        seen.add(plot.name)
    return Experiment(path, name, description, tuple(runs), expectations, plots)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment file; check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; give the experiment's .toml file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the experiment file ({_one_line(e)})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {_one_line(e)}; fix the syntax there") from None


def _build(values: Mapping[str, Any], where: str) -> RunConfig:
    """RunConfig.from_mapping with `where` in every message (including __post_init__ range checks)."""
    try:
        return RunConfig.from_mapping(dict(values), where=where)
    except ConfigError as e:
        message = _one_line(e)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None
    except TypeError as e:  # defensive: a value the dataclass itself refuses
        raise ConfigError(f"{where}: {_one_line(e)}") from None


def _expand(fixed: dict[str, Any], grids: list[dict[str, Any]], where: str) -> list[RunConfig]:
    runs: dict[str, RunConfig] = {}
    for number, grid in enumerate(grids, start=1):
        here = f"{where} [[grid]] #{number}"
        axes: list[tuple[str, list[Any]]] = []
        for key, values in grid.items():
            if key not in _CONFIG_FIELDS:
                raise ConfigError(f"{here}: unknown field {key!r}; grid fields are RunConfig fields: "
                                  f"{', '.join(_CONFIG_FIELDS)}")  # fmt: skip
            example = _example(key)
            if not isinstance(values, list):
                raise ConfigError(f"{here}: {key} must be a list of values to try, e.g. {key} = {example}")
            if not values:
                raise ConfigError(f"{here}: {key} is an empty list; give at least one value, e.g. {key} = {example}")
            if _is_sequence_field(key) and not all(isinstance(v, list) for v in values):
                raise ConfigError(f"{here}: {key} takes lists, so the grid needs a list of lists, "
                                  f"e.g. {key} = {example}")  # fmt: skip
            axes.append((key, values))
        names = [k for k, _ in axes]
        for combo in itertools.product(*(v for _, v in axes)):
            point = dict(zip(names, combo, strict=True))
            label = ", ".join(f"{k}={_show(v)}" for k, v in point.items())
            cfg = _build({**fixed, **point}, f"{here} ({label})" if label else here)
            runs.setdefault(config_id(cfg.key()), cfg)
    return list(runs.values())


def _is_sequence_field(name: str) -> bool:
    hint = _CONFIG_HINTS[name]
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return any(typing.get_origin(o) is tuple for o in options)


def _is_table_field(name: str) -> bool:
    hint = _CONFIG_HINTS[name]
    return hint is dict or typing.get_origin(hint) is dict


def _example(name: str) -> str:
    if _is_sequence_field(name):
        return "[[4], [32, 16]]"
    if _is_table_field(name):
        return "[{}]"
    default = _CONFIG_FIELDS[name].default
    if isinstance(default, bool):
        return "[false, true]"
    if isinstance(default, str):
        return f'["{default}"]'
    if isinstance(default, int | float):
        return f"[{default}]"
    return '["..."]'


def _registries() -> dict[str, Any]:
    """Name-valued RunConfig fields and the registries that know their values (importing what registers them)."""
    from he_leak.attacks.base import ATTACKS
    from he_leak.data import DATASETS
    from he_leak.models import ACTIVATIONS, MODELS
    from he_leak.scenarios import SCENARIOS

    found: dict[str, Any] = {
        "scenario": SCENARIOS, "attack": ATTACKS, "model": MODELS, "activation": ACTIVATIONS, "data": DATASETS,
    }  # fmt: skip
    try:
        from encryptors import ENCRYPTORS

        found["encryptor"] = ENCRYPTORS
    except ImportError:  # encryption backend unavailable: names are checked when the run builds its encryptor
        pass
    return found


def _check_names(runs: Iterable[RunConfig], where: str) -> None:
    registries = _registries()
    for cfg in runs:
        for name, registry in registries.items():
            value = getattr(cfg, name)
            if value is None or not registry or value in registry:  # an empty registry: not written yet
                continue
            if name == "data" and ("/" in value or "." in value or Path(value).exists()):
                if not Path(value).exists():
                    raise ConfigError(f"{where}: data {value!r}: no such file or folder; give a dataset name "
                                      f"({', '.join(sorted(registry))}) or an existing path")  # fmt: skip
                continue
            raise ConfigError(f"{where}: unknown {name} {value!r}; known: {', '.join(sorted(registry))}")


def _expectation(raw: dict[str, Any], where: str, runs: Sequence[RunConfig]) -> Expectation:
    unknown = [k for k in raw if k not in EXPECT_KEYS and k not in _CONFIG_FIELDS]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; use {', '.join(EXPECT_KEYS)} "
                          f"or a RunConfig field to filter on")  # fmt: skip
    metric = raw.get("metric")
    if not isinstance(metric, str):
        raise ConfigError(f'{where}: metric is required, a Result key such as "plaintext_psnr"')
    if metric not in _RESULT_FIELDS or metric == "config":
        raise ConfigError(f"{where}: metric {metric!r} is not a Result key; use one of: "
                          f"{', '.join(k for k in _RESULT_FIELDS if k != 'config')}")  # fmt: skip
    aggregate = raw.get("aggregate", "median")
    if aggregate not in AGGREGATES:
        raise ConfigError(f"{where}: aggregate {aggregate!r}; use one of {', '.join(AGGREGATES)}")
    bounds: dict[str, float | None] = {}
    for key in ("min", "max", "threshold"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
        bounds[key] = None if value is None else float(value)
    if bounds["min"] is None and bounds["max"] is None:
        raise ConfigError(f"{where}: give min and/or max for the {aggregate} of {metric}")
    if bounds["min"] is not None and bounds["max"] is not None and bounds["min"] > bounds["max"]:
        raise ConfigError(f"{where}: min {_num(bounds['min'])} is above max {_num(bounds['max'])}")
    boolean = _is_bool_metric(metric)
    if aggregate == "rate":
        if not boolean and bounds["threshold"] is None:
            raise ConfigError(f"{where}: aggregate = \"rate\" on numeric {metric} needs threshold = <number> "
                              f"(a run counts when {metric} ≥ threshold)")  # fmt: skip
        if boolean and bounds["threshold"] is not None:
            raise ConfigError(f"{where}: threshold does not apply to the true/false metric {metric}; remove it")
        for key in ("min", "max"):
            if bounds[key] is not None and not 0 <= bounds[key] <= 1:  # type: ignore[operator]
                raise ConfigError(f"{where}: {key} of a rate must lie in 0..1, got {_num(bounds[key])}")  # type: ignore[arg-type]
    elif bounds["threshold"] is not None:
        raise ConfigError(f'{where}: threshold is only used with aggregate = "rate"; remove it or use rate')
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise ConfigError(f"{where}: note must be a string")
    filters = {k: _filter_values(k, v, where) for k, v in raw.items() if k in _CONFIG_FIELDS}
    expectation = Expectation(
        metric=metric, filters=filters, aggregate=aggregate, min=bounds["min"], max=bounds["max"],
        threshold=bounds["threshold"], note=note,
    )  # fmt: skip
    if not any(expectation.may_select(cfg) for cfg in runs):
        raise ConfigError(f"{where}: matches none of the experiment's runs ({expectation.describe()}); "
                          f"fix the filter values or add the runs to a [[grid]]")  # fmt: skip
    return expectation


def _field_spec(value: Any, key: str, where: str, *, ratio: bool) -> str:
    """Check a plot axis: a Result key or config.<RunConfig field> (or, with `ratio`, "a / b" of two of them)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f'{where}: {key} must be a field name, e.g. {key} = "input_psnr" or "config.hidden"')
    if "/" in value:
        parts = [p.strip() for p in value.split("/")]
        if not ratio or len(parts) != 2:
            raise ConfigError(f'{where}: {key} = "{value}": use one field, or a ratio of two ("recovered / batch")')
        return " / ".join(_field_spec(p, key, where, ratio=False) for p in parts)
    value = value.strip()
    if value.startswith("config."):
        if value[len("config.") :] not in _CONFIG_FIELDS:
            raise ConfigError(f"{where}: {key} {value!r}: no RunConfig field {value[len('config.'):]!r}; "
                              f"known: {', '.join(_CONFIG_FIELDS)}")  # fmt: skip
        return value
    if value not in _RESULT_FIELDS or value == "config":
        raise ConfigError(f"{where}: {key} {value!r} is not a Result key; use one of "
                          f"{', '.join(k for k in _RESULT_FIELDS if k != 'config')} or config.<field>")  # fmt: skip
    return value


def _plot(raw: dict[str, Any], where: str, runs: Sequence[RunConfig]) -> Plot:
    unknown = [k for k in raw if k not in PLOT_KEYS and k not in _CONFIG_FIELDS]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; use {', '.join(PLOT_KEYS)} "
                          f"or a RunConfig field to filter on")  # fmt: skip
    for key in ("x", "y"):
        if key not in raw:
            raise ConfigError(f'{where}: {key} is required, e.g. {key} = "config.width" or "input_psnr"')
    x = _field_spec(raw["x"], "x", where, ratio=True)
    y = _field_spec(raw["y"], "y", where, ratio=True)
    group = None if raw.get("group") is None else _field_spec(raw["group"], "group", where, ratio=False)
    kind = raw.get("kind", "line")
    if kind not in PLOT_KINDS:
        raise ConfigError(f"{where}: kind {kind!r}; use one of {', '.join(PLOT_KINDS)}")
    if "aggregate" in raw and kind == "scatter":
        raise ConfigError(f"{where}: aggregate applies to line plots (a scatter plot shows every run); remove it")
    aggregate = raw.get("aggregate", "median")
    if aggregate not in PLOT_AGGREGATES:
        raise ConfigError(f"{where}: aggregate {aggregate!r}; use one of {', '.join(PLOT_AGGREGATES)}")
    texts = {}
    for key in ("title", "name"):
        value = raw.get(key, "")
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
        texts[key] = value
    name = texts["name"] or _slug_name(f"{y}_vs_{x}")
    if _slug_name(name) != name:
        raise ConfigError(f"{where}: name {name!r}: use letters, digits, '.', '_' or '-' (it names figures/<name>.png)")
    filters = {k: _filter_values(k, v, where) for k, v in raw.items() if k in _CONFIG_FIELDS}
    plot = Plot(name=name, x=x, y=y, group=group, kind=kind, aggregate=aggregate, title=texts["title"],
                filters=filters)  # fmt: skip
    probe = Expectation(metric=y, filters=filters)
    if filters and not any(probe.may_select(cfg) for cfg in runs):
        raise ConfigError(f"{where}: its filters match none of the experiment's runs; fix the filter values")
    return plot


def _slug_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text.replace(" / ", "_per_")).strip("_")


def _filter_values(name: str, value: Any, where: str) -> tuple[Any, ...]:
    """A filter value (or a list of alternatives) coerced like the RunConfig field, in key() (JSON) form."""
    if _is_sequence_field(name):
        options = value if isinstance(value, list) and value and all(isinstance(v, list) for v in value) else [value]
    else:
        options = value if isinstance(value, list) else [value]
    if not options:
        raise ConfigError(f"{where}: filter {name} is an empty list")
    out = []
    for option in options:
        if option is None or (isinstance(option, str) and option in ("", "none") and name == "encryptor"):
            out.append(None)
            continue
        cfg = _build({name: option}, f"{where}: filter")
        out.append(cfg.key()[name])
    return tuple(out)


def _is_bool_metric(metric: str) -> bool:
    hint = _RESULT_HINTS.get(metric)
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return bool in options


# --------------------------------------------------------------------------------------------------------- running
def config_id(key: Mapping[str, Any]) -> str:
    """Canonical JSON of a config key: two runs are the same run iff these strings are equal."""
    return json.dumps(_clean(dict(key)), sort_keys=True, separators=(",", ":"))


def run_hash(key: Mapping[str, Any]) -> str:
    """Short stable hash of a config key: the run's panel file is runs/<hash>.npz."""
    return hashlib.sha256(config_id(key).encode()).hexdigest()[:16]


def describe_run(cfg: RunConfig, varying: Iterable[str] = ()) -> str:
    """e.g. ``plain · dlg · lenet · digits #0 · seed 0`` plus the other fields that vary across the experiment."""
    text = f"{cfg.scenario} · {cfg.attack} · {cfg.model} · {cfg.data} #{cfg.index} · seed {cfg.seed}"
    key = cfg.key()
    shown = {"scenario", "attack", "model", "data", "index", "seed"}
    extra = [f"{k}={_show(key[k])}" for k in varying if k not in shown]
    return text + (" · " + " ".join(extra) if extra else "")


def run_experiment(
    path: Path,
    out: Path,
    *,
    check: bool = False,
    console: Any = None,
    runner: Runner = run_one,
    limit: int | None = None,
) -> ExperimentReport:
    """Run every not-yet-recorded run of the experiment at `path` into `out`, then write summary.csv, report.md and
    figures and evaluate the expectations.

    Resumable: out/results.jsonl gets one whole JSON line per run (appended, fsynced); runs whose config key is
    already there are skipped. `limit` caps how many runs are executed now (0: only rebuild the summaries).
    `check`: expectations that have no value to evaluate (no matching run recorded) count as unmet.
    """
    from rich.console import Console

    from he_leak import figures, report

    experiment = load_experiment(path)
    out = Path(out)
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    if console is None:
        console = Console(stderr=True)
    if runner is run_one:
        _preflight(experiment)
    try:
        (out / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{out}: cannot create the output folder ({_one_line(e)})") from None
    results_path = out / RESULTS_FILE
    recorded = _latest_by_config(read_results(results_path, repair=True, warn=_warner(console)))
    todo = [cfg for cfg in experiment.runs if config_id(cfg.key()) not in recorded]
    skipped = len(experiment.runs) - len(todo)
    pending = 0
    if limit is not None and len(todo) > limit:
        pending = len(todo) - limit
        todo = todo[:limit]
    varying = _varying(experiment.runs)
    ran = failed = 0
    for row in _execute(todo, runner, out, console, varying):
        ran += 1
        failed += bool(row.get("error")) and not row.get("success")
        recorded[config_id(row["config"])] = row

    rows = [recorded[k] for k in (config_id(c.key()) for c in experiment.runs) if k in recorded]
    files = [_write_atomic(out / SUMMARY_FILE, summary_csv(rows))]
    figure_paths = figures.experiment_figures(rows, out / RUNS_DIR, out / FIGURES_DIR) if rows else []
    captions: dict[str, str] = {}
    for plot in experiment.plots:
        series = plot.series(rows)
        drawn = figures.plot_figure(plot, series, out / FIGURES_DIR / f"{plot.name}.png") if series else None
        if drawn is not None:
            figure_paths.append(drawn)
            captions[drawn.relative_to(out).as_posix()] = plot.caption(series)
    evaluated = tuple(e.evaluate(rows, strict=check) for e in experiment.expectations)
    files.append(
        report.write_report(
            rows, out / REPORT_FILE, title=experiment.name, description=experiment.description,
            expectations=[e.as_row() for e in evaluated], figures=[p.relative_to(out) for p in figure_paths],
            runs_total=len(experiment.runs), captions=captions,
        )
    )  # fmt: skip
    files.extend(figure_paths)
    unmet = tuple(e for e in evaluated if e.met is False)
    return ExperimentReport(
        name=experiment.name, out=out, total=len(experiment.runs), skipped=skipped, ran=ran, failed=failed,
        pending=pending, expectations=evaluated, unmet=unmet, files=tuple(files),
    )  # fmt: skip


def _preflight(experiment: Experiment) -> None:
    """Cheap checks that would otherwise stop the experiment half-way: sample index / batch / label ranges."""
    from he_leak.data import load_dataset

    for data in dict.fromkeys(cfg.data for cfg in experiment.runs):
        try:
            ds = load_dataset(data)
        except HeLeakError as e:
            raise type(e)(f"{experiment.path}: data {data!r}: {_one_line(e)}") from None
        for cfg in (c for c in experiment.runs if c.data == data):
            try:
                _, labels = ds.batch(cfg.index, cfg.batch)
            except HeLeakError as e:
                raise ConfigError(f"{experiment.path}: {_one_line(e)} (run {describe_run(cfg)})") from None
            if len(labels) and int(labels.max()) >= cfg.classes:
                raise ConfigError(f"{experiment.path}: {data} has label {int(labels.max())} but classes is "
                                  f"{cfg.classes}; raise classes in [fixed]")  # fmt: skip


def _varying(runs: Sequence[RunConfig]) -> list[str]:
    keys = [cfg.key() for cfg in runs]
    return [k for k in _CONFIG_FIELDS if len({json.dumps(key[k], sort_keys=True) for key in keys}) > 1]


def _execute(
    todo: Sequence[RunConfig], runner: Runner, out: Path, console: Any, varying: Sequence[str]
) -> Iterable[dict[str, Any]]:
    """Run each config, save its panels, append its line; yields the rows. Progress bar on a terminal."""
    if not todo:
        return
    if getattr(console, "is_terminal", False):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())  # fmt: skip
        with Progress(*columns, console=console) as bar:
            overall = bar.add_task("runs", total=len(todo))
            inner = bar.add_task("", total=None)

            for cfg in todo:
                text = describe_run(cfg, varying)
                bar.update(inner, description=f"  {text}", completed=0, total=None)

                def step(done: int, total: int, loss: float, _text: str = text) -> None:
                    loss_text = f" · loss {loss:.3g}" if isinstance(loss, float) and math.isfinite(loss) else ""
                    bar.update(inner, completed=done, total=total or None, description=f"  {_text}{loss_text}")

                row = _run_and_record(cfg, runner, out, step, text)
                bar.console.print(_status_line(row, text, bar.tasks[overall].completed + 1, len(todo)),
                                  markup=False, highlight=False)  # fmt: skip
                bar.advance(overall)
                yield row
    else:
        for number, cfg in enumerate(todo, start=1):
            text = describe_run(cfg, varying)
            row = _run_and_record(cfg, runner, out, None, text)
            line = _status_line(row, text, number, len(todo))
            if console is not None and hasattr(console, "print"):
                console.print(line, markup=False, highlight=False, soft_wrap=True)
            else:
                print(line, file=sys.stderr, flush=True)
            yield row


def _status_line(row: Mapping[str, Any], text: str, number: int, total: int) -> str:
    if row.get("error") and not row.get("success"):
        status = f"failed: {row['error']}"
    else:
        status = "success" if row.get("success") else "no success"
        for key, unit in (("symbol_exact", ""), ("plaintext_psnr", " dB"), ("key_plaintext_psnr", " dB (key)")):
            if isinstance(row.get(key), int | float):
                status += f" · {key} {_num(row[key])}{unit}"
    seconds = row.get("seconds")
    timing = f" ({seconds:.1f} s)" if isinstance(seconds, int | float) else ""
    return f"[{number}/{total}] {text}: {status}{timing}"


def _run_and_record(cfg: RunConfig, runner: Runner, out: Path, progress: Any, text: str) -> dict[str, Any]:
    """One run → panels file (first) → one fsynced results line. Numerical failures are rows; a config or data
    error (which the preflight could not see) stops the experiment with the run named."""
    key = cfg.key()
    start = time.perf_counter()
    panels: Mapping[str, np.ndarray] = {}
    try:
        outcome = runner(cfg, progress=progress)
        result, panels = outcome.result, outcome.panels or {}
        row = result.to_dict() if isinstance(result, Result) else dict(result)
    except RUN_FAILURES as e:  # run_one records these itself; a custom runner may raise them
        row = _failed_row(cfg, e, time.perf_counter() - start)
    except HeLeakError as e:
        raise _renamed(e, f"run {text}: {_one_line(e)}") from e
    row["config"] = key
    row = _clean(row)
    if panels:
        _save_panels(out / RUNS_DIR / f"{run_hash(key)}.npz", panels)
    append_result(out / RESULTS_FILE, row)
    return row


def _failed_row(cfg: RunConfig, error: BaseException, seconds: float) -> dict[str, Any]:
    key = cfg.key()
    names = {f.name for f in dataclasses.fields(Result)}
    values = {k: v for k, v in key.items() if k in names and k not in ("config", "success", "error", "seconds")}
    values["encryptor"] = _resolved_encryptor(cfg)
    result = Result(**values, seconds=seconds, success=False, error=f"{type(error).__name__}: {_one_line(error)}")
    return result.to_dict()


def _resolved_encryptor(cfg: RunConfig) -> str | None:
    """The encryptor the scenario would use (its default when the config leaves it None), as run_one records it."""
    from he_leak.scenarios import SCENARIOS

    return SCENARIOS[cfg.scenario](cfg).encryptor


def _renamed(error: HeLeakError, message: str) -> HeLeakError:
    try:
        return type(error)(message)
    except TypeError:
        return ConfigError(message)


def _save_panels(path: Path, panels: Mapping[str, np.ndarray]) -> None:
    arrays = {str(k): np.asarray(v, dtype=np.float32) for k, v in panels.items() if v is not None}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------------- results
def append_result(path: Path, row: Mapping[str, Any]) -> None:
    """Append one whole JSON line (one write, then fsync): a killed run never leaves a partial line of its own."""
    data = (json.dumps(_clean(dict(row)), allow_nan=False, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_results(
    path: Path, *, repair: bool = False, warn: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """All rows of a results.jsonl (missing file: none). A trailing partial line (a killed writer) is ignored and,
    with `repair`, cut off; an unparsable line in the middle is skipped with a warning."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the results file ({_one_line(e)})") from None
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = _parse_line(line)
        if row is None:
            if warn:
                warn(f"{path}: line {number} is not a JSON object; ignored (its run will be redone)")
            continue
        rows.append(row)
    if tail.strip():
        row = _parse_line(tail)
        if row is not None:  # a whole row that only lacks its newline
            rows.append(row)
            if repair:
                with open(path, "ab") as f:
                    f.write(b"\n")
                    f.flush()
                    os.fsync(f.fileno())
        else:
            if warn:
                warn(f"{path}: dropped a partial last line (an interrupted run); it will be redone")
            if repair:
                with open(path, "r+b") as f:
                    f.truncate(len(data) - len(tail))
                    f.flush()
                    os.fsync(f.fileno())
    return rows


def _parse_line(line: bytes) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return row if isinstance(row, dict) else None


def _latest_by_config(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        if isinstance(row.get("config"), dict):
            latest[config_id(row["config"])] = dict(row)
    return latest


def experiment_rows(experiment: Experiment, out: Path) -> list[dict[str, Any]]:
    """The recorded rows of this experiment's runs (latest per run, in run order), without running anything."""
    recorded = _latest_by_config(read_results(Path(out) / RESULTS_FILE))
    return [recorded[k] for k in (config_id(c.key()) for c in experiment.runs) if k in recorded]


def summary_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text: RESULT_KEYS, then the other Result fields and extra keys, then config.<field> columns.
    None → empty cell, booleans → true/false, lists and tables → JSON."""
    columns = list(RESULT_KEYS)
    for name in [*_RESULT_FIELDS, *(k for r in rows for k in r)]:
        if name not in columns and name != "config":
            columns.append(name)
    config_columns: list[str] = []
    for row in rows:
        for k in row.get("config") or {}:
            if f"config.{k}" not in config_columns:
                config_columns.append(f"config.{k}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns + config_columns)
    for row in rows:
        config = row.get("config") or {}
        cells = [_cell(row.get(c)) for c in columns] + [_cell(config.get(c[len("config.") :])) for c in config_columns]
        writer.writerow(cells)
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _write_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------------------- helpers
def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars/arrays to Python, tuples to lists, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        return _clean(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _aggregate(name: str, values: Sequence[float]) -> float:
    if name == "median":
        return float(statistics.median(values))
    if name == "mean":
        return float(statistics.fmean(values))
    if name == "min":
        return float(min(values))
    return float(max(values))


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}"


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def _one_line(error: BaseException | str) -> str:
    return " ".join(str(error).split())


def _warner(console: Any) -> Callable[[str], None]:
    def warn(message: str) -> None:
        if console is not None and hasattr(console, "print"):
            console.print(f"warning: {message}", markup=False, highlight=False)
        else:
            print(f"warning: {message}", file=sys.stderr)

    return warn
