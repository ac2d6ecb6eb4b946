"""Benchmark: the original DLG loop (Zhu et al. 2019) against the project's attacks on the DLG paper's setting (LeNet,
held-out 32×32 photos, 100 classes), every method with its own stopping rule, interleaved per (image, seed) pair in
one process; and `--batched K`: K runs of dlg, idlg or ig (`--batched-method`) through one batched objective against
the same K one by one.

    python -m he_leak.bench.run --pairs 10 [--methods original,dlg,idlg,ig,analytic] [--device all] [--json]
    python -m he_leak.bench.run --pairs 1 --methods analytic --batched 16 [--batched-method ig]

Columns: wall seconds per run (median; what a user pays, the method deciding itself when to stop), success rate
(final PSNR ≥ 40 dB against the true image, data range 1, clamped to [0, 1]), final PSNR (median), runs/second, peak
memory above the run's start, and "oracle s to 40 dB": when the PSNR first reached 40 dB, watched after every step
for bookkeeping only — a stop no attacker can make, shown for comparison. `analytic` needs a fully connected first
layer: it runs on an MLP (same image and seed) and is marked so.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from he_leak.attacks.base import AttackOptions, make_attack
from he_leak.attacks.optim.lbfgs_match import DEFAULT_X_TOL
from he_leak.bench.methods import METHODS, SUCCESS_PSNR, PeakMemory, Problem, make_problem, psnr
from he_leak.bench.options import BATCHED_METHODS, add_arguments, check_ranges, method_names, resolve
from he_leak.bench.report import report_console
from he_leak.config import RunConfig, jsonable
from he_leak.data import Dataset, load_dataset
from he_leak.errors import AttackFailed, ConfigError, HeLeakError
from he_leak.models import ModelSpec, memory, shape_model
from he_leak.records import Observation, Reconstruction

__all__ = ["SUCCESS_PSNR", "BenchReport", "bench", "default_pairs", "main", "psnr"]
FC_FIRST = {"analytic"}  # methods that need a fully connected first layer: run on the MLP problem


@dataclass(frozen=True)
class BenchRun:
    """One method on one (image, seed) pair."""

    method: str
    device: str
    model: str
    index: int
    seed: int
    psnr: float  # final PSNR (nan when the method failed)
    success: bool  # final PSNR ≥ SUCCESS_PSNR
    diverged: bool
    seconds: float  # wall time of the run, with the method's own stopping rule
    steps: int
    oracle_time: float | None  # seconds until the PSNR first reached SUCCESS_PSNR (bookkeeping only)
    peak_mib: float  # memory above the run's start (see PeakMemory)
    note: str = ""


@dataclass(frozen=True)
class MethodSummary:
    method: str
    device: str
    model: str
    runs: int
    successes: int
    success_rate: float
    diverged: int
    median_seconds: float
    runs_per_second: float
    median_psnr: float | None
    median_oracle_time: float | None  # over the runs that reached SUCCESS_PSNR
    peak_mib: float


@dataclass(frozen=True)
class BatchedReport:
    """K runs of one attack through one batched objective against the same K one by one (alternated `rounds`
    times)."""

    device: str
    method: str  # dlg, idlg or ig
    jobs: int
    dtype: str  # both sides: dlg/idlg float32 first, escalated to float64 when it stalls (the CUDA policy); ig float32
    seconds_batched: tuple[float, ...]
    seconds_one_by_one: tuple[float, ...]
    runs_per_second_batched: float  # from the median over rounds
    runs_per_second_one_by_one: float
    speedup: float
    max_abs_difference: float  # largest |x_batched − x_alone| over the jobs' final inputs
    successes_batched: int
    successes_one_by_one: int
    median_psnr_batched: float  # dB against the truth, over the runs that did not fail
    median_psnr_one_by_one: float


@dataclass(frozen=True)
class BenchReport:
    data: str
    classes: int
    steps: int
    x_tol: float
    threads: int
    pairs: tuple[tuple[int, int], ...]
    runs: tuple[BenchRun, ...]
    summaries: tuple[MethodSummary, ...]
    ratio_dlg_to_original: dict[str, float]  # per device: median dlg seconds / median original seconds
    batched: tuple[BatchedReport, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_pairs(n: int, size: int) -> list[tuple[int, int]]:
    """`n` (image index, seed) pairs spread over the dataset."""
    step = max(size // max(n, 1), 1)
    return [((i * step) % size, i) for i in range(n)]


def devices(name: str) -> list[torch.device]:
    """`all`: CPU and CUDA when present; `auto`: CUDA when present, else CPU; `cpu`; `cuda`."""
    cuda = torch.cuda.is_available()
    if name == "cuda" and not cuda:
        raise ConfigError("--device cuda: no CUDA device is available here; use --device auto or --device cpu")
    if name not in ("all", "auto", "cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: give all, auto, cpu or cuda")
    if name == "all":
        return [torch.device("cpu")] + ([torch.device("cuda")] if cuda else [])
    return [torch.device("cuda" if name == "auto" and cuda else name.replace("auto", "cpu"))]


def _run(method: str, p: Problem, *, steps: int, device: torch.device, x_tol: float, model: str) -> BenchRun:
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        out = METHODS[method](p, steps=steps, device=device, x_tol=x_tol)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    final = math.nan if out.inputs is None else psnr(out.inputs.reshape(p.truth.shape), p.truth)
    return BenchRun(method, device.type, model, p.index, p.seed, final, final >= SUCCESS_PSNR, out.diverged, seconds,
                    out.steps, out.oracle_time, mem.peak / 2**20, out.note)  # fmt: skip


def _summary(runs: list[BenchRun]) -> MethodSummary:
    r0 = runs[0]
    reached = [r.oracle_time for r in runs if r.oracle_time is not None]
    finite = [r.psnr for r in runs if not math.isnan(r.psnr)]
    return MethodSummary(
        method=r0.method, device=r0.device, model=r0.model, runs=len(runs), successes=sum(r.success for r in runs),
        success_rate=sum(r.success for r in runs) / len(runs), diverged=sum(r.diverged for r in runs),
        median_seconds=statistics.median(r.seconds for r in runs), runs_per_second=len(runs) / sum(
            r.seconds for r in runs), median_psnr=statistics.median(finite) if finite else None,
        median_oracle_time=statistics.median(reached) if reached else None, peak_mib=max(r.peak_mib for r in runs),
    )  # fmt: skip


def bench(
    *, pairs: int = 10, steps: int = 300, classes: int = 100, data: str = "photos", device: str = "all",
    methods: tuple[str, ...] = ("original", "dlg", "idlg", "ig", "analytic"), x_tol: float = DEFAULT_X_TOL,
    threads: int | None = None, batched: int = 0, rounds: int = 1, batched_method: str = "dlg", console: Any = None,
) -> BenchReport:  # fmt: skip
    """Every method on `pairs` (image, seed) pairs (interleaved per pair), per device; then the batched comparison
    when `batched` > 1. Options are checked (he_leak.bench.options) and the memory of the largest problem estimated
    (he_leak.models.memory, as for an attack run) before anything runs."""
    check_ranges(pairs=pairs, steps=steps, classes=classes, x_tol=x_tol, batched=batched, rounds=rounds,
                 threads=threads)  # fmt: skip
    method_names(",".join(methods))
    if batched > 1 and batched_method not in BATCHED_METHODS:
        raise ConfigError(f"--batched-method {batched_method!r}: give one of {', '.join(BATCHED_METHODS)}")
    ds = load_dataset(data)
    check_memory(ds, methods, classes=classes, batched=batched, batched_method=batched_method)
    if threads is not None:
        torch.set_num_threads(threads)
    chosen = default_pairs(pairs, len(ds))
    runs: list[BenchRun] = []
    for dev in devices(device):
        for index, seed in chosen:
            image, label = (torch.as_tensor(v) for v in ds.batch(index, 1))
            built: dict[str, Problem] = {}
            for method in methods:
                model = "mlp" if method in FC_FIRST else "lenet"
                if model not in built:
                    built[model] = make_problem(image, int(label[0]), model=model, classes=classes, seed=seed,
                                                index=index, device=dev)  # fmt: skip
                r = _run(method, built[model], steps=steps, device=dev, x_tol=x_tol, model=model)
                runs.append(r)
                if console is not None:
                    console.log(f"{dev.type} {method:8s} index {index:3d} seed {seed:3d}: {r.psnr:6.2f} dB "
                                f"{r.seconds:6.2f} s {r.note[:60]}")  # fmt: skip
    groups: dict[tuple[str, str], list[BenchRun]] = {}
    for r in runs:
        groups.setdefault((r.device, r.method), []).append(r)
    summaries = tuple(_summary(g) for g in groups.values())
    by = {(s.device, s.method): s for s in summaries}
    ratio = {
        d: by[(d, "dlg")].median_seconds / by[(d, "original")].median_seconds
        for d, m in by
        if m == "dlg" and (d, "original") in by
    }
    reports = tuple(
        bench_batched(jobs=batched, steps=steps, classes=classes, data=data, device=dev, x_tol=x_tol, rounds=rounds,
                      method=batched_method)  # fmt: skip
        for dev in (devices(device) if batched > 1 else [])
    )
    report = BenchReport(data=data, classes=classes, steps=steps, x_tol=x_tol, threads=torch.get_num_threads(),
                         pairs=tuple(chosen), runs=tuple(runs), summaries=summaries, ratio_dlg_to_original=ratio,
                         batched=reports)  # fmt: skip
    if console is not None:
        from he_leak.bench.report import print_report

        print_report(report, console)
    return report


def check_memory(ds: Dataset, methods: tuple[str, ...], *, classes: int, batched: int, batched_method: str) -> None:
    """Each problem the bench builds, estimated as the attack run it is (he_leak.models.memory): one run per method
    (the original loop counted as dlg) and the `batched` runs of the batched comparison together."""
    as_attack = {"original": "dlg", "dlg-f32": "dlg"}
    jobs = [("mlp" if m in FC_FIRST else "lenet", as_attack.get(m, m), 1) for m in methods]
    if batched > 1:
        jobs.append(("lenet", batched_method, batched))
    for model, attack, runs in jobs:
        spec = ModelSpec(name=model, input_shape=ds.shape, classes=classes)
        cfg = RunConfig(attack=attack, model=model, classes=classes)
        memory.check(memory.estimate(cfg, model=shape_model(spec), input_shape=ds.shape, image_values=math.prod(
            ds.shape), dataset_size=len(ds), samples=1, runs=runs))  # fmt: skip


def bench_batched(
    *, jobs: int, steps: int, classes: int, data: str, device: torch.device, x_tol: float, rounds: int = 1,
    method: str = "dlg",
) -> BatchedReport:  # fmt: skip
    """`jobs` runs of `method` on (image, seed) pairs of the DLG setting: the attack's `reconstruct_many` (one batched
    objective) against `reconstruct` one by one, alternating `rounds` times; runs/second from the medians."""
    if method not in BATCHED_METHODS:
        raise ConfigError(f"--batched-method {method!r}: give one of {', '.join(BATCHED_METHODS)}")
    ds = load_dataset(data)
    problems = []
    for index, seed in default_pairs(jobs, len(ds)):
        image, label = (torch.as_tensor(v) for v in ds.batch(index, 1))
        problems.append(make_problem(image, int(label[0]), model="lenet", classes=classes, seed=seed, index=index,
                                     device=device))  # fmt: skip
    # dlg/idlg float32 first on both sides: in float64 one batched pass over 16 LeNets costs nearly 16 single ones on
    # a CPU. ig runs float32 always, with its own iteration count.
    options = AttackOptions(iterations=None if method == "ig" else steps, device=str(device), x_tol=x_tol,
                            dtype=torch.float32)  # fmt: skip
    attack = make_attack(method, options)
    observations, seeds = [p.observation() for p in problems], [p.seed for p in problems]
    tb, to = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        many = attack.reconstruct_many(observations, seeds=seeds)
        tb.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        alone = [_alone(method, replace(options, seed=s), o) for o, s in zip(observations, seeds, strict=True)]
        to.append(time.perf_counter() - t0)
    pairs = [(m, a, p) for m, a, p in zip(many, alone, problems, strict=True)]
    done = [(m, a) for m, a, _ in pairs if isinstance(m, Reconstruction) and isinstance(a, Reconstruction)]
    diff = max((float((m.inputs - a.inputs).abs().max()) for m, a in done), default=0.0)
    score = lambda r, p: psnr(r.inputs, p.truth) if isinstance(r, Reconstruction) else math.nan  # noqa: E731
    db_many, db_alone = [score(m, p) for m, _, p in pairs], [score(a, p) for _, a, p in pairs]
    finite_median = lambda v: statistics.median([x for x in v if not math.isnan(x)] or [math.nan])  # noqa: E731
    rb, ro = jobs / statistics.median(tb), jobs / statistics.median(to)
    return BatchedReport(
        device=device.type, method=method, jobs=jobs, dtype="float32" if method == "ig" else "float32 first",
        seconds_batched=tuple(tb), seconds_one_by_one=tuple(to), runs_per_second_batched=rb,
        runs_per_second_one_by_one=ro, speedup=rb / ro, max_abs_difference=diff,
        successes_batched=sum(v >= SUCCESS_PSNR for v in db_many), successes_one_by_one=sum(v >= SUCCESS_PSNR for v in
        db_alone), median_psnr_batched=finite_median(db_many), median_psnr_one_by_one=finite_median(db_alone),
    )  # fmt: skip


def _alone(method: str, options: AttackOptions, obs: Observation) -> Reconstruction | AttackFailed:
    try:
        return make_attack(method, options).reconstruct(obs)
    except AttackFailed as e:
        return e


def run_from_args(args: argparse.Namespace) -> int:
    """Run the bench the parsed options ask for (each checked first: he_leak.bench.options) and print its report:
    tables as wide as they need on a terminal and in a file alike, or one JSON object (no NaN: options are finite,
    measurements that are not become null)."""
    values = resolve(args)
    console = None if args.json else report_console()
    report = bench(**values, console=console)
    if args.json:
        print(json.dumps(jsonable(report.to_dict()), default=str, indent=1, allow_nan=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m he_leak.bench.run", description=__doc__.splitlines()[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        return run_from_args(args)
    except HeLeakError as e:  # as `he-leak bench`: one line, exit 2
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
