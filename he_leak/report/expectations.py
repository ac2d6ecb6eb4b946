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
    mean_interval,
    recovery_interval,
    sample_count,
    sample_gains,
)
from he_leak.text import num, show

# Interval aggregates (he_leak.report.stats): the ends of the Clopper–Pearson interval of a recovery rate — k = the sum
# of a count metric (recovered, keyless_recovered) over the selected runs that have it, n = the samples those runs
# scored — and the ends of the bootstrap interval of the mean per-sample gain over the prior of the estimate behind a
# metric (plaintext_psnr or keyless_gain: the keyless estimate; key_plaintext_psnr: the key holder's).
INTERVALS = {"recovery_low": (COUNT_METRICS, 0), "recovery_high": (COUNT_METRICS, 1),
             "gain_low": (tuple(METRIC_ESTIMATE), 0), "gain_high": (tuple(METRIC_ESTIMATE), 1)}  # fmt: skip
AGGREGATES = ("median", "mean", "min", "max", "rate", *INTERVALS)
PLOT_KINDS = ("line", "scatter")
PLOT_AGGREGATES = ("median", "mean")


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
        level = f"{100 * CONFIDENCE:g}%"
        if self.aggregate.startswith("recovery_"):
            end = "lower" if self.aggregate.endswith("low") else "upper"
            what = f"{level} Clopper–Pearson {end} bound of the rate of {self.metric}"
        elif self.aggregate.startswith("gain_"):
            end = "lower" if self.aggregate.endswith("low") else "upper"
            what = f"{end} end of the {level} bootstrap interval of the mean per-sample gain ({self.metric})"
        elif self.aggregate == "rate" and self.threshold is not None:
            what = f"rate of {self.metric} ≥ {num(self.threshold)}"
        elif self.aggregate == "rate":
            what = f"rate of {self.metric}"
        where = ", ".join(f"{k}={'|'.join(show(v) for v in vs)}" for k, vs in self.filters.items())
        return f"{what} {self.bound()}" + (f" where {where}" if where else " (all runs)")

    def bound(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"≥ {num(self.min)}")
        if self.max is not None:
            parts.append(f"≤ {num(self.max)}")
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
        elif self.aggregate in INTERVALS:
            value = self._interval_end(chosen)
        else:
            values = [v for v in (as_number(r.get(self.metric)) for r in chosen) if v is not None]
            value = aggregate_values(self.aggregate, values) if values else None
        if value is None:
            met = False if strict else None
        else:
            met = (self.min is None or value >= self.min) and (self.max is None or value <= self.max)
        return ExpectationResult(self, value, len(chosen), met)

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
        got = "no value" if self.value is None else num(self.value)
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


def aggregate_problem(metric: str, aggregate: str) -> str | None:
    """Why `aggregate` cannot apply to `metric` (None when it can): interval aggregates need their metrics."""
    if aggregate not in INTERVALS or metric in INTERVALS[aggregate][0]:
        return None
    return f"aggregate {aggregate!r} applies to {', '.join(INTERVALS[aggregate][0])}, not {metric}"


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
