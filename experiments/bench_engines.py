"""Engines side by side on one experiment file: wall time, start-up (until the first run comes back), steady runs per
second, the engine's overhead per run, and whether every engine returned the same rows (timings aside).

    python experiments/bench_engines.py experiments/engine_bench.toml local:1 local:2 ray:2
    python experiments/bench_engines.py experiments/engine_cheap.toml local:2 ray:2

Each ENGINE:N runs the whole grid through he_leak.engines with N workers (nothing is written to disk; he-leak run adds
one fsynced line per run on top). Overhead per run = N × steady time per run − the run's own wall time in its worker:
what dispatching, pickling and collecting cost. Timings are of this machine as it is now: run it on an idle one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from he_leak.engines import Finished, Work, make_engine  # noqa: E402
from he_leak.sweep.experiment import load_experiment  # noqa: E402

TIMING_KEYS = ("seconds", "he_seconds")


def bench(runs: list, name: str, workers: int) -> tuple[dict[str, float], dict[str, dict]]:
    """Time one engine over `runs`; its rows by config (timing keys removed)."""
    start = time.perf_counter()
    arrivals: list[float] = []
    walls: list[float] = []
    rows: dict[str, dict] = {}
    with make_engine(name, workers=workers) as engine:
        work = Work(runs, slots=engine.slots)
        for event in engine.run(work):
            if isinstance(event, Finished):
                for record in event.records:
                    work.observe(record)
                    arrivals.append(time.perf_counter() - start)
                    walls.append(record.wall)
                    row = {k: v for k, v in record.row.items() if k not in TIMING_KEYS}
                    rows[json.dumps(row["config"], sort_keys=True)] = row
        slots = engine.slots
    total = time.perf_counter() - start
    steady = (arrivals[-1] - arrivals[0]) / max(1, len(arrivals) - 1)
    figures = {
        "wall_s": total, "startup_s": arrivals[0], "runs_per_s": 1 / steady if steady > 0 else float("inf"),
        "run_wall_ms": 1000 * statistics.fmean(walls[1:] or walls),
        "overhead_ms": 1000 * (slots * steady - statistics.fmean(walls[1:] or walls)),
    }  # fmt: skip
    return figures, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path, help="experiment TOML file")
    parser.add_argument("engines", nargs="+", metavar="ENGINE:N", help="e.g. local:1 local:2 ray:2")
    args = parser.parse_args(argv)
    runs = list(load_experiment(args.experiment).runs)
    print(f"{args.experiment}: {len(runs)} runs")
    print(f"{'engine':>9} {'wall s':>8} {'start-up s':>10} {'runs/s':>8} {'run ms':>8} {'overhead ms/run':>16}  rows")
    reference = None
    for spec in args.engines:
        name, _, workers = spec.partition(":")
        figures, rows = bench(runs, name, int(workers or 1))
        same = "reference" if reference is None else ("identical" if rows == reference else "DIFFERENT")
        reference = rows if reference is None else reference
        print(f"{spec:>9} {figures['wall_s']:8.2f} {figures['startup_s']:10.2f} {figures['runs_per_s']:8.1f} "
              f"{figures['run_wall_ms']:8.2f} {figures['overhead_ms']:16.2f}  {same}", flush=True)  # fmt: skip
        if same == "DIFFERENT":
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
