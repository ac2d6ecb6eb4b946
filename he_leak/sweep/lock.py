"""One sweep at a time per results folder: an flock on OUT/sweep.lock, which the kernel releases however its holder
exits (so the lock of a killed sweep is simply taken over by the next one). The file names the holder (pid, host,
start time) for the one-line refusal a second sweep gets. (flock does not reach across NFS hosts.)"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from he_leak.errors import ConfigError

LOCK_FILE = "sweep.lock"


class FolderLock:
    """One sweep at a time per results folder: an flock on OUT/sweep.lock, which the kernel releases when its
    holder exits in any way (so the lock of a killed sweep is taken over by the next one). The file names the
    holder (pid, host, start time) for the message a second sweep gets."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK_FILE
        self.fd: int | None = None
        self.previous: dict[str, Any] = {}  # the holder recorded by a sweep that did not release (was killed)

    def acquire(self) -> FolderLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = describe_holder(read_holder(self.path))
            raise ConfigError(f"{self.path.parent} is in use by another he-leak run ({holder}); wait for it to "
                              f"finish or give another --out") from None  # fmt: skip
        self.previous = _holder(os.pread(fd, 4096, 0))
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # an empty file: released cleanly
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(path: Path) -> dict[str, Any]:
    """The holder recorded in a lock file ({} when none: released cleanly, or not written yet)."""
    try:
        return _holder(Path(path).read_bytes())
    except OSError:
        return {}


def describe_holder(info: Mapping[str, Any]) -> str:
    """e.g. ``pid 4242 on node1, started 2026-01-02T10:00:00+00:00``."""
    if not info:
        return "its details are not written yet"
    return f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}"


def _holder(data: bytes) -> dict[str, Any]:
    with contextlib.suppress(ValueError):
        value = json.loads(data or b"{}")
        return value if isinstance(value, dict) else {}
    return {}


def lock_holder(out: Path) -> str | None:
    """Who holds the folder's lock now (None: nobody), without taking it."""
    path = Path(out) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return describe_holder(read_holder(path))
    finally:
        os.close(fd)  # also drops a shared lock we got
    return None
