"""What a sweep shows while it runs, chosen once: a live line on a terminal (done/total, successes, failures, ETA),
progress lines every few seconds when stderr is a log or a pipe, or nothing but warnings with --quiet. The final
summary line is the CLI's (he_leak.cli)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from he_leak.text import num

LINE_SECONDS = 5.0  # a log gets a progress line at most this often (so: one per run when runs are slower)
TERMINAL_LINE_SECONDS = 1.0  # the same above the live bar on a terminal
HEARTBEAT_SECONDS = 30.0  # a log hears from a long run at least this often
FAILURE_LINES = 10  # failed runs are named one by one up to this many, then only counted


class Display:
    """Counts and timing shared by every display; the subclasses decide what to print."""

    def __init__(self) -> None:
        self.total = self.done = self.ok = self.failed = self.already = self.now = 0
        self.start = self.last_line = time.monotonic()
        self.failures_shown = 0
        self.first: float | None = None  # when the first run of this sweep finished

    def begin(self, total: int, done: int, *, now: int | None = None) -> None:
        """`total` runs in the experiment, `done` already recorded, `now` to run in this sweep (default: the rest;
        fewer with --limit)."""
        self.total, self.done, self.already = total, done, done
        self.now = total - done if now is None else now
        self.start = self.last_line = time.monotonic()

    def finished(self, row: Mapping[str, Any], text: str) -> None:
        """A run was recorded."""
        self.done += 1
        if self.first is None:
            self.first = time.monotonic()
        failed = bool(row.get("error")) and not row.get("success")
        self.failed += failed
        self.ok += row.get("success") is True
        self.show_run(row, text, failed)

    def show_run(self, row: Mapping[str, Any], text: str, failed: bool) -> None:
        """Print something about a finished run, or not."""

    def tick(self) -> None:
        """Nothing finished lately (the engine is waiting on a long run)."""

    def step(self, done: int, total: int, loss: float) -> None:
        """An in-process attack's progress (iteration of iterations, loss)."""

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr, flush=True)

    def end(self) -> None:
        """The sweep stopped (finished, interrupted or failed)."""

    @property
    def last(self) -> bool:
        """This sweep's last run has been recorded."""
        return self.done - self.already >= self.now

    def counts(self) -> str:
        """e.g. ``[12/40] 11 ok, 1 failed · 3.2 runs/s · ETA 0:08``: runs recorded of the experiment's, and with
        --limit this sweep's share (``· 2/5 now``); the ETA is this sweep's."""
        text = f"[{self.done}/{self.total}] {self.ok} ok, {self.failed} failed"
        if self.now < self.total - self.already:
            text += f" · {self.done - self.already}/{self.now} now"
        ran = self.done - self.already - 1  # timed from the first finished run: start-up is not a run's cost
        elapsed = time.monotonic() - self.first if self.first is not None else 0.0
        if ran > 0 and elapsed > 0:
            rate = ran / elapsed
            text += f" · {rate:.3g} runs/s" if rate >= 1 else f" · {elapsed / ran:.3g} s/run"
            text += f" · ETA {clock((self.already + self.now - self.done) / rate)}"
        return text

    def failure_line(self, row: Mapping[str, Any], text: str) -> str | None:
        """The line naming a failed run, or None past FAILURE_LINES of them."""
        self.failures_shown += 1
        if self.failures_shown > FAILURE_LINES:
            return None
        more = "; further failures are only counted" if self.failures_shown == FAILURE_LINES else ""
        return f"{self.counts()} · failed: {text}: {row.get('error')}{more}"


class Quiet(Display):
    """--quiet: warnings only (the CLI still prints the final summary)."""


class Lines(Display):
    """stderr is not a terminal: a progress line at most every LINE_SECONDS (per run when runs are slow), every
    failure named (up to FAILURE_LINES) and a heartbeat every HEARTBEAT_SECONDS during a long run."""

    def __init__(self, stream: TextIO | None = None, *, every: float = LINE_SECONDS) -> None:
        super().__init__()
        self.stream = stream
        self.every = every

    def emit(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)
        self.last_line = time.monotonic()

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=self.stream or sys.stderr, flush=True)

    def show_run(self, row: Mapping[str, Any], text: str, failed: bool) -> None:
        if failed:
            line = self.failure_line(row, text)
            if line:
                self.emit(line)
        elif time.monotonic() - self.last_line >= self.every or self.last:
            self.emit(f"{self.counts()} · last: {text}: {run_status(row)}")

    def tick(self) -> None:
        if time.monotonic() - self.last_line >= HEARTBEAT_SECONDS:
            self.emit(f"{self.counts()} · still running")

    def step(self, done: int, total: int, loss: float) -> None:
        """An in-process attack's progress: a line at most every `every` seconds."""
        if time.monotonic() - self.last_line >= self.every:
            loss_text = f", loss {loss:.3g}" if isinstance(loss, float) and math.isfinite(loss) else ""
            self.emit(f"{self.counts()} · attack step {done}/{total or '?'}{loss_text}")


class Live(Display):
    """A terminal: a live bar (done/total, ok, failed, ETA, and the running attack's iterations in this process)
    with finished runs printed above it at most every TERMINAL_LINE_SECONDS, failures always."""

    def __init__(self, console: Any) -> None:
        super().__init__()
        self.console = console
        self.bar: Any = None

    def begin(self, total: int, done: int, *, now: int | None = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        super().begin(total, done, now=now)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[counts]}"), TextColumn("ETA"), TimeRemainingColumn())  # fmt: skip
        self.bar = Progress(*columns, console=self.console, transient=True)
        self.bar.start()
        self.task = self.bar.add_task("runs", total=total, completed=done, counts="")
        self.inner = self.bar.add_task("", total=None, visible=False, counts="")

    def emit(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        self.last_line = time.monotonic()

    def show_run(self, row: Mapping[str, Any], text: str, failed: bool) -> None:
        self.bar.update(self.task, completed=self.done, counts=f"{self.ok} ok · {self.failed} failed")
        self.bar.update(self.inner, visible=False)
        if failed:
            line = self.failure_line(row, text)
            if line:
                self.emit(line)
        elif time.monotonic() - self.last_line >= TERMINAL_LINE_SECONDS or self.last:
            self.emit(f"{self.counts()} · {text}: {run_status(row)}")

    def step(self, done: int, total: int, loss: float) -> None:
        loss_text = f" · loss {loss:.3g}" if isinstance(loss, float) and math.isfinite(loss) else ""
        text = f"  attack{loss_text}"
        self.bar.update(self.inner, visible=True, completed=done, total=total or None, description=text)

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {message}", markup=False, highlight=False)

    def end(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def make_display(*, quiet: bool = False, console: Any = None) -> Display:
    """Quiet with `quiet`; Live when the console (default: stderr) is a terminal; else Lines."""
    if quiet:
        return Quiet()
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    if getattr(console, "is_terminal", False):
        return Live(console)
    return Lines(getattr(console, "file", None))


def run_status(row: Mapping[str, Any]) -> str:
    """e.g. ``success · plaintext_psnr 38.2 dB (0.4 s)``."""
    if row.get("error") and not row.get("success"):
        status = f"failed: {row['error']}"
    else:
        status = "success" if row.get("success") else "no success"
        for key, unit in (("symbol_exact", ""), ("plaintext_psnr", " dB"), ("key_plaintext_psnr", " dB (key)")):
            if isinstance(row.get(key), int | float):
                status += f" · {key} {num(row[key])}{unit}"
    seconds = row.get("run_seconds", row.get("seconds"))  # the whole run's wall time (older rows: the attack's)
    return status + (f" ({seconds:.1f} s)" if isinstance(seconds, int | float) else "")


def clock(seconds: float) -> str:
    """Seconds as h:mm:ss or m:ss."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
