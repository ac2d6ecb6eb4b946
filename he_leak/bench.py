"""Benchmark: the original DLG loop (Zhu et al. 2019) against the reliable L-BFGS gradient matching of
`he_leak.attacks.lbfgs_match`, over (image, seed) pairs, in one process.

    python -m he_leak.bench --pairs 10 --steps 300 [--json]

Success is PSNR ≥ 40 dB against the true image (data range 1, after clamping to [0, 1]). The PSNR is checked
after every optimiser step for bookkeeping only (time-to-success); neither method sees the truth.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.nn import functional as F

from he_leak import metrics
from he_leak.attacks.lbfgs_match import dlg_lbfgs
from he_leak.data import load_dataset
from he_leak.errors import AttackFailed, ConfigError
from he_leak.models import ModelSpec, build_model

SUCCESS_PSNR = 40.0


@dataclass(frozen=True)
class BenchRun:
    """One method on one (image, seed) pair."""

    method: str
    index: int
    seed: int
    psnr: float  # final PSNR (nan when diverged)
    diverged: bool  # the loss became NaN/inf
    diverged_at: int | None  # step at which it did
    seconds: float  # total wall time of the run
    time_to_success: float | None  # seconds until the PSNR first reached SUCCESS_PSNR
    steps: int  # optimiser steps taken
    success: bool


@dataclass(frozen=True)
class MethodSummary:
    method: str
    runs: int
    successes: int
    diverged: int
    stuck: int  # failed without NaN: the loop saturated (vanishing gradient) or stalled below 40 dB
    success_rate: float
    median_time_to_success: float | None  # over the successful runs
    median_seconds: float


@dataclass(frozen=True)
class BenchReport:
    data: str
    classes: int
    steps: int
    device: str
    threads: int
    pairs: tuple[tuple[int, int], ...]
    runs: tuple[BenchRun, ...]
    plain: MethodSummary
    improved: MethodSummary
    ratio_time_to_success: float | None  # median improved / median plain
    ratio_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def psnr(x: torch.Tensor, truth: torch.Tensor) -> float:
    """PSNR in dB (data range 1) of x clamped to [0, 1]; NaN when x holds NaN."""
    return metrics.psnr(x.detach().double().clamp(0, 1).cpu().numpy(), truth.double().cpu().numpy())


def _problem(data: str, classes: int, index: int, seed: int, device: torch.device):
    ds = load_dataset(data)
    x, y = ds.batch(index, 1)
    truth = torch.as_tensor(x).to(device)
    label = torch.as_tensor(y).to(device) % classes
    spec = ModelSpec(name="lenet", input_shape=tuple(ds.shape), classes=classes, seed=seed)
    model = build_model(spec).to(device)
    params = list(model.parameters())
    grads = torch.autograd.grad(F.cross_entropy(model(truth), label), params)
    return model, tuple(g.detach() for g in grads), truth, label


def plain_dlg(model, target_grads, truth, *, classes: int, steps: int, seed: int, device: torch.device) -> BenchRun:
    """The original DLG loop: randn dummies, LBFGS(lr=1), no line search, raw squared gradient distance."""
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(seed)
    dummy = torch.randn(truth.shape, generator=gen).to(device).requires_grad_(True)
    dummy_label = torch.randn((truth.shape[0], classes), generator=gen).to(device).requires_grad_(True)
    opt = torch.optim.LBFGS([dummy, dummy_label])

    def closure() -> torch.Tensor:
        opt.zero_grad()
        pred = model(dummy)
        loss = torch.mean(torch.sum(-F.softmax(dummy_label, -1) * F.log_softmax(pred, -1), -1))
        dy_dx = torch.autograd.grad(loss, params, create_graph=True)
        diff = sum(((gx - gy) ** 2).sum() for gx, gy in zip(dy_dx, target_grads, strict=True))
        diff.backward()
        return diff

    t0 = time.perf_counter()
    t_succ: float | None = None
    diverged_at: int | None = None
    used = 0
    for step in range(1, steps + 1):
        loss = float(opt.step(closure).detach())
        used = step
        if not (math.isfinite(loss) and bool(torch.isfinite(dummy).all())):
            diverged_at = step
            break
        if t_succ is None and psnr(dummy, truth) >= SUCCESS_PSNR:
            t_succ = time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    final = math.nan if diverged_at else psnr(dummy, truth)
    return BenchRun("plain", -1, seed, final, diverged_at is not None, diverged_at, seconds, t_succ, used,
                    final >= SUCCESS_PSNR)  # fmt: skip


def improved_dlg(model, target_grads, truth, *, classes: int, steps: int, seed: int, device: torch.device) -> BenchRun:
    """`dlg_lbfgs` with soft labels optimised jointly (DLG); it stops itself on its tolerance."""
    t0 = time.perf_counter()
    t_succ: list[float] = []

    def monitor(step: int, x: torch.Tensor) -> None:
        if not t_succ and psnr(x, truth) >= SUCCESS_PSNR:
            t_succ.append(time.perf_counter() - t0)

    try:
        x, _, used, _ = dlg_lbfgs(model, target_grads, input_shape=tuple(truth.shape[1:]), classes=classes,
                                  steps=steps, seed=seed, device=device, monitor=monitor)  # fmt: skip
    except AttackFailed:
        return BenchRun("improved", -1, seed, math.nan, True, None, time.perf_counter() - t0, None, steps, False)
    seconds = time.perf_counter() - t0
    final = psnr(x, truth)
    return BenchRun("improved", -1, seed, final, False, None, seconds, t_succ[0] if t_succ else None, used,
                    final >= SUCCESS_PSNR)  # fmt: skip


def _summary(method: str, runs: list[BenchRun]) -> MethodSummary:
    ok = [r for r in runs if r.success and r.time_to_success is not None]
    return MethodSummary(
        method=method,
        runs=len(runs),
        successes=sum(r.success for r in runs),
        diverged=sum(r.diverged for r in runs),
        stuck=sum(not r.success and not r.diverged for r in runs),
        success_rate=sum(r.success for r in runs) / max(len(runs), 1),
        median_time_to_success=statistics.median(r.time_to_success for r in ok) if ok else None,
        median_seconds=statistics.median(r.seconds for r in runs) if runs else math.nan,
    )


def default_pairs(n: int, size: int) -> list[tuple[int, int]]:
    """`n` (image index, seed) pairs spread over the dataset."""
    step = max(size // max(n, 1), 1)
    return [((i * step) % size, i) for i in range(n)]


def bench_dlg(
    *,
    pairs: int = 10,
    steps: int = 300,
    classes: int = 100,
    data: str = "photos",
    device: str = "cpu",
    threads: int | None = None,
    console=None,
) -> BenchReport:
    """Run the plain DLG loop and the improved recipe on `pairs` (image, seed) pairs; print rich tables."""
    if pairs < 1 or steps < 1:
        raise ConfigError(f"--pairs {pairs} --steps {steps}: both must be at least 1")
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads {threads}: give at least 1 (or leave it out for torch's default)")
        torch.set_num_threads(threads)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else device.replace("auto", "cpu"))
    ds = load_dataset(data)
    chosen = default_pairs(pairs, len(ds))
    runs: list[BenchRun] = []
    for index, seed in chosen:
        model, grads, truth, _ = _problem(data, classes, index, seed, dev)
        for method in (plain_dlg, improved_dlg):
            r = method(model, grads, truth, classes=classes, steps=steps, seed=seed, device=dev)
            runs.append(BenchRun(**{**asdict(r), "index": index}))
            if console is not None:
                console.log(f"{r.method:8s} index {index:3d} seed {seed:3d}: {r.psnr:6.2f} dB  {r.seconds:6.2f} s")
    plain = _summary("plain", [r for r in runs if r.method == "plain"])
    improved = _summary("improved", [r for r in runs if r.method == "improved"])
    ratio_tts = (
        improved.median_time_to_success / plain.median_time_to_success
        if improved.median_time_to_success and plain.median_time_to_success
        else None
    )
    report = BenchReport(
        data=data, classes=classes, steps=steps, device=str(dev), threads=torch.get_num_threads(),
        pairs=tuple(chosen), runs=tuple(runs), plain=plain, improved=improved, ratio_time_to_success=ratio_tts,
        ratio_seconds=improved.median_seconds / plain.median_seconds if plain.median_seconds else math.nan,
    )  # fmt: skip
    if console is not None:
        print_report(report, console)
    return report


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def print_report(report: BenchReport, console) -> None:
    from rich.table import Table

    runs = Table(title=f"DLG runs ({report.data}, {report.classes} classes, ≤{report.steps} steps, {report.device})")
    for col in ("method", "index", "seed", "PSNR dB", "diverged at", "steps", "time to 40 dB s", "total s"):
        runs.add_column(col, justify="right")
    for r in report.runs:
        runs.add_row(r.method, str(r.index), str(r.seed), _fmt(r.psnr), str(r.diverged_at or "—"), str(r.steps),
                     _fmt(r.time_to_success), _fmt(r.seconds))  # fmt: skip
    console.print(runs)
    summary = Table(title=f"success = PSNR ≥ {SUCCESS_PSNR:g} dB")
    for col in ("method", "success", "diverged (NaN)", "stuck", "median time to success s", "median total s"):
        summary.add_column(col, justify="right")
    for s in (report.plain, report.improved):
        summary.add_row(s.method, f"{s.successes}/{s.runs} ({s.success_rate:.0%})", str(s.diverged), str(s.stuck),
                        _fmt(s.median_time_to_success), _fmt(s.median_seconds))  # fmt: skip
    summary.add_row("improved / plain", "", "", "", _fmt(report.ratio_time_to_success, ".3f"),
                    _fmt(report.ratio_seconds, ".3f"))  # fmt: skip
    console.print(summary)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m he_leak.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=10, help="number of (image, seed) pairs")
    ap.add_argument("--steps", type=int, default=300, help="optimiser steps (LBFGS.step calls) per run")
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--data", default="photos")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    args = ap.parse_args(argv)
    console = None
    if not args.json:
        from rich.console import Console

        console = Console()
    report = bench_dlg(pairs=args.pairs, steps=args.steps, classes=args.classes, data=args.data, device=args.device,
                       threads=args.threads, console=console)  # fmt: skip
    if args.json:
        print(json.dumps(report.to_dict(), default=str, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
