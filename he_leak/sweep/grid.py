"""Grid expansion of an experiment file: [fixed] values and [[grid]] tables of lists → RunConfigs (the Cartesian
product of each grid's lists, `paired` lists advancing together; the union of all grids, duplicates removed).
Every problem is a one-line ConfigError naming where it is (he_leak.sweep.experiment documents the file format)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

from he_leak.config import RunConfig
from he_leak.errors import ConfigError
from he_leak.text import one_line, show

_CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_CONFIG_HINTS = typing.get_type_hints(RunConfig)


def build(values: Mapping[str, Any], where: str) -> RunConfig:
    """RunConfig.from_mapping with `where` in every message (including __post_init__ range checks)."""
    try:
        return RunConfig.from_mapping(dict(values), where=where)
    except ConfigError as e:
        message = one_line(e)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None
    except TypeError as e:  # defensive: a value the dataclass itself refuses
        raise ConfigError(f"{where}: {one_line(e)}") from None


def expand(fixed: dict[str, Any], grids: list[dict[str, Any]], where: str) -> list[RunConfig]:
    """The runs of all grids over `fixed`, in a stable order; a run in two grids is kept once (their union), a run
    listed twice by one grid (index = [0, 0]) is refused."""
    runs: dict[str, RunConfig] = {}
    for number, grid in enumerate(grids, start=1):
        here = f"{where} [[grid]] #{number}"
        if not grid:
            raise ConfigError(f"{here} is empty; give lists of values to try (e.g. index = [0, 1]) or remove it")
        paired = _paired(grid, here)
        mine: dict[str, str] = {}  # this grid's runs: a point twice is a mistake (across grids, the union)
        axes = [(k, v) for k, v in _axes(grid, here) if k not in paired]
        if paired:  # the paired lists become one axis of tuples
            axes.append((",".join(paired), list(zip(*(grid[k] for k in paired), strict=True))))
        for combo in itertools.product(*(v for _, v in axes)):
            point: dict[str, Any] = {}
            for (name, _), value in zip(axes, combo, strict=True):
                point.update(zip(paired, value, strict=True) if name == ",".join(paired) else {name: value})
            label = ", ".join(f"{k}={show(v)}" for k, v in point.items())
            cfg = build({**fixed, **point}, f"{here} ({label})" if label else here)
            key = json.dumps(cfg.key(), sort_keys=True)
            if key in mine:
                raise ConfigError(f"{here}: one run is listed more than once ({mine[key]}; {label}); list each "
                                  f"value once")  # fmt: skip
            mine[key] = label
            runs.setdefault(key, cfg)
    return list(runs.values())


def _axes(grid: dict[str, Any], here: str) -> list[tuple[str, list[Any]]]:
    """The grid's (field, values to try) pairs, each checked."""
    axes: list[tuple[str, list[Any]]] = []
    for key, values in grid.items():
        if key == "paired":
            continue
        if key not in _CONFIG_FIELDS:
            raise ConfigError(f"{here}: unknown field {key!r}; grid fields are RunConfig fields: "
                              f"{', '.join(_CONFIG_FIELDS)}")  # fmt: skip
        example = _example(key)
        if not isinstance(values, list):
            raise ConfigError(f"{here}: {key} must be a list of values to try, e.g. {key} = {example}")
        if not values:
            raise ConfigError(f"{here}: {key} is an empty list; give at least one value, e.g. {key} = {example}")
        if is_sequence_field(key) and not all(isinstance(v, list) for v in values):
            raise ConfigError(f"{here}: {key} takes lists, so the grid needs a list of lists, "
                              f"e.g. {key} = {example}")  # fmt: skip
        axes.append((key, values))
    return axes


def _paired(grid: dict[str, Any], here: str) -> list[str]:
    """The grid's `paired` field names (checked: grid lists of one length), or [] without it."""
    names = grid.get("paired", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and isinstance(grid.get(n), list) for n in names):
        raise ConfigError(f'{here}: paired must list fields of this grid, e.g. paired = ["index", "seed"]')
    if len({len(grid[n]) for n in names}) > 1:
        raise ConfigError(f"{here}: the paired lists {', '.join(names)} must have the same length")
    return names


def is_sequence_field(name: str) -> bool:
    hint = _CONFIG_HINTS[name]
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return any(typing.get_origin(o) is tuple for o in options)


def _is_table_field(name: str) -> bool:
    hint = _CONFIG_HINTS[name]
    return hint is dict or typing.get_origin(hint) is dict


def _example(name: str) -> str:
    if is_sequence_field(name):
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
