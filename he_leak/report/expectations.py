"""What an experiment checks and draws: ``[[expect]]`` rows (an aggregate of a Result metric over selected runs,
against bounds) and ``[[plot]]`` tables (y against x per group). Pure statistics over result rows, no I/O."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from he_leak.config import RunConfig
from he_leak.report.stats import (
    CONFIDENCE,
    COUNT_METRICS,
    METRIC_ESTIMATE,
    align,
    difference_interval,
    keyed_gains,
    mean_interval,
    recovery_interval,
    sample_count,
    sample_gains,
    sample_psnrs,
)
from he_leak.text import num, show

# Interval aggregates (he_leak.report.stats): the ends of the Clopper–Pearson interval of a recovery rate — k = the sum
# of a count metric (recovered, keyless_recovered) over the selected runs that have it, n = the samples those runs
# scored — and the ends of the bootstrap interval of the mean per-sample gain over the prior of the estimate behind a
# metric (plaintext_psnr or keyless_gain: the keyless estimate; key_plaintext_psnr: the key holder's).
INTERVALS = {"recovery_low": (COUNT_METRICS, 0), "recovery_high": (COUNT_METRICS, 1),
             "gain_low": (tuple(METRIC_ESTIMATE), 0), "gain_high": (tuple(METRIC_ESTIMATE), 1)}  # fmt: skip
# `worst`: the largest per-sample value of that estimate (its PSNR, or its gain for keyless_gain) over every sample
# of the selected runs — for a batch, `max` of a run-level metric would hide the best-recovered sample.
WORST = "worst"
AGGREGATES = ("median", "mean", "min", "max", "rate", WORST, *INTERVALS)
PLOT_KINDS = ("line", "scatter")
PLOT_AGGREGATES = ("median", "mean")


@dataclass(frozen=True)
class Expectation:
    """One ``[[expect]]`` row: which runs (filters on RunConfig fields), which metric, how aggregated, what bounds.
    With `versus` (filters overriding some of the row's) the value is a difference: the aggregate over the row's runs
    minus the same over the versus group's — for gain_low/gain_high one end of the bootstrap interval of the
    difference of mean per-sample gains (paired by sample when both groups hold the same samples)."""

    metric: str
    filters: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # field -> accepted values (JSON form)
    aggregate: str = "median"
    min: float | None = None
    max: float | None = None
    threshold: float | None = None  # per-run condition for `rate` on a numeric metric
    note: str = ""
    versus: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # the comparison group's filter overrides
    line: int | None = None  # where the row starts in its experiment file (1-based), when known

    def describe(self) -> str:
        """e.g. ``median symbol_exact ≥ 0.999 where scenario=ckks-input, attack=analytic``."""
        what = self._what()
        if self.versus:
            what += f" minus that where {_where(self.versus)}"
        where = _where(self.filters)
        return f"{what} {self.bound()}" + (f" where {where}" if where else " (all runs)")

    def _what(self) -> str:
        level = f"{100 * CONFIDENCE:g}%"
        if self.aggregate.startswith("recovery_"):
            end = "lower" if self.aggregate.endswith("low") else "upper"
            return f"{level} Clopper–Pearson {end} bound of the rate of {self.metric}"
        if self.aggregate.startswith("gain_"):
            end = "lower" if self.aggregate.endswith("low") else "upper"
            return f"{end} end of the {level} bootstrap interval of the mean per-sample gain ({self.metric})"
        if self.aggregate == WORST:
            return f"worst case (largest per-sample value) of {self.metric}"
        if self.aggregate == "rate" and self.threshold is not None:
            return f"rate of {self.metric} ≥ {num(self.threshold)}"
        if self.aggregate == "rate":
            return f"rate of {self.metric}"
        return f"{self.aggregate} {self.metric}"

    @property
    def title(self) -> str:
        """A short name for the row: its note, else its description."""
        return self.note or self.describe()

    def bound(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"≥ {num(self.min)}")
        if self.max is not None:
            parts.append(f"≤ {num(self.max)}")
        return " and ".join(parts)

    def baseline(self) -> Expectation:
        """The versus group as an expectation of its own (the row's filters with the versus values)."""
        return Expectation(metric=self.metric, filters={**self.filters, **self.versus}, aggregate=self.aggregate,
                           threshold=self.threshold)  # fmt: skip

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
        """Aggregate the metric over the selected rows (minus the versus group's) and compare with the bounds."""
        chosen = [r for r in rows if self.selects(r)]
        parts: tuple[float | None, float | None] | None = None
        base_runs = paired = None
        if self.versus:
            base = [r for r in rows if self.baseline().selects(r)]
            value, parts, paired = self._difference(chosen, base)
            base_runs = len(base)
        else:
            value = self._value(chosen)
        if value is None:
            met = False if strict else None
        else:
            met = (self.min is None or value >= self.min) and (self.max is None or value <= self.max)
        return ExpectationResult(self, value, len(chosen), met, baseline_runs=base_runs, parts=parts, paired=paired)

    def _value(self, chosen: Sequence[Mapping[str, Any]]) -> float | None:
        """The aggregate over one group of rows; None when no row has the metric."""
        if self.aggregate == "rate":
            hits = [self._hit(r.get(self.metric)) for r in chosen]
            return sum(hits) / len(hits) if hits else None
        if self.aggregate in INTERVALS:
            return self._interval_end(chosen)
        if self.aggregate == WORST:
            return max(self._per_sample(chosen), default=None)
        values = [v for v in (as_number(r.get(self.metric)) for r in chosen) if v is not None]
        return aggregate_values(self.aggregate, values) if values else None

    def _per_sample(self, chosen: Sequence[Mapping[str, Any]]) -> list[float]:
        """Per-sample values of the metric's estimate: gains for keyless_gain, PSNRs for the PSNR metrics."""
        estimate = METRIC_ESTIMATE[self.metric]
        if self.metric == "keyless_gain":
            return [g for r in chosen for g in sample_gains(r, estimate)]
        return [v for r in chosen for v in (sample_psnrs(r, estimate) or []) if v is not None]

    def _difference(
        self, chosen: Sequence[Mapping[str, Any]], base: Sequence[Mapping[str, Any]]
    ) -> tuple[float | None, tuple[float | None, float | None], bool | None]:
        """(the value, the two groups' own values, paired or not) of a versus row."""
        if not self.aggregate.startswith("gain_"):
            mine, theirs = self._value(chosen), self._value(base)
            return (None if mine is None or theirs is None else mine - theirs), (mine, theirs), None
        estimate = METRIC_ESTIMATE[self.metric]
        a, b, paired = align([g for r in chosen for g in keyed_gains(r, estimate)],
                             [g for r in base for g in keyed_gains(r, estimate)])  # fmt: skip
        ci = difference_interval(a, b, paired=paired)
        means = (statistics.fmean(a) if a else None, statistics.fmean(b) if b else None)
        return (None if ci is None else ci[INTERVALS[self.aggregate][1]]), means, paired

    def _interval_end(self, chosen: Sequence[Mapping[str, Any]]) -> float | None:
        """One end of the interval the aggregate names (see INTERVALS); None without samples."""
        end = INTERVALS[self.aggregate][1]
        if self.aggregate.startswith("recovery_"):
            counted = [r for r in chosen if as_number(r.get(self.metric)) is not None]
            n = sum(sample_count(r) for r in counted)
            return recovery_interval(sum(int(r[self.metric]) for r in counted), n)[end] if n else None
        ci = mean_interval([g for r in chosen for g in sample_gains(r, METRIC_ESTIMATE[self.metric])])
        return None if ci is None else ci[end]

    def _hit(self, value: Any) -> bool:
        if self.threshold is None:
            return value is True or (isinstance(value, int | float) and not isinstance(value, bool) and value > 0)
        number = as_number(value)
        return number is not None and number >= self.threshold


def _where(filters: Mapping[str, tuple[Any, ...]]) -> str:
    return ", ".join(f"{k}={'|'.join(show(v) for v in vs)}" for k, vs in filters.items())


@dataclass(frozen=True)
class ExpectationResult:
    """An evaluated expectation: the aggregate value (None when no run had the metric), how many runs, met or not
    (None: nothing to evaluate yet, only outside check mode). A versus row also keeps the versus group's run count,
    both groups' own values (for gain_*: their mean gains) and whether the samples were paired."""

    expectation: Expectation
    value: float | None
    runs: int
    met: bool | None
    baseline_runs: int | None = None
    parts: tuple[float | None, float | None] | None = None
    paired: bool | None = None

    @property
    def status(self) -> str:
        return {True: "met", False: "unmet", None: "pending"}[self.met]

    def measured(self) -> str:
        """What was measured against what bound, e.g. ``measured 19.4 − 82.2 = -62.8, bound ≤ -20 (1 + 1 runs)``."""
        e = self.expectation
        got = "no value (no selected run has the metric)" if self.value is None else num(self.value)
        runs = f"{self.runs} run(s)"
        if self.parts is not None:
            mine, theirs = (num(v) for v in self.parts)
            label = "mean gains " if e.aggregate.startswith("gain_") else ""
            got += f" ({label}{mine} here, {theirs} where {_where(e.versus)}"
            got += ", paired by sample)" if self.paired else ")"
            runs = f"{self.runs} + {self.baseline_runs} run(s)"
        return f"measured {got}, bound {e.bound()} over {runs}"

    def as_row(self) -> dict[str, Any]:
        """Plain data for report.write_report."""
        e = self.expectation
        return {
            "expect": e.describe(), "metric": e.metric, "aggregate": e.aggregate, "bound": e.bound(),
            "value": self.value, "runs": self.runs, "met": self.met, "note": e.note,
        }  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        """Everything about the row, for expectations.json (machine-readable, beside report.md)."""
        e = self.expectation
        return {
            **self.as_row(), "status": self.status, "line": e.line, "measured": self.measured(),
            "filters": {k: list(v) for k, v in e.filters.items()}, "versus": {k: list(v) for k, v in e.versus.items()},
            "min": e.min, "max": e.max, "threshold": e.threshold, "baseline_runs": self.baseline_runs,
            "parts": None if self.parts is None else list(self.parts), "paired": self.paired,
        }  # fmt: skip

    def __str__(self) -> str:
        return self.line()

    def line(self) -> str:
        """One line for the CLI, e.g. ``unmet: median symbol_exact ≥ 0.999 where … — got 0.41 over 3 runs``."""
        got = "no value" if self.value is None else num(self.value)
        note = f" ({self.expectation.note})" if self.expectation.note else ""
        runs = self.runs if self.baseline_runs is None else f"{self.runs} + {self.baseline_runs}"
        return f"{self.status}: {self.expectation.describe()} — got {got} over {runs} run(s){note}"


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
            x, y = field_value(row, self.x), field_value(row, self.y)
            if x is None or not isinstance(y, float):
                continue
            label = "" if self.group is None else axis_label(field_value(row, self.group))
            raw.append((label, x, y))
        if not all(isinstance(x, float) for _, x, _ in raw):
            raw = [(g, x if isinstance(x, str) else axis_label(x), y) for g, x, y in raw]
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
            out[g] = [(x, aggregate_values(self.aggregate, points[x])) for x in xs]
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
                f"{g + ' ' if g else ''}ρ = {num(rho)} (n = {n})" for g, (rho, n) in self.correlations(series).items()
            ]
            text += "; Spearman " + ", ".join(parts) if parts else ""
        return text


def aggregate_problem(metric: str, aggregate: str, *, versus: bool = False) -> str | None:
    """Why `aggregate` cannot apply to `metric` (None when it can): interval aggregates and `worst` need their
    metrics; a versus row cannot subtract Clopper–Pearson ends."""
    if versus and aggregate.startswith("recovery_"):
        return (f"aggregate {aggregate!r} does not apply with versus (two Clopper–Pearson ends do not subtract); "
                f'bound a difference of rates (aggregate = "rate") or of mean gains (gain_low, gain_high)')  # fmt: skip
    allowed = tuple(METRIC_ESTIMATE) if aggregate == WORST else INTERVALS.get(aggregate, (None,))[0]
    if allowed is None or metric in allowed:
        return None
    return f"aggregate {aggregate!r} applies to {', '.join(allowed)}, not {metric}"


def field_value(row: Mapping[str, Any], spec: str) -> Any:
    """The value of a field spec in a result row: a float for numbers (and one-number lists), a string or list for
    others, None where absent; "a / b" is a float ratio (None when either is missing or b is 0)."""
    if "/" in spec:
        top, bottom = (field_value(row, s.strip()) for s in spec.split("/", 1))
        if isinstance(top, float) and isinstance(bottom, float) and bottom != 0:
            return top / bottom
        return None
    config = row.get("config") or {}
    value = config.get(spec[len("config.") :]) if spec.startswith("config.") else row.get(spec)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    number = as_number(value)
    if number is not None:
        return number
    return value


def axis_label(value: Any) -> str:
    """A value as a legend or category label (1.0 → "1", [32, 16] → "32,16", None → "none")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def as_number(value: Any) -> float | None:
    """A finite number (booleans count as 0/1) as a float, else None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def aggregate_values(name: str, values: Sequence[float]) -> float:
    """median, mean, min or max of a non-empty list (the worst case of a PSNR is its max)."""
    if name == "median":
        return float(statistics.median(values))
    if name == "mean":
        return float(statistics.fmean(values))
    if name == "min":
        return float(min(values))
    return float(max(values))
