"""he-leak: can gradient inversion recover homomorphically encrypted training data — and recover what, for whom?

The public API, imported on first use (so that `import he_leak` and the CLI start fast)::

    from he_leak import RunConfig, Result, run_one, run_experiment

    result = run_one(RunConfig(scenario="plain", attack="analytic", model="mlp", data="digits"))
    report = run_experiment("experiments/ci_expect.toml", "results/ci", engine="local", workers=2)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "RunConfig": "he_leak.config",
    "Result": "he_leak.records",
    "run_one": "he_leak.runner",
    "run_outcome": "he_leak.runner",
    "run_experiment": "he_leak.sweep.driver",
}
__all__ = ["RunConfig", "Result", "__version__", "run_experiment", "run_one", "run_outcome"]

if TYPE_CHECKING:
    from he_leak.config import RunConfig
    from he_leak.records import Result
    from he_leak.runner import run_one, run_outcome
    from he_leak.sweep.driver import run_experiment


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'he_leak' has no attribute {name!r}")
