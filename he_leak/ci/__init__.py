"""he-leak in a user's CI: JUnit XML and GitHub step summaries / annotations for `he-leak run --check`, the regression
gate `he-leak diff`, and the pytest plugin (he_leak.ci.plugin, entry point ``pytest11``) with its `leakage` helper.

Imports here are deferred: pytest loads the plugin in every session of an environment where he-leak is installed,
so importing this package must not pull in torch or the report code::

    from he_leak.ci import leakage

    assert leakage(scenario="he-aggregate", role="server", samples=20).gain_db <= 1.0
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_PUBLIC = {"leakage": "he_leak.ci.measure", "Leakage": "he_leak.ci.measure", "diff_folders": "he_leak.ci.diff"}
__all__ = ["Leakage", "diff_folders", "leakage"]

if TYPE_CHECKING:
    from he_leak.ci.diff import diff_folders
    from he_leak.ci.measure import Leakage, leakage


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'he_leak.ci' has no attribute {name!r}")
