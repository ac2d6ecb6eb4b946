"""The versions a Result was computed with, so that a results folder says which code and libraries made each row."""

from __future__ import annotations

import functools
import importlib.metadata
import platform

import numpy as np
import torch

from he_leak import __version__


def versions() -> dict[str, str]:
    """he-leak, python, numpy, torch and tenseal versions (tenseal read from its package metadata, not imported;
    "absent" when it is not installed). The he-leak version is the running package's, not pip's record."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    try:
        tenseal = importlib.metadata.version("tenseal")
    except importlib.metadata.PackageNotFoundError:
        tenseal = "absent"
    return (
        ("he-leak", __version__), ("python", platform.python_version()), ("numpy", np.__version__),
        ("torch", torch.__version__), ("tenseal", tenseal),
    )  # fmt: skip
