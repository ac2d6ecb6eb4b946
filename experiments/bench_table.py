"""The README's speed tables from committed `he-leak bench --json` reports (experiments/measured/bench_*.json).

    python experiments/bench_table.py methods experiments/measured/bench_dlg_cpu_2threads.json
    python experiments/bench_table.py batched experiments/measured/bench_batched16_*.json

`methods`: per method, with its own stopping rule — how many runs reached 40 dB, the median wall time per run (and
its ratio to the original loop's), the median and worst final PSNR, the range of steps, and the oracle column (when
the truth first reached 40 dB: a stop no attacker can make). `batched`: per report, K runs through one batched
objective against the same runs one by one.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from he_leak.text import fixed

SUCCESS_DB = 40.0


def methods(path: str) -> str:
    report = json.loads(Path(path).read_text())
    runs = report["runs"]
    lines = ["| device | method | reach 40 dB | median wall s per run (× original) | median / worst final PSNR (dB) | "
             "steps | oracle: median s to 40 dB |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    original = {s["device"]: s["median_seconds"] for s in report["summaries"] if s["method"] == "original"}
    for s in report["summaries"]:
        mine = [r for r in runs if r["method"] == s["method"] and r["device"] == s["device"]]
        psnrs = [r["psnr"] for r in mine if r["psnr"] is not None]
        steps = [r["steps"] for r in mine]
        ratio = s["median_seconds"] / original[s["device"]] if s["device"] in original else None
        lines.append(
            f"| {s['device']} | {s['method']} | {s['successes']}/{s['runs']} | {fixed(s['median_seconds'], 1)}"
            f"{f' ({ratio:.2f}×)' if ratio is not None and s['method'] != 'original' else ''} | "
            f"{fixed(statistics.median(psnrs), 1)} / {fixed(min(psnrs), 1)} | {min(steps)}–{max(steps)} | "
            f"{fixed(s['median_oracle_time'], 1)} |"
        )
    return "\n".join(lines)


def batched(paths: list[str]) -> str:
    lines = ["| report | runs of | precision | batched s | one by one s | speed-up | ≥ 40 dB batched / alone | "
             "median PSNR batched / alone (dB) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for path in paths:
        for b in json.loads(Path(path).read_text())["batched"]:
            lines.append(
                f"| `{Path(path).name}` | {b['jobs']} {b.get('method', 'dlg')} | {b.get('dtype', 'float32')} | "
                f"{fixed(statistics.median(b['seconds_batched']), 0)} | "
                f"{fixed(statistics.median(b['seconds_one_by_one']), 0)} | {b['speedup']:.2f}× | "
                f"{b['successes_batched']} / {b['successes_one_by_one']} | "
                f"{fixed(b.get('median_psnr_batched'), 1)} / {fixed(b.get('median_psnr_one_by_one'), 1)} |"
            )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    kind, paths = argv[0], argv[1:]
    print(methods(paths[0]) if kind == "methods" else batched(paths))


if __name__ == "__main__":
    main(sys.argv[1:])
