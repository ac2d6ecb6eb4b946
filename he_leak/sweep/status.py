"""`he-leak status DIR`: what a results folder holds, read without running or changing anything — runs done,
failed and pending (against the experiment file the folder records), rejected lines, who holds its lock, by group."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from he_leak.config import config_id
from he_leak.errors import ConfigError, HeLeakError
from he_leak.sweep.experiment import load_experiment, resolved_encryptor
from he_leak.sweep.lock import lock_holder
from he_leak.sweep.store import (
    EXPECTATIONS_FILE,
    REJECTED_FILE,
    RESULTS_FILE,
    latest_by_config,
    read_meta,
    rejected_lines,
    scan_results,
)
from he_leak.text import one_line

GROUP = ("scenario", "encryptor", "attack")


@dataclass
class Counts:
    done: int = 0
    succeeded: int = 0
    failed: int = 0
    pending: int = 0


@dataclass(frozen=True)
class FolderStatus:
    """A results folder's state. `pending` is None when the experiment file cannot be read (moved, or broken)."""

    out: Path
    experiment: str | None  # the recorded experiment file
    note: str  # about that file: "", "changed since the sweep started", "missing: ..."
    done: int
    succeeded: int
    failed: int
    pending: int | None
    rejected: int  # lines moved to results.rejected.jsonl
    unrepaired: int  # lines in results.jsonl that are not result rows (moved at the next `he-leak run`)
    partial: bool  # results.jsonl ends in a partial line (a killed sweep; cut off at the next run)
    holder: str | None  # the lock holder, None when no sweep runs there
    groups: dict[tuple[str, ...], Counts] = field(default_factory=dict)
    expectations: list[dict[str, Any]] = field(default_factory=list)  # expectations.json's rows (the last sweep's)


def folder_status(out: Path | str) -> FolderStatus:
    """Read-only summary of a results folder (ConfigError when it is not one)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a results folder; give the --out folder of `he-leak run`")
    if not out.is_dir():
        raise ConfigError(f"{out}: no such results folder; give the --out folder of `he-leak run`")
    meta = read_meta(out)
    scan = scan_results(out / RESULTS_FILE)
    if not scan.rows and not meta and not (out / RESULTS_FILE).exists():
        raise ConfigError(f"{out} holds no sweep (no {RESULTS_FILE}); give the --out folder of `he-leak run`")
    recorded = latest_by_config(scan.rows)
    groups: dict[tuple[str, ...], Counts] = {}
    runs, note = _experiment_runs(meta)
    if runs is not None:  # this experiment's rows only; a folder may also hold rows of an earlier version of the file
        ids = [config_id(cfg.key()) for cfg in runs]
        rows = [recorded[k] for k in ids if k in recorded]
        for cfg, key in zip(runs, ids, strict=True):
            if key not in recorded:
                groups.setdefault(_group({"config": cfg.key(), "encryptor": _encryptor(cfg)}), Counts()).pending += 1
    else:
        rows = list(recorded.values())
    for row in rows:
        counts = groups.setdefault(_group(row), Counts())
        counts.done += 1
        counts.succeeded += row.get("success") is True
        counts.failed += bool(row.get("error")) and not row.get("success")
    total = Counts(*(sum(getattr(c, f) for c in groups.values()) for f in ("done", "succeeded", "failed", "pending")))
    return FolderStatus(
        out=out, experiment=meta.get("experiment"), note=note, done=total.done, succeeded=total.succeeded,
        failed=total.failed, pending=None if runs is None else total.pending,
        rejected=len(rejected_lines(out / REJECTED_FILE)), unrepaired=len(scan.rejected), partial=scan.partial,
        holder=lock_holder(out), groups=dict(sorted(groups.items())),
        expectations=read_expectations(out),
    )  # fmt: skip


def _experiment_runs(meta: Mapping[str, Any]) -> tuple[list[Any] | None, str]:
    path = meta.get("experiment")
    if not path:
        return None, "no experiment recorded (no sweep.json); pending unknown"
    try:
        text = Path(path).read_bytes()
        experiment = load_experiment(path, check_names=False)
    except (OSError, HeLeakError) as e:
        return None, f"cannot read it ({one_line(e)}); pending unknown"
    if hashlib.sha256(text).hexdigest() != meta.get("sha256"):
        return list(experiment.runs), "changed since the sweep started; pending is against the file as it is now"
    return list(experiment.runs), ""


def _encryptor(cfg: Any) -> str | None:
    try:
        return resolved_encryptor(cfg)
    except HeLeakError:
        return cfg.encryptor


def _group(row: Mapping[str, Any]) -> tuple[str, ...]:
    config = row.get("config") or {}
    values = [row.get(k, config.get(k)) for k in GROUP]
    return tuple("none" if v in (None, "") else str(v) for v in values)


def read_expectations(out: Path) -> list[dict[str, Any]]:
    """The [[expect]] rows of the folder's expectations.json, as the last sweep evaluated them ([] when absent or
    unreadable: status never fails on it)."""
    try:
        rows = json.loads((out / EXPECTATIONS_FILE).read_text()).get("expectations")
    except (OSError, ValueError, AttributeError):
        return []
    return [e for e in rows if isinstance(e, dict)] if isinstance(rows, list) else []


def format_status(status: FolderStatus) -> str:
    """The text `he-leak status` prints."""
    lines = [f"results folder {status.out}"]
    lines.append(f"experiment: {status.experiment or '—'}" + (f" ({status.note})" if status.note else ""))
    pending = "unknown" if status.pending is None else str(status.pending)
    lines.append(f"runs: {status.done} done ({status.succeeded} succeeded, {status.failed} failed), {pending} pending")
    if status.rejected or status.unrepaired or status.partial:
        extra = [f"{status.rejected} line(s) in {REJECTED_FILE}"]
        if status.unrepaired:
            extra.append(f"{status.unrepaired} non-result line(s) still in {RESULTS_FILE} (moved at the next run)")
        if status.partial:
            extra.append("a partial last line (cut off at the next run)")
        lines.append("rejected: " + "; ".join(extra))
    lines.append(f"lock: held by {status.holder}" if status.holder else "lock: free (no sweep running)")
    if status.expectations:
        met = sum(e.get("status") == "met" for e in status.expectations)
        unmet = sum(e.get("status") == "unmet" for e in status.expectations)
        lines.append(f"expectations: {met} met, {unmet} unmet, {len(status.expectations) - met - unmet} pending "
                     f"(at the end of the last sweep)")  # fmt: skip
        lines += [f"  - {e.get('status')}: {e.get('expect')} — {e.get('measured')}" for e in status.expectations]
    if status.groups:
        header = "scenario · encryptor · attack"
        width = max(len(header), *(len(" · ".join(g)) for g in status.groups))
        lines.append(f"{header:<{width}}  done    ok  fail  pending")
        for group, c in status.groups.items():
            lines.append(f"{' · '.join(group):<{width}}  {c.done:4d}  {c.succeeded:4d}  {c.failed:4d}  {c.pending:7d}")
    return "\n".join(lines)
