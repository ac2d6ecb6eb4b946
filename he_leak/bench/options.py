"""The options of `he-leak bench` (and `python -m he_leak.bench.run`): the parser, their defaults and their checks.

Every option is checked before anything loads or runs: counts at least 1, `--x-tol` a finite number >= 0 (a NaN
would reach the JSON report as the invalid literal NaN), `--methods` a non-empty list of known names, `--batched` 0
or at least 2 runs. An option none of the chosen methods uses is refused, as in `he-leak attack` (he_leak.options):
`--steps` and `--x-tol` by the L-BFGS methods only, `--batched-method` and `--rounds` with `--batched` only."""

from __future__ import annotations

import argparse
import math
from typing import Any

from he_leak.attacks.optim.lbfgs_match import DEFAULT_X_TOL
from he_leak.bench.methods import METHODS
from he_leak.errors import ConfigError

BATCHED_METHODS = ("dlg", "idlg", "ig")
DEFAULTS: dict[str, Any] = {
    "pairs": 10, "steps": 300, "classes": 100, "data": "photos", "device": "all",
    "methods": "original,dlg,idlg,ig,analytic", "x_tol": DEFAULT_X_TOL, "batched": 0, "batched_method": "dlg",
    "rounds": 1, "threads": None,
}  # fmt: skip
STEPPED = ("original", "dlg", "idlg", "dlg-f32")  # the methods a step budget and the x_tol stop apply to
STOPPED = ("dlg", "idlg", "dlg-f32")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The bench's options; left out, each takes its value from DEFAULTS (so that given ones can be checked)."""
    d = DEFAULTS
    ap.add_argument("--pairs", type=int, help=f"number of (image, seed) pairs (default {d['pairs']})")
    ap.add_argument("--steps", type=int, help=f"step budget (LBFGS.step calls) per run (default {d['steps']})")
    ap.add_argument("--classes", type=int, help="classes of the LeNet (default 100, as the DLG paper)")
    ap.add_argument("--data", help="dataset of the pairs (default photos: 32×32 RGB crops)")
    ap.add_argument("--device", choices=("all", "auto", "cpu", "cuda"),
                    help="all (default): CPU, and CUDA when present")
    ap.add_argument("--methods", help=f"comma-separated bench methods (default {d['methods']})")
    ap.add_argument("--x-tol", type=float, dest="x_tol",
                    help=f"dlg/idlg attacker-side stop, >= 0 (default {DEFAULT_X_TOL:g}; 0: to the loss tolerance)")
    ap.add_argument("--batched", type=int, help="also time K >= 2 runs batched against one by one (default 0: no)")
    ap.add_argument("--batched-method", choices=BATCHED_METHODS, dest="batched_method",
                    help="the attack --batched times (default dlg)")
    ap.add_argument("--rounds", type=int, help="alternations of the batched comparison (default 1)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, all cores)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")


def method_names(text: str) -> tuple[str, ...]:
    """`--methods` as names, each known (an empty entry, e.g. "," or "dlg,,ig", is refused)."""
    names = tuple(m.strip() for m in text.split(","))
    if not all(names):
        raise ConfigError(f"--methods {text!r}: give comma-separated method names, e.g. dlg,idlg; known: "
                          f"{', '.join(sorted(METHODS))}")  # fmt: skip
    for name in names:
        METHODS[name]  # unknown names: ConfigError listing the known ones
    return names


def check_ranges(*, pairs: int, steps: int, classes: int, x_tol: float, batched: int, rounds: int,
                 threads: int | None) -> None:  # fmt: skip
    """The numeric options' ranges (ConfigError naming the option)."""
    if pairs < 1 or steps < 1:
        raise ConfigError(f"--pairs {pairs} --steps {steps}: both must be at least 1")
    if classes < 2:
        raise ConfigError(f"--classes {classes}: a classifier needs at least 2 classes")
    if not (math.isfinite(x_tol) and x_tol >= 0):
        raise ConfigError(f"--x-tol {x_tol}: give a finite number >= 0 (0: run to the loss tolerance)")
    if batched < 0 or batched == 1:
        raise ConfigError(f"--batched {batched}: give 0 (no batched comparison) or at least 2 runs")
    if rounds < 1:
        raise ConfigError(f"--rounds {rounds}: give at least 1 alternation")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads}: give at least 1 (or leave it out for torch's default)")


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """The bench's keyword arguments from parsed options: defaults filled in, every value checked, and every given
    option one of the chosen methods uses (ConfigError naming it otherwise)."""
    given = {k for k in DEFAULTS if getattr(args, k, None) is not None}
    values = {k: getattr(args, k) if k in given else v for k, v in DEFAULTS.items()}
    values["methods"] = method_names(values["methods"])
    check_ranges(**{k: values[k] for k in ("pairs", "steps", "classes", "x_tol", "batched", "rounds", "threads")})
    batched = values["batched"] > 1
    stepped = set(values["methods"]) & set(STEPPED) or (batched and values["batched_method"] != "ig")
    stopped = set(values["methods"]) & set(STOPPED) or (batched and values["batched_method"] != "ig")
    unused = {"steps": not stepped, "x_tol": not stopped, "batched_method": not batched, "rounds": not batched}
    for name, is_unused in unused.items():
        if name in given and is_unused:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} does not apply to --methods {','.join(values['methods'])}"
                              f"{'' if batched else ' without --batched'}; drop it")  # fmt: skip
    return values
