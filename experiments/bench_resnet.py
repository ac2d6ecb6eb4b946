"""Benchmark: peak memory and time per attack iteration of a big model (ResNet-18) on 64×64 RGB images.

Run from the repository root:

    python experiments/bench_resnet.py                      # resnet18, photos64 image 0, batch 1, CPU or CUDA
    python experiments/bench_resnet.py --iterations 3 --rounds 3 --json   # methods interleaved, 9 evaluations each
    python experiments/bench_resnet.py --methods dlg ig --restarts 2 --activation relu --device cpu

One iteration is one evaluation of an attack's objective and its gradient wrt the dummy input:

* ``dlg``   — DLG's gradient-matching loss Σ‖∇θL(f(x), softmax(ŷ)) − t‖² and its gradient wrt x and the soft labels ŷ
              (a forward pass, a backward pass with create_graph, then a double backward), in float32;
* ``dlg64`` — the same in float64 (DLG escalates to float64 once float32 stalls, so both phases are timed);
* ``ig``    — Inverting Gradients' 1 − cosine + TV objective through he_leak.attacks.optim.functional (torch.func grad;
              vmap over the restarts when --restarts > 1), in float32.

Each method runs in a fresh subprocess so that peaks do not mix: the peak is the process's resident high-water mark
(VmHWM from /proc/self/status, which unlike ru_maxrss is not inherited from the parent across fork + exec; ru_maxrss
where /proc is missing), or torch.cuda.max_memory_allocated on CUDA. The subprocess also prints the memory guard's
estimate for the same run (he_leak.models.memory.estimate), so the two can be compared. Times are medians over
--iterations evaluations after --warmup ones, pooled over --rounds round-robin processes; on a shared machine the best
round's median is the figure least disturbed by other jobs (medians, never means).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("dlg", "dlg64", "ig")
GB = 1024**3
IG_TV = 1e-4  # the total-variation weight of he_leak.attacks.ig (its default_tv)


def peak_rss() -> int:
    """This process's peak resident set in bytes."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def dlg_step(method, cfg, spec, model, obs, device, gen):
    """One DLG evaluation (objective and double backward) in float32 or float64 (dlg64), as a closure."""
    import torch

    from he_leak.models.losses import LOSSES

    dtype = torch.float64 if method == "dlg64" else torch.float32
    net = model.to(device=device, dtype=dtype)
    params = list(net.parameters())
    target = [g.to(device=device, dtype=dtype) for g in obs.gradients]
    loss = LOSSES[obs.loss]
    x = torch.rand((cfg.batch, *spec.input_shape), generator=gen, dtype=dtype).to(device).requires_grad_(True)
    y = torch.zeros(cfg.batch, cfg.classes, dtype=dtype, device=device, requires_grad=True)

    def step() -> None:
        grads = torch.autograd.grad(loss(net(x), torch.softmax(y, -1)), params, create_graph=True)
        dist = sum(((g - t) ** 2).sum() for g, t in zip(grads, target, strict=True))
        torch.autograd.grad(dist, (x, y))

    return step


def ig_step(method, cfg, spec, model, obs, device, gen):
    """One IG evaluation over the vmapped restarts (cosine + TV, float32), as a closure."""
    import torch

    from he_leak.attacks.labels import recover_labels
    from he_leak.attacks.optim.functional import GradientModel, batched_value_and_grad, total_variation

    gm = GradientModel(obs, device=device, dtype=torch.float32)
    y = recover_labels(obs).to(device)
    xs = torch.rand((cfg.restarts, cfg.batch, *spec.input_shape), generator=gen).to(device)

    def objective(x: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        return gm.cosine(x, lab) + IG_TV * total_variation(x)

    def step() -> None:
        batched_value_and_grad(objective, xs, y)

    return step


def measure(args: argparse.Namespace) -> dict:
    """One method in this process: build the model, observe one gradient, time the objective, read the peak."""
    import torch

    from he_leak.config import RunConfig
    from he_leak.data import load_dataset
    from he_leak.models import build_model, memory, shape_model
    from he_leak.runner import resolve_device
    from he_leak.scenarios.base import SCENARIOS, model_spec

    method = args.child
    device = resolve_device(args.device)
    attack = "dlg" if method.startswith("dlg") else "ig"
    cfg = RunConfig(scenario="plain", attack=attack, model=args.model, data=args.data, index=args.index,
                    batch=args.batch, restarts=args.restarts, activation=args.activation)  # fmt: skip
    ds = load_dataset(cfg.data)
    targets = ds.indices(cfg.index, cfg.batch)
    spec = model_spec(cfg, tuple(ds.shape))
    parts = memory.estimate(cfg, model=shape_model(spec), input_shape=spec.input_shape, image_values=ds.images[0].size,
                            dataset_size=len(ds), samples=cfg.batch)  # fmt: skip
    model = build_model(spec)
    images, labels = torch.from_numpy(ds.images[targets]), torch.from_numpy(ds.labels[targets])
    obs = SCENARIOS["plain"](cfg).observe(model, images, labels).observation
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    gen = torch.Generator().manual_seed(1)

    step = (dlg_step if attack == "dlg" else ig_step)(method, cfg, spec, model, obs, device, gen)

    def sync() -> None:  # CUDA runs asynchronously: wait for the evaluation before reading the clock
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.iterations):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss()
    return {
        "method": method, "model": args.model, "data": args.data, "input": list(spec.input_shape),
        "batch": cfg.batch, "restarts": cfg.restarts if attack == "ig" else 1, "activation": cfg.activation,
        "device": str(device), "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()), "iterations": args.iterations,
        "seconds": times,
        "peak_bytes": peak, "peak_kind": "cuda max_memory_allocated" if device.type == "cuda" else "VmHWM",
        "estimate_bytes": sum(parts.values()), "estimate_parts": parts,
    }  # fmt: skip


def child_command(args: argparse.Namespace, method: str) -> list[str]:
    return [
        sys.executable, str(Path(__file__).resolve()), "--child", method, "--model", args.model, "--data", args.data,
        "--index", str(args.index), "--batch", str(args.batch), "--restarts", str(args.restarts),
        "--activation", args.activation, "--iterations", str(args.iterations), "--warmup", str(args.warmup),
        "--device", args.device,
    ]  # fmt: skip


def run_child(args: argparse.Namespace, method: str) -> dict:
    """`measure` for one method in a fresh interpreter (this checkout's he_leak first on the path)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(child_command(args, method), capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def merge(runs: list[dict]) -> list[dict]:
    """One row per method from its rounds: all timed evaluations pooled (median, min, max), the best round's median
    (on a shared machine the least disturbed stretch: other jobs only ever slow a round down) and the largest peak."""
    rows: dict[str, dict] = {}
    for run in runs:
        row = rows.setdefault(run["method"], {**run, "seconds": [], "round_medians": [], "peak_bytes": 0})
        row["seconds"] = row["seconds"] + run["seconds"]
        row["round_medians"] = row["round_medians"] + [statistics.median(run["seconds"])]
        row["peak_bytes"] = max(row["peak_bytes"], run["peak_bytes"])
    for row in rows.values():
        t = row["seconds"]
        row.update(rounds=len(row["round_medians"]), seconds_median=statistics.median(t), seconds_min=min(t),
                   seconds_max=max(t), seconds_best_round=min(row["round_medians"]))  # fmt: skip
    return list(rows.values())


def table(rows: list[dict]) -> str:
    lines = [
        "| method | input | batch × restarts | device (threads) | s / iteration: median (min–max) | best round's "
        "median | peak GiB | guard estimate GiB |",
        "|" + "---|" * 8,
    ]
    for r in rows:
        shape = "×".join(map(str, r["input"]))
        lines.append(
            f"| {r['method']} | {shape} | {r['batch']} × {r['restarts']} | {r['device']} ({r['threads']}) | "
            f"{r['seconds_median']:.3f} ({r['seconds_min']:.3f}–{r['seconds_max']:.3f}) | "
            f"{r['seconds_best_round']:.3f} |"
            f" {r['peak_bytes'] / GB:.2f} | {r['estimate_bytes'] / GB:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--data", default="photos64", help="dataset name or a user file (he-leak's --data)")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--restarts", type=int, default=1, help="ig's restarts (vmapped when > 1)")
    parser.add_argument("--activation", default="sigmoid")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--iterations", type=int, default=5, help="timed evaluations per method")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the methods' processes round-robin this many times (interleaved on a busy machine)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of the table")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.iterations < 1 or args.warmup < 0 or args.rounds < 1:
        parser.error("--iterations and --rounds must be at least 1, --warmup at least 0")
    if args.child:
        print(json.dumps(measure(args)))
        return
    rows = merge([run_child(args, m) for _ in range(args.rounds) for m in args.methods])
    print(json.dumps(rows, indent=1) if args.json else table(rows))


if __name__ == "__main__":
    main()
