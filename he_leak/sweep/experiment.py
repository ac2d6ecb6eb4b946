"""Experiment files: TOML → validated runs (RunConfigs), expectations and plots. Nothing here runs anything.

File format (every key is validated before anything runs; a [fixed] or grid key must be used by every run it
reaches — its scenario, attack and model, he_leak.options — else it is refused, also at its default value)::

    name = "ckks-input"                       # optional, defaults to the file's stem
    description = "Does DLG recover a CKKS ciphertext, and does that help without the key?"

    [fixed]                                   # RunConfig fields shared by every run
    model = "mlp"
    hidden = [32]

    [[grid]]                                  # lists, expanded as a Cartesian product over [fixed]
    scenario = ["ckks-input"]
    attack = ["dlg", "analytic"]
    index = [0, 1, 2]

    [[grid]]                                  # the run list is the union of all grids (a run in two grids
                                              # runs once; one grid listing a point twice is refused)
    scenario = ["plain"]
    attack = ["dlg"]
    index = [1, 2, 3]
    seed = [1, 2, 3]
    paired = ["index", "seed"]                # these lists (equal lengths) advance together: 3 runs, not 9

    [[expect]]                                # filters on RunConfig fields (a list means any of them) ...
    scenario = "ckks-input"
    attack = "analytic"
    metric = "symbol_exact"                   # ... a Result key,
    aggregate = "median"                      # median (default) | mean | min | max | rate | an interval end
    min = 0.999                               # bounds on the aggregate: min and/or max
    note = "the analytic attack recovers the ciphertext view exactly"

For ``aggregate = "rate"`` the value is the fraction of matching runs where the metric is true (boolean metrics) or
at least ``threshold`` (numeric metrics, where ``threshold`` is required); a run without the metric counts as no.
Interval ends (he_leak.report.expectations.INTERVALS, 95%): ``recovery_low`` / ``recovery_high`` bound the recovery rate
of a count metric (``recovered``, ``keyless_recovered``: k over the samples scored, Clopper–Pearson); ``gain_low`` /
``gain_high`` bound the mean per-sample gain over the prior of ``plaintext_psnr`` / ``keyless_gain`` (the keyless
estimate) or ``key_plaintext_psnr`` (a key holder's), by the bootstrap. ``worst`` is the largest per-sample value of
those three metrics over every sample of the selected runs (PSNR, or the gain for ``keyless_gain``); ``max`` is the
largest run-level value.

A comparison: ``versus = {encrypt_fraction = 1.0}`` (RunConfig fields overriding some of the row's filters) names a
second group, and the value bounded is the row's aggregate minus that group's — for ``gain_low`` / ``gain_high`` one
end of the bootstrap interval of the difference of mean per-sample gains, paired by sample (data, index, seed) when
both groups hold the same samples. ``recovery_*`` ends do not subtract and are refused there. E.g. "CKKS leaves the
keyless attacker at least 20 dB below a secret permutation"::

    [[expect]]
    scenario = "ckks-input"
    encryptor = "ckks"
    attack = "analytic"
    versus = {encryptor = "permute"}
    metric = "plaintext_psnr"
    aggregate = "mean"
    max = -20.0

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

import dataclasses
import hashlib
import math
import tomllib
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from he_leak.config import RunConfig
from he_leak.errors import ConfigError
from he_leak.models.user import factory_of, is_user_model
from he_leak.records import Result
from he_leak.report.expectations import AGGREGATES, PLOT_AGGREGATES, PLOT_KINDS, Expectation, Plot, aggregate_problem
from he_leak.sweep.grid import build, expand, is_sequence_field
from he_leak.sweep.toml_lines import table_lines
from he_leak.text import num, one_line
from he_leak.validation import coerce

TOP_KEYS = ("name", "description", "fixed", "grid", "expect", "plot")
PLOT_KEYS = ("x", "y", "group", "kind", "aggregate", "title", "name")
EXPECT_KEYS = ("metric", "aggregate", "min", "max", "threshold", "note", "versus")

_CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_RESULT_FIELDS = [f.name for f in dataclasses.fields(Result)]
_RESULT_HINTS = typing.get_type_hints(Result)
_CONFIG_HINTS = typing.get_type_hints(RunConfig)


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file: its runs (in a stable order, no duplicates) and expectations."""

    path: Path
    name: str
    description: str
    runs: tuple[RunConfig, ...]
    expectations: tuple[Expectation, ...]
    plots: tuple[Plot, ...] = ()
    digest: str = ""  # sha256 of the file's bytes: a results folder records which version of the file it ran


# --------------------------------------------------------------------------------------------------------- loading
def load_experiment(path: Path | str, *, check_names: bool = True) -> Experiment:
    """Read and validate an experiment file; every problem is a ConfigError of one line naming the file and the fix.

    `check_names`: also check scenario/attack/model/activation/encryptor/data names against the registries.
    """
    path = Path(path)
    raw = _read_bytes(path)
    data = _parse_toml(raw, path)
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
    build(fixed, f"{where} [fixed]")
    grids = data.get("grid", [])
    if not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids):
        raise ConfigError(f"{where}: grid must be an array of tables, written [[grid]]")
    if "grid" in data and not grids:
        raise ConfigError(f"{where}: grid = [] lists no runs; add [[grid]] tables of values to try, or remove it")
    if not grids and not fixed:
        raise ConfigError(f"{where}: no runs: add [fixed] fields for one run and/or [[grid]] tables of values to try")
    runs = expand(fixed, grids, where) if grids else [build(fixed, f"{where} [fixed]")]
    if check_names:
        _check_names(runs, where)
    expects = data.get("expect", [])
    if not isinstance(expects, list) or not all(isinstance(e, dict) for e in expects):
        raise ConfigError(f"{where}: expect must be an array of tables, written [[expect]]")
    lines = table_lines(raw.decode("utf-8"), "expect")
    lines = lines if len(lines) == len(expects) else [None] * len(expects)  # the scanner and tomllib disagree
    expectations = tuple(_expectation(e, f"{where} [[expect]] #{i + 1}", runs, lines[i]) for i, e in enumerate(expects))
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
    digest = hashlib.sha256(raw).hexdigest()
    return Experiment(path, name, description, tuple(runs), expectations, plots, digest)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment file; check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; give the experiment's .toml file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the experiment file ({one_line(e)})") from None


def _parse_toml(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: cannot read the experiment file ({one_line(e)}); save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {one_line(e)}; fix the syntax there") from None


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
            if name == "model" and is_user_model(value):  # a user's module:factory: importable, callable
                try:
                    factory_of(value)
                except ConfigError as e:
                    raise ConfigError(f"{where}: {one_line(e)}") from None
                continue
            if name == "data" and ("/" in value or "." in value or Path(value).exists()):
                if not Path(value).exists():
                    raise ConfigError(f"{where}: data {value!r}: no such file or folder; give a dataset name "
                                      f"({', '.join(sorted(registry))}) or an existing path")  # fmt: skip
                continue
            raise ConfigError(f"{where}: unknown {name} {value!r}; known: {', '.join(sorted(registry))}")


def _expectation(raw: dict[str, Any], where: str, runs: Sequence[RunConfig], line: int | None = None) -> Expectation:
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
    if problem := aggregate_problem(metric, aggregate, versus="versus" in raw):
        raise ConfigError(f"{where}: {problem}")
    bounds = _bounds(raw, where, metric, aggregate)
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise ConfigError(f"{where}: note must be a string")
    filters = {k: _filter_values(k, v, where) for k, v in raw.items() if k in _CONFIG_FIELDS}
    expectation = Expectation(
        metric=metric, filters=filters, aggregate=aggregate, min=bounds["min"], max=bounds["max"],
        threshold=bounds["threshold"], note=note, versus=_versus(raw, where, filters), line=line,
    )  # fmt: skip
    if not any(expectation.may_select(cfg) for cfg in runs):
        raise ConfigError(f"{where}: matches none of the experiment's runs ({expectation.describe()}); "
                          f"fix the filter values or add the runs to a [[grid]]")  # fmt: skip
    if expectation.versus and not any(expectation.baseline().may_select(cfg) for cfg in runs):
        raise ConfigError(f"{where}: versus matches none of the experiment's runs; fix its values or add the runs "
                          f"to a [[grid]]")  # fmt: skip
    return expectation


def _bounds(raw: dict[str, Any], where: str, metric: str, aggregate: str) -> dict[str, float | None]:
    """min, max and threshold of an [[expect]] row, checked against its aggregate (a difference has no 0..1 range)."""
    bounds: dict[str, float | None] = {}
    for key in ("min", "max", "threshold"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
        bounds[key] = None if value is None else float(value)
    if bounds["min"] is None and bounds["max"] is None:
        raise ConfigError(f"{where}: give min and/or max for the {aggregate} of {metric}")
    if bounds["min"] is not None and bounds["max"] is not None and bounds["min"] > bounds["max"]:
        raise ConfigError(f"{where}: min {num(bounds['min'])} is above max {num(bounds['max'])}")
    boolean = _is_bool_metric(metric)
    if aggregate == "rate" or aggregate.startswith("recovery_"):
        if aggregate == "rate" and not boolean and bounds["threshold"] is None:
            raise ConfigError(f"{where}: aggregate = \"rate\" on numeric {metric} needs threshold = <number> "
                              f"(a run counts when {metric} ≥ threshold)")  # fmt: skip
        if bounds["threshold"] is not None and (boolean or aggregate != "rate"):
            raise ConfigError(f"{where}: threshold does not apply to {aggregate} of {metric}; remove it")
        low = -1 if "versus" in raw else 0  # a difference of two rates lies in -1..1
        for key in ("min", "max"):
            if bounds[key] is not None and not low <= bounds[key] <= 1:  # type: ignore[operator]
                raise ConfigError(f"{where}: {key} of a rate{' difference' if low else ''} must lie in {low}..1, "
                                  f"got {num(bounds[key])}")  # fmt: skip
    elif bounds["threshold"] is not None:
        raise ConfigError(f'{where}: threshold is only used with aggregate = "rate"; remove it or use rate')
    return bounds


def _versus(raw: dict[str, Any], where: str, filters: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """The comparison group of a row: `versus = {field = value, ...}` overrides some of its filters."""
    if "versus" not in raw:
        return {}
    versus = raw["versus"]
    example = "e.g. versus = {encrypt_fraction = 1.0}"
    if not isinstance(versus, dict) or not versus:
        raise ConfigError(f"{where}: versus must be a table of RunConfig fields naming the group to compare with, "
                          f"{example}")  # fmt: skip
    unknown = [k for k in versus if k not in _CONFIG_FIELDS]
    if unknown:
        raise ConfigError(f"{where}: versus: unknown field(s) {', '.join(unknown)}; use RunConfig fields, {example}")
    values = {k: _filter_values(k, v, f"{where} versus") for k, v in versus.items()}
    if all(filters.get(k) == v for k, v in values.items()):
        raise ConfigError(f"{where}: versus selects the same runs as the row itself; give a value that differs")
    return values


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
    if is_sequence_field(name):
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
        try:  # the field's type only: a filter names values, it is not a run whose options must be used
            value = coerce(option, _CONFIG_HINTS[name], name)
        except ConfigError as e:
            raise ConfigError(f"{where}: filter {e}") from None
        out.append(list(value) if isinstance(value, tuple) else value)
    return tuple(out)


def _is_bool_metric(metric: str) -> bool:
    hint = _RESULT_HINTS.get(metric)
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return bool in options


def resolved_encryptor(cfg: RunConfig) -> str | None:
    """The encryptor a run uses: the scenario's default when the config leaves it None (ckks for ckks-input), None
    for scenarios without encryption. The same value run_one records in the Result."""
    from he_leak.scenarios import SCENARIOS

    return SCENARIOS[cfg.scenario](cfg).encryptor
