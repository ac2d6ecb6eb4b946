"""Small text and number helpers shared by the experiment pipeline and the reports: one-line error messages, short
numbers, run names, finite medians."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from he_leak.config import RunConfig


def one_line(error: BaseException | str) -> str:
    """An error (or text) as one line: the CLI prints exactly one line per problem."""
    return " ".join(str(error).split())


def num(value: float | None) -> str:
    """A number in 4 significant digits, or an em dash for None."""
    return "—" if value is None else f"{value:.4g}"


def finite(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def median_of(values: Iterable[Any]) -> float | None:
    """The median of the finite numbers among `values` (None when there is none)."""
    numbers = [float(v) for v in values if finite(v)]
    return float(statistics.median(numbers)) if numbers else None


def fixed(value: float | None, digits: int = 1, *, sign: bool = False) -> str:
    """`value` with `digits` decimals (a sign when `sign`; never "-0.0"), or an em dash for None."""
    if value is None:
        return "—"
    value = round(value, digits) + 0.0
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def encryptor_name(value: Any) -> str:
    """An encryptor as a table shows it: "none" for no encryption."""
    return "none" if value in (None, "", "none") else str(value)


def show(value: Any) -> str:
    """A config value as written in an experiment file (lists and tables as JSON)."""
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


@functools.lru_cache(maxsize=4)
def _default_key(kind: type) -> dict:
    """The key of a RunConfig left at its defaults (once per process; describe_run runs per finished run)."""
    return kind().key()


def describe_run(cfg: RunConfig, varying: Iterable[str] = ()) -> str:
    """e.g. ``plain · dlg · lenet · digits #0 · seed 0`` plus the other fields that vary across the experiment and
    that this run sets away from their default (a LeNet run of a grid that also varies the MLP's width shows none)."""
    text = f"{cfg.scenario} · {cfg.attack} · {cfg.model} · {cfg.data} #{cfg.index} · seed {cfg.seed}"
    key, default = cfg.key(), _default_key(type(cfg))
    shown = {"scenario", "attack", "model", "data", "index", "seed"}
    extra = [f"{k}={show(key[k])}" for k in varying if k not in shown and key[k] != default.get(k)]
    return text + (" · " + " ".join(extra) if extra else "")


def varying_fields(runs: Sequence[RunConfig]) -> list[str]:
    """The RunConfig fields whose value differs between runs (shown in progress lines)."""
    keys = [cfg.key() for cfg in runs]
    names = [f.name for f in dataclasses.fields(RunConfig)]
    return [k for k in names if len({json.dumps(key[k], sort_keys=True) for key in keys}) > 1]
