"""The results folder of a sweep: results.jsonl (one whole JSON line per finished run), the panels of each run,
a lock so that one sweep at a time writes there, and the summaries built from the rows.

Layout of ``OUT/``: ``results.jsonl`` · ``results.rejected.jsonl`` (lines that were not result rows, moved there once
with their line numbers) · ``runs/<hash>.npz`` (the images of a run, written before its line) · ``sweep.json`` (which
experiment file, by name, path and sha256, the folder was last run with) · ``sweep.lock`` (he_leak.sweep.lock) ·
``summary.csv`` · ``expectations.json`` (the [[expect]] rows evaluated at the end of the last sweep) · ``key_secret``
(the sweep's 256-bit secret, hex, mode 0600, created once: every run's key seed is derived from it and the run's
config id, he_leak.sweep.worker.run_key_seed, so the same folder gives the same keys; it is in no result, summary or
report — keep it private, and delete it to make the folder's keys unrecoverable).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import io
import json
import math
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from he_leak.config import config_id, jsonable, run_hash
from he_leak.errors import ConfigError
from he_leak.records import RESULT_KEYS, Result
from he_leak.seeds import KeySeed
from he_leak.sweep.lock import FolderLock, describe_holder
from he_leak.text import one_line

RESULTS_FILE = "results.jsonl"
REJECTED_FILE = "results.rejected.jsonl"
SUMMARY_FILE = "summary.csv"
META_FILE = "sweep.json"
EXPECTATIONS_FILE = "expectations.json"  # the evaluated [[expect]] rows, machine-readable, beside report.md
KEY_FILE = "key_secret"
RUNS_DIR = "runs"
ROW_KEYS = ("scenario", "attack", "success", "config")  # what makes a JSON object a result row

Warn = Callable[[str], None]
_RESULT_FIELDS = [f.name for f in dataclasses.fields(Result)]


def is_result_row(value: Any) -> bool:
    """A JSON object with the keys every Result row has (a config table, a success flag, scenario and attack)."""
    return (
        isinstance(value, dict) and all(k in value for k in ROW_KEYS) and isinstance(value["config"], dict)
        and isinstance(value["success"], bool)
    )  # fmt: skip


def latest_by_config(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """config id → the last row recorded for it."""
    return {config_id(row["config"]): dict(row) for row in rows if isinstance(row.get("config"), dict)}


# --------------------------------------------------------------------------------------------------------- lines
@contextlib.contextmanager
def _no_interrupt() -> Iterator[None]:
    """Hold Ctrl-C back while a record is written: SIGINT's Python handler is swapped for one that notes it, and the
    original handler runs at the end (a signal mask would not do: any thread may take the signal and Python then
    raises KeyboardInterrupt in the main thread at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[Any] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(signal.SIGINT, caught[0])
        elif caught and previous == signal.SIG_DFL:
            raise KeyboardInterrupt


def append_lines(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append whole JSON lines, one write and one fsync for all of them (an fsync costs milliseconds, as much as a
    cheap run): only a SIGKILL mid-write can leave a partial last line, and reading repairs that."""
    data = b"".join((json.dumps(jsonable(dict(r)), allow_nan=False, ensure_ascii=False) + "\n").encode() for r in rows)
    with _no_interrupt():
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)


def append_line(path: Path, row: Mapping[str, Any]) -> None:
    """Append one whole JSON line (see append_lines)."""
    append_lines(path, [row])


append_result = append_line  # the name used before the pipeline was split


@dataclasses.dataclass(frozen=True)
class Scan:
    """What a results.jsonl holds: its rows, the other lines (with their numbers) and a partial last line."""

    rows: list[dict[str, Any]]
    kept: list[bytes]  # the lines of `rows`, as written
    rejected: list[dict[str, Any]]  # {"line", "reason", "text"} of lines that are not result rows
    partial: bool  # the last line is cut off (a writer killed mid-line)
    dirty: bool  # the file is not exactly `kept`, one per line


def scan_results(path: Path) -> Scan:
    """Read a results.jsonl without changing it (a missing file holds nothing)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Scan([], [], [], partial=False, dirty=False)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the results file ({one_line(e)})") from None
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    rows: list[dict[str, Any]] = []
    kept: list[bytes] = []
    rejected: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        value, reason = _parse(line)
        if value is None:
            rejected.append({"line": number, "reason": reason, "text": line.decode("utf-8", "replace")})
            continue
        rows.append(value)
        kept.append(line)
    partial = False
    if tail.strip():
        value, _ = _parse(tail)
        if value is not None:  # a whole row that only lacks its newline
            rows.append(value)
            kept.append(tail)
        partial = value is None
    dirty = bool(rejected or tail) or len(kept) != len(lines)
    return Scan(rows, kept, rejected, partial, dirty)


def read_results(path: Path, *, repair: bool = False, warn: Warn | None = None) -> list[dict[str, Any]]:
    """The result rows of a results.jsonl (a missing file has none).

    A partial last line (a writer killed mid-line) is left out and, with `repair`, cut off. Other lines that are not
    result rows (unparsable, or JSON that is not a row) are left out; with `repair` they are moved once to
    results.rejected.jsonl with their line numbers (and `warn` says so), so later reads do not meet them again.
    `repair` needs the folder's lock (ResultStore holds it)."""
    scan = scan_results(path)
    if warn and scan.partial:
        warn(f"{path}: dropped a partial last line (an interrupted run); that run will be redone")
    if repair and scan.dirty:
        if scan.rejected:
            _reject(path.with_name(REJECTED_FILE), scan.rejected)
            if warn:
                numbers = [str(r["line"]) for r in scan.rejected]
                lines = ", ".join(numbers[:10]) + (" …" if len(numbers) > 10 else "")
                warn(f"{path}: moved {len(scan.rejected)} line(s) that are not result rows (line {lines}) to "
                     f"{REJECTED_FILE}; their runs, if any, will be redone")  # fmt: skip
        write_atomic(path, b"".join(line + b"\n" for line in scan.kept))
    return scan.rows


def _parse(line: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None, "not valid JSON"
    if not is_result_row(value):
        return None, f"not a result row (needs {', '.join(ROW_KEYS)})"
    return value, ""


def _reject(path: Path, entries: Sequence[dict[str, Any]]) -> None:
    """Append rejected lines to the side file, skipping any already there (a repair interrupted before it ended)."""
    seen = {(e.get("line"), e.get("text")) for e in rejected_lines(path)}
    for entry in entries:
        if (entry["line"], entry["text"]) not in seen:
            append_line(path, entry)


def rejected_lines(path: Path) -> list[dict[str, Any]]:
    """The entries of a results.rejected.jsonl: line number, reason and the original text."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                out.append(entry)
    return out


def save_panels(path: Path, panels: Mapping[str, Any]) -> None:
    """A run's images as float32 arrays in one .npz, written whole (temporary file, then rename)."""
    arrays = {str(k): np.asarray(v, dtype=np.float32) for k, v in panels.items() if v is not None}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write a whole file or nothing: a temporary file, fsynced, then renamed over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


class ResultStore:
    """A results folder opened for writing by one sweep: locked, repaired, then one record per finished run."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.results = self.out / RESULTS_FILE
        self.lock = FolderLock(self.out)
        self.recorded: dict[str, dict[str, Any]] = {}  # config id → row, as in the file
        self.secret: KeySeed | None = None  # the folder's key secret (folder_secret), once open

    def open(self, warn: Warn | None = None) -> dict[str, dict[str, Any]]:
        """Create the folder, take its lock (ConfigError naming the holder when another sweep has it), repair the
        results file and return the recorded rows by config id."""
        try:
            (self.out / RUNS_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"{self.out}: cannot create the output folder ({one_line(e)})") from None
        self.lock.acquire()
        if warn and self.lock.previous:
            warn(f"took over the lock of a sweep that did not finish ({describe_holder(self.lock.previous)}); "
                 f"resuming where it stopped")  # fmt: skip
        self.recorded = latest_by_config(read_results(self.results, repair=True, warn=warn))
        self.secret = folder_secret(self.out)
        return self.recorded

    def record(self, records: Sequence[tuple[Mapping[str, Any], Mapping[str, Any] | None]]) -> None:
        """(row, panels) pairs: the panels first, then the lines (one write), then `recorded`; Ctrl-C waits until
        all of it is done, so the count a sweep reports when interrupted is the count of lines in the file."""
        with _no_interrupt():
            for row, panels in records:
                if panels:
                    save_panels(self.out / RUNS_DIR / f"{run_hash(row['config'])}.npz", panels)
            append_lines(self.results, [row for row, _ in records])
            for row, _ in records:
                self.recorded[config_id(row["config"])] = dict(row)

    def close(self) -> None:
        self.lock.release()


# --------------------------------------------------------------------------------------------------------- key secret
def folder_secret(out: Path) -> KeySeed:
    """The folder's key secret (``key_secret``): read when it exists, else 256 bits of OS randomness written there
    once, readable by its owner only (0600, written whole: a temporary file, then a rename). Call it holding the
    folder's lock."""
    path = Path(out) / KEY_FILE
    if path.exists():
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the sweep's key secret ({one_line(e)}); fix its permissions, or "
                              f"delete it to give the remaining runs new keys") from None  # fmt: skip
        return KeySeed.from_hex(text, source="sweep", what=str(path))
    secret = KeySeed.fresh()
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also when a stale temporary file had other permissions
        os.write(fd, (secret.hex() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return KeySeed(secret.material, source="sweep")


# --------------------------------------------------------------------------------------------------------- metadata
def write_meta(out: Path, *, experiment: Path, digest: str, name: str, runs: int) -> None:
    """Record which experiment file (path and sha256) this folder is being run with, for `he-leak status`."""
    meta = {"experiment": str(Path(experiment).resolve()), "sha256": digest, "name": name, "runs": runs,
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}  # fmt: skip
    write_atomic(Path(out) / META_FILE, json.dumps(meta, indent=2) + "\n")


def read_meta(out: Path) -> dict[str, Any]:
    """The folder's sweep.json ({} when absent or unreadable)."""
    try:
        value = json.loads((Path(out) / META_FILE).read_bytes())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------------------------------------- summary
def summary_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text: RESULT_KEYS, then the other Result fields and extra keys, then config.<field> columns.
    None → empty cell, booleans → true/false, lists and tables → JSON."""
    columns = list(RESULT_KEYS)
    for name in [*_RESULT_FIELDS, *(k for r in rows for k in r)]:
        if name not in columns and name != "config":
            columns.append(name)
    config_columns: list[str] = []
    for row in rows:
        for k in row.get("config") or {}:
            if f"config.{k}" not in config_columns:
                config_columns.append(f"config.{k}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns + config_columns)
    for row in rows:
        config = row.get("config") or {}
        cells = [_cell(row.get(c)) for c in columns] + [_cell(config.get(c[len("config.") :])) for c in config_columns]
        writer.writerow(cells)
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, sort_keys=True)
    return str(value)
