"""The regression gate: two results folders compared cell by cell — did a change (to the model, the encryption
parameters, a defence) make any attacker's recovery better beyond noise?

Cells. A cell is one configuration and one attacker (he_leak.report.protection.attackers); its samples are the runs
that differ only in ``index``, ``seed`` (and ``utility``, the extra run that also trains). The fields that vary
inside either folder tell cells apart, and cells with equal values are matched; a field that is constant in each
folder but differs between them is *the change under test* (e.g. ``noise 0.001 → 0``) and is printed, not matched.

Statistic. Per sample, the gain of the attacker's estimate over its prior (dB), as the verdicts use it; a run without
an estimate counts as a gain of 0 for each of its samples (the attacker keeps its prior), so "nothing in the clear"
turning into a leak is a change like any other. A cell is **more leaky** when the bootstrap interval of the
difference of its mean gains (new − base) lies wholly above ``tolerance`` dB, **less leaky** when wholly below
−tolerance, otherwise unchanged. The interval is of the difference itself — paired by sample when both cells hold
the same samples (same images and seeds: the per-image spread, which dominates, cancels), else two independent
groups resampled — not a test of non-overlapping per-cell intervals, which needs a far larger change to fire (two
95% intervals can overlap while the difference is significant at 99%). The level is 95% for the whole comparison:
each of the m compared cells gets 1 − 0.05/m (Bonferroni), so rerunning an unchanged grid with a new secret fails
the gate with probability at most ~5%, however many cells it has. A cell with fewer than two samples on a side has no
interval; it is judged by its point difference against the tolerance alone, and says so.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from he_leak.ci.junit import Case
from he_leak.errors import ConfigError
from he_leak.report.protection import STOP_MARGIN_DB, attackers, protection
from he_leak.report.stats import CONFIDENCE, align, difference_interval, keyed_gains, sample_count
from he_leak.sweep.store import RESULTS_FILE, latest_by_config, read_meta, read_results
from he_leak.text import finite, fixed

SAMPLE_FIELDS = ("index", "seed", "utility")  # a run's sample, not its configuration
MORE, LESS, SAME = "more leaky", "less leaky", "unchanged"
Row = Mapping[str, Any]


@dataclass(frozen=True)
class CellDiff:
    """One matched cell: both sides' mean gains, the difference and its interval, the verdict."""

    name: str
    status: str  # MORE, LESS or SAME
    base_gain: float
    new_gain: float
    difference: float
    interval: tuple[float, float] | None  # None: fewer than two samples on a side
    paired: bool
    samples: tuple[int, int]  # base, new
    recovered: tuple[int | None, int | None]  # base, new (None: the rows count none)

    def line(self) -> str:
        """e.g. ``more leaky  plain — sees the gradient: gain +30.8 → +185.9 dB, …``."""
        ci = "no interval (fewer than 2 samples): tolerance only" if self.interval is None else (
            f"[{fixed(self.interval[0], sign=True)}, {fixed(self.interval[1], sign=True)}]")  # fmt: skip
        how = "paired by sample" if self.paired else "independent samples"
        k = [("—" if r is None else str(r)) + f"/{n}" for r, n in zip(self.recovered, self.samples, strict=True)]
        return (f"{self.status:<11} {self.name}: mean gain {fixed(self.base_gain, sign=True)} → "
                f"{fixed(self.new_gain, sign=True)} dB, difference {fixed(self.difference, sign=True)} dB {ci} "
                f"({how}); recovered {k[0]} → {k[1]}")  # fmt: skip


@dataclass(frozen=True)
class Diff:
    """Two folders compared: what changed between them, the matched cells, the cells only one side has."""

    base: Path
    new: Path
    changed: tuple[str, ...]  # "noise 0.001 → 0"
    cells: tuple[CellDiff, ...]
    only_base: tuple[str, ...]
    only_new: tuple[str, ...]
    tolerance: float
    level: float  # the per-cell confidence level (Bonferroni)
    runs: tuple[int, int]
    name: str = ""  # the new folder's experiment name (sweep.json), else the folder's name

    @property
    def regressions(self) -> tuple[CellDiff, ...]:
        return tuple(c for c in self.cells if c.status == MORE)

    def lines(self) -> list[str]:
        """What `he-leak diff` prints."""
        out = [f"he-leak diff: {self.base} ({self.runs[0]} runs) → {self.new} ({self.runs[1]} runs)"]
        if self.changed:
            out.append("changed between the folders: " + "; ".join(self.changed))
        out.append(f"{len(self.cells)} cell(s) matched; more (less) leaky: the {100 * self.level:.4g}% bootstrap "
                   f"interval of the difference of mean per-sample gain over the prior (new − base) lies above "
                   f"+{self.tolerance:g} dB (below −{self.tolerance:g} dB); {100 * self.level:.4g}% per cell is "
                   f"{100 * CONFIDENCE:g}% over all {len(self.cells)} (Bonferroni)")  # fmt: skip
        out += [c.line() for c in self.cells]
        out += [f"only in base (not compared): {n}" for n in self.only_base]
        out += [f"only in new (not compared): {n}" for n in self.only_new]
        bad = self.regressions
        out.append(f"{len(bad)} cell(s) more leaky: " + "; ".join(c.name for c in bad) if bad
                   else "no cell more leaky beyond noise")  # fmt: skip
        return out


def load_rows(folder: Path) -> list[dict[str, Any]]:
    """The latest row per run of a results folder (or a results.jsonl); a one-line error when there is none."""
    path = folder / RESULTS_FILE if folder.is_dir() else folder
    if not path.is_file():
        raise ConfigError(f"{folder}: no {RESULTS_FILE}; give the --out folder of `he-leak run` (or its results file)")
    rows = list(latest_by_config(read_results(path)).values())
    if not rows:
        raise ConfigError(f"{path} holds no result rows; run the experiment into it first")
    return rows


def _varying(rows: Iterable[Row]) -> set[str]:
    values: dict[str, set[str]] = {}
    for row in rows:
        for name, value in (row.get("config") or {}).items():
            values.setdefault(name, set()).add(json.dumps(value, sort_keys=True))
    return {name for name, seen in values.items() if len(seen) > 1}


def _cells(rows: Sequence[Row], fields: Sequence[str]) -> dict[tuple[Any, ...], list[Row]]:
    cells: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        cfg = row.get("config") or {}
        key = tuple(json.dumps(cfg.get(f), sort_keys=True) for f in fields)
        for who in attackers(row):
            cells.setdefault((*key, who), []).append(row)
    return cells


def _changed(base: Sequence[Row], new: Sequence[Row], skip: set[str]) -> tuple[str, ...]:
    """Fields constant in each folder whose value differs between them."""
    out = []
    names = sorted({k for r in (*base[:1], *new[:1]) for k in (r.get("config") or {})} - skip)
    for name in names:
        old, now = ((r.get("config") or {}).get(name) for r in (base[0], new[0]))
        if json.dumps(old, sort_keys=True) != json.dumps(now, sort_keys=True):
            out.append(f"{name} {_show(old)} → {_show(now)}")
    return tuple(out)


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict) or value is None else f"{value:g}" if isinstance(
        value, float) else str(value)  # fmt: skip


def _name(key: tuple[Any, ...], fields: Sequence[str], base: Row, new: Row) -> str:
    before, after = protection(base), protection(new)
    shown = after if before == after else f"{before} → {after}"
    extra = [f"{f}={_show(json.loads(v))}" for f, v in zip(fields, key, strict=False) if f not in _IN_NAME]
    return f"{shown} — {key[-1]}" + (f" ({', '.join(extra)})" if extra else "")


_IN_NAME = {"scenario", "encryptor", "clients", "role", "encrypt_fraction", "select", "encrypt_layers", "clip",
            "prune", "noise"}  # fmt: skip


def _side(rows: Sequence[Row], who: str) -> tuple[list[tuple[tuple[Any, ...], float]], int, int | None]:
    """(keyed per-sample gains, samples, recovered) of one attacker over one cell's rows."""
    estimate, count = attackers(rows[0])[who]
    gains = [g for r in rows for g in keyed_gains(r, estimate, failed_as_prior=True)]
    counted = [int(r[count]) for r in rows if finite(r.get(count))]
    return gains, sum(sample_count(r) for r in rows), sum(counted) if counted else None


def _compare(name: str, base: Sequence[Row], new: Sequence[Row], who: str, tolerance: float,
             level: float) -> CellDiff:  # fmt: skip
    (old, n_old, k_old), (now, n_new, k_new) = _side(base, who), _side(new, who)
    a, b, paired = align(now, old)
    interval = difference_interval(a, b, paired=paired, confidence=level)
    difference = statistics.fmean(a) - statistics.fmean(b)
    low, high = interval if interval is not None else (difference, difference)
    status = MORE if low > tolerance else LESS if high < -tolerance else SAME
    return CellDiff(name=name, status=status, base_gain=statistics.fmean(b), new_gain=statistics.fmean(a),
                    difference=difference, interval=interval, paired=paired, samples=(n_old, n_new),
                    recovered=(k_old, k_new))  # fmt: skip


def diff_folders(base: Path | str, new: Path | str, *, tolerance: float = STOP_MARGIN_DB) -> Diff:
    """Compare two results folders (see the module docstring); a one-line ConfigError for bad input."""
    base, new = Path(base), Path(new)
    if not (tolerance >= 0 and tolerance < float("inf")):
        raise ConfigError(f"--tolerance-db must be a finite number of dB >= 0, got {tolerance}")
    rows_base, rows_new = load_rows(base), load_rows(new)
    fields = sorted((_varying(rows_base) | _varying(rows_new)) - set(SAMPLE_FIELDS))
    cells_base, cells_new = _cells(rows_base, fields), _cells(rows_new, fields)
    matched = [k for k in cells_base if k in cells_new]
    if not matched:
        raise ConfigError(f"no cell of {base} matches one of {new}: the folders vary different fields "
                          f"({', '.join(fields) or 'none'}); compare runs of the same grid")  # fmt: skip
    level = 1 - (1 - CONFIDENCE) / len(matched)
    cells = []
    for key in matched:
        old, now = cells_base[key], cells_new[key]
        cells.append(_compare(_name(key, fields, old[0], now[0]), old, now, key[-1], tolerance, level))
    meta = read_meta(new) if new.is_dir() else {}
    return Diff(
        base=base, new=new, changed=_changed(rows_base, rows_new, set(fields) | set(SAMPLE_FIELDS)),
        cells=tuple(cells), only_base=tuple(_name(k, fields, v[0], v[0]) for k, v in cells_base.items()
                                            if k not in cells_new),
        only_new=tuple(_name(k, fields, v[0], v[0]) for k, v in cells_new.items() if k not in cells_base),
        tolerance=tolerance, level=level, runs=(len(rows_base), len(rows_new)),
        name=str(meta.get("name") or new.name),
    )  # fmt: skip


def diff_cases(diff: Diff) -> list[Case]:
    """JUnit test cases: one per matched cell (a failure when more leaky), a skipped one per unmatched cell."""
    cases = [Case(name=c.name, classname=f"{diff.name} (he-leak diff)", output=c.line(),
                  failure=c.line() if c.status == MORE else None,
                  details=f"{c.line()}\nbase: {diff.base}\nnew: {diff.new}\n" + "; ".join(diff.changed))
             for c in diff.cells]  # fmt: skip
    for side, names in (("base", diff.only_base), ("new", diff.only_new)):
        cases += [Case(name=n, classname=f"{diff.name} (he-leak diff)", skipped=f"only in {side}: not compared")
                  for n in names]  # fmt: skip
    return cases
