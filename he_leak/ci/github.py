"""GitHub Actions: a markdown block appended to the step summary (``$GITHUB_STEP_SUMMARY``) and workflow commands
(``::error file=…,line=…::…``) that annotate a file's line in the pull request. Escaping as GitHub's runner does:
``%``, CR and LF in a message; also ``:`` and ``,`` in a property."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def active(env: Mapping[str, str] | None = None) -> bool:
    """Inside a GitHub Actions job (or anything that sets its step summary)."""
    env = os.environ if env is None else env
    return env.get("GITHUB_ACTIONS") == "true" or bool(env.get("GITHUB_STEP_SUMMARY"))


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def error(message: str, *, file: str | None = None, line: int | None = None, title: str | None = None) -> str:
    """One ``::error`` command line."""
    props = [f"{k}={_property(str(v))}" for k, v in (("file", file), ("line", line), ("title", title)) if v]
    return f"::error {','.join(props)}::{_data(message)}" if props else f"::error::{_data(message)}"


def repo_path(path: Path, env: Mapping[str, str] | None = None) -> str:
    """A file as an annotation names it: relative to the checkout ($GITHUB_WORKSPACE, else the current folder)."""
    env = os.environ if env is None else env
    root = Path(env.get("GITHUB_WORKSPACE") or os.getcwd()).resolve()
    full = path.resolve()
    return full.relative_to(root).as_posix() if full.is_relative_to(root) else full.as_posix()


def append_summary(markdown: str, env: Mapping[str, str] | None = None) -> bool:
    """Append to the step summary file; False when none is set."""
    env = os.environ if env is None else env
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        return False
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(markdown.rstrip("\n") + "\n\n")
    return True
