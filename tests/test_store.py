"""The results folder (he_leak.sweep.store): whole lines, repair of a killed writer's partial line, lines that are not
results moved once to a side file, the folder lock (refused while held, taken over from a dead holder), run ids,
summary.csv, and `he-leak status` (he_leak.sweep.status), which reads all of it without changing anything."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stubs import BASIC, CountingRunner, write

from he_leak.config import RunConfig, config_id, run_hash
from he_leak.errors import ConfigError
from he_leak.records import RESULT_KEYS, Result
from he_leak.sweep.driver import run_experiment
from he_leak.sweep.lock import LOCK_FILE, FolderLock, lock_holder
from he_leak.sweep.status import folder_status, format_status
from he_leak.sweep.store import (
    REJECTED_FILE,
    RESULTS_FILE,
    append_line,
    read_results,
    rejected_lines,
    summary_csv,
)


def row(index: int, **extra) -> dict:
    cfg = RunConfig(attack="dlg", index=index)
    result = Result("plain", None, "lenet", "dlg", "digits", index, 0, 1, "cpu", success=index % 2 == 0,
                    config=cfg.key())  # fmt: skip
    return {**result.to_dict(), **extra}


def test_append_and_read_round_trip(tmp_path: Path) -> None:
    path = tmp_path / RESULTS_FILE
    for i in range(3):
        append_line(path, row(i, extra_key={"future": [1, 2]}))  # keys a newer version adds are kept
    data = path.read_bytes()
    assert data.count(b"\n") == 3 and data.endswith(b"\n")
    rows = read_results(path)
    assert [r["index"] for r in rows] == [0, 1, 2] and rows[0]["extra_key"] == {"future": [1, 2]}


def test_partial_last_line_is_cut_once(tmp_path: Path) -> None:
    path = tmp_path / RESULTS_FILE
    for i in range(3):
        append_line(path, row(i))
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"scenario": "pla')  # a writer killed mid-line
    warnings: list[str] = []
    assert len(read_results(path, repair=True, warn=warnings.append)) == 3
    assert path.read_bytes() == whole and len(warnings) == 1 and "partial last line" in warnings[0]
    warnings.clear()
    read_results(path, repair=True, warn=warnings.append)
    assert warnings == []


def test_foreign_and_corrupt_lines_are_moved_once_with_their_numbers(tmp_path: Path) -> None:
    path = tmp_path / RESULTS_FILE
    append_line(path, row(0))
    with open(path, "ab") as f:
        f.write(b"not json at all\n")
        f.write(b'{"hello": "a JSON object, not a result"}\n')
        f.write(b"[1, 2, 3]\n")
        f.write(b"\xff\xfe garbage\n")
    append_line(path, row(1))
    warnings: list[str] = []
    rows = read_results(path, repair=True, warn=warnings.append)
    assert [r["index"] for r in rows] == [0, 1]
    assert len(warnings) == 1 and "moved 4 line(s)" in warnings[0] and "line 2, 3, 4, 5" in warnings[0]
    moved = rejected_lines(tmp_path / REJECTED_FILE)
    assert [m["line"] for m in moved] == [2, 3, 4, 5]
    assert moved[0]["text"] == "not json at all" and "not a result row" in moved[1]["reason"]
    assert [json.loads(line)["index"] for line in path.read_text().splitlines()] == [0, 1]
    warnings.clear()
    assert len(read_results(path, repair=True, warn=warnings.append)) == 2 and warnings == []  # reported once
    assert len(rejected_lines(tmp_path / REJECTED_FILE)) == 4


def test_an_interrupted_repair_does_not_duplicate_side_entries(tmp_path: Path) -> None:
    path = tmp_path / RESULTS_FILE
    append_line(path, row(0))
    with open(path, "ab") as f:
        f.write(b"junk\n")
    original = path.read_bytes()
    read_results(path, repair=True)
    path.write_bytes(original)  # as if killed after writing the side file, before rewriting results.jsonl
    read_results(path, repair=True)
    assert len(rejected_lines(tmp_path / REJECTED_FILE)) == 1


def test_read_without_repair_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / RESULTS_FILE
    append_line(path, row(0))
    with open(path, "ab") as f:
        f.write(b'junk\n{"partial')
    before = path.read_bytes()
    assert len(read_results(path)) == 1
    assert path.read_bytes() == before and not (tmp_path / REJECTED_FILE).exists()


def test_config_id_fills_fields_older_rows_lack() -> None:
    key = RunConfig(index=3).key()
    older = {k: v for k, v in key.items() if k not in ("layout", "normalize", "utility")}
    assert config_id(older) == config_id(key) and run_hash(older) == run_hash(key)
    assert config_id({**key, "index": 4}) != config_id(key)


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    first = FolderLock(tmp_path).acquire()
    try:
        with pytest.raises(ConfigError) as info:
            FolderLock(tmp_path).acquire()  # a second open file: flock refuses it even in the same process
        message = str(info.value)
        assert f"pid {os.getpid()}" in message and "in use by another he-leak run" in message and "\n" not in message
        assert f"pid {os.getpid()}" in (lock_holder(tmp_path) or "")
    finally:
        first.release()
    assert lock_holder(tmp_path) is None
    with FolderLock(tmp_path) as again:
        assert again.previous == {}  # released cleanly: nothing to take over


def test_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    code = ("import sys, time; from he_leak.sweep.lock import FolderLock; FolderLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(60)")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert f"pid {holder.pid}" in (lock_holder(tmp_path) or "")
        with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
            FolderLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = FolderLock(tmp_path).acquire()
    assert lock.previous["pid"] == holder.pid  # the dead holder's record, reported by the sweep as taken over
    lock.release()
    assert (tmp_path / LOCK_FILE).read_bytes() == b""


def test_summary_csv_extra_keys() -> None:
    value = dataclasses.asdict(Result("plain", None, "mlp", "dlg", "digits", 0, 0, 1, "cpu", config={"hidden": [4]}))
    value["mean_psnr"] = 12.5
    value["brand_new_key"] = True
    text = summary_csv([value])
    header = text.splitlines()[0].split(",")
    assert header[: len(RESULT_KEYS)] == list(RESULT_KEYS)
    assert "mean_psnr" in header and "brand_new_key" in header and header[-1] == "config.hidden"


# --------------------------------------------------------------------------------------------------------- status
@pytest.mark.usefixtures("stub_attacks")
def test_status_counts_groups_pending_rejected_and_lock(tmp_path: Path) -> None:
    path, out = write(tmp_path, BASIC), tmp_path / "out"
    run_experiment(path, out, runner=CountingRunner(fail_on=1), limit=5)
    with open(out / RESULTS_FILE, "ab") as f:
        f.write(b"junk\n")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    status = folder_status(out)
    assert (status.done, status.failed, status.pending) == (5, 2, 2)
    assert status.unrepaired == 1 and status.rejected == 0 and status.holder is None and status.note == ""
    assert dataclasses.astuple(status.groups[("plain", "none", "stub-half")]) == (3, 1, 1, 1)  # done ok fail pending
    assert dataclasses.astuple(status.groups[("plain", "none", "stub-other")]) == (2, 0, 1, 1)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # read only
    text = format_status(status)
    assert "5 done (" in text and "2 failed), 2 pending" in text and "lock: free" in text
    assert "plain · none · stub-other" in text

    run_experiment(path, out, runner=CountingRunner(), limit=0)  # repairs: the junk line is moved
    with FolderLock(out):
        status = folder_status(out)
        assert status.rejected == 1 and status.unrepaired == 0 and f"pid {os.getpid()}" in status.holder
    path.write_text(BASIC + '\n[[grid]]\nattack = ["stub-half"]\nindex = [7]\n')
    time.sleep(0.01)
    status = folder_status(out)
    assert status.pending == 3 and "changed since the sweep started" in status.note


def test_status_of_a_folder_that_is_not_a_sweep(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such results folder"):
        folder_status(tmp_path / "missing")
    with pytest.raises(ConfigError, match="holds no sweep"):
        folder_status(tmp_path)
