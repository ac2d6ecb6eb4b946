"""Rich tables for `he-leak bench` (he_leak.bench.run)."""

from __future__ import annotations

import math
from typing import Any

from he_leak.bench.methods import SUCCESS_PSNR


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


WIDE = 1000  # columns of a console that is not a terminal: a file or a pipe gets whole tables, not 80 columns


def report_console(file: Any = None) -> Any:
    """A rich Console for the bench's tables (on stdout unless `file`): a terminal's own width, else WIDE columns,
    so that output piped to a file is not cut at rich's default 80 columns ("44.…")."""
    from rich.console import Console

    console = Console(file=file)
    return console if console.is_terminal else Console(file=file, width=WIDE)


def print_report(report: Any, console: Any) -> None:
    """The per-run table, the per-method summary (own stopping rule; oracle column named as such) and the batched
    comparison, from a he_leak.bench.run.BenchReport."""
    from rich.table import Table

    runs = Table(title=f"runs ({report.data}, {report.classes} classes, ≤{report.steps} steps, x_tol {report.x_tol:g})")
    for col in ("device", "method", "model", "index", "seed", "PSNR dB", "steps", "wall s", "oracle s to 40 dB",
                "peak MiB", "note"):  # fmt: skip
        runs.add_column(col, justify="right")
    for r in report.runs:
        runs.add_row(r.device, r.method, r.model, str(r.index), str(r.seed), _fmt(r.psnr), str(r.steps),
                     _fmt(r.seconds), _fmt(r.oracle_time), _fmt(r.peak_mib, ".1f"), r.note[:40])  # fmt: skip
    console.print(runs)
    summary = Table(title=f"each method with its own stopping rule; success = final PSNR ≥ {SUCCESS_PSNR:g} dB")
    for col in ("device", "method", "model", "success", "diverged", "median wall s", "runs/s", "median PSNR dB",
                "oracle: median s to 40 dB", "peak MiB"):  # fmt: skip
        summary.add_column(col, justify="right")
    for s in report.summaries:
        summary.add_row(s.device, s.method, s.model, f"{s.successes}/{s.runs} ({s.success_rate:.0%})", str(s.diverged),
                        _fmt(s.median_seconds), _fmt(s.runs_per_second, ".3f"), _fmt(s.median_psnr),
                        _fmt(s.median_oracle_time), _fmt(s.peak_mib, ".1f"))  # fmt: skip
    console.print(summary)
    for d, ratio in report.ratio_dlg_to_original.items():
        console.print(f"{d}: median wall time per run, dlg / original loop = {ratio:.3f}")
    for b in report.batched:
        console.print(
            f"{b.device}: {b.jobs} {b.method} runs ({b.dtype}), batched {b.runs_per_second_batched:.3f} runs/s vs one "
            f"by one "
            f"{b.runs_per_second_one_by_one:.3f} runs/s: ×{b.speedup:.2f} (max |Δx| {b.max_abs_difference:.2e}; "
            f"≥40 dB {b.successes_batched} vs {b.successes_one_by_one}; median PSNR {_fmt(b.median_psnr_batched)} vs "
            f"{_fmt(b.median_psnr_one_by_one)} dB)"
        )
